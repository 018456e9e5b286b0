"""What the agent learns per machine, kept in ``agent.state_dir`` across restarts.

Two things take long to learn and would be lost with the process: the anomaly scorer's normal
of every sensor (``anomaly.npz``, :class:`agent.anomaly_events.AnomalyAlerts`) and the slow
path's long trends (``trend.npz``, :class:`agent.trend.TrendTracker`, up to 20,000 readings
each). Each is written every so often and at stop, and read back at start-up.

The files hold the machines this agent served, so at start-up they come first: their machines
take their slots (:meth:`LearnedState.reserve`) before the retained alert states are resumed,
which then only attach to those or fill the slots left free. Under sharding every agent reads
every machine's retained alerts, most of them for machines another agent serves; were those
placed first they could fill ``agent.max_machines`` and leave no slot for what this agent had
learned about its own machines. Nothing at start-up evicts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.slotfile import Snapshot, saved_ids
from agent.throttle import LogThrottle
from agent.window import WindowStore

logger = logging.getLogger(__name__)


class Persistent(Protocol):
    """Per-slot state that can be copied by machine id and read back into any slots."""

    state_file: str
    """The name of its file in the state directory."""

    def snapshot(self, directory: Path, slot_of: dict[str, int]) -> Snapshot: ...

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
    """Writes and reads back the per-machine state of its parts (none without a directory).

    The periodic writes copy the arrays on the tick thread (milliseconds) and write them on a
    thread of their own: at 10,000 machines the slow path's file is 27 MB, and writing and
    syncing it took 0.1-0.2 s here, most of a tick. A write still in progress when the next
    falls due makes that one wait for the following round; the write at stop is done at once.
    """

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._parts: list[_Part] = []
        self._throttle = LogThrottle(logger)
        self._writer: threading.Thread | None = None

    def add(self, name: str, state: Persistent, interval_s: float) -> None:
        """Keep ``state`` (``name`` in log lines), written every ``interval_s`` seconds."""
        self._parts.append(_Part(name, state, interval_s, time.monotonic() + interval_s))

    def reserve(self, store: WindowStore) -> int:
        """Give the machines in the files their slots, while there is room (the tick thread,
        at start-up, before the retained alert states are resumed); returns how many took one.

        A file lists its machines from the least to the most recently seen when it was
        written: the most recent come first here, should there be fewer slots now. What the
        machines hold is read later (:meth:`load`), after the retained states, which that
        reading compares with the file's.
        """
        if self.directory is None:
            return 0
        placed = 0
        for part in self._parts:
            for machine_id in reversed(saved_ids(self.directory / part.state.state_file)):
                known = machine_id in store.slot_of
                if store.slot_if_room(machine_id) is None:
                    break
                placed += not known
        return placed

    def load(self, store: WindowStore) -> None:
        """Read every part back (the tick thread, before the first tick), into the slots
        :meth:`reserve` gave (or free ones; never evicting). The machines found in a file
        become the most recently seen, so that machines known only from a retained alert
        (another agent's, under sharding) are the first to give way to new ones."""
        if self.directory is None:
            return

        for part in self._parts:
            try:
                loaded = part.state.load(self.directory, store.slot_if_room)
            except Exception:  # a file no check foresaw must not keep the agent from ticking
                logger.exception(
                    "ignoring the saved %s in %s: the machines learn it afresh; delete the "
                    "file to silence this",
                    part.name,
                    self.directory,
                )
                continue
            if loaded:
                logger.info(
                    "loaded the %s of %d machine(s) from %s", part.name, loaded, self.directory
                )

    def save(self, store: WindowStore, only_due: bool = False) -> None:
        """Write every part now (at stop), or with ``only_due`` those whose interval has
        passed, on the writer thread; a failure is logged, not raised: the agent goes on, and
        the next write tries again."""
        if self.directory is None:
            return
        busy = self._writer is not None and self._writer.is_alive()
        if only_due and busy:
            return
        if not only_due and self._writer is not None:
            self._writer.join()
        now = time.monotonic()
        snapshots = []
        for part in self._parts:
            if only_due and now < part.due:
                continue
            part.due = now + part.interval_s
            snapshots.append((part.name, part.state.snapshot(self.directory, store.slot_of)))
        if not snapshots:
            return
        if only_due:
            self._writer = threading.Thread(
                target=self._write, args=(snapshots,), name="forewarn-state-writer", daemon=True
            )
            self._writer.start()
        else:
            self._write(snapshots)

    def _write(self, snapshots: list[tuple[str, Snapshot]]) -> None:
        for name, snapshot in snapshots:
            try:
                snapshot.write()
            except OSError as error:
                self._throttle.warning(
                    f"save-{name}",
                    "cannot save the %s to %s: %s",
                    name,
                    self.directory,
                    error.strerror or error,
                )
