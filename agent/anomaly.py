"""A streaming anomaly score in [0, 1] per machine, from the forecaster's own residuals.

Each machine's residual (reading minus what the last forecast said it would be) is normalised by
that machine's own running mean and spread, learned online; nothing is tuned to the simulator.
The score is two-sided — a drop, a level shift or a burst of noise scores like a rise, and a
sensor whose readings stop varying (stuck) scores too — and it ignores single spikes:

    r   = median of the last 3 residuals             an isolated spike never passes
    z   = (r - mean) / spread                        per machine, before learning this residual
    s   = exponential average of z²                  about 1 while the machine behaves as usual
    high = 1 - exp(-max(0, s - 1) / 2)               sustained deviation, either sign
    low  = 1 - exp(-max(0, 0.25 / s - 1))            residuals far quieter than usual (stuck)
    score = max(high, low)

A sustained 3-sigma deviation drives s towards 9 and the score to about 0.98. The running mean and
spread learn slowly and from clipped residuals, so an anomaly is not absorbed as normal within a
few readings, but a lasting change of level becomes the new normal over a few hundred.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from agent.window import grown

WARM_UP_RESIDUALS = 20
"""Residuals a machine needs before its score means anything (0 until then)."""
STATS_RATE = 0.02
SCORE_RATE = 0.1
CLIP_SIGMAS = 4.0
MAX_Z = 6.0
QUIET_FRACTION = 0.25
MIN_SPREAD_FRACTION = 1e-3
USUAL_RATE = 0.001
"""How fast a machine's *usual* residual variance follows its current one (about 1,000
readings): slow enough that a sensor turning noisy for a few hundred readings stands out."""


class AnomalyScorer:
    """Per-slot residual statistics, kept in arrays indexed like the window store."""

    def __init__(self, horizon: int, capacity: int = 1024) -> None:
        self.horizon = horizon
        self.mean = np.zeros(0)
        self.var = np.zeros(0)
        self.usual_var = np.zeros(0)
        self.count = np.zeros(0, dtype=np.int64)
        self.smoothed = np.zeros(0)
        self.score = np.zeros(0)
        self.forecast = np.zeros((0, horizon), dtype=np.float32)
        self.forecast_seq = np.zeros(0, dtype=np.int64)
        self.recent = np.zeros((0, 2))
        self.ensure_capacity(capacity)

    def ensure_capacity(self, capacity: int) -> None:
        old = self.mean.shape[0]
        if capacity <= old:
            return

        self.mean = grown(self.mean, capacity, 0.0)
        self.var = grown(self.var, capacity, 0.0)
        self.usual_var = grown(self.usual_var, capacity, 0.0)
        self.count = grown(self.count, capacity, 0)
        self.smoothed = grown(self.smoothed, capacity, 1.0)
        self.score = grown(self.score, capacity, 0.0)
        self.forecast = grown(self.forecast, capacity, np.nan)
        self.forecast_seq = grown(self.forecast_seq, capacity, -1)
        self.recent = grown(self.recent, capacity, np.nan)

    def reset(self, slots: NDArray[np.int64]) -> None:
        """Forget the statistics of ``slots``: their machines were evicted and the slots now
        hold other machines, which must learn their own normal. Every per-slot array above is
        reset here to its ``ensure_capacity`` fill."""
        self.mean[slots] = 0.0
        self.var[slots] = 0.0
        self.usual_var[slots] = 0.0
        self.count[slots] = 0
        self.smoothed[slots] = 1.0
        self.score[slots] = 0.0
        self.forecast[slots] = np.nan
        self.forecast_seq[slots] = -1
        self.recent[slots] = np.nan

    def update(
        self,
        slots: NDArray[np.int64],
        latest: NDArray[np.floating],
        latest_seq: NDArray[np.int64],
        forecasts: NDArray[np.float32],
    ) -> NDArray[np.float64]:
        """Score the latest readings against earlier forecasts, then keep the new forecasts.

        ``latest_seq`` tells how many steps ahead of its forecast each reading is, so readings
        that arrive faster than ticks are still compared with the right forecast step.
        """
        steps = latest_seq - self.forecast_seq[slots]
        usable = (self.forecast_seq[slots] >= 0) & (steps >= 1) & (steps <= self.horizon)
        rows = slots[usable]
        if rows.size:
            predicted = self.forecast[rows, steps[usable] - 1].astype(np.float64)
            residual = latest[usable].astype(np.float64) - predicted
            self._learn(rows, residual)
        self.forecast[slots] = forecasts
        self.forecast_seq[slots] = latest_seq
        return self.score[slots]

    def spread(self, slots: NDArray[np.int64]) -> NDArray[np.float64]:
        """Typical one-step forecast error per machine (°C); 0 until warmed up.

        The spread of the spike-filtered residuals: the alert policy widens forecasts by it,
        and isolated spikes, which never make an overheat, must not widen them.
        """
        warm = self.count[slots] >= WARM_UP_RESIDUALS
        return np.where(warm, np.sqrt(self.var[slots]), 0.0)

    def noise_ratio(self, slots: NDArray[np.int64]) -> NDArray[np.float64]:
        """Each machine's current forecast-error spread over its usual one; 1 until warmed up.

        About 1 for a machine behaving as it always has, including one that is overheating
        (its forecasts lag, but by a steady amount); 2-3 for a sensor that turned noisy. The
        alert policy does not trust forecasts made from such noise (see agent.alerts).
        """
        warm = (self.count[slots] > WARM_UP_RESIDUALS) & (self.usual_var[slots] > 0.0)
        usual = np.where(warm, self.usual_var[slots], 1.0)
        return np.where(warm, np.sqrt(self.var[slots] / usual), 1.0)

    def _learn(self, rows: NDArray[np.int64], raw: NDArray[np.float64]) -> None:
        window = np.column_stack([self.recent[rows], raw])
        self.recent[rows] = window[:, 1:]
        residual = np.nanmedian(window, axis=1)
        count = self.count[rows]
        mean, var = self.mean[rows], self.var[rows]
        floor = MIN_SPREAD_FRACTION * (np.abs(mean) + 1.0)
        spread = np.sqrt(np.maximum(var, floor**2))
        z = np.clip((residual - mean) / spread, -MAX_Z, MAX_Z)
        warm = count >= WARM_UP_RESIDUALS
        smoothed = np.where(
            warm, self.smoothed[rows] + SCORE_RATE * (z**2 - self.smoothed[rows]), 1.0
        )
        self.smoothed[rows] = smoothed
        high = 1.0 - np.exp(-np.maximum(0.0, smoothed - 1.0) / 2.0)
        low = 1.0 - np.exp(-np.maximum(0.0, QUIET_FRACTION / np.maximum(smoothed, 1e-9) - 1.0))
        self.score[rows] = np.where(warm, np.maximum(high, low), 0.0)
        # Learn fast while warming up (plain running averages), slowly and robustly after.
        rate = np.where(warm, STATS_RATE, 1.0 / (count + 1.0))
        clipped = np.where(
            warm,
            np.clip(residual, mean - CLIP_SIGMAS * spread, mean + CLIP_SIGMAS * spread),
            residual,
        )
        delta = clipped - mean
        self.mean[rows] = mean + rate * delta
        self.var[rows] = (1.0 - rate) * (var + rate * delta**2)
        # The usual variance: a plain average of the variance over the first readings after
        # warm-up, then a slow exponential one.
        since_warm = np.maximum(count - WARM_UP_RESIDUALS, 0)
        usual_rate = np.where(warm, np.maximum(1.0 / (since_warm + 1.0), USUAL_RATE), 0.0)
        usual = self.usual_var[rows]
        self.usual_var[rows] = usual + usual_rate * (self.var[rows] - usual)
        self.count[rows] = count + 1
