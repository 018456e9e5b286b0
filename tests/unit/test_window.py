"""The window store: ring buffers per machine, readiness, the ordering and gap rule, growth and
eviction."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.window import WindowStore
from wire.reading import Reading

F = 4


def reading(machine_id: str, seq: int, ts: float | None = None, value: float | None = None):
    """A reading whose every feature encodes (seq, feature) so a window shows its order."""
    base = float(seq) if value is None else value
    values = np.array([base + f / 10 for f in range(F)], dtype=np.float32)
    return Reading(
        machine_id=machine_id, ts=float(seq) if ts is None else ts, seq=seq, values=values
    )


def fill(store: WindowStore, machine_id: str, seqs, now: float = 0.0) -> None:
    for seq in seqs:
        assert store.append(reading(machine_id, seq), now) is None


def test_windows_are_oldest_first_after_wrap_around() -> None:
    store = WindowStore(window=5, features=F, max_machines=10)
    fill(store, "a", range(13))  # wraps the ring twice and a bit
    batch = store.take_ready()
    assert batch.slots.tolist() == [0]
    assert batch.windows.shape == (1, 5, F)
    np.testing.assert_allclose(batch.windows[0, :, 0], [8, 9, 10, 11, 12])
    np.testing.assert_allclose(batch.windows[0, 2], [10.0, 10.1, 10.2, 10.3], rtol=1e-6)
    np.testing.assert_allclose(store.latest(batch.slots)[0], batch.windows[0, -1])


@pytest.mark.parametrize("count", [5, 6, 7, 9, 10, 11])
def test_every_ring_position(count: int) -> None:
    store = WindowStore(window=5, features=F, max_machines=1)
    fill(store, "a", range(count))
    windows = store.windows(np.array([0]))
    np.testing.assert_allclose(windows[0, :, 0], np.arange(count - 5, count))


def test_take_ready_needs_a_full_window() -> None:
    store = WindowStore(window=3, features=F, max_machines=10)
    fill(store, "a", range(2))
    fill(store, "b", range(3))
    fill(store, "c", range(7))
    batch = store.take_ready()
    assert len(batch) == 2
    ready = {store.machine_ids[s] for s in batch.slots.tolist()}
    assert ready == {"b", "c"}


def test_take_ready_needs_a_new_reading_and_clears_freshness() -> None:
    store = WindowStore(window=3, features=F, max_machines=10)
    fill(store, "a", range(3))
    fill(store, "b", range(3))
    assert len(store.take_ready()) == 2
    # Nothing new: nothing to forecast.
    assert len(store.take_ready()) == 0
    fill(store, "b", [3])
    batch = store.take_ready()
    assert [store.machine_ids[s] for s in batch.slots.tolist()] == ["b"]
    np.testing.assert_allclose(batch.windows[0, :, 0], [1, 2, 3])
    assert len(store.take_ready()) == 0
    # A machine whose window is not yet full keeps its freshness until it is.
    fill(store, "c", range(2))
    assert len(store.take_ready()) == 0
    fill(store, "c", [2])
    assert [store.machine_ids[s] for s in store.take_ready().slots.tolist()] == ["c"]


def test_empty_store() -> None:
    store = WindowStore(window=3, features=F, max_machines=10)
    batch = store.take_ready()
    assert len(batch) == 0
    assert batch.windows.shape == (0, 3, F)
    assert len(store) == 0


def test_duplicate_and_out_of_order_are_rejected_without_changing_the_window() -> None:
    store = WindowStore(window=3, features=F, max_machines=10)
    fill(store, "a", [10, 11, 12])
    store.take_ready()
    before = store.windows(np.array([0])).copy()
    assert store.append(reading("a", 12, value=999.0), now=1.0) == "duplicate"
    assert store.append(reading("a", 11, value=999.0), now=1.0) == "out_of_order"
    assert store.append(reading("a", 0, value=999.0), now=1.0) == "out_of_order"
    np.testing.assert_array_equal(store.windows(np.array([0])), before)
    assert store.last_seq[0] == 12
    # Rejections do not make the machine ready again...
    assert len(store.take_ready()) == 0
    # ...and a few lost readings are bridged (at most max_missing_readings)...
    assert store.append(reading("a", 18), now=1.0) is None
    np.testing.assert_allclose(store.take_ready().windows[0, :, 0], [11, 12, 18])
    # ...but more is a gap: the window restarts, so no forecast spans it.
    assert store.append(reading("a", 25), now=1.0) is None
    assert store.count[0] == 1
    assert len(store.take_ready()) == 0
    fill(store, "a", [26, 27], now=1.0)
    np.testing.assert_allclose(store.take_ready().windows[0, :, 0], [25, 26, 27])


def test_first_reading_may_have_seq_zero() -> None:
    store = WindowStore(window=1, features=F, max_machines=10)
    assert store.append(reading("a", 0), now=0.0) is None
    assert store.append(reading("a", 0), now=0.0) == "duplicate"


def test_machines_are_independent() -> None:
    store = WindowStore(window=2, features=F, max_machines=10)
    fill(store, "a", [5, 6])
    fill(store, "b", [1, 2])  # lower seqs than a's are fine for another machine
    batch = store.take_ready()
    ids = [store.machine_ids[s] for s in batch.slots.tolist()]
    windows = {m: w[:, 0].tolist() for m, w in zip(ids, batch.windows, strict=True)}
    assert windows == {"a": [5.0, 6.0], "b": [1.0, 2.0]}


def test_capacity_grows_beyond_1024_machines_and_keeps_data() -> None:
    store = WindowStore(window=3, features=F, max_machines=5000)
    initial = store.capacity
    assert initial == 1024
    machines = 2500
    for seq in range(3):
        for m in range(machines):
            # The value encodes the machine, so a mix-up on growth would show.
            value = m * 10.0 + seq
            r = Reading(f"m-{m}", float(seq), seq, np.full(F, value, dtype=np.float32))
            assert store.append(r, now=0.0) is None
    assert store.capacity >= machines
    assert store.capacity > initial
    assert len(store) == machines
    batch = store.take_ready()
    assert len(batch) == machines
    for slot, window in zip(batch.slots.tolist(), batch.windows, strict=True):
        m = int(store.machine_ids[slot].removeprefix("m-"))
        np.testing.assert_array_equal(window[:, 0], [m * 10.0, m * 10.0 + 1, m * 10.0 + 2])
    assert store.last_seq[: len(store)].tolist() == [2] * machines


def test_capacity_never_exceeds_max_machines() -> None:
    store = WindowStore(window=2, features=F, max_machines=1500)
    for m in range(1500):
        store.slot_for(f"m-{m}")
    assert store.capacity == 1500
    small = WindowStore(window=2, features=F, max_machines=10)
    assert small.capacity == 10


def test_a_new_machine_beyond_the_cap_evicts_the_least_recently_seen() -> None:
    store = WindowStore(window=2, features=F, max_machines=3)
    fill(store, "a", [1, 2])
    fill(store, "b", [1, 2])
    fill(store, "c", [1, 2])
    assert store.append(reading("a", 3), now=0.0) is None  # a is now the most recent
    # Rejected readings count as seen too: b just sent something.
    assert store.append(reading("b", 2), now=0.0) == "duplicate"
    assert store.take_evicted()[0] == []
    slot_c = store.slot_of["c"]
    assert store.append(reading("d", 7, value=70.0), now=0.0) is None
    assert "c" not in store.slot_of
    assert store.slot_of["d"] == slot_c, "the evicted machine's slot is reused"
    assert store.machine_ids[slot_c] == "d"
    assert len(store) == 3
    assert store.capacity == 3
    assert store.evictions == 1
    ids, slots, _ = store.take_evicted()
    assert ids == ["c"]
    assert slots.tolist() == [slot_c]
    assert store.take_evicted()[0] == [], "taken once"
    # d starts from nothing: none of c's readings, sequence or timing.
    assert store.count[slot_c] == 1
    assert store.last_seq[slot_c] == 7
    assert math.isnan(store.interval_s[slot_c])
    assert store.append(reading("d", 8, value=80.0), now=0.0) is None
    batch = store.take_ready()
    windows = {
        store.machine_ids[s]: w[:, 0].tolist()
        for s, w in zip(batch.slots.tolist(), batch.windows, strict=True)
    }
    assert windows["d"] == [70.0, 80.0]
    # An evicted machine that comes back is a new machine; a low seq is fine for it.
    # Order of last sight is now a, b, d: a goes.
    assert store.append(reading("c", 0), now=0.0) is None
    assert store.take_evicted()[0] == ["a"]


def test_eviction_keeps_memory_flat_over_many_ids() -> None:
    store = WindowStore(window=3, features=F, max_machines=100)
    for m in range(20_000):
        assert store.append(reading(f"flood-{m}", 0), now=0.0) is None
    assert len(store) == len(store.slot_of) == 100
    assert store.capacity == 100
    assert store.evictions == 20_000 - 100
    ids, slots, _ = store.take_evicted()
    assert len(ids) == 20_000 - 100
    assert set(slots.tolist()) == set(range(100))
    assert set(store.slot_of) == {f"flood-{m}" for m in range(19_900, 20_000)}


def test_interval_estimated_from_timestamps() -> None:
    store = WindowStore(window=2, features=F, max_machines=10)
    now = 1000.0
    store.append(reading("a", 0, ts=100.0), now=now)
    assert math.isnan(store.interval_s[0])
    store.append(reading("a", 1, ts=100.5), now=now)
    assert store.interval_s[0] == pytest.approx(0.5)
    # A jump of 4 seqs over 2 s (3 readings lost) still means 0.5 s per reading.
    store.append(reading("a", 5, ts=102.5), now=now)
    assert store.interval_s[0] == pytest.approx(0.5)
    # A change of rate is followed gradually (smoothed), not jumped to.
    for seq in range(6, 60):
        store.append(reading("a", seq, ts=102.5 + (seq - 5) * 1.0), now=now)
    assert store.interval_s[0] == pytest.approx(1.0, abs=1e-3)
    store.append(reading("a", 60, ts=102.5 + 55 + 2.0), now=now)
    assert 1.0 < store.interval_s[0] < 2.0
    # A gap says nothing about the rate: the estimate is kept as it was.
    before = store.interval_s[0]
    assert store.append(reading("a", 61, ts=102.5 + 55 + 2.0 + 31.0), now=now) is None
    assert store.interval_s[0] == before


def test_timestamps_going_back_are_out_of_order() -> None:
    store = WindowStore(window=2, features=F, max_machines=10)
    assert store.append(reading("a", 0, ts=100.0), now=200.0) is None
    assert store.append(reading("a", 1, ts=99.0), now=200.0) == "out_of_order"
    assert math.isnan(store.interval_s[0])
    assert store.last_seq[0] == 0
    # An equal timestamp is fine (a coarse clock), and does not move the interval.
    assert store.append(reading("a", 1, ts=100.0), now=200.0) is None


def test_latest_and_last_seen() -> None:
    store = WindowStore(window=4, features=F, max_machines=10)
    fill(store, "a", [1, 2], now=5.0)
    fill(store, "b", [7], now=6.0)
    fill(store, "a", [3], now=8.0)
    slots = np.array([store.slot_of["a"], store.slot_of["b"]])
    latest = store.latest(slots)
    np.testing.assert_allclose(latest[:, 0], [3.0, 7.0])
    assert store.last_seen[slots].tolist() == [8.0, 6.0]


def test_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        WindowStore(window=0, features=F, max_machines=1)
    with pytest.raises(ValueError):
        WindowStore(window=2, features=F, max_machines=0)


# ---------------------------------------------------------------- the ordering and gap rule


def test_future_timestamps_are_rejected_before_taking_a_slot() -> None:
    store = WindowStore(window=2, features=F, max_machines=1, max_future_s=60.0)
    now = 1_000_000.0
    assert store.append(reading("a", 1, ts=now + 60.0), now=now) is None  # the limit itself
    assert store.append(reading("a", 2, ts=now + 61.0), now=now) == "future"
    assert store.last_seq[0] == 1
    # A future reading of a new machine evicts nobody.
    assert store.append(reading("b", 1, ts=now + 1e9), now=now) == "future"
    assert list(store.slot_of) == ["a"]
    assert store.evictions == 0


def test_a_jump_in_time_is_a_gap() -> None:
    store = WindowStore(window=3, features=F, max_machines=10, stale_after_s=30.0)
    now = 1000.0
    for seq in range(3):
        assert store.append(reading("a", seq, ts=100.0 + seq), now=now) is None
    assert len(store.take_ready()) == 1
    # Consecutive seq, but 31 s of silence by the sender's clock: the window restarts.
    assert store.append(reading("a", 3, ts=102.0 + 31.0), now=now) is None
    assert store.count[0] == 1
    assert store.restarts[0] == 1
    assert len(store.take_ready()) == 0
    # 30 s exactly is still bridged.
    fill_ts = [(4, 133.0 + 30.0), (5, 164.0)]
    for seq, ts in fill_ts:
        assert store.append(reading("a", seq, ts=ts), now=now) is None
    assert store.restarts[0] == 1
    np.testing.assert_allclose(store.take_ready().windows[0, :, 0], [3, 4, 5])


def test_a_stale_machine_starts_afresh_so_nothing_blocks_it_for_long() -> None:
    store = WindowStore(window=2, features=F, max_machines=10, stale_after_s=30.0)
    # One bad reading with a huge seq slips in (it is valid on its own)...
    assert store.append(reading("a", 1, ts=10.0), now=100.0) is None
    assert store.append(reading("a", 2**60, ts=11.0), now=101.0) is None
    # ...so the sender's real readings are out of order, for now:
    assert store.append(reading("a", 2, ts=12.0), now=102.0) == "out_of_order"
    assert store.append(reading("a", 3, ts=13.0), now=131.0) == "out_of_order"
    assert store.stale(131.0).tolist() == []
    # Once the machine has had no accepted reading for stale_after_s it is stale...
    assert store.stale(131.5).tolist() == [0]
    # ...and its next reading, whatever its seq and ts, starts it afresh.
    assert store.append(reading("a", 4, ts=14.0), now=131.5) is None
    assert store.last_seq[0] == 4
    assert store.count[0] == 1
    assert store.stale(131.5).tolist() == []
    assert store.append(reading("a", 5, ts=15.0), now=132.0) is None
    np.testing.assert_allclose(store.take_ready().windows[0, :, 0], [4, 5])
    # A sender that restarted its count (seq back to 0) recovers the same way.
    assert store.append(reading("a", 0, ts=16.0), now=133.0) == "out_of_order"
    assert store.append(reading("a", 1, ts=17.0), now=163.5) is None


def test_restart_keeps_the_machine_and_its_order() -> None:
    store = WindowStore(window=2, features=F, max_machines=10)
    fill(store, "a", [1, 2])
    store.restart(np.array([0]))
    assert len(store.take_ready()) == 0
    assert store.slot_of["a"] == 0
    assert store.append(reading("a", 2), now=0.0) == "duplicate"
    fill(store, "a", [3, 4])
    np.testing.assert_allclose(store.take_ready().windows[0, :, 0], [3, 4])


def rule_store(max_machines: int) -> WindowStore:
    """A small store with the rule's limits as ``Reference`` below states them."""
    return WindowStore(
        window=3,
        features=F,
        max_machines=max_machines,
        max_missing_readings=2,
        stale_after_s=30.0,
        max_future_s=50.0,
    )


class Reference:
    """The ordering and gap rule as docs/plant.md states it, written plainly, one machine."""

    def __init__(self, window: int, max_missing: int, stale_after_s: float, max_future_s: float):
        self.window, self.max_missing = window, max_missing
        self.stale_after_s, self.max_future_s = stale_after_s, max_future_s
        self.last_seq: int | None = None
        self.last_ts = 0.0
        self.last_seen = 0.0
        self.rows: list[float] = []

    def append(self, seq: int, ts: float, now: float) -> str | None:
        if ts > now + self.max_future_s:
            return "future"
        if self.last_seq is not None and now - self.last_seen > self.stale_after_s:
            self.last_seq, self.rows = None, []
        if self.last_seq is not None:
            if seq == self.last_seq:
                return "duplicate"
            if seq < self.last_seq or ts < self.last_ts:
                return "out_of_order"
            if seq - self.last_seq - 1 > self.max_missing or ts - self.last_ts > self.stale_after_s:
                self.rows = []
        self.rows.append(float(seq))
        self.last_seq, self.last_ts, self.last_seen = seq, ts, now
        return None

    def window_now(self) -> list[float] | None:
        return self.rows[-self.window :] if len(self.rows) >= self.window else None


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(-3, 9),  # seq step
            st.sampled_from([-5.0, 0.0, 0.5, 1.0, 2.0, 29.0, 30.0, 31.0, 100.0]),  # ts step
            st.sampled_from([0.0, 0.5, 1.0, 10.0, 30.0, 31.0]),  # agent clock step
        ),
        min_size=1,
        max_size=60,
    )
)
def test_rule_matches_its_plain_statement(steps: list[tuple[int, float, float]]) -> None:
    """Random streams of one machine — duplicates, late, future, gaps, stalls — give the same
    verdicts and the same windows as the rule written out plainly."""
    store = rule_store(max_machines=1)
    reference = Reference(window=3, max_missing=2, stale_after_s=30.0, max_future_s=50.0)
    seq, ts, now = 100, 1000.0, 1000.0
    for seq_step, ts_step, now_step in steps:
        seq, ts, now = max(0, seq + seq_step), ts + ts_step, now + now_step
        expected = reference.append(seq, ts, now)
        assert store.append(reading("a", seq, ts=ts), now=now) == expected
        window = reference.window_now()
        batch = store.take_ready()
        if expected is None and window is not None:
            assert batch.windows[0, :, 0].tolist() == window
        else:  # rejected, or the window is not full (again) yet: nothing to forecast
            assert len(batch) == 0
        assert np.all(np.isfinite(store.ring))


def test_eviction_says_whether_the_machine_ever_reported() -> None:
    """A machine known only from a restored alert (a slot, no reading) may belong to another
    agent: the agent must not publish "stale" for it when it is evicted."""
    store = WindowStore(window=3, features=F, max_machines=2)
    store.slot_for("restored-only")
    assert store.append(reading("heard", 0), now=0.0) is None
    assert store.append(reading("new-1", 0), now=0.0) is None  # evicts restored-only
    assert store.append(reading("new-2", 0), now=0.0) is None  # evicts heard
    ids, _, heard = store.take_evicted()
    assert list(zip(ids, heard, strict=True)) == [("restored-only", False), ("heard", True)]


STATE_ARRAYS = (
    "head",
    "count",
    "last_seq",
    "last_ts",
    "interval_s",
    "last_seen",
    "fresh",
    "restarts",
)


def _state(store: WindowStore) -> dict[str, object]:
    used = len(store)
    return {
        "ids": list(store.machine_ids),
        "order": list(store.slot_of),
        "windows": store.windows(np.arange(used)).tolist(),
        **{  # NaN (no reading yet) as a number, so that equal states compare equal
            name: np.nan_to_num(getattr(store, name)[:used], nan=-1.0).tolist()
            for name in STATE_ARRAYS
        },
        "evicted": [(ids, slots.tolist(), heard) for ids, slots, heard in [store.take_evicted()]],
    }


def _in_window(
    store: WindowStore, readings: list[Reading], verdicts: list[str | None], i: int
) -> bool:
    """Whether reading ``i``, appended one by one with these verdicts, is in its machine's
    window now: accepted, its machine still holds the slot, and fewer than the window's
    current length of that machine's later readings were accepted after it."""
    machine = readings[i].machine_id
    slot = store.slot_of.get(machine)
    if verdicts[i] is not None or slot is None:
        return False
    later = sum(
        verdicts[j] is None and readings[j].machine_id == machine
        for j in range(i + 1, len(readings))
    )
    length = min(int(store.count[slot]), store.window)
    recent = store.windows(np.array([slot]))[0][store.window - length :]
    return later < length and any(np.array_equal(row, readings[i].values) for row in recent)


@pytest.mark.parametrize("small_round", [0, 10**9], ids=["numpy rounds", "one by one"])
@settings(max_examples=300, deadline=None)
@given(
    batches=st.lists(
        st.lists(
            st.tuples(
                st.sampled_from("abcdefg"),  # more machines than slots: eviction in a batch
                st.integers(-2, 8),  # seq step
                st.sampled_from([-5.0, 0.0, 0.5, 1.0, 2.0, 31.0, 100.0]),  # ts step
            ),
            max_size=25,
        ),
        min_size=1,
        max_size=6,
    ),
    clock_steps=st.lists(st.sampled_from([0.0, 1.0, 31.0]), min_size=6, max_size=6),
)
def test_a_batch_leaves_the_store_as_one_reading_at_a_time_does(
    small_round: int, batches: list[list[tuple[str, int, float]]], clock_steps: list[float]
) -> None:
    """append_many applies a tick's readings in rounds, with numpy (or, for small rounds, the
    scalar rule); the verdicts, the windows, the eviction order and every per-machine fact must
    be those of append, one reading at a time — with repeats of a machine in a batch,
    rejections, gaps, stale machines and evictions. ``in_window`` must name exactly the
    accepted readings still in their machine's window."""

    batched, single = rule_store(max_machines=4), rule_store(max_machines=4)
    batched.small_round = small_round
    seqs: dict[str, int] = {}
    stamps: dict[str, float] = {}
    now = 1000.0
    for batch, clock_step in zip(batches, clock_steps, strict=False):
        now += clock_step
        readings = []
        for machine, seq_step, ts_step in batch:
            seqs[machine] = max(0, seqs.get(machine, 10) + seq_step)
            stamps[machine] = stamps.get(machine, 1000.0) + ts_step
            readings.append(reading(machine, seqs[machine], ts=stamps[machine]))
        result = batched.append_many(readings, now)
        verdicts = [single.append(r, now) for r in readings]
        assert dict(result.rejected) == {
            i: reason for i, reason in enumerate(verdicts) if reason is not None
        }
        assert result.accepted.tolist() == [reason is None for reason in verdicts]
        for i in range(len(readings)):
            assert bool(result.in_window[i]) == _in_window(single, readings, verdicts, i), i
        assert _state(batched) == _state(single)


def test_one_busy_machine_in_a_batch() -> None:
    """A gateway catching up sends one machine's readings by the thousand: each is its own
    round, and they land as one by one would."""
    batched = WindowStore(window=5, features=F, max_machines=4)
    single = WindowStore(window=5, features=F, max_machines=4)
    readings = [reading("a", seq) for seq in range(3000)] + [reading("b", 0)]
    result = batched.append_many(readings, now=3000.0)
    assert result.accepted.all()
    assert [single.append(r, 3000.0) for r in readings] == [None] * len(readings)
    assert _state(batched) == _state(single)
    np.testing.assert_allclose(batched.windows(np.array([0]))[0, :, 0], np.arange(2995, 3000))
    assert result.in_window.tolist() == [False] * 2995 + [True] * 6
