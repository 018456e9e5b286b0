"""The default anomaly alert rule: a rarity per row, with confirmation and hysteresis.

Derived from the calibrated score alone (:mod:`agent.anomaly_sensors`), never from labels:

* it **fires** once the machine score has reached ``fire_score`` (0.5: behaviour that a normal
  machine shows about once in 100,000 rows) and the rarity of each row since has stayed there,
  ``confirm_rows`` rows in all, so one odd row never fires. The machine score marks an
  onset on its first row only, so the rows that confirm it are read as their rarity
  (``SensorScores.rarity``), not as new onsets;
* it **resolves** once the score has stayed under ``clear_score`` (0.3: once in 1,000 rows) for
  ``clear_rows`` consecutive rows, so an anomaly that hovers around the threshold does not flap.

The same rule runs in ``forewarn detect`` and in the agent, vectorised over slots.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class AnomalyRule:
    """The thresholds of the default rule (scores in [0, 1], rows = readings)."""

    fire_score: float = 0.5
    confirm_rows: int = 3
    clear_score: float = 0.3
    clear_rows: int = 10


class AnomalyAlertState:
    """Per-slot firing state of the anomaly alert, advanced one reading at a time."""

    def __init__(self, rule: AnomalyRule | None = None, capacity: int = 1024) -> None:
        self.rule = rule or AnomalyRule()
        self.firing = np.zeros(0, dtype=np.bool_)
        self.over = np.zeros(0, dtype=np.int64)
        self.under = np.zeros(0, dtype=np.int64)
        self.onset = np.zeros(0)
        """The highest machine score of the rows now confirming (or that fired) an episode: a
        firing message reports it, as the machine score marks an onset on its first row only."""
        self.ensure_capacity(capacity)

    def ensure_capacity(self, capacity: int) -> None:
        old = len(self.firing)
        if capacity <= old:
            return
        for name in ("firing", "over", "under", "onset"):
            array = getattr(self, name)
            new = np.zeros(capacity, dtype=array.dtype)
            new[:old] = array
            setattr(self, name, new)

    def reset(self, slots: NDArray[np.int64]) -> None:
        self.firing[slots] = False
        self.over[slots] = 0
        self.under[slots] = 0
        self.onset[slots] = 0.0

    def update(
        self,
        slots: NDArray[np.int64],
        score: NDArray[np.float64],
        rarity: NDArray[np.float64],
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Advance ``slots`` by one scored reading (the machine score and the row's rarity, as
        ``SensorScores`` gives them); returns (slots that fired, that resolved)."""
        rule = self.rule
        counting = self.over[slots]
        over = np.where(np.where(counting > 0, rarity, score) >= rule.fire_score, counting + 1, 0)
        under = np.where(score < rule.clear_score, self.under[slots] + 1, 0)
        was = self.firing[slots]
        fires = ~was & (over >= rule.confirm_rows)
        resolves = was & (under >= rule.clear_rows)
        self.firing[slots] = (was | fires) & ~resolves
        self.over[slots] = over
        self.under[slots] = under
        self.onset[slots] = np.where(over > 0, np.maximum(self.onset[slots], score), 0.0)
        return slots[fires], slots[resolves]
