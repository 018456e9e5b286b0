"""Training a forecaster on simulated fleets, with an honest split and a baseline to beat.

The data are episodes: independent fleets, each with healthy and overheating machines, laid
end to end in time. The split is by whole episodes in time order (train, then validation, then
test), so no window of the test period, nor any window overlapping it, is seen in training. The
scaler is fitted on the training episodes only.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from models.checkpoint import Checkpoint, resolve_device
from models.data import make_windows
from models.scaling import FeatureScaler
from models.zoo import RecurrentForecaster
from simulator.fleet import Fleet
from simulator.signal import FEATURES, seed_series

logger = logging.getLogger(__name__)

MODEL_VERSION_PREFIX = "lstm-h"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained model; the defaults make the shipped checkpoint."""

    episodes: int = 12
    machines: int = 32
    ticks: int = 600
    overheat_fraction: float = 0.4
    window: int = 20
    horizon: int = 30
    hidden: int = 64
    layers: int = 2
    dropout: float = 0.2
    cell: str = "lstm"
    epochs: int = 12
    batch_size: int = 256
    learning_rate: float = 1e-3
    patience: int = 3
    stride: int = 2
    seed: int = 2024
    threshold_c: float = 95.0
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("machines", "window", "horizon", "epochs", "batch_size", "stride", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.cell not in ("lstm", "gru"):
            raise ValueError(f"cell must be 'lstm' or 'gru', not {self.cell!r}")
        if self.episodes < 3:
            raise ValueError("episodes must be at least 3 (train, validation, test)")
        if self.ticks < self.window + self.horizon + 40:
            raise ValueError("ticks must exceed window + horizon by at least 40")
        if not 0.0 <= self.overheat_fraction <= 1.0:
            raise ValueError("overheat_fraction must be within [0, 1]")


@dataclass(frozen=True)
class Split:
    train: list[NDArray[np.float64]]
    validation: list[NDArray[np.float64]]
    test: list[NDArray[np.float64]]


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
        )
        episodes.append(fleet.history(0, config.ticks))
    n_val = max(1, round(config.episodes * 0.15))
    n_train = config.episodes - 2 * n_val
    return Split(
        train=episodes[:n_train],
        validation=episodes[n_train : n_train + n_val],
        test=episodes[n_train + n_val :],
    )


def _windows(
    episodes: list[NDArray[np.float64]], config: TrainConfig, stride: int
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    pairs = [make_windows(e, config.window, config.horizon, 0, stride) for e in episodes]
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])


def errors_c(predicted: NDArray[np.floating], actual: NDArray[np.floating]) -> dict[str, float]:
    diff = np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
    return {
        "rmse_c": float(np.sqrt(np.mean(diff**2))),
        "mae_c": float(np.mean(np.abs(diff))),
    }


ProgressFn = Callable[[str], None]


def _stderr_progress(message: str) -> None:
    end = "\r" if message.startswith("  batch") and sys.stderr.isatty() else "\n"
    if end == "\n" and message.startswith("  batch"):
        return
    print(message, end=end, file=sys.stderr, flush=True)


def _predict(
    module: nn.Module, x: NDArray[np.float32], device: torch.device, batch: int = 4096
) -> NDArray[np.float32]:
    module.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(x), batch):
            chunk = torch.from_numpy(x[start : start + batch]).to(device)
            out.append(module(chunk).cpu().numpy())
    return np.concatenate(out)


def train(config: TrainConfig, progress: ProgressFn = _stderr_progress) -> Checkpoint:
    """Train, keep the best validation epoch, and report test errors against persistence."""
    started = time.monotonic()
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    device = resolve_device(config.device)
    split = generate_episodes(config)
    scaler = FeatureScaler.fit(np.concatenate([e.reshape(-1, e.shape[-1]) for e in split.train]))
    x_train, y_train = _windows(split.train, config, config.stride)
    x_val, y_val = _windows(split.validation, config, config.stride)
    x_test, y_test = _windows(split.test, config, 1)
    to_scaled = scaler.transform
    t_min, t_span = float(scaler.minimum[0]), float(scaler.span[0])
    ys_train = ((y_train - t_min) / t_span).astype(np.float32)
    xs_val, ys_val = to_scaled(x_val), ((y_val - t_min) / t_span).astype(np.float32)
    progress(
        f"training {config.cell} h={config.horizon} on {len(x_train):,} windows "
        f"({len(x_val):,} validation, {len(x_test):,} test) on {device}"
    )

    module = RecurrentForecaster(
        n_features=len(FEATURES),
        hidden=config.hidden,
        layers=config.layers,
        dropout=config.dropout,
        horizon=config.horizon,
        cell=config.cell,
    ).to(device)
    optimiser = torch.optim.Adam(module.parameters(), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=0.5, patience=1)
    loss_fn = nn.MSELoss()
    x_all = torch.from_numpy(to_scaled(x_train))
    y_all = torch.from_numpy(ys_train)
    generator = torch.Generator().manual_seed(config.seed)
    best_loss, best_state, stale_epochs = math.inf, None, 0
    batches = math.ceil(len(x_all) / config.batch_size)
    for epoch in range(1, config.epochs + 1):
        module.train()
        order = torch.randperm(len(x_all), generator=generator)
        total = 0.0
        for number, start in enumerate(range(0, len(order), config.batch_size), 1):
            index = order[start : start + config.batch_size]
            xb, yb = x_all[index].to(device), y_all[index].to(device)
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(module(xb), yb)
            loss.backward()
            nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            optimiser.step()
            total += float(loss.detach()) * len(index)
            if number % 50 == 0 or number == batches:
                progress(f"  batch {number}/{batches} loss {total / (start + len(index)):.5f}")
        val_loss = float(np.mean((_predict(module, xs_val, device) - ys_val) ** 2))
        schedule.step(val_loss)
        progress(
            f"epoch {epoch}/{config.epochs} train loss {total / len(x_all):.5f} "
            f"validation loss {val_loss:.5f} lr {optimiser.param_groups[0]['lr']:.1e}"
        )
        if val_loss < best_loss - 1e-6:
            best_loss, stale_epochs = val_loss, 0
            best_state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
        else:
            stale_epochs += 1
            if stale_epochs >= config.patience:
                progress(f"early stop: no validation improvement for {config.patience} epochs")
                break
    assert best_state is not None
    module.load_state_dict(best_state)

    predicted = _predict(module, to_scaled(x_test), device) * t_span + t_min
    persistence = np.repeat(x_test[:, -1, :1], config.horizon, axis=1)
    report = {
        "config": asdict(config),
        "train_seconds": round(time.monotonic() - started, 1),
        "test_windows": len(x_test),
        "test_next_step": errors_c(predicted[:, 0], y_test[:, 0]),
        "test_all_steps": errors_c(predicted, y_test),
        "persistence_next_step": errors_c(persistence[:, 0], y_test[:, 0]),
        "persistence_all_steps": errors_c(persistence, y_test),
        "seed_split_next_step": _seed_split_errors(module, scaler, config, device),
    }
    return Checkpoint(
        kind=config.cell,
        version=f"{config.cell}-h{config.horizon}-s{config.seed}",
        features=FEATURES,
        window=config.window,
        horizon=config.horizon,
        hidden=config.hidden,
        layers=config.layers,
        dropout=config.dropout,
        scaler=scaler,
        state_dict=best_state,
        report=report,
    )


def _seed_split_errors(
    module: nn.Module, scaler: FeatureScaler, config: TrainConfig, device: torch.device
) -> dict[str, float]:
    """Next-step errors on the seed's own test split (targets t = 804..999), for reference."""
    series = seed_series().readings
    x, y = make_windows(series, config.window, 1)
    test_from = int(len(x) * 0.8)
    predicted = _predict(module, scaler.transform(x[test_from:]), device)[:, 0]
    predicted_c = predicted * float(scaler.span[0]) + float(scaler.minimum[0])
    return errors_c(predicted_c, y[test_from:, 0])
