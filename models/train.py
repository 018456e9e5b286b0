"""Training a forecaster on simulated fleets or on a plant's own history, with an honest split.

Simulated data are episodes: independent fleets, each with healthy and overheating machines,
laid end to end in time. The split is by whole episodes in time order (train, then validation,
then test), so no window of the test period, nor any window overlapping it, is seen in training.
A plant's history is split in time per machine the same way (70 / 15 / 15 %). Whatever is fitted
on data (a global scaler, the weights) is fitted on the training part only; the validation part
picks the best epoch and stops training early; the test part is only reported.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from config.fields import FEATURES
from models.base import NETWORK_KINDS, TrainableForecaster
from models.baselines import (
    LinearExtrapolationForecaster,
    PersistenceForecaster,
    RidgeForecaster,
)
from models.data import make_windows
from models.normalise import NORMALISATIONS
from models.options import FitOptions, ProgressFn
from models.skill import DRIFT_REFERENCE_KEY, measure_reference
from simulator.faults import CROSSING_KINDS, MIN_RAMP_RUN_TICKS, parse_mix
from simulator.fleet import Fleet
from simulator.signal import seed_series

if TYPE_CHECKING:  # torch is imported when a network is trained, not to read the options
    from models.checkpoint import Checkpoint

logger = logging.getLogger(__name__)

TRAINABLE_KINDS: tuple[str, ...] = (*NETWORK_KINDS, "ridge")
SEED_SPLIT_SEED = 42
"""The seed series' generator seed: a training fleet never uses it."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained model; the defaults make the shipped checkpoint."""

    kind: str = "lstm"
    normalisation: str = "window"
    episodes: int = 16
    machines: int = 32
    ticks: int = 600
    overheat_fraction: float = 0.4
    # Besides the overheats, each training fleet has sensors that turn noisy for a while and
    # coolers that fail (a linear rise): a model that never saw a noisy window extrapolates its
    # noise into a steep rise, and one that saw only quadratic overheats lags a linear one.
    # The benchmark's fleets use other seeds (see bench/alerts.py).
    faults: str = "noisy_sensor=4,cooling_failure=3"
    # Opt-in: taking spikes out of the input windows (models.normalise.despike_torch) measured
    # no better on bench/alerts than letting the network learn to ignore them.
    despike: bool = False
    window: int = 20
    # 15, not more: from one 20-step window, which cannot tell a machine's level, forecasts
    # further ahead grow unsure whether a rising machine is halfway up its cycle or near its
    # top, and a healthy machine's forecast peak then reaches the threshold (measured: false
    # warnings on 6 of 24 healthy machines at 30 steps, none at 15, with a longer median lead
    # than the level-aware model it replaces had at 30). See docs/model.md.
    horizon: int = 15
    hidden: int = 64
    layers: int = 2
    dropout: float = 0.0
    epochs: int = 10
    batch_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    first_step_weight: float = 10.0
    loss: str = "mse"
    schedule: str = "cosine"
    patience: int = 4
    stride: int = 2
    alpha: float = 1.0
    seed: int = 2024
    threshold_c: float = 95.0
    device: str = "auto"
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("machines", "window", "horizon", "epochs", "batch_size", "stride", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.kind not in TRAINABLE_KINDS:
            raise ValueError(f"kind must be one of {', '.join(TRAINABLE_KINDS)}, not {self.kind!r}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(
                f"normalisation must be one of {', '.join(NORMALISATIONS)}, "
                f"not {self.normalisation!r}"
            )
        if self.episodes < 3:
            raise ValueError("episodes must be at least 3 (train, validation, test)")
        if self.ticks < self.window + self.horizon + 40:
            raise ValueError("ticks must exceed window + horizon by at least 40")
        if not 0.0 <= self.overheat_fraction <= 1.0:
            raise ValueError("overheat_fraction must be within [0, 1]")
        parse_mix(self.faults)  # a clear error for an unknown scenario or a missing count
        if self.seed == SEED_SPLIT_SEED:
            raise ValueError(
                f"seed {SEED_SPLIT_SEED} generates the seed series that evaluation tests on; "
                "train with another seed"
            )
        self.fit_options()  # validates the optimiser settings

    def fit_options(self) -> FitOptions:
        return FitOptions(
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            patience=self.patience,
            first_step_weight=self.first_step_weight,
            loss=self.loss,  # type: ignore[arg-type]
            schedule=self.schedule,  # type: ignore[arg-type]
            seed=self.seed,
        )


@dataclass(frozen=True)
class Split:
    """Series of shape (machines, ticks, features), in time order within each part."""

    train: list[NDArray[np.float64]]
    validation: list[NDArray[np.float64]]
    test: list[NDArray[np.float64]]


def episode_faults(config: TrainConfig) -> dict[str, int]:
    """The fault mix of one training fleet: ``config.faults``, fitted to small configurations.

    Fleets shorter than a ramp fault needs get no ramps, and the counts are trimmed to the
    machines the overheats leave free, so a quick ``--machines 4 --ticks 100`` run still works.
    """
    mix = parse_mix(config.faults)
    if config.ticks < MIN_RAMP_RUN_TICKS:
        mix = {kind: count for kind, count in mix.items() if kind not in CROSSING_KINDS}
    free = config.machines - round(config.machines * config.overheat_fraction)
    fitted: dict[str, int] = {}
    for kind, count in mix.items():
        fitted[kind] = min(count, max(0, free))
        free -= fitted[kind]
    return {kind: count for kind, count in fitted.items() if count}


def generate_episodes(config: TrainConfig) -> Split:
    """Simulated fleets in time order, split 70/15/15 by whole episodes."""
    rng = np.random.default_rng(config.seed)
    episodes = []
    for _ in range(config.episodes):
        fleet = Fleet(
            machines=config.machines,
            seed=int(rng.integers(0, 2**31 - 1)),
            overheat=round(config.machines * config.overheat_fraction),
            # Never below the 40 ticks an overheat needs (short --ticks would crash otherwise).
            overheat_within_ticks=max(40, int(rng.uniform(0.25, 0.9) * config.ticks)),
            threshold_c=config.threshold_c,
            faults=episode_faults(config),
            run_ticks=config.ticks,
        )
        episodes.append(fleet.history(0, config.ticks))
    n_val = max(1, round(config.episodes * 0.15))
    n_train = config.episodes - 2 * n_val
    return Split(
        train=episodes[:n_train],
        validation=episodes[n_train : n_train + n_val],
        test=episodes[n_train + n_val :],
    )


def split_history(series: list[NDArray[np.float64]], config: TrainConfig) -> Split:
    """Each machine's history split in time: the first 70 % train, 15 % validation, 15 % test.

    A machine too short to give every part one window goes to training whole.
    """
    need = config.window + config.horizon
    parts: tuple[list[NDArray[np.float64]], ...] = ([], [], [])
    for machine in series:
        ticks = len(machine)
        train_end, validation_end = int(ticks * 0.7), int(ticks * 0.85)
        if min(train_end, validation_end - train_end, ticks - validation_end) < need:
            if ticks >= need:
                parts[0].append(machine[np.newaxis])
            continue
        for part, (start, end) in zip(
            parts,
            ((0, train_end), (train_end, validation_end), (validation_end, ticks)),
            strict=True,
        ):
            part.append(machine[np.newaxis, start:end])
    if not parts[0]:
        raise ValueError(f"no machine has the {need} readings one training window needs")
    if not parts[1] or not parts[2]:
        raise ValueError(
            f"too little history to hold out validation and test data: a machine needs at least "
            f"{int(np.ceil(need / 0.15))} readings"
        )
    return Split(train=parts[0], validation=parts[1], test=parts[2])


def split_segments(
    machines: list[tuple[NDArray[np.float64], list[tuple[int, int]]]], config: TrainConfig
) -> Split:
    """Like :func:`split_history`, for histories with gaps: each machine's readings are split
    in time at 70 % and 85 % of them, and each part keeps the pieces of the machine's unbroken
    segments (``(start, stop)`` row ranges) that fall in it, so no window spans a gap, a
    machine change or a part boundary. Pieces shorter than one window and its horizon go.
    """
    need = config.window + config.horizon
    parts: tuple[list[NDArray[np.float64]], ...] = ([], [], [])
    for series, runs in machines:
        ticks = len(series)
        cuts = (
            (0, int(ticks * 0.7)),
            (int(ticks * 0.7), int(ticks * 0.85)),
            (int(ticks * 0.85), ticks),
        )
        for part, (low, high) in zip(parts, cuts, strict=True):
            for start, stop in runs:
                start, stop = max(start, low), min(stop, high)
                if stop - start >= need:
                    part.append(series[np.newaxis, start:stop])
    if not parts[0]:
        raise ValueError(
            f"no unbroken run of {need} readings (window + horizon) in the training part of "
            "the recording: record longer"
        )
    if not parts[1] or not parts[2]:
        raise ValueError(
            "too little unbroken history to hold out validation and test data: each of the last "
            f"15 % and the 15 % before it needs a run of {need} readings; record longer"
        )
    return Split(train=parts[0], validation=parts[1], test=parts[2])


def windows_of(
    series: list[NDArray[np.float64]], config: TrainConfig, stride: int, target_index: int = 0
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    pairs = [make_windows(s, config.window, config.horizon, target_index, stride) for s in series]
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])


def errors_c(predicted: NDArray[np.floating], actual: NDArray[np.floating]) -> dict[str, float]:
    diff = np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
    return {
        "rmse_c": float(np.sqrt(np.mean(diff**2))),
        "mae_c": float(np.mean(np.abs(diff))),
    }


def _stderr_progress(message: str) -> None:
    """Batch lines overwrite each other on a terminal (a progress bar); elsewhere only epochs."""
    end = "\r" if message.startswith("  batch") and sys.stderr.isatty() else "\n"
    if end == "\n" and message.startswith("  batch"):
        return
    print(message, end=end, file=sys.stderr, flush=True)


def new_forecaster(
    config: TrainConfig, features: tuple[str, ...] = FEATURES, target_index: int = 0
) -> TrainableForecaster:
    """The untrained model a config describes."""
    if config.kind == "ridge":
        return RidgeForecaster(
            horizon=config.horizon,
            window=config.window,
            features=features,
            target_index=target_index,
            alpha=config.alpha,
            normalisation=config.normalisation,
            version=f"ridge-h{config.horizon}-s{config.seed}",
        )
    from models.checkpoint import TorchForecaster

    return TorchForecaster.new(
        kind=config.kind,
        horizon=config.horizon,
        window=config.window,
        features=features,
        target_index=target_index,
        hidden=config.hidden,
        layers=config.layers,
        dropout=config.dropout,
        normalisation=config.normalisation,
        seed=config.seed,
        despike=config.despike,
        device=config.device,
        threads=config.threads,
    )


def train(
    config: TrainConfig,
    progress: ProgressFn = _stderr_progress,
    split: Split | None = None,
    features: tuple[str, ...] = FEATURES,
    target_index: int = 0,
) -> Checkpoint:
    """Fit on the training part, keep the best validation epoch, report test errors.

    ``split`` defaults to simulated episodes (``generate_episodes``); pass a plant's history
    (``split_history``) to train on it instead.
    """
    from models.checkpoint import TorchForecaster

    started = time.monotonic()
    np.random.seed(config.seed)
    data = split or generate_episodes(config)
    x_train, y_train = windows_of(data.train, config, config.stride, target_index)
    x_val, y_val = windows_of(data.validation, config, config.stride, target_index)
    x_test, y_test = windows_of(data.test, config, 1, target_index)
    forecaster = new_forecaster(config, features, target_index)
    device = getattr(forecaster, "device", "cpu")
    progress(
        f"training {config.kind} ({config.normalisation} normalisation) h={config.horizon} on "
        f"{len(x_train):,} windows ({len(x_val):,} validation, {len(x_test):,} test) on {device}"
    )
    if isinstance(forecaster, TorchForecaster):
        forecaster.fit(x_train, y_train, (x_val, y_val), config.fit_options(), progress)
        checkpoint = forecaster.checkpoint
    else:
        assert isinstance(forecaster, RidgeForecaster)
        forecaster.fit(x_train, y_train)
        checkpoint = forecaster.to_checkpoint()
        progress(f"validation RMSE {errors_c(forecaster.forecast(x_val), y_val)['rmse_c']:.3f} °C")
    predicted = forecaster.forecast(x_test)
    persistence = PersistenceForecaster(
        config.horizon, config.window, features, target_index
    ).forecast(x_test)
    linear = LinearExtrapolationForecaster(
        config.horizon, config.window, features, target_index
    ).forecast(x_test)
    report: dict[str, Any] = {
        "config": asdict(config),
        "train_seconds": round(time.monotonic() - started, 1),
        "train_windows": len(x_train),
        "validation_windows": len(x_val),
        "test_windows": len(x_test),
        "test_next_step": errors_c(predicted[:, 0], y_test[:, 0]),
        "test_all_steps": errors_c(predicted, y_test),
        "persistence_next_step": errors_c(persistence[:, 0], y_test[:, 0]),
        "persistence_all_steps": errors_c(persistence, y_test),
        "linear_extrapolation_all_steps": errors_c(linear, y_test),
        # The agent's drift watch compares each machine's live skill with this one.
        DRIFT_REFERENCE_KEY: measure_reference(predicted, x_test, y_test, target_index).as_report(),
    }
    if features == FEATURES and target_index == 0 and config.window == 20:
        report["seed_split_next_step"] = seed_split_next_step(forecaster)
    checkpoint.report = {**checkpoint.report, **report}
    return checkpoint


def seed_split_next_step(forecaster: TrainableForecaster) -> dict[str, float]:
    """Next-step errors on the seed's own test split (targets t = 804..999), for reference."""
    x, y = make_windows(seed_series().readings, forecaster.window, 1)
    test_from = int(len(x) * 0.8)
    return errors_c(forecaster.forecast(x[test_from:])[:, 0], y[test_from:, 0])
