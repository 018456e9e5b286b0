"""Turning series into (window, next-H-temperatures) training pairs."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray


def make_windows(
    series: NDArray[np.floating],
    window: int,
    horizon: int,
    target_index: int = 0,
    stride: int = 1,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Every window of ``window`` steps and the ``horizon`` target values that follow it.

    ``series`` has shape (machines, ticks, features) or (ticks, features); windows never span
    two machines. Returns X of shape (n, window, features) and Y of shape (n, horizon).
    """
    data = np.asarray(series, dtype=np.float32)
    if data.ndim == 2:
        data = data[np.newaxis]
    _, ticks, features = data.shape
    count = ticks - window - horizon + 1
    if count < 1:
        raise ValueError(
            f"series of {ticks} ticks is too short for window {window} + horizon {horizon}"
        )
    # (machines, count, features, window) -> (machines, count, window, features)
    views = sliding_window_view(data[:, : ticks - horizon], window, axis=1)[:, :count]
    x = np.moveaxis(views, -1, 2)[:, ::stride]
    targets = sliding_window_view(data[:, window:, target_index], horizon, axis=1)[:, :count]
    y = targets[:, ::stride]
    return (
        np.ascontiguousarray(x.reshape(-1, window, features)),
        np.ascontiguousarray(y.reshape(-1, horizon)),
    )
