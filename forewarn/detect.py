"""`forewarn detect`: the agent's own path, run causally over a CSV of history.

Every used column is scored by the agent's calibrated per-sensor scorer
(:mod:`agent.anomaly_sensors`): ``anomaly_score`` is the machine-level score (all sensors and
their relation), ``anomaly_score_<column>`` each sensor's, ``anomaly_alert`` the default rule's
state (:mod:`agent.anomaly_alert`), ``anomaly_driver`` the column that drove the score and
``anomaly_onset`` the onset rarity with each episode reported once (0 on its repeats and on a
lasting departure's rows: the score to threshold when each event should count once, as NAB
counts them). The
scorer learns its normal on the fit rows (or on ``--fit-input``, a known-good file), then keeps
learning only from rows that look normal.

A plant engineer checks forewarn against their own past failures before trusting it. The
model (Ridge on per-window normalised windows, so it suits any numeric series: a temperature, a
pressure, a load) and its normalisation are fitted on the first ``fit_rows`` rows only; every
later row is then streamed one at a time through the same window store, anomaly scorer and
alert policy the agent uses. A row's output depends only on that row and earlier ones:
changing a future row never changes an earlier score.

Rows are steps: timestamps are copied verbatim and may be irregular or repeated. A row with a
missing or non-numeric value in a used column is a gap: it has no forecast, its scores are 0,
its alert states hold (a missing reading clears no alert) and the window starts again after
it, so no forecast spans it. How the CSV is read, and what is said of the cells and columns
left out, is :mod:`forewarn.detect_csv`.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from agent.alerts import STATE_NAMES, AlertPolicy
from agent.anomaly import AnomalyScorer
from agent.anomaly_alert import AnomalyAlertState, AnomalyRule
from agent.anomaly_sensors import ScorerParams, SensorScorer
from agent.window import WindowStore
from config.alerts import AlertSettings
from forewarn.detect_csv import DetectError, read_table
from models.baselines import RidgeForecaster
from models.data import make_windows
from wire.reading import Reading

WINDOW = 20
OUTPUT_COLUMNS = ("forecast", "residual", "anomaly_score", "alert_state")
ANOMALY_COLUMNS = ("anomaly_alert", "anomaly_driver", "anomaly_onset")
__all__ = ["DetectError", "DetectSummary", "run_detect"]


@dataclass(frozen=True)
class DetectSummary:
    rows: int
    scored_rows: int
    gaps: int
    alerts: int
    anomaly_alerts: int
    seconds: float
    notes: tuple[str, ...] = field(default=())
    """What reading left out: columns not scored, cells read as gaps (each with its line)."""

    def line(self) -> str:
        return (
            f"{self.rows} rows ({self.scored_rows} scored, {self.gaps} gaps), "
            f"{self.alerts} threshold alert(s), {self.anomaly_alerts} anomaly alert(s), "
            f"{self.seconds:.2f} s"
        )


def run_detect(
    input_path: Path,
    output_path: Path,
    timestamp_column: str | None = None,
    columns: Sequence[str] | None = None,
    fit_rows: int | None = None,
    horizon: int = 30,
    threshold: float | None = None,
    anomaly_threshold: float = AnomalyRule.fire_score,
    delimiter: str | None = None,
    fit_input: Path | None = None,
) -> DetectSummary:
    """Backtest ``input_path`` into ``output_path``; the first used column is the one forecast.

    With ``fit_input`` the model and the anomaly scorer learn on that file (same columns) and
    every row of ``input_path`` is scored; otherwise they learn on its first ``fit_rows``.
    """
    started = time.monotonic()
    if horizon < 1:
        raise DetectError(f"--horizon {horizon} must be at least 1 row ahead (default 30)")
    for role, source in (("--input", input_path), ("--fit-input", fit_input)):
        if source is not None and _same_file(source, output_path):
            raise DetectError(
                f"--output {output_path} is the {role} file: writing would overwrite it; give "
                "another path"
            )
    table = read_table(input_path, timestamp_column, columns, delimiter)
    used, stamps, values = table.columns, table.stamps, table.values
    header = _output_header(input_path, timestamp_column, used)
    notes = list(table.notes)
    n_rows = len(values)
    needed = WINDOW + horizon + 10
    if fit_input is not None:
        fit_table = read_table(fit_input, None, used, delimiter, role="--fit-input")
        fit_values = fit_table.values
        notes += fit_table.notes
        if len(fit_values) < needed:
            raise DetectError(
                f"--fit-input {fit_input} has {len(fit_values)} rows: fitting needs at least "
                f"{needed} (window {WINDOW} + horizon {horizon} + 10); give a longer known-good "
                "file"
            )
        fit_rows = 0
    else:
        given = fit_rows is not None
        fit_rows = fit_rows if fit_rows is not None else max(n_rows // 10, 0)
        what = (
            f"--fit-rows {fit_rows}"
            if given
            else f"the default fit (10 % of {n_rows} rows: {fit_rows})"
        )
        if n_rows <= needed:
            raise DetectError(
                f"{input_path} has {n_rows} rows: fitting needs at least {needed} (window "
                f"{WINDOW} + horizon {horizon} + 10) and one more to score; fit on a known-good "
                "file with --fit-input, or give a longer file"
            )
        if fit_rows < needed:
            raise DetectError(
                f"{what} is too few: fitting needs at least {needed} rows (window {WINDOW} + "
                f"horizon {horizon} + 10); give --fit-rows {needed} to {n_rows - 1}, or fit on a "
                "known-good file with --fit-input"
            )
        if fit_rows >= n_rows:
            raise DetectError(
                f"--fit-rows {fit_rows} leaves none of the {n_rows} rows of {input_path} to "
                f"score: give --fit-rows {needed} to {n_rows - 1}, or fit on a known-good file "
                "with --fit-input"
            )
        fit_values = values[:fit_rows]
    model = _fit(fit_values, used, horizon)

    store = WindowStore(WINDOW, len(used), max_machines=1, stale_after_s=math.inf)
    scorer = AnomalyScorer(horizon, capacity=1)
    sensors = SensorScorer(len(used), 1, ScorerParams(warm_up=len(fit_values)))
    if not 0.0 < anomaly_threshold <= 1.0:
        raise DetectError(
            f"--anomaly-threshold {anomaly_threshold} must be in (0, 1]: scores are rarities "
            f"in [0, 1] (the default rule fires at {AnomalyRule.fire_score})"
        )
    # The clear level stays below the fire level, so a score between them cannot both fire and
    # clear the alert (a threshold under the rule's own clear level would flap).
    rule = AnomalyRule(
        fire_score=anomaly_threshold,
        clear_score=min(AnomalyRule.clear_score, 0.6 * anomaly_threshold),
    )
    anomaly = AnomalyAlertState(rule, capacity=1)
    # Rows are steps here, not seconds: the agent's incident hold (keep_firing_for_s) would hold
    # every alert for as many rows, so detect reports the state the policy sees row by row.
    policy = AlertPolicy(
        AlertSettings(
            threshold_c=threshold if threshold is not None else math.inf, keep_firing_for_s=0.0
        ),
        capacity=1,
    )
    slot = np.zeros(1, dtype=np.int64)
    ids = ["series"]
    if fit_input is not None:
        for row in fit_values:  # the scorer learns its normal on the known-good file
            sensors.update(slot, row[None, :])
    previous_forecast: float | None = None
    alerts = anomaly_alerts = gaps = scored = 0
    try:
        handle = output_path.open("w", newline="", encoding="utf-8")
    except OSError as error:
        raise DetectError(
            f"cannot write --output {output_path}: {error.strerror}; give a file path in a "
            "folder that exists and that you may write to"
        ) from error
    with handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i in range(n_rows):
            row = values[i]
            if i < fit_rows or np.isnan(row).any():
                if i < fit_rows and not np.isnan(row).all():
                    sensors.update(slot, row[None, :])
                elif i >= fit_rows:  # a gap
                    gaps += 1
                    store.restart(slot, forget_order=True)
                    previous_forecast = None
                out = _unscored(policy, bool(anomaly.firing[0]), len(used))
                writer.writerow([stamps[i] if timestamp_column else i, *_cells(row), *out])
                continue
            result = sensors.update(slot, row[None, :])
            fired, _ = anomaly.update(slot, result.machine, result.rarity)
            anomaly_alerts += len(fired)
            firing = bool(anomaly.firing[0])
            per_sensor = [round(float(v), 4) for v in result.score[0]]
            tail = [
                *per_sensor,
                "firing" if firing else "ok",
                used[int(result.driver[0])] if result.machine[0] > 0 else "",
                round(float(result.onset[0]), 4),
            ]
            score = round(float(result.machine[0]), 4)
            store.append(Reading("series", float(i), i, row.astype(np.float32)), float(i))
            batch = store.take_ready()
            state = "anomaly" if firing else "ok"
            forecast_cells: list[object] = ["", ""]
            if len(batch):
                with np.errstate(over="ignore"):  # an overflowing forecast is handled below
                    forecasts = model.forecast(batch.windows).astype(np.float32)
                if threshold is not None:  # without one, no threshold alert (not even at inf)
                    residual_score = scorer.update(
                        batch.slots, batch.windows[:, -1, 0], np.array([i]), forecasts
                    )
                    events = policy.update(
                        batch.slots,
                        ids,
                        batch.windows[:, :, 0],
                        forecasts,
                        np.ones(1),
                        float(i),
                        residual_score,
                        scorer.spread(batch.slots),
                        scorer.noise_ratio(batch.slots),
                    )
                    alerts += sum(e.status == "firing" and e.previous_state == "ok" for e in events)
                state = _alert_state(policy, firing)
                if previous_forecast is not None:
                    residual = float(row[0]) - previous_forecast
                    forecast_cells = [round(previous_forecast, 4), round(residual, 4)]
                    scored += 1
                # Near float32's limit a forecast can overflow: that row has none, not "inf".
                forecast = float(forecasts[0, 0])
                previous_forecast = forecast if math.isfinite(forecast) else None
            out = [*forecast_cells, score, state, *tail]
            writer.writerow([stamps[i] if timestamp_column else i, *_cells(row), *out])
    return DetectSummary(
        rows=n_rows,
        scored_rows=scored,
        gaps=gaps,
        alerts=alerts,
        anomaly_alerts=anomaly_alerts,
        seconds=time.monotonic() - started,
        notes=tuple(notes),
    )


def _alert_state(policy: AlertPolicy, anomaly_firing: bool) -> str:
    """A row's ``alert_state``: the threshold policy's, or "anomaly" where only the anomaly
    alert fires."""
    state = STATE_NAMES[int(policy.state[0])]
    return "anomaly" if state == "ok" and anomaly_firing else state


def _unscored(policy: AlertPolicy, anomaly_firing: bool, columns: int) -> list[object]:
    """The output cells of a row that is not scored (a fit row, a gap): no forecast, scores 0,
    and the alert states as they stand (a missing reading clears no alert)."""
    state = _alert_state(policy, anomaly_firing)
    return ["", "", 0.0, state, *([0.0] * columns), "firing" if anomaly_firing else "ok", "", 0.0]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def _output_header(path: Path, timestamp_column: str | None, used: list[str]) -> list[str]:
    """The output's header; an input column named like an output column would make two
    columns of one name, which a script reading by name cannot tell apart."""
    scores = [f"anomaly_score_{c}" for c in used]
    header = [timestamp_column or "row", *used, *OUTPUT_COLUMNS, *scores, *ANOMALY_COLUMNS]
    for name in header[: 1 + len(used)]:
        if header.count(name) > 1:
            fix = "" if timestamp_column else f" (or copy it with --timestamp-column {name})"
            raise DetectError(
                f"{path}: column {name!r} has the name of a column detect writes; rename it in "
                f"the file, or leave it out with --columns{fix}"
            )
    return header


def _cells(row: NDArray[np.float64]) -> list[object]:
    return ["" if math.isnan(v) else repr(float(v)) for v in row.tolist()]


def _fit(history: NDArray[np.float64], used: list[str], horizon: int) -> RidgeForecaster:
    """Fit on the complete stretches of the fit rows (gaps split them)."""
    pieces = []
    good: list[bool] = np.asarray(np.isfinite(history).all(axis=1), dtype=bool).tolist()
    start = None
    for i, ok in enumerate([*good, False]):
        if ok and start is None:
            start = i
        elif not ok and start is not None:
            if i - start >= WINDOW + horizon:
                pieces.append(make_windows(history[start:i], WINDOW, horizon))
            start = None
    if not pieces:
        missing = np.isnan(history).sum(axis=0)
        worst = int(np.argmax(missing))
        raise DetectError(
            f"the {len(history)} fit rows hold no run of {WINDOW + horizon} complete rows (a "
            f"row missing a value is a gap): column {used[worst]!r} misses {missing[worst]} of "
            f"them; leave a sparse column out with --columns, raise --fit-rows, or fit on a "
            "known-good file with --fit-input"
        )
    x = np.concatenate([p[0] for p in pieces])
    y = np.concatenate([p[1] for p in pieces])
    return RidgeForecaster(horizon=horizon, window=WINDOW, features=tuple(used)).fit(x, y)
