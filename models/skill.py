"""A model's own forecast skill on its test split, stored at training, for the drift watch.

Skill is the model's next-step RMSE over persistence's (the last reading) on the same
windows: below 1, the model beats "no change". A machine's live skill means little alone (a
machine that barely moves makes persistence hard to beat), so the agent compares it with the
skill the model had on its own test split: ``live skill / test skill`` is the drift ratio,
about 1 while the model fits the machine as it fitted its test data (see agent.drift).

Training stores the figures under ``report["drift_reference"]``. Models trained before that key
existed carry the same figures as ``test_next_step`` and ``persistence_next_step`` (next-step
RMSE on the test split), which are read instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

DRIFT_REFERENCE_KEY = "drift_reference"
REFERENCE_STEP = 1
"""The forecast step the skill is measured at: the next reading (the 1-step-ahead forecast)."""


@dataclass(frozen=True)
class SkillReference:
    """Next-step RMSE (°C) of the model and of persistence on the model's test split."""

    model_rmse_c: float
    persistence_rmse_c: float
    windows: int | None = None

    @property
    def skill(self) -> float:
        """The model's RMSE over persistence's: below 1 the model beats persistence."""
        return self.model_rmse_c / self.persistence_rmse_c

    def as_report(self) -> dict[str, Any]:
        return {
            "step": REFERENCE_STEP,
            "split": "test",
            "windows": self.windows,
            "model_rmse_c": self.model_rmse_c,
            "persistence_rmse_c": self.persistence_rmse_c,
        }


def measure_reference(
    predicted: NDArray[np.floating],
    windows: NDArray[np.floating],
    targets: NDArray[np.floating],
    target_index: int = 0,
) -> SkillReference:
    """The reference from a model's forecasts of test ``windows`` (n, window, F) against their
    ``targets`` (n, horizon): the next step against the target's last reading."""
    actual = np.asarray(targets[:, 0], dtype=np.float64)
    model = np.asarray(predicted[:, 0], dtype=np.float64) - actual
    persistence = np.asarray(windows[:, -1, target_index], dtype=np.float64) - actual
    return SkillReference(
        model_rmse_c=float(np.sqrt(np.mean(model**2))),
        persistence_rmse_c=float(np.sqrt(np.mean(persistence**2))),
        windows=len(actual),
    )


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def reference_from_report(report: Mapping[str, Any]) -> SkillReference | None:
    """The stored reference, or None when the report has none usable (then no drift ratio)."""
    block = report.get(DRIFT_REFERENCE_KEY)
    if isinstance(block, Mapping) and block.get("step", REFERENCE_STEP) == REFERENCE_STEP:
        model = _positive(block.get("model_rmse_c"))
        persistence = _positive(block.get("persistence_rmse_c"))
        if model is not None and persistence is not None:
            windows = block.get("windows")
            return SkillReference(model, persistence, windows if isinstance(windows, int) else None)
    test, baseline = report.get("test_next_step"), report.get("persistence_next_step")
    if isinstance(test, Mapping) and isinstance(baseline, Mapping):
        model = _positive(test.get("rmse_c"))
        persistence = _positive(baseline.get("rmse_c"))
        if model is not None and persistence is not None:
            windows = report.get("test_windows")
            return SkillReference(model, persistence, windows if isinstance(windows, int) else None)
    return None


def skill_reference(forecaster: object) -> SkillReference | None:
    """The reference a served forecaster carries (its report, or its checkpoint's)."""
    report = getattr(forecaster, "report", None)
    if not isinstance(report, Mapping):
        report = getattr(getattr(forecaster, "checkpoint", None), "report", None)
    return reference_from_report(report) if isinstance(report, Mapping) else None
