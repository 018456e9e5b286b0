"""Anomaly detection quality on data forewarn never generated, and on the simulator.

Three tables, each with anchors computed in the same run:

* ``nab``: the 51 labelled series of the Numenta Anomaly Benchmark in ``../shared/data/nab``
  (relative to the project root), scored by ``../shared/tools/nab_multi.py``. Each file is
  streamed through the agent's scorer (:mod:`agent.anomaly_sensors`), learning on NAB's
  probation rows. ``pooled`` is NAB's own way (one threshold for all files, the best the score
  can do) applied to the per-row machine score (``anomaly_score`` in ``forewarn detect``),
  ``pooled_onset`` the same for the scorer's onset output (``anomaly_onset``: each episode
  once, as NAB counts events); ``default_threshold`` scores the default alert rule's own output
  (1 while the anomaly alert fires, else 0) at ``--fixed 0.5``: what a user actually gets.
  Anchor: the scorer's causal rolling z-score (window 288).
* ``tep``: the Tennessee Eastman process in ``../shared/data/tep``. forewarn learns on the
  normal run ``d00.dat`` (500 samples), then scores each ``dNN_te.dat`` from its first row with
  its default alert rule; detection rate = share of faulty samples (161 on) flagged, false-alarm
  rate = share of normal samples flagged (1-160 of every run and all of ``d00_te.dat``). Anchor,
  pinned: PCA on standardised ``d00.dat``, 9 components, T² limit from the F distribution at
  99 %, Q limit at the 99th percentile of the training Q; flagged when either is over. Means
  leave out faults 3, 9 and 15 (undetectable from these variables; reported apart).
* ``simulator``: a fleet of simulated machines, each with one fault of the anomaly family
  (runaway, cooling failure, stuck, noisy, broken relationship) or healthy, scored on every
  feature with the default rule; recall per fault kind, median delay in readings, and false
  anomaly alerts per 10,000 healthy machine-readings, and pages per caught fault. Seeds 100-104
  (never tuned on). ``slow_cycles``: the same on machines whose cycles are 4 times as long
  (320-480 ticks), where a fault that shows near each peak leaves long calm troughs.
* ``cost``: the agent's tick at 10,000 machines with ``anomaly.enabled`` on and off, two agents
  fed the same readings, their ticks interleaved in one run.

    python -m bench.anomaly            # tables
    python -m bench.anomaly --json     # one JSON object
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agent.anomaly_alert import AnomalyAlertState
from agent.anomaly_sensors import ScorerParams, SensorScorer

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
NAB = SHARED / "data" / "nab"
TEP = SHARED / "data" / "tep"
NAB_SCORER = SHARED / "tools" / "nab_multi.py"
NAB_PYTHON = [sys.executable]
"""The interpreter that runs the NAB scorer (it needs pandas): ``--nab-python``."""
PARAMS: list[ScorerParams | None] = [None]
LEFT_OUT_FAULTS = (3, 9, 15)
SIMULATOR_SEEDS = (100, 101, 102, 103, 104)
TUNING_SEEDS = (0, 1, 2, 3, 4, 5)
"""Seeds of the synthetic series the defaults were looked at on; the reported ones differ."""
SLOW_PERIOD_SCALE = 4.0
"""The simulator's slow-cycle fleet: every machine's cycle 4 times as long (320-480 ticks), its
run, fault start and warm-up stretched alike (a user with slow cycles learns over as many)."""


def stream_many(
    series: list[NDArray[np.float64]], warm_up: list[int], params: ScorerParams | None = None
) -> list[tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.float64]]]:
    """Many one-sensor series at once, one slot each (the agent's batched path): per series
    (onset output, alert firing, machine score) per row."""
    scorer = SensorScorer(1, len(series), params)
    scorer.set_warm_up(np.arange(len(series)), np.array(warm_up))
    alert = AnomalyAlertState(capacity=len(series))
    lengths = np.array([len(s) for s in series])
    padded = np.full((len(series), int(lengths.max())), np.nan)
    for i, s in enumerate(series):
        padded[i, : len(s)] = s
    scores = np.zeros_like(padded)
    machine = np.zeros_like(padded)
    firing = np.zeros(padded.shape, dtype=np.bool_)
    for row in range(padded.shape[1]):
        slots = np.flatnonzero(lengths > row)
        result = scorer.update(slots, padded[slots, row][:, None])
        alert.update(slots, result.machine, result.rarity)
        scores[slots, row] = result.onset
        machine[slots, row] = result.machine
        firing[slots, row] = alert.firing[slots]
    return [(scores[i, :n], firing[i, :n], machine[i, :n]) for i, n in enumerate(lengths.tolist())]


def stream(
    values: NDArray[np.float64], warm_up: int
) -> tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.float64], NDArray[np.int64]]:
    """One series (rows, sensors) through the scorer and the default rule, row by row:
    (machine score, alert firing, per-sensor scores, driver) per row."""
    rows, sensors = values.shape
    scorer = SensorScorer(sensors, 1, ScorerParams(warm_up=warm_up))
    alert = AnomalyAlertState(capacity=1)
    slot = np.zeros(1, dtype=np.int64)
    machine = np.zeros(rows)
    firing = np.zeros(rows, dtype=np.bool_)
    per_sensor = np.zeros((rows, sensors))
    driver = np.zeros(rows, dtype=np.int64)
    for i in range(rows):
        result = scorer.update(slot, values[i : i + 1])
        alert.update(slot, result.machine, result.rarity)
        machine[i] = result.machine[0]
        firing[i] = alert.firing[0]
        per_sensor[i] = result.score[0]
        driver[i] = result.driver[0]
    return machine, firing, per_sensor, driver


# -- NAB -------------------------------------------------------------------------------------


def _nab_keys() -> list[str]:
    windows = json.loads((NAB / "labels" / "combined_windows.json").read_text())
    return sorted(k for k in windows if (NAB / "data" / k).exists())


def _read_nab(path: Path) -> tuple[list[str], NDArray[np.float64]]:
    lines = path.read_text().splitlines()[1:]
    stamps = [line.split(",")[0] for line in lines]
    return stamps, np.array([float(line.split(",")[1]) for line in lines])


def alert_fires(firing: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The rows on which an alert fires (firing, and not on the row before): the default rule
    as events, each alert counted once however long it stays firing. Scored beside the rule's
    firing rows, it tells how much of the rule's NAB figure is lost to alerts that stay up
    (a departure is not absorbed while it lasts) rather than to what the rule detects."""
    return firing & ~np.concatenate([[False], firing[:-1]])


def _nab_score(scores_dir: Path, fixed: float | None = None) -> dict[str, float]:
    command = [NAB_PYTHON[0], str(NAB_SCORER), "--scores-dir", str(scores_dir), "--json"]
    if fixed is not None:
        command += ["--fixed", str(fixed)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{NAB_SCORER} failed: {done.stderr.strip()[-2000:]}")
    report = json.loads(done.stdout)
    profiles = report[0]["profiles"]
    mode = "fixed" if fixed is not None else "pooled"
    names = {"standard": "standard", "low_fp": "reward_low_FP_rate", "low_fn": "reward_low_FN_rate"}
    result = {k: round(profiles[name][mode]["total_normalized"], 2) for k, name in names.items()}
    if fixed is None:
        result["threshold"] = round(profiles["standard"]["pooled"]["threshold"], 4)
        # Every file at its own best threshold: the most that any one threshold, however the
        # score were calibrated across files, could reach with this score's ranking of rows.
        result["oracle"] = round(profiles["standard"]["oracle"]["total_normalized"], 2)
    return result


def _zscore_anchor() -> dict[str, float]:
    command = [NAB_PYTHON[0], str(NAB_SCORER), "--baseline", "zscore:288", "--json"]
    report = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    return {"standard": round(report[0]["profiles"]["standard"]["pooled"]["total_normalized"], 2)}


def bench_nab(keep: Path | None = None) -> dict[str, object]:
    check = subprocess.run([NAB_PYTHON[0], "-c", "import numpy, pandas"], capture_output=True)
    if check.returncode:
        return {
            "skipped": f"{NAB_PYTHON[0]} lacks pandas, which the NAB scorer needs: give "
            "one that has it with --nab-python"
        }
    keys = _nab_keys()
    with tempfile.TemporaryDirectory() as tmp:
        scores_dir, alerts_dir = Path(tmp, "scores"), Path(tmp, "alerts")
        onset_dir, events_dir = Path(tmp, "onset"), Path(tmp, "events")
        for folder in (scores_dir, alerts_dir, onset_dir, events_dir):
            folder.mkdir()
        files = [_read_nab(NAB / "data" / key) for key in keys]
        probation = [min(math.floor(0.15 * len(values)), 750) for _, values in files]
        streamed = stream_many([values for _, values in files], probation, PARAMS[0])
        for key, (stamps, _), (onset, firing, machine) in zip(keys, files, streamed, strict=True):
            name = Path(key).name
            for folder, column in (
                (scores_dir, machine),
                (alerts_dir, firing.astype(float)),
                (onset_dir, onset),
                (events_dir, alert_fires(firing).astype(float)),
            ):
                with (folder / name).open("w") as handle:
                    handle.write("timestamp,anomaly_score\n")
                    handle.writelines(
                        f"{t},{v:.6f}\n" for t, v in zip(stamps, column.tolist(), strict=True)
                    )
        pooled = _nab_score(scores_dir)
        pooled_onset = _nab_score(onset_dir)
        default = _nab_score(alerts_dir, fixed=0.5)
        events = _nab_score(events_dir, fixed=0.5)
        if keep is not None:
            import shutil

            shutil.copytree(tmp, keep, dirs_exist_ok=True)
    return {
        "files": len(keys),
        "pooled": pooled,
        "pooled_onset": pooled_onset,
        "default_threshold": default,
        "default_fires": events,
        "anchors": {"zscore_288": _zscore_anchor()},
    }


# -- Tennessee Eastman -----------------------------------------------------------------------


def _tep_runs() -> tuple[NDArray[np.float64], dict[int, NDArray[np.float64]]]:
    train = np.loadtxt(TEP / "d00.dat")
    train = train.T if train.shape[0] == 52 else train
    runs = {n: np.loadtxt(TEP / f"d{n:02d}_te.dat") for n in range(22)}
    return train, runs


def _pca_flags(train: NDArray[np.float64], runs: dict[int, NDArray[np.float64]]) -> dict:
    """The pinned anchor: PCA (9 components) on standardised d00.dat, T² limit from the F
    distribution at 99 %, Q limit at the training Q's 99th percentile."""
    from scipy.stats import f as f_dist
    from sklearn.decomposition import PCA

    mean, sd = train.mean(axis=0), train.std(axis=0, ddof=1)
    z = (train - mean) / sd
    k, n = 9, len(train)
    pca = PCA(n_components=k).fit(z)
    t2_limit = k * (n - 1) * (n + 1) / (n * (n - k)) * f_dist.ppf(0.99, k, n - k)

    def stats(x: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        zx = (x - mean) / sd
        scores = pca.transform(zx)
        t2 = ((scores**2) / pca.explained_variance_).sum(axis=1)
        q = ((zx - pca.inverse_transform(scores)) ** 2).sum(axis=1)
        return t2, q

    q_limit = float(np.percentile(stats(train)[1], 99))
    flags = {}
    for number, run in runs.items():
        t2, q = stats(run)
        flags[number] = (t2 > t2_limit) | (q > q_limit)
    return flags


def _forewarn_flags(train: NDArray[np.float64], runs: dict[int, NDArray[np.float64]]) -> dict:
    """forewarn's default rule, each run in its own slot after learning d00.dat in every slot
    (the same as learning once and restoring the state into each)."""
    numbers = sorted(runs)
    slots = np.arange(len(numbers))
    scorer = SensorScorer(train.shape[1], len(numbers), ScorerParams(warm_up=len(train)))
    alert = AnomalyAlertState(capacity=len(numbers))
    for row in train:
        scorer.update(slots, np.repeat(row[None, :], len(numbers), axis=0))
    rows = runs[numbers[0]].shape[0]
    firing = np.zeros((len(numbers), rows), dtype=np.bool_)
    stacked = np.stack([runs[n] for n in numbers])
    for i in range(rows):
        result = scorer.update(slots, stacked[:, i, :])
        alert.update(slots, result.machine, result.rarity)
        firing[:, i] = alert.firing
    return {n: firing[j] for j, n in enumerate(numbers)}


def _tep_rates(flags: dict) -> dict[str, object]:
    normal = np.concatenate([flags[0]] + [flags[n][:160] for n in range(1, 22)])
    per_fault = {n: float(flags[n][160:].mean()) for n in range(1, 22)}
    kept = [v for n, v in per_fault.items() if n not in LEFT_OUT_FAULTS]
    return {
        "detection_rate": round(float(np.mean(kept)), 4),
        "false_alarm_rate": round(float(normal.mean()), 4),
        "per_fault": {str(n): round(v, 4) for n, v in per_fault.items()},
    }


def bench_tep() -> dict[str, object]:
    train, runs = _tep_runs()
    return {
        "fit": "d00.dat (500 normal samples)",
        "forewarn": _tep_rates(_forewarn_flags(train, runs)),
        "pca": _tep_rates(_pca_flags(train, runs)),
        "left_out_of_means": list(LEFT_OUT_FAULTS),
    }


# -- simulator --------------------------------------------------------------------------------


def bench_simulator(
    seeds: tuple[int, ...] = SIMULATOR_SEEDS,
    params: ScorerParams | None = None,
    period_scale: float = 1.0,
) -> dict[str, object]:
    """Every machine scored on all four features with the agent's defaults (warm-up included:
    no fit rows), the default rule deciding; healthy machines' alerts after the warm-up are
    false alerts, a fault counts as caught when an alert fires after its start, and each alert
    that fires after it is a page (one per caught fault is the aim: an alert that resolves and
    fires again within one fault pages twice). ``period_scale`` stretches the machines' cycles
    and, alike, the run, the faults' start and the warm-up."""
    from simulator.anomaly import ANOMALY_KINDS, anomaly_scenario

    caught: dict[str, list[bool]] = {kind: [] for kind in ANOMALY_KINDS}
    delays: dict[str, list[int]] = {kind: [] for kind in ANOMALY_KINDS}
    pages: dict[str, list[int]] = {kind: [] for kind in ANOMALY_KINDS}
    false_alerts = healthy_ticks = 0
    params = params or ScorerParams()
    if period_scale != 1.0:
        params = replace(params, warm_up=round(params.warm_up * period_scale))
    ticks, start = round(2000 * period_scale), round(1200 * period_scale)
    for seed in seeds:
        scenario = anomaly_scenario(
            per_kind=10, healthy=50, seed=seed, ticks=ticks, start=start, period_scale=period_scale
        )
        machines, ticks, sensors = scenario.readings.shape
        scorer = SensorScorer(sensors, machines, params)
        alert = AnomalyAlertState(capacity=machines)
        slots = np.arange(machines)
        first_fire = np.full(machines, -1)
        fired_after = np.zeros(machines, dtype=np.int64)
        for i in range(ticks):
            result = scorer.update(slots, scenario.readings[:, i, :])
            fired, _ = alert.update(slots, result.machine, result.rarity)
            for m in fired.tolist():
                kind = scenario.kinds[m]
                if kind == "healthy" or i < scenario.start:
                    false_alerts += i >= params.warm_up
                else:
                    fired_after[m] += 1
                    if first_fire[m] < 0:
                        first_fire[m] = i
        for m, kind in enumerate(scenario.kinds):
            if kind == "healthy":
                healthy_ticks += ticks - params.warm_up
            else:
                healthy_ticks += scenario.start - params.warm_up
                caught[kind].append(bool(first_fire[m] >= 0))
                if first_fire[m] >= 0:
                    delays[kind].append(int(first_fire[m] - scenario.start))
                    pages[kind].append(int(fired_after[m]))
    return {
        "seeds": list(seeds),
        "period_scale": period_scale,
        "false_alerts_per_10k": round(1e4 * false_alerts / healthy_ticks, 3),
        "recall": {kind: round(float(np.mean(caught[kind])), 3) for kind in ANOMALY_KINDS},
        "median_delay_ticks": {
            kind: (float(np.median(delays[kind])) if delays[kind] else None)
            for kind in ANOMALY_KINDS
        },
        "pages_per_episode": {
            kind: (round(float(np.mean(pages[kind])), 2) if pages[kind] else None)
            for kind in ANOMALY_KINDS
        },
        "healthy_machine_ticks": healthy_ticks,
    }


# -- cost in the agent --------------------------------------------------------------------------


def bench_cost(machines: int = 10_000, ticks: int = 24) -> dict[str, object]:
    """The tick with the per-sensor scorer on and off, at ``machines`` machines: two agents fed
    the same readings, their ticks interleaved (on, off, off, on ...) in one run, so that both
    see the same machine load; the figure is the median over rounds of each round's ratio (on
    over off). Both forecast on one thread: with two, a neighbour taking a core stalls one
    agent's forecast for several times the scorer's whole cost, and the ratio measures that."""
    from agent.app import Agent
    from config.settings import load_settings
    from wire.reading import Reading

    agents = {}
    for enabled in (True, False):
        settings = load_settings()
        settings.metrics.host, settings.metrics.port = "127.0.0.1", 0
        settings.anomaly.enabled = enabled
        # Ticks on a loaded machine can take longer than stale_after_s: the machines must not
        # turn stale (their windows restarted, no forecast) between two of their readings.
        settings.agent.stale_after_s = 86_400.0
        settings.model.threads = 1
        agents[enabled] = Agent(settings)
        model = agents[enabled].forecaster
        # The first forecast loads and compiles: not part of any timed tick.
        model.forecast(np.zeros((1, model.window, len(model.features)), dtype=np.float32))
    on = agents[True]
    # The scorer's own time inside the ticks with it on: a steadier figure than the ratio of
    # two medians on a machine whose other load varies from tick to tick.
    scoring_s: list[float] = []
    score_sensors = on.ticker._score_sensors

    def timed(*args: Any) -> None:
        started = time.perf_counter()
        score_sensors(*args)
        scoring_s.append(time.perf_counter() - started)

    on.ticker._score_sensors = timed  # type: ignore[method-assign,assignment]
    window = on.forecaster.window
    features = len(on.forecaster.features)
    ids = [f"cost-{i:06d}" for i in range(machines)]
    rng = np.random.default_rng(5)
    typical = np.array([60.0, 35.0, 120.0, 1650.0][:features], dtype=np.float32)
    level = typical * rng.uniform(0.9, 1.1, size=(machines, features)).astype(np.float32)
    t0 = time.time() - window - ticks - 1
    times: dict[bool, list[float]] = {True: [], False: []}
    for step in range(window + ticks):
        values = level * (1 + rng.normal(0.0, 0.01, size=level.shape).astype(np.float32))
        order = (True, False) if step % 2 == 0 else (False, True)
        for enabled in order:
            agent = agents[enabled]
            for i, machine_id in enumerate(ids):
                agent.hand_off(Reading(machine_id, t0 + step, step, values[i].copy()))
            started = time.perf_counter()
            agent.tick()
            if step >= window:
                times[enabled].append(time.perf_counter() - started)
    median_on, median_off = float(np.median(times[True])), float(np.median(times[False]))
    measured = scoring_s[-len(times[True]) :]
    paired = np.array(times[True]) / np.array(times[False])
    return {
        "machines": machines,
        "ticks_each": ticks,
        "threads": 1,
        "median_tick_s_on": round(median_on, 4),
        "median_tick_s_off": round(median_off, 4),
        "added_fraction": round(float(np.median(paired)) - 1.0, 3),
        "added_fraction_of_medians": round(median_on / median_off - 1.0, 3),
        "scorer_share_of_tick": round(sum(measured) / sum(times[True]), 3),
        "median_scorer_s": round(float(np.median(measured)), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--only",
        choices=("nab", "tep", "simulator", "cost"),
        action="append",
        help="run only these",
    )
    parser.add_argument("--keep", type=Path, help="keep the NAB score files in this folder")
    parser.add_argument(
        "--nab-python",
        default=sys.executable,
        help="Python with numpy and pandas for the NAB scorer (default: this one)",
    )
    args = parser.parse_args(argv)
    NAB_PYTHON[0] = args.nab_python
    parts = args.only or ["nab", "tep", "simulator", "cost"]
    report: dict[str, object] = {}
    started = time.monotonic()
    if "nab" in parts:
        report["nab"] = bench_nab(args.keep)
    if "tep" in parts:
        report["tep"] = bench_tep()
    if "simulator" in parts:
        simulator = bench_simulator()
        simulator["slow_cycles"] = bench_simulator(period_scale=SLOW_PERIOD_SCALE)
        report["simulator"] = simulator
    if "cost" in parts:
        report["cost"] = bench_cost()
    report["seconds"] = round(time.monotonic() - started, 1)
    if args.json:
        print(json.dumps(report))
    else:
        print(_tables(report))
    return 0


def _tables(report: dict) -> str:
    lines = []
    nab = report.get("nab")
    if nab and "skipped" in nab:
        lines += [f"nab: skipped ({nab['skipped']})"]
    elif nab:
        lines += [
            f"nab ({nab['files']} files)        standard   low_fp   low_fn",
            "  forewarn pooled        {standard:>8}{low_fp:>9}{low_fn:>9}".format(**nab["pooled"]),
            "  onset output pooled    {standard:>8}{low_fp:>9}{low_fn:>9}".format(
                **nab["pooled_onset"]
            ),
            "  forewarn default rule  {standard:>8}{low_fp:>9}{low_fn:>9}".format(
                **nab["default_threshold"]
            ),
            "  its alerts' first rows {standard:>8}{low_fp:>9}{low_fn:>9}".format(
                **nab["default_fires"]
            ),
            f"  oracle (each file its own threshold): machine score "
            f"{nab['pooled']['oracle']}, onset output {nab['pooled_onset']['oracle']}",
            f"  z-score (288) pooled   {nab['anchors']['zscore_288']['standard']:>8}",
        ]
    tep = report.get("tep")
    if tep:
        lines += [f"tep (fit on {tep['fit']}; means leave out faults 3, 9, 15)"]
        lines += ["  fault   forewarn   pca"]
        for fault in tep["forewarn"]["per_fault"]:
            a, b = tep["forewarn"]["per_fault"][fault], tep["pca"]["per_fault"][fault]
            lines += [f"  {fault:>5} {a:>10.3f} {b:>6.3f}"]
        for name in ("forewarn", "pca"):
            part = tep[name]
            lines += [
                f"  {name}: detection {part['detection_rate']:.3f}, "
                f"false alarms {part['false_alarm_rate']:.3f}"
            ]
    sim = report.get("simulator")
    if sim:
        lines += _simulator_lines(sim, "simulator")
        if "slow_cycles" in sim:
            slow = f"simulator, cycles x{sim['slow_cycles']['period_scale']:g}"
            lines += _simulator_lines(sim["slow_cycles"], slow)
    cost = report.get("cost")
    if cost:
        lines += [
            f"cost at {cost['machines']} machines: median tick {cost['median_tick_s_on']} s "
            f"with the per-sensor scorer, {cost['median_tick_s_off']} s without "
            f"(+{100 * cost['added_fraction']:.1f} %, interleaved in one run); the scorer "
            f"itself {cost['median_scorer_s']} s, {100 * cost['scorer_share_of_tick']:.1f} % "
            "of the ticks it ran in"
        ]
    return "\n".join(lines)


def _simulator_lines(sim: dict, title: str) -> list[str]:
    lines = [
        f"{title} (seeds {sim['seeds']}): {sim['false_alerts_per_10k']} false "
        "anomaly alerts per 10k healthy machine-ticks"
    ]
    for kind, recall in sim["recall"].items():
        lines += [
            f"  {kind:<20} recall {recall:.2f}  median delay "
            f"{sim['median_delay_ticks'][kind]} ticks  pages per caught fault "
            f"{sim['pages_per_episode'][kind]}"
        ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
