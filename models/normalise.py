"""Per-window (reversible instance) normalisation, and the global scaler it replaces.

A plant's machines run at their own levels and ranges: a bearing at 45 °C, an oven at 180 °C.
A model that sees readings through a scaler fitted on the training fleet's ranges meets values it
never saw and extrapolates badly. Normalising each window by its own per-feature centre and
scale, forecasting in those units and mapping the forecast back makes a forecaster equivariant
to any shift and scale of a machine's readings: ``f(a·x + b) = a·f(x) + b`` for every feature's
a > 0 and b. It then forecasts a 180 °C oven exactly as well, relative to the oven's range, as
the training fleet.

The centre is the window's mean. The scale is a robust estimate of the sensor's noise: the
median absolute step between consecutive readings (one spike moves it little), so that the
network sees the machine's cycle in units of its noise, a ratio that does not depend on the
phase of the cycle the window caught. It is floored at a twentieth of the window's standard
deviation (a quantised reading whose steps are mostly zero) and at a small absolute and
relative value, so that a flat window (a stuck sensor) maps to zeros instead of dividing by zero.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from numpy.typing import NDArray

Normalisation = Literal["window", "global"]
NORMALISATIONS: tuple[Normalisation, ...] = ("window", "global")

ABSOLUTE_FLOOR = 1e-3
RELATIVE_FLOOR = 1e-5
SPREAD_FLOOR = 0.05
NOISE_FROM_STEPS = 0.6745 * 2**0.5
"""median |x[t+1] - x[t]| of Gaussian noise of standard deviation σ is 0.954·σ."""


def window_stats_np(
    windows: NDArray[np.floating],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-window, per-feature centre and scale of (batch, window, features) readings.

    Returns two arrays of shape (batch, 1, features), computed in float64.
    """
    data = np.asarray(windows, dtype=np.float64)
    centre = data.mean(axis=1, keepdims=True)
    noise = np.median(np.abs(np.diff(data, axis=1)), axis=1, keepdims=True) / NOISE_FROM_STEPS
    spread = data.std(axis=1, keepdims=True)
    floor = np.maximum(ABSOLUTE_FLOOR, RELATIVE_FLOOR * np.abs(centre))
    return centre, np.maximum(np.maximum(noise, SPREAD_FLOOR * spread), floor)


def window_stats_torch(windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same as :func:`window_stats_np` for a tensor, on the tensor's device and dtype."""
    centre = windows.mean(dim=1, keepdim=True)
    steps = (windows[:, 1:] - windows[:, :-1]).abs()
    noise = steps.median(dim=1, keepdim=True).values / NOISE_FROM_STEPS
    spread = windows.std(dim=1, unbiased=False, keepdim=True)
    floor = (RELATIVE_FLOOR * centre.abs()).clamp_min(ABSOLUTE_FLOOR)
    return centre, torch.maximum(torch.maximum(noise, SPREAD_FLOOR * spread), floor)
