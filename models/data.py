"""Turning series into (window, next-H-temperatures) training pairs."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

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


class DataError(ValueError):
    """A history file that cannot be trained on; the message says where and why."""


def read_csv(
    path: Path, features: Sequence[str], group: str | None = None
) -> list[NDArray[np.float64]]:
    """One (ticks, features) array per machine from a CSV file with a header row.

    Rows are in time order. With ``group`` (a column naming the machine), rows are split by its
    value, keeping their order, so no window spans two machines. Every feature cell must be a
    finite number: a gap would make windows that never happened.
    """
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from error
    with handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [name for name in (*features, *([group] if group else [])) if name not in header]
        if missing:
            raise DataError(f"{path} has no column {', '.join(missing)} (columns: {header})")
        rows: dict[str, list[list[float]]] = {}
        for line, row in enumerate(reader, start=2):
            values = []
            for name in features:
                cell = row[name]
                try:
                    value = float(cell)
                except (TypeError, ValueError):
                    value = math.nan
                if not math.isfinite(value):
                    raise DataError(f"{path}:{line}: column {name!r} is {cell!r}, not a number")
                values.append(value)
            rows.setdefault(row[group] if group else "", []).append(values)
    if not rows:
        raise DataError(f"{path} has no data rows")
    return [np.asarray(values, dtype=np.float64) for values in rows.values()]
