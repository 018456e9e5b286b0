"""Comparing the served model with a shadow candidate on the same readings.

Before a candidate is trusted it forecasts beside the served model, on the same windows in
the same tick, and never alerts. What compares them cheaply is the 1-step-ahead forecast: each
tick keeps, per machine, each model's forecast of the next reading; when that reading arrives
(the machine's next sequence number, a tick or more later) both errors are taken on it. The
fleet's squared errors feed counters (any range's RMSE in PromQL) and a rolling RMSE per model
over about the last ``memory`` compared readings, so a few hundred machines give a figure in
seconds and 5,000 machines cost a few array operations per tick.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from agent.metrics import AgentMetrics
from agent.tick import TickForecasts

MODELS = ("live", "shadow")


class ShadowScore:
    """Rolling 1-step-ahead RMSE of the live and the shadow model (a forecasts listener)."""

    def __init__(self, metrics: AgentMetrics, memory: float = 10_000.0) -> None:
        self._metrics = metrics
        self._memory = memory
        capacity = 0
        self._pending = np.full((capacity, 2), np.nan, dtype=np.float64)
        self._seq = np.full(capacity, -2, dtype=np.int64)
        self._sum = np.zeros(2)
        self._weight = 0.0

    def reset(self) -> None:
        """Forget pending forecasts and the rolling figures (a new shadow, a promotion)."""
        self._pending[:] = np.nan
        self._seq[:] = -2
        self._sum[:] = 0.0
        self._weight = 0.0
        for model in MODELS:
            self._metrics.shadow_rmse.labels(model=model).set(math.nan)

    def forget(self, slots: NDArray[np.int64]) -> None:
        """Drop the pending forecasts of ``slots``: their machines were evicted, and a new
        machine in the slot, whose sequence numbers are its own, must not be scored against
        a forecast made for another machine's next reading."""
        slots = slots[slots < len(self._seq)]
        self._pending[slots] = np.nan
        self._seq[slots] = -2

    def rmse(self) -> tuple[float, float]:
        """The rolling RMSE of (live, shadow); NaN before any reading was compared."""
        if self._weight <= 0:
            return math.nan, math.nan
        live, shadow = np.sqrt(self._sum / self._weight).tolist()
        return float(live), float(shadow)

    def __call__(self, tick: TickForecasts) -> None:
        shadow = tick.forecasts.get("shadow")
        if shadow is None:
            return
        live = tick.forecasts["live"]
        slots = tick.slots
        needed = int(slots.max()) + 1 if len(slots) else 0
        if needed > len(self._seq):
            grow = max(needed, 2 * len(self._seq))
            pending = np.full((grow, 2), np.nan)
            pending[: len(self._pending)] = self._pending
            seq = np.full(grow, -2, dtype=np.int64)
            seq[: len(self._seq)] = self._seq
            self._pending, self._seq = pending, seq
        actual = tick.windows[:, -1, 0].astype(np.float64)
        # The reading each pending forecast was for is the one after the forecast's own.
        due = self._seq[slots] + 1 == tick.seq
        before = self._pending[slots]
        errors = before[due] - actual[due, None]
        both = ~np.isnan(errors).any(axis=1)
        errors = errors[both]
        self._pending[slots, 0] = live[:, 0]
        self._pending[slots, 1] = shadow[:, 0]
        self._seq[slots] = tick.seq
        count = len(errors)
        if not count:
            return
        squared = (errors**2).sum(axis=0)
        decay = math.exp(-count / self._memory)
        self._sum = self._sum * decay + squared
        self._weight = self._weight * decay + count
        self._metrics.shadow_compared.inc(count)
        for index, model in enumerate(MODELS):
            self._metrics.shadow_squared_error.labels(model=model).inc(float(squared[index]))
        for model, value in zip(MODELS, self.rmse(), strict=True):
            self._metrics.shadow_rmse.labels(model=model).set(value)
