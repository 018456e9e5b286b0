"""The window store: ring buffers per machine, readiness, ordering checks, growth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.reading import Reading
from agent.window import WindowStore

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
    # ...and gaps in the sequence are fine.
    assert store.append(reading("a", 20), now=1.0) is None
    np.testing.assert_allclose(store.take_ready().windows[0, :, 0], [11, 12, 20])


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


def test_too_many_machines() -> None:
    store = WindowStore(window=2, features=F, max_machines=2)
    fill(store, "a", [1])
    fill(store, "b", [1])
    assert store.append(reading("c", 1), now=0.0) == "too_many_machines"
    assert "c" not in store.slot_of
    assert len(store) == 2
    # Known machines still get in.
    assert store.append(reading("a", 2), now=0.0) is None


def test_interval_estimated_from_timestamps() -> None:
    store = WindowStore(window=2, features=F, max_machines=10)
    store.append(reading("a", 0, ts=100.0), now=0.0)
    assert math.isnan(store.interval_s[0])
    store.append(reading("a", 1, ts=100.5), now=0.0)
    assert store.interval_s[0] == pytest.approx(0.5)
    # A gap of 4 seqs over 2 s still means 0.5 s per reading.
    store.append(reading("a", 5, ts=102.5), now=0.0)
    assert store.interval_s[0] == pytest.approx(0.5)
    # A change of rate is followed gradually (smoothed), not jumped to.
    for seq in range(6, 60):
        store.append(reading("a", seq, ts=102.5 + (seq - 5) * 1.0), now=0.0)
    assert store.interval_s[0] == pytest.approx(1.0, abs=1e-3)
    store.append(reading("a", 60, ts=102.5 + 55 + 2.0), now=0.0)
    assert 1.0 < store.interval_s[0] < 2.0


def test_interval_ignores_timestamps_going_back() -> None:
    store = WindowStore(window=2, features=F, max_machines=10)
    store.append(reading("a", 0, ts=100.0), now=0.0)
    store.append(reading("a", 1, ts=99.0), now=0.0)
    assert math.isnan(store.interval_s[0])


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
