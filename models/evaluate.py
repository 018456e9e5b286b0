"""Evaluation: the seed's own split, a held-out simulated fleet, and a shifted and scaled one.

* Seed split: the seed's exact series (numpy seed 42, n = 1000), 20-step windows, the first 80 %
  of the 980 windows to fit the Ridge baseline and the last 20 % as the test (targets
  t = 804..999). The noise floor is the error of the true, noise-free signal: no forecaster of
  the noisy reading can beat it on average.
* Held-out fleet: a simulated fleet from a seed no training run draws, with overheats; errors
  per horizon step, and the warning lead on its overheats (how many ticks before a machine's
  reading first crosses the threshold the forecast's peak over the horizon first reaches it).
* Shifted fleet: the same fleet with every machine's readings moved to other levels and ranges
  (a bearing around 45 °C, an oven around 180 °C, ...). Errors are compared relative to each
  machine's range (its readings' 1st to 99th percentile), which a forecaster that is
  indifferent to level and range keeps unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.base import Forecaster
from models.baselines import LinearExtrapolationForecaster, PersistenceForecaster, RidgeForecaster
from models.data import make_windows
from models.train import errors_c
from simulator.fleet import Fleet
from simulator.signal import seed_series

SEED_SPLIT_WINDOW = 20
SEED_SPLIT_TRAIN_FRACTION = 0.8
EVALUATION_FLEET_SEED = 20_251_125
"""Seed of the held-out fleet; training fleets draw their seeds from their own generator."""


@dataclass(frozen=True)
class FleetSpec:
    machines: int = 48
    overheat: int = 24
    ticks: int = 600
    overheat_within_ticks: int = 420
    seed: int = EVALUATION_FLEET_SEED
    threshold_c: float = 95.0
    warning_confirm_ticks: int = 2
    critical_confirm_readings: int = 3


# (name, temperature scale, temperature level °C, other features' scale): each machine of the
# shifted fleet takes one profile in turn; its readings are mapped x' = level + scale·(x - mean).
SHIFT_PROFILES: tuple[tuple[str, float, float, float], ...] = (
    ("bearing", 0.5, 45.0, 0.5),
    ("oven", 2.5, 180.0, 3.0),
    ("warm_line", 1.0, 110.0, 1.0),
    ("cold_store", 0.3, -5.0, 0.2),
)


def seed_split_data() -> dict[str, NDArray[Any]]:
    """Windows and targets of the seed split, and the noise-free targets."""
    series = seed_series()
    x, y = make_windows(series.readings, SEED_SPLIT_WINDOW, 1)
    test_from = int(len(x) * SEED_SPLIT_TRAIN_FRACTION)
    return {
        "x_fit": x[:test_from],
        "y_fit": y[:test_from],
        "x_test": x[test_from:],
        "y_test": y[test_from:, 0],
        "clean_test": series.clean_temperature[SEED_SPLIT_WINDOW:][test_from:],
        "test_ticks": np.arange(SEED_SPLIT_WINDOW, len(series.readings))[test_from:],
    }


def seed_split(forecaster: Forecaster) -> dict[str, dict[str, float]]:
    """Next-step RMSE and MAE (°C) of the forecaster, the baselines and the noise floor."""
    data = seed_split_data()
    x_fit, y_fit, x_test, y_test = data["x_fit"], data["y_fit"], data["x_test"], data["y_test"]
    ridge = RidgeForecaster(horizon=1, alpha=1.0, normalisation="global").fit(
        x_fit.astype(np.float32), y_fit.astype(np.float32)
    )
    predictions: dict[str, NDArray[Any]] = {
        "checkpoint": forecaster.forecast(x_test.astype(np.float32))[:, 0],
        "persistence": PersistenceForecaster(horizon=1).forecast(x_test.astype(np.float32))[:, 0],
        "ridge": ridge.forecast(x_test.astype(np.float32))[:, 0],
        "linear_extrapolation": LinearExtrapolationForecaster(horizon=1).forecast(
            x_test.astype(np.float32)
        )[:, 0],
        "noise_floor": data["clean_test"],
    }
    return {name: errors_c(predicted, y_test) for name, predicted in predictions.items()}


def fleet_series(spec: FleetSpec) -> tuple[Fleet, NDArray[np.float64]]:
    fleet = Fleet(
        spec.machines,
        seed=spec.seed,
        overheat=spec.overheat,
        overheat_within_ticks=spec.overheat_within_ticks,
        threshold_c=spec.threshold_c,
    )
    return fleet, fleet.history(0, spec.ticks)


def shift_fleet(series: NDArray[np.float64]) -> tuple[NDArray[np.float64], list[str]]:
    """Every machine's readings moved to another level and range, one profile per machine."""
    shifted = np.empty_like(series)
    names = []
    for machine in range(series.shape[0]):
        name, scale, level, other_scale = SHIFT_PROFILES[machine % len(SHIFT_PROFILES)]
        readings = series[machine]
        mean = readings.mean(axis=0)
        scales = np.full(readings.shape[1], other_scale)
        levels = mean * other_scale * 1.5  # other sensors move to other levels too
        scales[0], levels[0] = scale, level
        shifted[machine] = levels + scales * (readings - mean)
        names.append(name)
    return shifted, names


def machine_ranges(series: NDArray[np.float64], target_index: int = 0) -> NDArray[np.float64]:
    """Each machine's temperature range: 1st to 99th percentile of its readings."""
    low, high = np.percentile(series[:, :, target_index], [1, 99], axis=1)
    return np.asarray(high - low, dtype=np.float64)


def horizon_errors(
    forecaster: Forecaster, series: NDArray[np.float64], horizon: int
) -> dict[str, Any]:
    """Overall and per-step errors in °C, and RMSE relative to each machine's range."""
    ticks = series.shape[1]
    x, y = make_windows(series, forecaster.window, horizon)
    predicted = forecaster.forecast(x)[:, :horizon]
    per_machine = ticks - forecaster.window - horizon + 1
    ranges = np.repeat(machine_ranges(series), per_machine)[:, None]
    diff = predicted.astype(np.float64) - y
    return {
        **errors_c(predicted, y),
        "relative_rmse": float(np.sqrt(np.mean((diff / ranges) ** 2))),
        "next_step": errors_c(predicted[:, 0], y[:, 0]),
        "per_step": {
            "rmse_c": [round(float(v), 4) for v in np.sqrt(np.mean(diff**2, axis=0))],
            "mae_c": [round(float(v), 4) for v in np.mean(np.abs(diff), axis=0)],
            "relative_rmse": [
                round(float(v), 5) for v in np.sqrt(np.mean((diff / ranges) ** 2, axis=0))
            ],
        },
    }


def first_run(mask: NDArray[np.bool_], length: int) -> int | None:
    """Index at which ``mask`` has been true ``length`` times in a row for the first time."""
    run = 0
    for index, value in enumerate(mask.tolist()):
        run = run + 1 if value else 0
        if run >= length:
            return index
    return None


def warning_lead(
    forecaster: Forecaster,
    fleet: Fleet,
    series: NDArray[np.float64],
    threshold_c: float,
    warning_ticks: int = 1,
    crossing_readings: int = 1,
) -> dict[str, Any]:
    """Ticks from the first forecast peak at or over the threshold to the first reading over it.

    With ``warning_ticks`` and ``crossing_readings`` above 1, a warning needs that many
    forecasts in a row and a crossing that many readings in a row: the agent's own rules
    (``alerts.warning_confirm_ticks``, ``alerts.critical_confirm_readings``), which ride out
    single spikes. Counted from each overheat's onset (the simulator's ground truth), so that an
    unrelated earlier false alarm cannot pass for a long lead; false alarms are counted
    separately: healthy machines warned about, and the ticks at which they would be.
    """
    window = forecaster.window
    x, _ = make_windows(series, window, 1)
    per_machine = series.shape[1] - window
    peaks = forecaster.forecast(x).max(axis=1).reshape(series.shape[0], per_machine)
    ends = np.arange(window - 1, window - 1 + per_machine)  # each window's last reading's tick
    leads: list[int | None] = []
    for plan in fleet.overheats:
        hot = series[plan.machine_index, plan.onset_tick :, 0] >= threshold_c
        crossing = first_run(hot, crossing_readings)
        if crossing is None:
            continue
        after_onset = ends >= plan.onset_tick
        warned = first_run(peaks[plan.machine_index][after_onset] >= threshold_c, warning_ticks)
        leads.append(
            None if warned is None else int(crossing + plan.onset_tick - ends[after_onset][warned])
        )
    overheating = {p.machine_index for p in fleet.overheats}
    healthy = [m for m in range(series.shape[0]) if m not in overheating]
    alarms = [first_run(peaks[m] >= threshold_c, warning_ticks) for m in healthy]
    false_ticks = 0
    for m in healthy:
        over = peaks[m] >= threshold_c
        for index in range(len(over)):
            start = index - warning_ticks + 1
            false_ticks += bool(start >= 0 and over[start : index + 1].all())
    known = [lead for lead in leads if lead is not None]
    return {
        "warning_ticks": warning_ticks,
        "crossing_readings": crossing_readings,
        "overheats": len(leads),
        "warned_before_crossing": sum(1 for lead in known if lead > 0),
        "lead_ticks_median": float(np.median(known)) if known else None,
        "lead_ticks_mean": float(np.mean(known)) if known else None,
        "lead_ticks": leads,
        "healthy_machines": len(healthy),
        "false_alarm_machines": sum(1 for alarm in alarms if alarm is not None),
        "false_alarm_ticks": false_ticks,
    }


def fleet_report(
    forecaster: Forecaster, series: NDArray[np.float64], horizon: int
) -> dict[str, Any]:
    baselines: dict[str, Forecaster] = {
        "persistence": PersistenceForecaster(horizon=horizon, window=forecaster.window),
        "linear_extrapolation": LinearExtrapolationForecaster(
            horizon=horizon, window=forecaster.window
        ),
    }
    report: dict[str, Any] = {
        "machines": int(series.shape[0]),
        "ticks": int(series.shape[1]),
        "mean_range_c": round(float(machine_ranges(series).mean()), 3),
        "checkpoint": horizon_errors(forecaster, series, horizon),
    }
    for name, baseline in baselines.items():
        report[name] = horizon_errors(baseline, series, horizon)
    return report


def evaluate(forecaster: Forecaster, spec: FleetSpec | None = None) -> dict[str, Any]:
    """The whole evaluation as one JSON-ready dict: seed_split, fleet, shifted_fleet."""
    spec = spec or FleetSpec()
    fleet, series = fleet_series(spec)
    horizon = forecaster.horizon
    fleet_part = {"seed": spec.seed, **fleet_report(forecaster, series, horizon)}
    fleet_part["warning_lead"] = warning_lead(forecaster, fleet, series, spec.threshold_c)
    fleet_part["alert_warning_lead"] = warning_lead(
        forecaster,
        fleet,
        series,
        spec.threshold_c,
        warning_ticks=spec.warning_confirm_ticks,
        crossing_readings=spec.critical_confirm_readings,
    )
    shifted, names = shift_fleet(series)
    shifted_part: dict[str, Any] = {
        "profiles": {
            name: {"temperature_scale": scale, "level_c": level}
            for name, scale, level, _ in SHIFT_PROFILES
        },
        **fleet_report(forecaster, shifted, horizon),
    }
    per_profile = {}
    for name, *_ in SHIFT_PROFILES:
        rows = [i for i, n in enumerate(names) if n == name]
        per_profile[name] = horizon_errors(forecaster, shifted[rows], horizon)["relative_rmse"]
    shifted_part["relative_rmse_by_profile"] = per_profile
    shifted_part["relative_rmse_vs_fleet"] = round(
        shifted_part["checkpoint"]["relative_rmse"] / fleet_part["checkpoint"]["relative_rmse"], 4
    )
    return {
        "seed_split": seed_split(forecaster),
        "fleet": fleet_part,
        "shifted_fleet": shifted_part,
    }


def plot(forecaster: Forecaster, report: dict[str, Any], path: Path) -> None:
    """A PNG: forecast against actual on the seed split's test part, residuals, and the error
    per horizon step on the held-out fleet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = seed_split_data()
    ticks, actual, clean = data["test_ticks"], data["y_test"], data["clean_test"]
    forecasts = forecaster.forecast(data["x_test"].astype(np.float32))
    next_step = forecasts[:, 0]
    seed = report["seed_split"]
    name = f"{forecaster.kind} ({forecaster.version})"

    figure = plt.figure(figsize=(12, 13))
    grid = figure.add_gridspec(3, 2, height_ratios=[3, 1.6, 2.2])
    top = figure.add_subplot(grid[0, :])
    middle = figure.add_subplot(grid[1, :])
    bottom = figure.add_subplot(grid[2, 0])
    relative = figure.add_subplot(grid[2, 1])
    figure.suptitle(
        f"forewarn forecaster {name}: seed series test split and held-out fleet", fontsize=13
    )
    top.scatter(ticks, actual, s=10, color="0.55", label="reading", zorder=2)
    top.plot(ticks, clean, color="black", lw=1, ls="--", label="true signal (noise-free)")
    top.plot(
        ticks,
        next_step,
        color="tab:blue",
        lw=1.8,
        label=f"next-step forecast (RMSE {seed['checkpoint']['rmse_c']:.2f} °C)",
        zorder=3,
    )
    horizon = forecasts.shape[1]
    if horizon > 1:
        for i, origin in enumerate(range(0, len(ticks) - horizon, max(30, horizon + 10))):
            top.plot(
                ticks[origin : origin + horizon],
                forecasts[origin, :],
                color="tab:orange",
                lw=1.4,
                alpha=0.9,
                label=f"{horizon}-step forecast from one window" if i == 0 else None,
                zorder=4,
            )
    top.set_xlabel("tick (reading number in the seed series)")
    top.set_ylabel("temperature (°C)")
    top.set_title(
        "Forecast against actual, test part of the seed series (targets t = "
        f"{ticks[0]}\u2013{ticks[-1]})",
        fontsize=11,
    )
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize=9, ncol=2)

    residual = next_step - actual
    middle.axhline(0.0, color="black", lw=0.8)
    rmse = seed["checkpoint"]["rmse_c"]
    middle.axhspan(-rmse, rmse, color="tab:blue", alpha=0.1, label=f"\u00b1 RMSE ({rmse:.2f} °C)")
    middle.vlines(ticks, 0.0, residual, color="tab:blue", lw=1)
    middle.scatter(ticks, residual, s=8, color="tab:blue")
    middle.set_xlabel("tick (reading number in the seed series)")
    middle.set_ylabel("forecast \u2212 reading (°C)")
    lines = [
        f"{label}: RMSE {seed[key]['rmse_c']:.2f} °C, MAE {seed[key]['mae_c']:.2f} °C"
        for key, label in (
            ("checkpoint", "this model"),
            ("ridge", "Ridge"),
            ("linear_extrapolation", "linear extrapolation"),
            ("persistence", "persistence"),
            ("noise_floor", "noise floor (true signal)"),
        )
    ]
    middle.text(
        1.0,
        1.02,
        "   ".join(lines[:3]) + "\n" + "   ".join(lines[3:]),
        transform=middle.transAxes,
        ha="right",
        va="bottom",
        fontsize=8,
    )
    middle.set_title("Next-step residuals", fontsize=11, loc="left")
    middle.grid(alpha=0.3)
    middle.legend(loc="lower left", fontsize=8)

    steps = np.arange(1, horizon + 1)
    fleet = report["fleet"]
    for key, label, color in (
        ("checkpoint", "this model", "tab:blue"),
        ("linear_extrapolation", "linear extrapolation", "tab:green"),
        ("persistence", "persistence", "tab:red"),
    ):
        bottom.plot(
            steps,
            fleet[key]["per_step"]["rmse_c"],
            marker="o",
            ms=3,
            color=color,
            label=f"{label} (all steps {fleet[key]['rmse_c']:.2f} °C)",
        )
    bottom.set_xlabel("steps ahead (readings)")
    bottom.set_ylabel("RMSE (°C)")
    bottom.set_title(
        f"Error per step ahead, held-out simulated fleet\n({fleet['machines']} machines \u00d7 "
        f"{fleet['ticks']} readings, with overheats)",
        fontsize=11,
    )
    bottom.set_xlim(0.5, horizon + 0.5)
    bottom.set_ylim(bottom=0)
    bottom.grid(alpha=0.3)
    bottom.legend(loc="upper left", fontsize=8)

    shifted = report["shifted_fleet"]
    for key, label, color in (
        ("checkpoint", "this model", "tab:blue"),
        ("persistence", "persistence", "tab:red"),
    ):
        relative.plot(
            steps,
            np.asarray(fleet[key]["per_step"]["relative_rmse"]) * 100,
            color=color,
            lw=2.5,
            alpha=0.45,
            label=f"{label}, training-like fleet",
        )
        relative.plot(
            steps,
            np.asarray(shifted[key]["per_step"]["relative_rmse"]) * 100,
            color=color,
            ls="--",
            marker="x",
            ms=4,
            label=f"{label}, shifted fleet",
        )
    profiles = "\n".join(
        f"{name.replace('_', ' ')}: ~{p['level_c']:g} °C, range \u00d7{p['temperature_scale']:g}"
        for name, p in shifted["profiles"].items()
    )
    relative.set_xlabel("steps ahead (readings)")
    relative.set_ylabel("RMSE / machine's range (%)")
    relative.set_title(
        "Relative to each machine's range: the same fleet,\nshifted and scaled to other levels",
        fontsize=11,
    )
    relative.text(
        0.98,
        0.04,
        "shifted fleet, one profile per machine:\n" + profiles,
        transform=relative.transAxes,
        ha="right",
        va="bottom",
        fontsize=8,
        bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.8"},
    )
    relative.set_xlim(0.5, horizon + 0.5)
    relative.set_ylim(bottom=0)
    relative.grid(alpha=0.3)
    relative.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
