"""The forecaster contract: what the agent needs from any model it serves, and what training
and evaluation need on top."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from config.model import DEFAULT_CUDA_CHUNK_SIZE

__all__ = ["DEFAULT_CUDA_CHUNK_SIZE", "NETWORK_KINDS", "Forecaster", "TrainableForecaster"]

NETWORK_KINDS: tuple[str, ...] = ("rnn", "lstm", "gru", "bilstm")
"""Recurrent networks (models.zoo), trained by gradient descent."""


@runtime_checkable
class Forecaster(Protocol):
    """Forecasts the next ``horizon`` temperatures (°C) of a batch of windows.

    Windows arrive in sensor units, shape (batch, window, len(features)), columns in
    ``features`` order; the result has shape (batch, horizon). Scaling is the forecaster's own
    business, so every caller hands over raw readings and gets back degrees. A forecaster may
    also offer ``warm_up()`` (called once before serving) and a ``device`` attribute.
    """

    kind: str
    version: str
    features: tuple[str, ...]
    window: int
    horizon: int

    def forecast(self, windows: NDArray[np.float32]) -> NDArray[np.float32]: ...


@runtime_checkable
class TrainableForecaster(Forecaster, Protocol):
    """A forecaster that can be fitted on windows and saved; every forewarn model is one.

    ``fit`` takes windows (n, window, features) and the ``horizon`` target values that follow
    each (n, horizon), and returns the fitted forecaster. ``save`` writes a checkpoint that
    ``models.checkpoint.load_forecaster`` reads back into an identical forecaster.
    """

    def fit(
        self, windows: NDArray[np.float32], targets: NDArray[np.float32]
    ) -> TrainableForecaster: ...

    def save(self, path: Path) -> None: ...
