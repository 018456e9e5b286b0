"""What the agent learns per machine, kept in ``agent.state_dir`` across restarts.

Two things take long to learn and would be lost with the process: the anomaly scorer's normal
of every sensor (``anomaly.npz``, :class:`agent.anomaly_events.AnomalyAlerts`) and the slow
path's long trends (``trend.npz``, :class:`agent.trend.TrendTracker`, up to 20,000 readings
each). Each is written every so often and at stop, and read back at start-up after the
retained alert states, filling free slots only: a machine whose retained alert was resumed is
never evicted for one known only from a file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.throttle import LogThrottle
from agent.window import WindowStore

logger = logging.getLogger(__name__)


class Persistent(Protocol):
    """Per-slot state that can be written by machine id and read back into any slots."""

    def save(self, directory: Path, slot_of: dict[str, int]) -> Path: ...

    def load(self, directory: Path, slot_for: Callable[[str], int | None]) -> int: ...


@dataclass
class _Part:
    name: str
    """What it holds, for log lines."""
    state: Persistent
    interval_s: float
    due: float = 0.0
    """When it is next written (monotonic)."""


class LearnedState:
    """Writes and reads back the per-machine state of its parts (none without a directory)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._parts: list[_Part] = []
        self._throttle = LogThrottle(logger)

    def add(self, name: str, state: Persistent, interval_s: float) -> None:
        """Keep ``state`` (``name`` in log lines), written every ``interval_s`` seconds."""
        self._parts.append(_Part(name, state, interval_s, time.monotonic() + interval_s))

    def load(self, store: WindowStore) -> None:
        """Read every part back (the tick thread, before the first tick)."""
        if self.directory is None:
            return

        def slot_without_eviction(machine_id: str) -> int | None:
            known = store.slot_of.get(machine_id)
            if known is not None or len(store.machine_ids) >= store.max_machines:
                return known
            return store.slot_for(machine_id)

        for part in self._parts:
            loaded = part.state.load(self.directory, slot_without_eviction)
            if loaded:
                logger.info(
                    "loaded the %s of %d machine(s) from %s", part.name, loaded, self.directory
                )

    def save(self, store: WindowStore, only_due: bool = False) -> None:
        """Write every part (``only_due``: those whose interval has passed); a failure is
        logged, not raised: the agent goes on, and the next write tries again."""
        if self.directory is None:
            return
        now = time.monotonic()
        for part in self._parts:
            if only_due and now < part.due:
                continue
            part.due = now + part.interval_s
            try:
                part.state.save(self.directory, store.slot_of)
            except OSError as error:
                self._throttle.warning(
                    f"save-{part.name}",
                    "cannot save the %s to %s: %s",
                    part.name,
                    self.directory,
                    error.strerror or error,
                )
