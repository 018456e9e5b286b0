"""The training loop of the networks: weighted multi-step loss, cosine schedule, early stopping.

The loss is measured in the network's own normalised units (each window's target centred and
scaled as its inputs are), so a hot, wide-ranging machine and a cool, narrow one count alike.
The first step gets extra weight: it is the forecast the anomaly score and the seed's
comparison read, while the later steps give the warning its lead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from models.options import FitOptions, ProgressFn
from models.zoo import RecurrentForecaster

__all__ = ["FitOptions", "FitResult", "ProgressFn", "fit_network", "weighted_loss"]


@dataclass
class FitResult:
    """The best epoch's weights and the loss history (model-space weighted MSE)."""

    state_dict: dict[str, torch.Tensor]
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)


def step_weights(horizon: int, first_step_weight: float) -> torch.Tensor:
    """Loss weight of each horizon step, summing to one."""
    weights = torch.ones(horizon)
    weights[0] += first_step_weight
    return weights / weights.sum()


def weighted_loss(
    module: RecurrentForecaster,
    windows: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    huber_delta: float | None = None,
) -> torch.Tensor:
    """Step-weighted squared error, or Huber loss (squared within ``huber_delta``, linear
    beyond), in model units."""
    inputs, centre, scale = module.normalise(windows)
    error = module.forward_normalised(inputs) - (targets - centre) / scale
    if huber_delta is None:
        per_value = error.square()
    else:
        size = error.abs()
        quadratic = size.clamp(max=huber_delta)
        per_value = quadratic.square() + 2.0 * huber_delta * (size - quadratic)
    return (per_value * weights).sum(dim=1).mean()


def evaluate_loss(
    module: RecurrentForecaster,
    windows: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    huber_delta: float | None = None,
    batch: int = 4096,
) -> float:
    module.eval()
    total = 0.0
    with torch.inference_mode():
        for start in range(0, len(windows), batch):
            xb, yb = windows[start : start + batch], targets[start : start + batch]
            total += float(weighted_loss(module, xb, yb, weights, huber_delta)) * len(xb)
    return total / max(1, len(windows))


def fit_network(
    module: RecurrentForecaster,
    windows: NDArray[np.float32],
    targets: NDArray[np.float32],
    validation: tuple[NDArray[np.float32], NDArray[np.float32]] | None,
    options: FitOptions,
    device: torch.device,
    progress: ProgressFn,
) -> FitResult:
    """Fit in place and return the best validation epoch's weights (the last without one).

    Deterministic for a given seed, data and device: the shuffling has its own generator and
    the global one (dropout) is seeded here.
    """
    torch.manual_seed(options.seed)
    module.to(device)
    x_all = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)).to(device)
    y_all = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32)).to(device)
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    if validation is not None and len(validation[0]):
        x_val = torch.from_numpy(np.ascontiguousarray(validation[0], dtype=np.float32)).to(device)
        y_val = torch.from_numpy(np.ascontiguousarray(validation[1], dtype=np.float32)).to(device)
    weights = step_weights(y_all.shape[1], options.first_step_weight).to(device)
    delta = options.huber_delta if options.loss == "huber" else None
    optimiser = torch.optim.AdamW(
        module.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay
    )
    batches = math.ceil(len(x_all) / options.batch_size)
    cosine: torch.optim.lr_scheduler.LRScheduler | None = None
    plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
    if options.schedule == "cosine":
        cosine = torch.optim.lr_scheduler.OneCycleLR(
            optimiser,
            max_lr=options.learning_rate,
            total_steps=options.epochs * batches,
            pct_start=options.warmup_fraction,
            anneal_strategy="cos",
        )
    else:
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=0.5, patience=1)
    generator = torch.Generator().manual_seed(options.seed)
    best_loss, stale = math.inf, 0
    result = FitResult(state_dict={}, best_epoch=0)
    for epoch in range(1, options.epochs + 1):
        module.train()
        order = torch.randperm(len(x_all), generator=generator).to(device)
        total = 0.0
        for number, start in enumerate(range(0, len(order), options.batch_size), 1):
            index = order[start : start + options.batch_size]
            optimiser.zero_grad(set_to_none=True)
            loss = weighted_loss(module, x_all[index], y_all[index], weights, delta)
            loss.backward()
            nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            optimiser.step()
            if cosine is not None:
                cosine.step()
            total += float(loss.detach()) * len(index)
            if number % 50 == 0 or number == batches:
                progress(f"  batch {number}/{batches} loss {total / (start + len(index)):.5f}")
        train_loss = total / len(x_all)
        val_loss = (
            evaluate_loss(module, x_val, y_val, weights, delta)
            if x_val is not None and y_val is not None
            else train_loss
        )
        if plateau is not None:
            plateau.step(val_loss)
        result.history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
        progress(
            f"epoch {epoch}/{options.epochs} train loss {train_loss:.5f} "
            f"validation loss {val_loss:.5f} lr {optimiser.param_groups[0]['lr']:.1e}"
        )
        if val_loss < best_loss - 1e-7 or not result.state_dict:
            best_loss, stale, result.best_epoch = val_loss, 0, epoch
            result.state_dict = {
                k: v.detach().cpu().clone() for k, v in module.state_dict().items()
            }
        else:
            stale += 1
            if stale >= options.patience:
                progress(f"early stop: no validation improvement for {options.patience} epochs")
                break
    module.load_state_dict(result.state_dict)
    module.to("cpu")
    return result
