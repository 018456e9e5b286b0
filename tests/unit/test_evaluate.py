"""Evaluation (seed split, fleets, warning lead, plot) and the train/evaluate commands."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from config.fields import FEATURES
from forewarn.cli import main
from models.baselines import PersistenceForecaster, RidgeForecaster
from models.checkpoint import Checkpoint, default_checkpoint_path, load_forecaster
from models.data import make_windows
from models.evaluate import (
    SHIFT_PROFILES,
    FleetSpec,
    evaluate,
    first_run,
    fleet_series,
    horizon_errors,
    machine_ranges,
    seed_split,
    seed_split_data,
    shift_fleet,
    warning_lead,
)
from simulator.fleet import Fleet
from simulator.signal import seed_series

SMALL = FleetSpec(machines=8, overheat=4, ticks=300, overheat_within_ticks=220)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def ridge_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    fleet = Fleet(6, seed=3, overheat=2, overheat_within_ticks=200)
    x, y = make_windows(fleet.history(0, 300), 20, 10, stride=2)
    path = tmp_path_factory.mktemp("ridge") / "ridge.pt"
    RidgeForecaster(horizon=10).fit(x, y).save(path)
    return path


class Constant:
    """Forecasts one value everywhere: a forecaster whose warnings are easy to count."""

    kind, version, features, window, horizon = "constant", "c", FEATURES, 20, 5

    def __init__(self, value: float) -> None:
        self.value = value

    def forecast(self, windows: np.ndarray) -> np.ndarray:
        return np.full((len(windows), self.horizon), self.value, dtype=np.float32)


def test_seed_split_targets_are_the_seeds_test_part() -> None:
    data = seed_split_data()
    assert data["test_ticks"][0] == 804
    assert data["test_ticks"][-1] == 999
    assert len(data["x_fit"]) == 784
    assert len(data["y_test"]) == 196


SEED_TARGETS = np.arange(804, 1000)
"""The seed split's targets: readings t = 804..999 (the last 20 % of 980 windows of 20)."""


def oracle_errors(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    diff = np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
    return {"rmse_c": float(np.sqrt(np.mean(diff**2))), "mae_c": float(np.mean(np.abs(diff)))}


def test_seed_split_errors_match_oracles_computed_here() -> None:
    """Every figure of the seed split, computed again here from the seed's series by other
    means than forewarn's: persistence is the reading before; the noise floor the series' own
    noise-free temperature; linear extrapolation numpy's least-squares line through the 20
    readings before, at the next step; Ridge scikit-learn's, fitted here on min-max scaled
    windows (the seed's recipe). No expected value is copied from a run."""
    errors = seed_split(PersistenceForecaster(horizon=1))
    assert set(errors) == {
        "checkpoint",
        "persistence",
        "ridge",
        "linear_extrapolation",
        "noise_floor",
    }
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import MinMaxScaler

    series = seed_series()
    # The forecasters read windows of float32, as the agent holds them; so do the oracles.
    readings = series.readings.astype(np.float32).astype(np.float64)
    temperature = readings[:, 0]
    t = SEED_TARGETS
    actual = temperature[t]
    steps = np.arange(20)
    before = np.stack([temperature[t - 20 + step] for step in steps])  # (20, targets)
    slope, intercept = np.polyfit(steps, before, 1)
    windows = np.stack([readings[start : start + 20] for start in range(len(readings) - 20)])
    fit, test = windows[: t[0] - 20], windows[t[0] - 20 :]
    scaler = MinMaxScaler().fit(fit.reshape(-1, fit.shape[-1]))

    def scaled(w: np.ndarray) -> np.ndarray:
        return scaler.transform(w.reshape(-1, w.shape[-1])).reshape(len(w), -1)

    ridge = Ridge(alpha=1.0).fit(scaled(fit), temperature[20 : t[0]])
    oracles = {
        "persistence": oracle_errors(temperature[t - 1], actual),
        "noise_floor": oracle_errors(series.clean_temperature[t], actual),
        "linear_extrapolation": oracle_errors(slope * 20 + intercept, actual),
        "ridge": oracle_errors(ridge.predict(scaled(test)), actual),
    }
    for name, oracle in oracles.items():
        for measure in ("rmse_c", "mae_c"):
            assert errors[name][measure] == pytest.approx(oracle[measure], rel=1e-5), name
    assert errors["checkpoint"] == errors["persistence"]
    for value in errors.values():
        assert 0 < value["mae_c"] < value["rmse_c"]


def test_shifted_fleet_moves_every_machine_to_its_profile() -> None:
    _, series = fleet_series(SMALL)
    shifted, names = shift_fleet(series)
    assert shifted.shape == series.shape
    ranges, moved = machine_ranges(series), machine_ranges(shifted)
    for machine, name in enumerate(names):
        _, scale, level, _ = next(p for p in SHIFT_PROFILES if p[0] == name)
        assert shifted[machine, :, 0].mean() == pytest.approx(level, abs=1e-6)
        assert moved[machine] == pytest.approx(scale * ranges[machine], rel=1e-6)
    assert {"bearing", "oven"} <= set(names)


def test_relative_error_is_unchanged_by_level_and_range_for_an_indifferent_forecaster() -> None:
    _, series = fleet_series(SMALL)
    shifted, _ = shift_fleet(series)
    persistence = PersistenceForecaster(horizon=5)
    plain = horizon_errors(persistence, series, 5)
    moved = horizon_errors(persistence, shifted, 5)
    assert moved["relative_rmse"] == pytest.approx(plain["relative_rmse"], rel=1e-6)
    assert moved["rmse_c"] != pytest.approx(plain["rmse_c"], rel=0.05)
    assert len(plain["per_step"]["rmse_c"]) == 5
    # Persistence gets worse the further ahead it looks.
    assert plain["per_step"]["rmse_c"][-1] > plain["per_step"]["rmse_c"][0]


def test_warning_lead_counts_warnings_and_false_alarms() -> None:
    fleet, series = fleet_series(SMALL)
    always = warning_lead(Constant(200.0), fleet, series, 95.0)
    never = warning_lead(Constant(0.0), fleet, series, 95.0)
    assert always["overheats"] == never["overheats"] > 0
    assert always["false_alarm_machines"] == always["healthy_machines"] == 4
    assert never["false_alarm_machines"] == never["false_alarm_ticks"] == 0
    assert never["lead_ticks"] == [None] * never["overheats"]
    # Always warning: warned from the onset (or the first full window), long before crossing.
    for plan, lead in zip(fleet.overheats, always["lead_ticks"], strict=True):
        crossing = np.flatnonzero(series[plan.machine_index, :, 0] >= 95.0)
        first = crossing[crossing >= plan.onset_tick][0]
        assert lead == first - max(plan.onset_tick, 19)
    # The agent's rules: two forecasts in a row to warn, three readings in a row to cross.
    ruled = warning_lead(Constant(200.0), fleet, series, 95.0, warning_ticks=2, crossing_readings=3)
    for plan, lead in zip(fleet.overheats, ruled["lead_ticks"], strict=True):
        hot = series[plan.machine_index, :, 0] >= 95.0
        first = next(t for t in range(plan.onset_tick + 2, len(hot)) if hot[t - 2 : t + 1].all())
        assert lead == first - (max(plan.onset_tick, 19) + 1)
    assert ruled["false_alarm_ticks"] == always["false_alarm_ticks"] - ruled["healthy_machines"]


def test_first_run() -> None:
    mask = np.array([True, False, True, True, False, True, True, True])
    assert first_run(mask, 1) == 0
    assert first_run(mask, 2) == 3
    assert first_run(mask, 3) == 7
    assert first_run(mask, 4) is None


def test_evaluate_has_the_promised_shape(ridge_path: Path) -> None:
    forecaster = load_forecaster(ridge_path, device="cpu", threads=1)
    report = evaluate(forecaster, SMALL)
    assert set(report) == {"seed_split", "fleet", "shifted_fleet"}
    assert report["fleet"]["alert_warning_lead"]["warning_ticks"] == 2
    for errors in report["seed_split"].values():
        assert set(errors) == {"rmse_c", "mae_c"}
    for part in ("fleet", "shifted_fleet"):
        for name in ("checkpoint", "persistence", "linear_extrapolation"):
            assert len(report[part][name]["per_step"]["rmse_c"]) == 10
    # A window-normalised model is as accurate, relative to range, on the shifted fleet.
    assert report["shifted_fleet"]["relative_rmse_vs_fleet"] == pytest.approx(1.0, abs=1e-3)


def test_evaluate_command_prints_exactly_one_json_object_and_a_plot(
    ridge_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "plots" / "eval.png"
    assert main(["evaluate", "--checkpoint", str(ridge_path), "--json", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)  # one object, nothing else on stdout
    assert set(report) == {"seed_split", "fleet", "shifted_fleet"}
    assert report["seed_split"]["noise_floor"]["rmse_c"] == pytest.approx(2.378, abs=1e-3)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000


def test_evaluate_command_without_json_prints_a_summary(
    ridge_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", "--checkpoint", str(ridge_path)]) == 0
    out = capsys.readouterr().out
    assert "noise_floor" in out and "warning lead" in out


def test_evaluate_command_names_a_missing_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_shipped_checkpoint_beats_every_baseline_on_the_seed_split() -> None:
    forecaster = load_forecaster(default_checkpoint_path(), device="cpu", threads=1)
    errors = seed_split(forecaster)
    model = errors["checkpoint"]["rmse_c"]
    for baseline in ("persistence", "ridge", "linear_extrapolation"):
        assert model < errors[baseline]["rmse_c"], baseline
    assert model > errors["noise_floor"]["rmse_c"]


def write_history(path: Path, columns: list[str]) -> None:
    fleet = Fleet(2, seed=12, overheat=1, overheat_within_ticks=300)
    history = fleet.history(0, 400)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["machine", *columns])
        for machine in range(2):
            for row in history[machine]:
                writer.writerow([fleet.machine_ids[machine], *row.round(3)])


def test_train_on_a_csv_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "plant.csv"
    write_history(source, ["temp", "vib", "press", "speed"])
    output = tmp_path / "plant.pt"
    argv = ["train", "--csv", str(source), "--features", "vib,temp,press", "--target", "temp"]
    argv += ["--group", "machine", "--kind", "ridge", "--horizon", "5", "--output", str(output)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["test_windows"] > 0
    assert "cannot be served" in captured.err  # other features than the agent's readings
    checkpoint = Checkpoint.load(output, servable=False)
    assert checkpoint.features == ("vib", "temp", "press")
    assert checkpoint.target_index == 1
    assert checkpoint.kind == "ridge"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--target", "rpm_x"], "must also be one of --features"),
        (["--features", "temp,nope"], "no column nope"),
        (["--features", "temp", "--group", "line"], "no column line"),
    ],
)
def test_train_on_a_csv_rejects_what_cannot_work(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "plant.csv"
    write_history(source, ["temp", "vib", "press", "speed"])
    argv = ["train", "--csv", str(source), "--kind", "ridge", "--output", str(tmp_path / "x.pt")]
    assert main([*argv, *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_train_on_a_csv_with_a_gap_names_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "gap.csv"
    source.write_text("temp,vib\n70.0,35.0\n71.0,\n")
    argv = [
        "train",
        "--csv",
        str(source),
        "--features",
        "temp,vib",
        "--output",
        str(tmp_path / "x.pt"),
    ]
    assert main(argv) == 2
    assert "gap.csv:3: column 'vib' is ''" in capsys.readouterr().err
