"""The window store: the last ``window`` readings of every machine, in preallocated arrays.

One slot per machine, addressed by a dict from machine id to slot. Each slot is a ring of
``window`` rows, each row stored twice so that a window is one contiguous block; gathering the
ready machines' windows is one fancy-indexing operation over all of them, and a tick's readings
are stored by :meth:`WindowStore.append_many` in a few array operations per round (each
machine's next reading), so a tick does little per-machine work to build its batch.

The number of slots is capped (``agent.max_machines``): a new machine beyond the cap takes the
slot of the least recently seen machine, which is evicted. Memory therefore stays bounded
whatever machine ids arrive, and a flood of made-up ids cannot lock real machines out. Other
per-slot state (alert policy, anomaly scorer, metrics) must be reset for evicted slots; the
agent collects them with :meth:`WindowStore.take_evicted` after each drain.

The ordering rule — the one rule for duplicate, out-of-order, late and future readings and
for gaps — is :meth:`WindowStore.append`'s (``append_many`` applies it to many readings at
once). In short: a machine's window only moves forward; what cannot move it forward is
rejected; a jump too large to bridge restarts it; a machine silent for ``stale_after_s``
starts afresh, so no accepted reading can block it for longer.

The store has a single writer (the tick thread, which drains the ingest hand-off), so it needs
no lock.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from wire.reading import Reading

_INITIAL_CAPACITY = 1024
_INTERVAL_SMOOTHING = 0.2

SMALL_ROUND = 16
"""In :meth:`WindowStore.append_many`, a round of fewer readings is applied one reading at a
time: numpy's cost per call outweighs it there, and one busy machine (a gateway catching up)
makes a round of one for each of its readings, which would otherwise cost ~20 numpy calls
each."""

DEFAULT_MAX_MISSING_READINGS = 5
DEFAULT_STALE_AFTER_S = 30.0
DEFAULT_MAX_FUTURE_S = 60.0


@dataclass(frozen=True)
class Batch:
    """The machines to forecast this tick and their windows in time order (oldest first)."""

    slots: NDArray[np.int64]
    windows: NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.slots.shape[0])


@dataclass(frozen=True)
class Appended:
    """What :meth:`WindowStore.append_many` did with each reading, by its index."""

    slots: NDArray[np.int64]
    """Each reading's slot; -1 for one refused before it had one (``future``)."""
    accepted: NDArray[np.bool_]
    rejected: list[tuple[int, str]]
    """(index, reason) of each refused reading, in index order."""
    in_window: NDArray[np.bool_]
    """Accepted and still in the machine's window when the call returned (not pushed out by
    its later readings of the same call, nor evicted): what a forecast now would use."""


def occurrence(slots: NDArray[np.int64]) -> NDArray[np.int64]:
    """For each entry, how many earlier entries have the same slot (0 for the first)."""
    order = np.argsort(slots, kind="stable")
    ordered = slots[order]
    positions = np.arange(len(slots))
    starts = np.maximum.accumulate(np.where(np.r_[True, ordered[1:] != ordered[:-1]], positions, 0))
    rank = np.empty_like(positions)
    rank[order] = positions - starts
    return rank


def grown(array: NDArray, capacity: int, fill: float) -> NDArray:
    """A per-slot array (slots first) grown to ``capacity`` slots, the new ones at ``fill``:
    every per-slot state beside the window store grows with it this way."""
    new = np.full((capacity, *array.shape[1:]), fill, dtype=array.dtype)
    new[: array.shape[0]] = array
    return new


class WindowStore:
    """Rolling windows of readings per machine, plus the facts the tick needs about each."""

    def __init__(
        self,
        window: int,
        features: int,
        max_machines: int,
        *,
        max_missing_readings: int = DEFAULT_MAX_MISSING_READINGS,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
        max_future_s: float = DEFAULT_MAX_FUTURE_S,
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        if max_machines < 1:
            raise ValueError("max_machines must be at least 1")
        self.window = window
        self.features = features
        self.max_machines = max_machines
        self.max_missing_readings = max_missing_readings
        self.stale_after_s = stale_after_s
        self.max_future_s = max_future_s
        # Ordered from least to most recently seen: eviction pops the front in O(1).
        self.slot_of: OrderedDict[str, int] = OrderedDict()
        self.machine_ids: list[str] = []
        self.evictions = 0
        self._evicted_ids: list[str] = []
        self._evicted_slots: list[int] = []
        self._evicted_heard: list[bool] = []
        self.small_round = SMALL_ROUND
        self._allocate(min(_INITIAL_CAPACITY, max_machines))

    def _allocate(self, capacity: int) -> None:
        def grow(old: NDArray | None, shape: tuple[int, ...], dtype: type, fill: float) -> NDArray:
            new: NDArray = np.full(shape, fill, dtype=dtype)
            if old is not None:
                new[: old.shape[0]] = old
            return new

        previous = getattr(self, "ring", None)
        w, f = self.window, self.features
        # Each reading is written twice, at ``head`` and ``head + window``: a machine's window
        # is then one contiguous block, ring[slot, head : head + window], oldest first, and a
        # tick gathers a block per machine (one index each) instead of a reading per machine
        # and step (measured 7x faster at 100,000 machines, for 320 more bytes per machine).
        self.ring = grow(previous, (capacity, 2 * w, f), np.float32, 0.0)
        row = f * self.ring.itemsize
        self._blocks = np.ndarray(
            shape=(capacity * 2 * w - w + 1,),
            dtype=np.dtype((np.void, w * row)),
            buffer=self.ring,
            strides=(row,),
        )
        self.head = grow(getattr(self, "head", None), (capacity,), np.int64, 0)
        self.count = grow(getattr(self, "count", None), (capacity,), np.int64, 0)
        self.last_seq = grow(getattr(self, "last_seq", None), (capacity,), np.int64, -1)
        self.last_ts = grow(getattr(self, "last_ts", None), (capacity,), np.float64, math.nan)
        self.interval_s = grow(getattr(self, "interval_s", None), (capacity,), np.float64, math.nan)
        self.last_seen = grow(getattr(self, "last_seen", None), (capacity,), np.float64, 0.0)
        self.fresh = grow(getattr(self, "fresh", None), (capacity,), np.bool_, False)
        self.restarts = grow(getattr(self, "restarts", None), (capacity,), np.int64, 0)
        self.capacity = capacity

    def __len__(self) -> int:
        return len(self.machine_ids)

    # --- slots and eviction ------------------------------------------------------------------

    def slot_for(self, machine_id: str) -> int:
        """The machine's slot, marking it the most recently seen; a new machine gets one.

        At the cap, a new machine takes the slot of the least recently seen one, whose state is
        cleared and which is recorded for :meth:`take_evicted`.
        """
        slot = self.slot_of.get(machine_id)
        if slot is not None:
            self.slot_of.move_to_end(machine_id)
            return slot
        if len(self.machine_ids) >= self.max_machines:
            victim, slot = self.slot_of.popitem(last=False)
            self._evicted_ids.append(victim)
            self._evicted_slots.append(slot)
            self._evicted_heard.append(bool(self.last_seq[slot] >= 0))
            self.evictions += 1
            self._clear(slot)
            self.machine_ids[slot] = machine_id
        else:
            slot = len(self.machine_ids)
            if slot >= self.capacity:
                self._allocate(min(self.capacity * 2, self.max_machines))
            self.machine_ids.append(machine_id)
        self.slot_of[machine_id] = slot
        return slot

    def slot_if_room(self, machine_id: str) -> int | None:
        """The machine's slot, or a free one for a new machine; None when the store is full.

        Never evicts: what the start-up restore uses, so that a machine known only from a
        retained message or a state file never takes the slot of one already placed.
        """
        if machine_id not in self.slot_of and len(self.machine_ids) >= self.max_machines:
            return None
        return self.slot_for(machine_id)

    def take_evicted(self) -> tuple[list[str], NDArray[np.int64], list[bool]]:
        """Machines evicted since the last call, the slots they held (a slot may repeat) and
        whether each had ever sent a reading (a machine known only from a restored alert, which
        another agent may own under topic sharding, had not).

        The owner resets its own per-slot state for these slots before using them, and drops
        the machines' metric series.
        """
        ids, slots = self._evicted_ids, np.array(self._evicted_slots, dtype=np.int64)
        heard = self._evicted_heard
        self._evicted_ids, self._evicted_slots, self._evicted_heard = [], [], []
        return ids, slots, heard

    def _clear(self, slot: int) -> None:
        """Forget everything about the slot's machine (it was evicted); scalar, as it runs
        once per eviction and a flood of new ids evicts on every reading."""
        self.head[slot] = 0
        self.count[slot] = 0
        self.fresh[slot] = False
        self.last_seq[slot] = -1
        self.last_ts[slot] = math.nan
        self.interval_s[slot] = math.nan
        self.last_seen[slot] = 0.0
        self.restarts[slot] = 0

    # --- the ordering and gap rule -------------------------------------------------------------

    def append(self, reading: Reading, now: float) -> str | None:
        """Store one reading; returns a rejection reason instead when it must be dropped.

        The rule, checked in this order (``now`` is the agent's clock, Unix seconds):

        1. ``ts`` more than ``max_future_s`` ahead of ``now``: ``future``. A clock that far
           ahead is wrong, and accepting it would hold back the machine's later readings.
        2. A known machine with no accepted reading for more than ``stale_after_s`` (by
           ``now``) is stale: its window and its last ``seq`` and ``ts`` are forgotten, and this
           reading starts it afresh. So a sender that restarted its count or stepped its clock
           back, or one bad reading that slipped in, holds a machine back for at most
           ``stale_after_s``.
        3. ``seq`` equal to the machine's last: ``duplicate`` (QoS 1 redelivers).
        4. ``seq`` below the last, or ``ts`` before the last: ``out_of_order`` (a late reading:
           a newer one was already accepted; a window never goes back in time).
        5. Otherwise accepted. If more than ``max_missing_readings`` readings are missing
           before it (a jump in ``seq``) or its ``ts`` is more than ``stale_after_s`` after the
           last (a jump in time), that is a gap: the window restarts with this reading, so no
           forecast spans the gap.

        A rejected reading changes nothing but the machine's place in the eviction order.
        """
        if reading.ts > now + self.max_future_s:
            return "future"
        return self._apply_one(self.slot_for(reading.machine_id), reading, now)

    def _apply_one(self, slot: int, reading: Reading, now: float) -> str | None:
        """Rules 2-5 of :meth:`append` for one reading whose slot is taken, scalar."""
        last = int(self.last_seq[slot])
        if last >= 0 and now - self.last_seen[slot] > self.stale_after_s:
            self.restart(np.array([slot]), forget_order=True)
            last = -1
        if reading.seq == last:
            return "duplicate"
        previous_ts = float(self.last_ts[slot])
        if reading.seq < last or reading.ts < previous_ts:
            return "out_of_order"
        if last >= 0:
            if (
                reading.seq - last > self.max_missing_readings + 1
                or reading.ts - previous_ts > self.stale_after_s
            ):
                self.restart(np.array([slot]))
            elif reading.ts > previous_ts:
                step = (reading.ts - previous_ts) / (reading.seq - last)
                current = self.interval_s[slot]
                self.interval_s[slot] = (
                    step
                    if math.isnan(current)
                    else current + _INTERVAL_SMOOTHING * (step - current)
                )
        head = self.head[slot]
        self.ring[slot, head] = self.ring[slot, head + self.window] = reading.values
        self.head[slot] = (head + 1) % self.window
        self.count[slot] += 1
        self.last_seq[slot] = reading.seq
        self.last_ts[slot] = reading.ts
        self.last_seen[slot] = now
        self.fresh[slot] = True
        return None

    def append_many(self, readings: Sequence[Reading], now: float) -> Appended:
        """Store readings in arrival order, as :meth:`append` would one by one, with numpy.

        A tick's readings are applied in rounds: round ``k`` holds every machine's ``k``-th
        reading of the batch, so within a round each slot appears once and the rule is a few
        array operations over all of them, while each machine's readings still meet the rule
        in the order they came. A new machine that would take (evict) the slot of a machine
        with readings still to apply first has those applied, so eviction sees what one by
        one would.
        """
        n = len(readings)
        slots = np.full(n, -1, dtype=np.int64)
        accepted = np.zeros(n, dtype=np.bool_)
        rejected: list[tuple[int, str]] = []
        if n == 0:
            return Appended(slots, accepted, rejected, accepted)
        latest_ok = now + self.max_future_s
        slot_of, slot_for, machine_ids = self.slot_of, self.slot_for, self.machine_ids
        segment_start, waiting = 0, set[int]()
        for index, reading in enumerate(readings):
            if reading.ts > latest_ok:
                rejected.append((index, "future"))
                continue
            machine_id = reading.machine_id
            if (
                machine_id not in slot_of
                and len(machine_ids) >= self.max_machines
                and slot_of[next(iter(slot_of))] in waiting
            ):
                self._apply(readings, slots, segment_start, index, now, accepted, rejected)
                segment_start, waiting = index, set()
            slot = slot_for(machine_id)
            slots[index] = slot
            waiting.add(slot)
        self._apply(readings, slots, segment_start, n, now, accepted, rejected)
        rejected.sort()
        return Appended(slots, accepted, rejected, self._in_window(readings, slots, accepted))

    def _in_window(
        self, readings: Sequence[Reading], slots: NDArray[np.int64], accepted: NDArray[np.bool_]
    ) -> NDArray[np.bool_]:
        """Accepted readings still in their machine's window: its last ``window`` of them (or
        fewer, since a restart), unless the machine lost its slot later in the same call."""
        in_window = accepted.copy()
        index = np.flatnonzero(accepted)
        if len(index):
            where = slots[index]
            ids = self.machine_ids
            kept = np.fromiter(
                (
                    ids[slot] == readings[i].machine_id
                    for i, slot in zip(index.tolist(), where.tolist(), strict=True)
                ),
                np.bool_,
                len(index),
            )
            newest_first = occurrence(where[::-1])[::-1]
            held = np.minimum(self.count[where], self.window)  # fewer after a restart
            in_window[index] = kept & (newest_first < held)
        return in_window

    def _apply(
        self,
        readings: Sequence[Reading],
        slots: NDArray[np.int64],
        start: int,
        stop: int,
        now: float,
        accepted: NDArray[np.bool_],
        rejected: list[tuple[int, str]],
    ) -> None:
        """Apply readings ``start:stop`` (their slots already taken), in rounds (see above)."""
        index = start + np.flatnonzero(slots[start:stop] >= 0)
        if not len(index):
            return
        chosen = [readings[i] for i in index.tolist()]
        seq = np.fromiter((r.seq for r in chosen), np.int64, len(chosen))
        ts = np.fromiter((r.ts for r in chosen), np.float64, len(chosen))
        values = np.array([r.values for r in chosen], dtype=np.float32)
        where = slots[index]
        rounds = occurrence(where)
        order = np.argsort(rounds, kind="stable")
        bounds = np.searchsorted(rounds[order], np.arange(int(rounds.max()) + 2))
        for k in range(len(bounds) - 1):
            pick = order[bounds[k] : bounds[k + 1]]
            if len(pick) >= self.small_round:
                self._apply_round(
                    index[pick],
                    where[pick],
                    seq[pick],
                    ts[pick],
                    values[pick],
                    now,
                    accepted,
                    rejected,
                )
                continue
            for i in pick.tolist():
                reason = self._apply_one(int(where[i]), chosen[i], now)
                if reason is None:
                    accepted[index[i]] = True
                else:
                    rejected.append((int(index[i]), reason))

    def _apply_round(
        self,
        index: NDArray[np.int64],
        slots: NDArray[np.int64],
        seq: NDArray[np.int64],
        ts: NDArray[np.float64],
        values: NDArray[np.float32],
        now: float,
        accepted: NDArray[np.bool_],
        rejected: list[tuple[int, str]],
    ) -> None:
        """The rule of :meth:`append` for readings of distinct slots, as array operations."""
        last = self.last_seq[slots]
        stale = (last >= 0) & (now - self.last_seen[slots] > self.stale_after_s)
        if stale.any():
            self.restart(slots[stale], forget_order=True)
            last = np.where(stale, -1, last)
        previous_ts = self.last_ts[slots]  # NaN for a machine with no reading: no comparison
        duplicate = seq == last
        late = ~duplicate & ((seq < last) | (ts < previous_ts))
        refused = duplicate | late
        if refused.any():
            rejected.extend((i, "duplicate") for i in index[duplicate].tolist())
            rejected.extend((i, "out_of_order") for i in index[late].tolist())
            keep = ~refused
            index, slots, seq, ts, values = (
                index[keep],
                slots[keep],
                seq[keep],
                ts[keep],
                values[keep],
            )
            last, previous_ts = last[keep], previous_ts[keep]
        known = last >= 0
        gap = known & (
            (seq - last > self.max_missing_readings + 1) | (ts - previous_ts > self.stale_after_s)
        )
        if gap.any():
            self.restart(slots[gap])
        moving = known & ~gap & (ts > previous_ts)
        if moving.any():
            moved = slots[moving]
            step = (ts[moving] - previous_ts[moving]) / (seq[moving] - last[moving])
            current = self.interval_s[moved]
            self.interval_s[moved] = np.where(
                np.isnan(current), step, current + _INTERVAL_SMOOTHING * (step - current)
            )
        head = self.head[slots]
        self.ring[slots, head] = values
        self.ring[slots, head + self.window] = values
        self.head[slots] = (head + 1) % self.window
        self.count[slots] += 1
        self.last_seq[slots] = seq
        self.last_ts[slots] = ts
        self.last_seen[slots] = now
        self.fresh[slots] = True
        accepted[index] = True

    def restart(self, slots: NDArray[np.int64], forget_order: bool = False) -> None:
        """Empty the windows of ``slots``: no forecast until they are full again.

        With ``forget_order`` the last ``seq`` and ``ts`` are forgotten too, so any next
        reading is accepted (a stale machine). The machines keep their slots, their interval
        estimate and their alert state.
        """
        self.head[slots] = 0
        self.count[slots] = 0
        self.fresh[slots] = False
        self.restarts[slots] += 1
        if forget_order:
            self.last_seq[slots] = -1
            self.last_ts[slots] = math.nan

    def stale(self, now: float) -> NDArray[np.int64]:
        """Slots of machines with no accepted reading for more than ``stale_after_s``.

        The same limit as rule 2 of :meth:`append`: such a machine's next reading restarts its
        window, so its alert state and metric series should not outlive that either.
        """
        used = len(self.machine_ids)
        seen = self.last_seq[:used] >= 0
        return np.flatnonzero(seen & (self.last_seen[:used] < now - self.stale_after_s))

    # --- gathering --------------------------------------------------------------------------

    def take_ready(self) -> Batch:
        """Machines with a full window and a reading since their last forecast, and windows."""
        used = len(self.machine_ids)
        ready = np.flatnonzero(self.fresh[:used] & (self.count[:used] >= self.window))
        self.fresh[ready] = False
        return Batch(slots=ready, windows=self.windows(ready))

    def windows(self, slots: NDArray[np.int64]) -> NDArray[np.float32]:
        """Windows of the given slots in time order (oldest first): (len(slots), window, F)."""
        starts = slots * (2 * self.window) + self.head[slots]
        blocks = self._blocks[starts]
        return blocks.view(np.float32).reshape(len(slots), self.window, self.features)

    def latest(self, slots: NDArray[np.int64]) -> NDArray[np.float32]:
        """The newest reading of each slot: (len(slots), F)."""
        return self.ring[slots, (self.head[slots] - 1) % self.window]
