"""The drift watch: per machine, the model's forecast skill now against its skill at training.

When a machine's next reading arrives, it is compared with the 1-step-ahead forecast made for
it (the first step of the last forecast, made from the window that ended with the previous
reading) and with persistence (that previous reading). Each machine keeps an exponential
average of both squared errors over about ``memory_readings`` readings, and

    live skill  = rolling forecast RMSE / rolling persistence RMSE   (same readings)
    drift ratio = live skill / the model's test skill                (models.skill)

About 1 while the model fits the machine as it fitted its test data; 2 means its error is
twice what it should be relative to "no change". Persistence in the denominator takes out
what the machine's own motion does to both errors (a quiet machine has small errors for any
model), so the ratio asks only "is the model still better than no model by as much as it was".

Only a reading exactly one ``seq`` after the forecast's last reading, in the same window (no
restart between), is compared: readings that arrive faster than ticks, or after a gap, are
skipped rather than matched with a forecast step that was not made for them. Everything is
per-slot numpy arrays indexed like the window store, reset when a slot is handed to another
machine.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from agent.metrics import AgentMetrics
from agent.window import grown
from models.skill import SkillReference

PERSISTENCE_FLOOR_C = 0.01
"""Smallest persistence RMSE (°C) divided by: a machine whose reading never changes (a stuck
sensor) would otherwise divide by zero."""
EXPORT_EVERY_S = 1.0
"""The drift metrics move over minutes: exporting them once a second is plenty."""
QUANTILES = (0.5, 0.9, 0.99, 1.0)
"""Quantiles of the fleet's drift ratios exported as ``forewarn_model_drift_ratio``."""


class DriftWatch:
    """Rolling next-step forecast and persistence errors per slot, and the drift ratio."""

    def __init__(
        self,
        reference: SkillReference | None,
        memory_readings: int = 600,
        warm_up_readings: int = 300,
        capacity: int = 1024,
    ) -> None:
        self.reference = reference
        self.rate = 1.0 / memory_readings
        self.warm_up = warm_up_readings
        self.next_forecast = np.zeros(0)
        self.forecast_from = np.zeros(0)
        self.forecast_seq = np.zeros(0, dtype=np.int64)
        self.forecast_restarts = np.zeros(0, dtype=np.int64)
        self.model_sq = np.zeros(0)
        self.persistence_sq = np.zeros(0)
        self.count = np.zeros(0, dtype=np.int64)
        self.next_export = 0.0
        self.ensure_capacity(capacity)

    def ensure_capacity(self, capacity: int) -> None:
        old = self.count.shape[0]
        if capacity <= old:
            return

        self.next_forecast = grown(self.next_forecast, capacity, np.nan)
        self.forecast_from = grown(self.forecast_from, capacity, np.nan)
        self.forecast_seq = grown(self.forecast_seq, capacity, -1)
        self.forecast_restarts = grown(self.forecast_restarts, capacity, -1)
        self.model_sq = grown(self.model_sq, capacity, 0.0)
        self.persistence_sq = grown(self.persistence_sq, capacity, 0.0)
        self.count = grown(self.count, capacity, 0)

    def reset(self, slots: NDArray[np.int64]) -> None:
        """Forget ``slots`` (their machines were evicted); every array back to its fill."""
        self.next_forecast[slots] = np.nan
        self.forecast_from[slots] = np.nan
        self.forecast_seq[slots] = -1
        self.forecast_restarts[slots] = -1
        self.model_sq[slots] = 0.0
        self.persistence_sq[slots] = 0.0
        self.count[slots] = 0

    def use_model(self, reference: SkillReference | None) -> None:
        """Measure against another model from now on (a live swap): its reference, and every
        machine's rolling errors started afresh, since they were the old model's. The next
        export comes at the next tick, so the old model's ratios leave /metrics at once."""
        self.reference = reference
        self.reset(np.arange(self.count.shape[0]))
        self.next_export = 0.0

    def update(
        self,
        slots: NDArray[np.int64],
        latest: NDArray[np.floating],
        latest_seq: NDArray[np.int64],
        restarts: NDArray[np.int64],
        forecasts: NDArray[np.floating],
    ) -> None:
        """Score each slot's newest reading against the forecast made for it, then keep this
        tick's 1-step forecasts. ``restarts`` is each window's restart count (window store)."""
        usable = (
            (self.forecast_seq[slots] >= 0)
            & (latest_seq - self.forecast_seq[slots] == 1)
            & (restarts == self.forecast_restarts[slots])
        )
        rows = slots[usable]
        if rows.size:
            actual = latest[usable].astype(np.float64)
            model_error = actual - self.next_forecast[rows]
            persistence_error = actual - self.forecast_from[rows]
            count = self.count[rows]
            # A plain mean over the first readings, then an exponential one.
            rate = np.maximum(1.0 / (count + 1.0), self.rate)
            self.model_sq[rows] += rate * (model_error**2 - self.model_sq[rows])
            self.persistence_sq[rows] += rate * (persistence_error**2 - self.persistence_sq[rows])
            self.count[rows] = count + 1
        self.next_forecast[slots] = forecasts[:, 0]
        self.forecast_from[slots] = latest
        self.forecast_seq[slots] = latest_seq
        self.forecast_restarts[slots] = restarts

    def ratio(self, slots: NDArray[np.int64]) -> NDArray[np.float64]:
        """Each slot's drift ratio; NaN until warmed up, or when the model has no reference."""
        if self.reference is None:
            return np.full(len(slots), np.nan)
        persistence = np.sqrt(np.maximum(self.persistence_sq[slots], PERSISTENCE_FLOOR_C**2))
        live = np.sqrt(self.model_sq[slots]) / persistence
        warm = self.count[slots] >= self.warm_up
        return np.where(warm, live / self.reference.skill, np.nan)

    def fleet(self, used: int) -> NDArray[np.float64]:
        """The drift ratios of every warmed-up machine among the first ``used`` slots."""
        ratios = self.ratio(np.arange(used))
        return ratios[~np.isnan(ratios)]

    @staticmethod
    def quantiles(ratios: NDArray[np.float64]) -> dict[float, float]:
        """The exported quantiles of ``ratios`` (empty: none)."""
        if not len(ratios):
            return {}
        values = np.quantile(ratios, QUANTILES)
        return dict(zip(QUANTILES, values.tolist(), strict=True))


def export_drift(
    watch: DriftWatch,
    metrics: AgentMetrics,
    machine_ids: list[str],
    slot_of: Mapping[str, int],
    now: float,
) -> None:
    """Export the fleet's quantiles and the per-machine ratios, at most every EXPORT_EVERY_S.

    Per machine only for the machines that have per-machine series (``max_machine_series``),
    so the cost and the cardinality stay bounded whatever the fleet. A ratio that is gone (a
    live swap started every machine afresh, :meth:`DriftWatch.use_model`) leaves /metrics
    rather than showing the old model's figure until the new one has warmed up.
    """
    if now < watch.next_export:
        return
    watch.next_export = now + EXPORT_EVERY_S
    ratios = watch.fleet(len(machine_ids))
    metrics.model_drift_machines.set(len(ratios))
    quantiles = watch.quantiles(ratios)
    if not quantiles:
        metrics.model_drift_ratio.clear()
    for quantile, value in quantiles.items():
        metrics.model_drift_ratio.labels(quantile=f"{quantile:g}").set(value)
    series = metrics.series_machines()
    slots = np.fromiter((slot_of.get(m, -1) for m in series), np.int64, len(series))
    known = slots >= 0
    values = watch.ratio(slots[known])
    for machine_id, value in zip(
        (m for m, k in zip(series, known.tolist(), strict=True) if k), values.tolist(), strict=True
    ):
        if value == value:  # not NaN: warmed up
            metrics.set_machine_drift(machine_id, value)
        else:
            metrics.clear_machine_drift(machine_id)
