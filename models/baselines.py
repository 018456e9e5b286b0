"""Baselines every forecaster must beat: persistence, linear extrapolation and Ridge.

They follow the same contract as the networks (fit, forecast, save, load), so the agent can
serve any of them and evaluation can put them side by side. They are numpy code: serving one
never imports torch (``model.runtime`` does not apply to them); only writing or reading a torch
checkpoint (``.pt``) does.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from config.fields import FEATURES
from models.normalise import window_stats_np
from models.scaling import FeatureScaler
from models.serving import BASELINE_KINDS, ServingModel, check_windows

if TYPE_CHECKING:
    from models.checkpoint import Checkpoint

__all__ = [
    "BASELINE_KINDS",
    "LinearExtrapolationForecaster",
    "PersistenceForecaster",
    "RidgeForecaster",
    "baseline_from_checkpoint",
    "ridge_from_serving",
]


class _Baseline:
    """What the baselines share: identity, shape checks, chunking and checkpoints."""

    kind = ""

    def __init__(
        self,
        horizon: int = 30,
        window: int = 20,
        features: tuple[str, ...] = FEATURES,
        target_index: int = 0,
        version: str | None = None,
        chunk_size: int = 1000,
    ) -> None:
        if horizon < 1 or window < 1:
            raise ValueError("horizon and window must be at least 1")
        if not 0 <= target_index < len(features):
            raise ValueError(f"target_index {target_index} is not one of {len(features)} features")
        self.horizon = horizon
        self.window = window
        self.features = tuple(features)
        self.target_index = target_index
        self.version = version or f"{self.kind}-h{horizon}"
        self.chunk_size = max(1, chunk_size)
        self.device = "cpu"
        self.report: dict[str, object] = {}

    def fit(self, windows: NDArray[np.float32], targets: NDArray[np.float32]) -> _Baseline:
        """Nothing to learn; the shapes are still checked, as for every forecaster."""
        self._check_fit(windows, targets)
        return self

    def _check_fit(self, windows: NDArray[np.floating], targets: NDArray[np.floating]) -> None:
        check_windows(windows, self.window, len(self.features))
        if targets.shape != (len(windows), self.horizon):
            raise ValueError(f"targets must have shape ({len(windows)}, {self.horizon})")

    def forecast(self, windows: NDArray[np.float32]) -> NDArray[np.float32]:
        check_windows(windows, self.window, len(self.features))
        out = np.empty((windows.shape[0], self.horizon), dtype=np.float32)
        for start in range(0, windows.shape[0], self.chunk_size):
            chunk = np.asarray(windows[start : start + self.chunk_size], dtype=np.float64)
            out[start : start + len(chunk)] = self._forecast(chunk)
        return out

    def _forecast(self, windows: NDArray[np.float64]) -> NDArray[np.float64]:
        raise NotImplementedError

    def warm_up(self) -> None:
        self.forecast(np.zeros((2, self.window, len(self.features)), dtype=np.float32))

    def _state(self) -> dict[str, NDArray[np.float64]]:
        return {}

    def to_checkpoint(self) -> Checkpoint:
        import torch

        from models.checkpoint import Checkpoint

        return Checkpoint(
            kind=self.kind,
            version=self.version,
            features=self.features,
            window=self.window,
            horizon=self.horizon,
            target_index=self.target_index,
            state_dict={name: torch.from_numpy(a) for name, a in self._state().items()},
            report=dict(self.report),
        )

    def save(self, path: Path) -> None:
        self.to_checkpoint().save(path)


class PersistenceForecaster(_Baseline):
    """Tomorrow is today: the last reading, for every step of the horizon."""

    kind = "persistence"

    def _forecast(self, windows: NDArray[np.float64]) -> NDArray[np.float64]:
        last = windows[:, -1, self.target_index]
        return np.repeat(last[:, None], self.horizon, axis=1)


class LinearExtrapolationForecaster(_Baseline):
    """A least-squares line through the window's target values, carried on over the horizon.

    It follows a ramp (an overheat) where persistence lags, and is what a person eyeballing
    the trend would forecast.
    """

    kind = "linear_extrapolation"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        steps = np.arange(self.window, dtype=np.float64)
        design = np.stack([np.ones_like(steps), steps], axis=1)
        ahead = np.arange(self.window, self.window + self.horizon, dtype=np.float64)
        # forecast = series @ (pinv(design).T @ [1, t_ahead].T): one matrix for all windows.
        self._projection = np.linalg.pinv(design).T @ np.stack([np.ones_like(ahead), ahead])

    def _forecast(self, windows: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(windows[:, :, self.target_index] @ self._projection)


class RidgeForecaster(_Baseline):
    """Ridge regression (scikit-learn) from the flattened window to the next ``horizon`` values.

    ``window`` normalisation (the default) regresses each window's normalised future on its
    normalised past, so it serves machines at any level and range; ``global`` scales with a
    min-max scaler fitted on the training windows, as the seed's recipe does.
    """

    kind = "ridge"

    def __init__(
        self, *args: object, alpha: float = 1.0, normalisation: str = "window", **kwargs: object
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if normalisation not in ("window", "global"):
            raise ValueError(f"normalisation must be 'window' or 'global', not {normalisation!r}")
        if alpha < 0:
            raise ValueError("alpha must not be negative")
        self.alpha = alpha
        self.normalisation = normalisation
        self.scaler: FeatureScaler | None = None
        self.coef: NDArray[np.float64] | None = None
        self.intercept: NDArray[np.float64] | None = None

    def _normalise(
        self, windows: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        t = self.target_index
        if self.normalisation == "window":
            centre, scale = window_stats_np(windows)
            inputs = (windows - centre) / scale
            return inputs.reshape(len(windows), -1), centre[:, 0, t : t + 1], scale[:, 0, t : t + 1]
        assert self.scaler is not None
        low = self.scaler.minimum.astype(np.float64)
        span = self.scaler.span.astype(np.float64)
        inputs = (windows - low) / span
        ones = np.ones((len(windows), 1))
        return inputs.reshape(len(windows), -1), ones * low[t], ones * span[t]

    def fit(self, windows: NDArray[np.float32], targets: NDArray[np.float32]) -> RidgeForecaster:
        """Least squares with an L2 penalty; the global scaler, if any, from these windows.

        scikit-learn is imported only here: serving a fitted Ridge needs its two arrays, not
        the SciPy stack behind the estimator (see :meth:`FeatureScaler.fit`).
        """
        from sklearn.linear_model import Ridge

        self._check_fit(windows, targets)
        data = np.asarray(windows, dtype=np.float64)
        if self.normalisation == "global":
            self.scaler = FeatureScaler.fit(data)
        inputs, centre, scale = self._normalise(data)
        model = Ridge(alpha=self.alpha).fit(inputs, (np.asarray(targets) - centre) / scale)
        self.coef = np.asarray(model.coef_, dtype=np.float64).reshape(self.horizon, -1)
        self.intercept = np.asarray(model.intercept_, dtype=np.float64).reshape(self.horizon)
        return self

    def _forecast(self, windows: NDArray[np.float64]) -> NDArray[np.float64]:
        if self.coef is None or self.intercept is None:
            raise RuntimeError("this Ridge forecaster has not been fitted")
        inputs, centre, scale = self._normalise(windows)
        return np.asarray(centre + scale * (inputs @ self.coef.T + self.intercept))

    def _state(self) -> dict[str, NDArray[np.float64]]:
        if self.coef is None or self.intercept is None:
            raise RuntimeError("cannot save a Ridge forecaster that has not been fitted")
        return {
            "coef": self.coef.copy(),
            "intercept": self.intercept.copy(),
            "alpha": np.asarray(self.alpha, dtype=np.float64),
        }

    def to_checkpoint(self) -> Checkpoint:
        checkpoint = super().to_checkpoint()
        checkpoint.normalisation = self.normalisation
        checkpoint.scaler = self.scaler
        return checkpoint


def baseline_from_checkpoint(checkpoint: Checkpoint, chunk_size: int = 1000) -> _Baseline:
    """Rebuild a baseline from its checkpoint (raises ValueError/KeyError on a bad one)."""
    state = {
        name: np.asarray(value, dtype=np.float64) for name, value in checkpoint.state_dict.items()
    }
    return _baseline(
        checkpoint.kind,
        checkpoint.horizon,
        checkpoint.window,
        checkpoint.features,
        checkpoint.target_index,
        checkpoint.version,
        chunk_size,
        state,
        checkpoint.normalisation,
        checkpoint.scaler,
        dict(checkpoint.report),
    )


def ridge_from_serving(model: ServingModel, chunk_size: int = 1000) -> RidgeForecaster:
    """A Ridge forecaster from a serving file's arrays, without torch."""
    ridge = _baseline(
        model.kind,
        model.horizon,
        model.window,
        model.features,
        model.target_index,
        model.version,
        chunk_size,
        {name: np.asarray(value, dtype=np.float64) for name, value in model.weights.items()},
        model.normalisation,
        model.scaler,
        dict(model.report),
    )
    assert isinstance(ridge, RidgeForecaster)
    return ridge


def _baseline(
    kind: str,
    horizon: int,
    window: int,
    features: tuple[str, ...],
    target_index: int,
    version: str,
    chunk_size: int,
    state: dict[str, NDArray[np.float64]],
    normalisation: str,
    scaler: FeatureScaler | None,
    report: dict[str, Any],
) -> _Baseline:
    common: dict[str, Any] = {
        "horizon": horizon,
        "window": window,
        "features": features,
        "target_index": target_index,
        "version": version,
        "chunk_size": chunk_size,
    }
    baseline: _Baseline
    if kind == "persistence":
        baseline = PersistenceForecaster(**common)
    elif kind == "linear_extrapolation":
        baseline = LinearExtrapolationForecaster(**common)
    elif kind == "ridge":
        ridge = RidgeForecaster(**common, alpha=float(state["alpha"]), normalisation=normalisation)
        coef, intercept = state["coef"], state["intercept"]
        inputs = window * len(features)
        if coef.shape != (horizon, inputs) or intercept.shape != (horizon,):
            raise ValueError(
                f"Ridge weights of shape {tuple(coef.shape)} do not fit window "
                f"{window} x {len(features)} features, horizon {horizon}"
            )
        ridge.coef, ridge.intercept, ridge.scaler = coef, intercept, scaler
        baseline = ridge
    else:
        raise ValueError(f"{kind!r} is not a baseline")
    baseline.report = report
    return baseline
