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

Spikes (one reading far off its neighbours, e.g. the simulator's +5-15 °C on 2 % of readings)
can be taken out of a window before it is normalised (:func:`despike_torch`): a spike at the
end of a window would otherwise read as a sudden rise, and the forecast extrapolates it towards
the threshold, a warning caused by a sensor glitch alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:  # torch is imported where tensors are handled: serving runs without it
    import torch

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
    """The same as :func:`window_stats_np` for a tensor, on the tensor's device and dtype.

    For an even number of steps (an odd window) the median is the lower of the two middle
    values (torch's rule), where :func:`window_stats_np` averages them; the networks use this
    one and :func:`network_window_stats_np` reproduces it without torch.
    """
    import torch

    centre = windows.mean(dim=1, keepdim=True)
    steps = (windows[:, 1:] - windows[:, :-1]).abs()
    noise = steps.median(dim=1, keepdim=True).values / NOISE_FROM_STEPS
    spread = windows.std(dim=1, unbiased=False, keepdim=True)
    floor = (RELATIVE_FLOOR * centre.abs()).clamp_min(ABSOLUTE_FLOOR)
    return centre, torch.maximum(torch.maximum(noise, SPREAD_FLOOR * spread), floor)


DESPIKE_SIGMAS = 3.0
"""A reading further than this many noise scales from the median of itself and its two
neighbours is a spike. Gaussian noise rarely gets there; the seed's spikes (2.5-7.5 σ) mostly do."""


def _median_of_three(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.maximum(torch.minimum(a, b), torch.minimum(torch.maximum(a, b), c))


def despike_torch(windows: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``windows`` (batch, window, features) with isolated spikes replaced by a local median.

    Each reading is compared with the median of itself and two neighbours: the readings either
    side inside the window, the two before it for the newest reading (so a spike that just
    arrived is caught at once) and the two after it for the oldest. ``scale`` (batch, 1,
    features) is the window's noise scale from :func:`window_stats_torch`, which spikes barely
    move. A genuine step is kept: from its second reading on, its neighbours agree with it.
    """
    import torch

    if windows.shape[1] < 3:
        return windows
    left = torch.cat([windows[:, 1:2], windows[:, :-2], windows[:, -3:-2]], dim=1)
    right = torch.cat([windows[:, 2:3], windows[:, 2:], windows[:, -2:-1]], dim=1)
    median = _median_of_three(left, windows, right)
    spike = (windows - median).abs() > DESPIKE_SIGMAS * scale
    return torch.where(spike, median, windows)


def network_window_stats_np(
    windows: NDArray[np.floating],
) -> tuple[NDArray[np.floating], NDArray[np.floating]]:
    """:func:`window_stats_torch` in numpy, in the windows' own float dtype: what a network
    computes in its forward pass, for serving and testing without torch.

    The median of an even number of steps is the lower middle value, as torch takes it.
    """
    centre = windows.mean(axis=1, keepdims=True)
    steps = np.abs(np.diff(windows, axis=1))
    if steps.shape[1]:
        middle = (steps.shape[1] - 1) // 2
        noise = np.partition(steps, middle, axis=1)[:, middle : middle + 1] / NOISE_FROM_STEPS
    else:  # a one-step window has no steps: the floors decide
        noise = np.zeros_like(centre)
    spread = windows.std(axis=1, keepdims=True)
    floor = np.maximum(RELATIVE_FLOOR * np.abs(centre), ABSOLUTE_FLOOR)
    scale = np.maximum(np.maximum(noise, SPREAD_FLOOR * spread), floor)
    return centre, scale.astype(windows.dtype, copy=False)


def despike_np(windows: NDArray[np.floating], scale: NDArray[np.floating]) -> NDArray[np.floating]:
    """:func:`despike_torch` in numpy: isolated spikes replaced by the median of three."""
    if windows.shape[1] < 3:
        return windows
    left = np.concatenate([windows[:, 1:2], windows[:, :-2], windows[:, -3:-2]], axis=1)
    right = np.concatenate([windows[:, 2:3], windows[:, 2:], windows[:, -2:-1]], axis=1)
    median = np.maximum(np.minimum(left, windows), np.minimum(np.maximum(left, windows), right))
    spike = np.abs(windows - median) > DESPIKE_SIGMAS * scale
    return np.where(spike, median, windows)
