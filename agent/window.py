"""The window store: the last ``window`` readings of every machine, in preallocated arrays.

One slot per machine, addressed by a dict from machine id to slot. Each slot is a ring of
``window`` rows; gathering the ready machines' windows is one fancy-indexing operation over all
of them, so a tick does no per-machine Python work to build its batch.

The store has a single writer (the tick thread, which drains the ingest hand-off), so it needs
no lock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from agent.reading import Reading

_INITIAL_CAPACITY = 1024
_INTERVAL_SMOOTHING = 0.2


@dataclass(frozen=True)
class Batch:
    """The machines to forecast this tick and their windows in time order (oldest first)."""

    slots: NDArray[np.int64]
    windows: NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.slots.shape[0])


class WindowStore:
    """Rolling windows of readings per machine, plus the facts the tick needs about each."""

    def __init__(self, window: int, features: int, max_machines: int) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        if max_machines < 1:
            raise ValueError("max_machines must be at least 1")
        self.window = window
        self.features = features
        self.max_machines = max_machines
        self.slot_of: dict[str, int] = {}
        self.machine_ids: list[str] = []
        self._allocate(min(_INITIAL_CAPACITY, max_machines))

    def _allocate(self, capacity: int) -> None:
        def grow(old: NDArray | None, shape: tuple[int, ...], dtype: type, fill: float) -> NDArray:
            new: NDArray = np.full(shape, fill, dtype=dtype)
            if old is not None:
                new[: old.shape[0]] = old
            return new

        previous = getattr(self, "ring", None)
        w, f = self.window, self.features
        self.ring = grow(previous, (capacity, w, f), np.float32, 0.0)
        self.head = grow(getattr(self, "head", None), (capacity,), np.int64, 0)
        self.count = grow(getattr(self, "count", None), (capacity,), np.int64, 0)
        self.last_seq = grow(getattr(self, "last_seq", None), (capacity,), np.int64, -1)
        self.last_ts = grow(getattr(self, "last_ts", None), (capacity,), np.float64, math.nan)
        self.interval_s = grow(getattr(self, "interval_s", None), (capacity,), np.float64, math.nan)
        self.last_seen = grow(getattr(self, "last_seen", None), (capacity,), np.float64, 0.0)
        self.fresh = grow(getattr(self, "fresh", None), (capacity,), np.bool_, False)
        self.capacity = capacity

    def __len__(self) -> int:
        return len(self.machine_ids)

    def slot_for(self, machine_id: str) -> int | None:
        """The machine's slot, creating one; None when the store is full."""
        slot = self.slot_of.get(machine_id)
        if slot is not None:
            return slot
        if len(self.machine_ids) >= self.max_machines:
            return None
        slot = len(self.machine_ids)
        if slot >= self.capacity:
            self._allocate(min(self.capacity * 2, self.max_machines))
        self.slot_of[machine_id] = slot
        self.machine_ids.append(machine_id)
        return slot

    def append(self, reading: Reading, now: float) -> str | None:
        """Store one reading; returns a rejection reason instead when it must be dropped.

        A reading whose sequence number is not above the machine's last is a duplicate (equal)
        or out of order (lower): QoS 1 redelivers, and a window must never go back in time.
        """
        slot = self.slot_for(reading.machine_id)
        if slot is None:
            return "too_many_machines"
        last = self.last_seq[slot]
        if reading.seq == last:
            return "duplicate"
        if reading.seq < last:
            return "out_of_order"
        previous_ts = self.last_ts[slot]
        if not math.isnan(previous_ts) and reading.ts > previous_ts:
            step = (reading.ts - previous_ts) / max(1, reading.seq - last)
            current = self.interval_s[slot]
            self.interval_s[slot] = (
                step if math.isnan(current) else current + _INTERVAL_SMOOTHING * (step - current)
            )
        head = self.head[slot]
        self.ring[slot, head] = reading.values
        self.head[slot] = (head + 1) % self.window
        self.count[slot] += 1
        self.last_seq[slot] = reading.seq
        self.last_ts[slot] = reading.ts
        self.last_seen[slot] = now
        self.fresh[slot] = True
        return None

    def take_ready(self) -> Batch:
        """Machines with a full window and a reading since their last forecast, and windows."""
        used = len(self.machine_ids)
        ready = np.flatnonzero(self.fresh[:used] & (self.count[:used] >= self.window))
        self.fresh[ready] = False
        return Batch(slots=ready, windows=self.windows(ready))

    def windows(self, slots: NDArray[np.int64]) -> NDArray[np.float32]:
        """Windows of the given slots in time order (oldest first): (len(slots), window, F)."""
        order = (self.head[slots, np.newaxis] + np.arange(self.window)) % self.window
        return self.ring[slots[:, np.newaxis], order]

    def latest(self, slots: NDArray[np.int64]) -> NDArray[np.float32]:
        """The newest reading of each slot: (len(slots), F)."""
        return self.ring[slots, (self.head[slots] - 1) % self.window]
