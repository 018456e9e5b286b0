"""The ground-truth log: which machine had which fault, when, and when it crossed.

JSON lines, one object per fault, written as soon as the fault's record is complete:
``{"machine_id", "fault", "start_tick", "end_tick", "crossing_tick", "threshold_c"}``. A
window fault (dropout, stuck or noisy sensor, bad payloads, spikes) is written when it starts,
with its planned end; an overheat or cooling failure when its reading first reaches the
threshold, or at the end of the run with ``crossing_tick: null`` if it never did. The readings
it watches have the sensor spikes taken out (:attr:`Fleet.last_spikes_c`): a spike is never an
overheat, so it never marks the crossing (see :func:`simulator.faults.first_crossing`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import IO

import numpy as np
import orjson

from simulator.fleet import Fleet

logger = logging.getLogger(__name__)


class GroundTruthLog:
    """Watches the readings a fleet publishes and records its faults' ground truth."""

    def __init__(self, fleet: Fleet, path: Path | None) -> None:
        self.fleet = fleet
        self.records: list[dict[str, object]] = []
        self._file: IO[bytes] | None = path.open("wb") if path is not None else None
        self._pending = {plan.machine_index: plan for plan in fleet.crossing_plans}
        self._windows = sorted(fleet.window_faults, key=lambda f: f.start_tick)

    def observe(self, tick: int, temperatures: np.ndarray) -> None:
        """Record what became known at ``tick``."""
        while self._windows and self._windows[0].start_tick <= tick:
            fault = self._windows.pop(0)
            self._write(fault.machine_index, fault.kind, fault.start_tick, fault.end_tick, None)
        for index, plan in list(self._pending.items()):
            if tick >= plan.onset_tick and temperatures[index] >= self.fleet.threshold_c:
                del self._pending[index]
                self._write(index, plan.kind, plan.onset_tick, None, tick)
                logger.info(
                    "ground truth: %s crossed %.1f °C at tick %d (%.1f °C, %s from tick %d)",
                    self.fleet.machine_ids[index],
                    self.fleet.threshold_c,
                    tick,
                    temperatures[index],
                    plan.kind,
                    plan.onset_tick,
                )

    def close(self, last_tick: int) -> None:
        """Write the faults that never crossed (or never started) and close the file."""
        for index, plan in self._pending.items():
            if plan.onset_tick <= last_tick:
                self._write(index, plan.kind, plan.onset_tick, None, None)
        self._pending.clear()
        if self._file is not None:
            self._file.close()
            self._file = None

    def _write(
        self, index: int, kind: str, start: int, end: int | None, crossing: int | None
    ) -> None:
        record: dict[str, object] = {
            "machine_id": self.fleet.machine_ids[index],
            "fault": kind,
            "start_tick": start,
            "end_tick": end,
            "crossing_tick": crossing,
            "threshold_c": self.fleet.threshold_c,
        }
        self.records.append(record)
        if self._file is not None:
            self._file.write(orjson.dumps(record) + b"\n")
            self._file.flush()
