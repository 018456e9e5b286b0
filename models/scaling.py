"""Min-max scaling kept as two plain arrays, so a checkpoint needs no pickled estimator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class FeatureScaler:
    """x_scaled = (x - minimum) / span, per feature; fitted on training data only."""

    minimum: NDArray[np.float32]
    span: NDArray[np.float32]

    @classmethod
    def fit(cls, readings: NDArray[np.floating]) -> FeatureScaler:
        """Fit on readings of shape (..., features) with scikit-learn's MinMaxScaler.

        scikit-learn is imported here, not at the top: it pulls in SciPy, about 70 MB of resident
        memory and 1.5 s of start-up that a serving agent, which only loads fitted arrays, never
        needs.
        """
        from sklearn.preprocessing import MinMaxScaler

        flat = np.asarray(readings, dtype=np.float64).reshape(-1, readings.shape[-1])
        fitted = MinMaxScaler().fit(flat)
        span = np.where(fitted.data_range_ > 0, fitted.data_range_, 1.0)
        return cls(minimum=fitted.data_min_.astype(np.float32), span=span.astype(np.float32))

    def transform(self, readings: NDArray[np.floating]) -> NDArray[np.float32]:
        return ((readings - self.minimum) / self.span).astype(np.float32, copy=False)

    def inverse_column(self, scaled: NDArray[np.floating], column: int) -> NDArray[np.float32]:
        """Undo the scaling of one feature (e.g. forecast temperatures)."""
        return (scaled * self.span[column] + self.minimum[column]).astype(np.float32, copy=False)

    def to_lists(self) -> dict[str, list[float]]:
        return {"minimum": self.minimum.tolist(), "span": self.span.tolist()}

    @classmethod
    def from_lists(cls, data: dict[str, list[float]]) -> FeatureScaler:
        return cls(
            minimum=np.asarray(data["minimum"], dtype=np.float32),
            span=np.asarray(data["span"], dtype=np.float32),
        )
