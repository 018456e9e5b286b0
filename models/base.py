"""The forecaster contract: what the agent needs from any model it serves."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray


@runtime_checkable
class Forecaster(Protocol):
    """Forecasts the next ``horizon`` temperatures (°C) of a batch of windows.

    Windows arrive in sensor units, shape (batch, window, len(features)), columns in
    ``features`` order; the result has shape (batch, horizon). Scaling is the forecaster's own
    business, so every caller hands over raw readings and gets back degrees.
    """

    kind: str
    version: str
    features: tuple[str, ...]
    window: int
    horizon: int

    def forecast(self, windows: NDArray[np.float32]) -> NDArray[np.float32]: ...
