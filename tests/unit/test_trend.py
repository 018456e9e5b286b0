"""The slow path (agent.trend): long trends from coarse steps, fed as the agent feeds it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent import trend
from agent.trend import (
    COARSE,
    MIN_COARSE,
    PERIOD_MIN_BLOCKS,
    STATE_FILE,
    TrendTracker,
    _period,
)
from config.alerts import AlertSettings

THRESHOLD = 95.0
WINDOW = 20


def signal(
    ticks: int,
    drift_per_tick: float = 0.0,
    onset: int = 0,
    seed: int = 1,
    period: float = 100.0,
    level: float = 70.0,
    spiked: bool = True,
) -> np.ndarray:
    """The seed's shape: a cycle of ±10 °C, noise of 2 °C, 2 % spikes, a sawtooth of wear, and
    from ``onset`` a linear drift."""
    rng = np.random.default_rng(seed)
    t = np.arange(ticks, dtype=np.float64)
    wear = 0.01 * np.mod(t, 330.0)
    drift = drift_per_tick * np.maximum(t - onset, 0.0)
    spikes = np.where(rng.random(ticks) < 0.02, rng.uniform(5, 15, ticks), 0.0)
    cycle = 10.0 * np.sin(2 * np.pi * t / period)
    return level + cycle + wear + drift + rng.normal(0, 2, ticks) + spikes * spiked


def feed(
    temperatures: np.ndarray, settings: AlertSettings | None = None, per_update: int = 1
) -> tuple[TrendTracker, list[tuple[int, bool, float, float, float]]]:
    """Feed rows of readings (machines x ticks) as the agent does: each update gets the last
    20 readings and how many the window has taken in; returns per tick the first machine's
    (tick, trending, readings, low, high)."""
    settings = settings or AlertSettings()
    machines, ticks = temperatures.shape
    tracker = TrendTracker(settings, machines)
    slots = np.arange(machines)
    threshold = np.full(machines, THRESHOLD)
    data = temperatures.astype(np.float32)
    out = []
    for t in range(WINDOW - 1, ticks, per_update):
        tracker.update(slots, data[:, t - WINDOW + 1 : t + 1], np.full(machines, t + 1), threshold)
        view = tracker.view(slots)
        out.append(
            (
                t,
                bool(view.trending[0]),
                float(view.readings[0]),
                float(view.low[0]),
                float(view.high[0]),
            )
        )
    return tracker, out


def first_crossing(temperatures: np.ndarray) -> int:
    return int(np.flatnonzero(temperatures >= THRESHOLD)[0])


def test_a_slow_drift_is_warned_hundreds_of_readings_before_the_reading_crosses() -> None:
    # 0.008 °C per reading from 1,500 on: the peaks reach 95 °C about 1,000 readings later.
    temperatures = signal(5000, drift_per_tick=0.008, onset=1500)
    crossing = first_crossing(signal(5000, drift_per_tick=0.008, onset=1500, spiked=False))
    _, verdicts = feed(temperatures[np.newaxis, :])
    warned = [t for t, trending, *_ in verdicts if trending and t >= 1500]
    assert warned, "never warned"
    lead = crossing - warned[0]
    assert lead >= 300, f"warned {lead} readings before the crossing"
    _, _, readings, low, high = next(v for v in verdicts if v[0] == warned[0])
    assert low <= readings <= high
    assert 0 < readings < AlertSettings().trend_horizon_readings


def test_a_healthy_machine_is_never_trending() -> None:
    temperatures = np.stack([signal(8000, seed=seed) for seed in range(4)])
    tracker, _ = feed(temperatures)
    slots = np.arange(4)
    view = tracker.view(slots)
    assert not view.trending.any()
    trending_ever = []
    for seed in range(4):
        _, verdicts = feed(signal(8000, seed=seed)[np.newaxis, :])
        trending_ever.append(any(trending for _, trending, *_ in verdicts))
    assert trending_ever == [False] * 4


def test_blind_until_enough_coarse_steps_after_a_start() -> None:
    """Without its saved state, after a (re)start it says nothing until a machine has
    MIN_COARSE coarse steps, even for a machine already far along a drift."""
    temperatures = signal(3000, drift_per_tick=0.02, level=80.0)
    _, verdicts = feed(temperatures[np.newaxis, :])
    first = next(t for t, trending, *_ in verdicts if trending)
    assert first >= MIN_COARSE * COARSE


def test_a_repair_ends_the_trend() -> None:
    temperatures = signal(6000, drift_per_tick=0.008, onset=500)
    temperatures[3500:] = signal(6000)[3500:]  # repaired: back to its healthy self
    _, verdicts = feed(temperatures[np.newaxis, :])
    assert any(trending for t, trending, *_ in verdicts if t < 3500)
    assert not any(trending for t, trending, *_ in verdicts if t > 4000)


def test_readings_taken_in_bursts_give_the_same_verdicts() -> None:
    """Readings that arrive several per tick (a gateway catching up) are each taken once."""
    temperatures = signal(3000, drift_per_tick=0.01, onset=500)[np.newaxis, :]
    one, _ = feed(temperatures, per_update=1)
    burst, _ = feed(temperatures, per_update=7)
    # The last burst may stop short of the end: compare the coarse history both hold.
    steps = min(int(one._coarse_n[0]), int(burst._coarse_n[0]))
    assert steps >= 25
    np.testing.assert_allclose(one._coarse[0, :steps], burst._coarse[0, :steps], rtol=1e-6)


def test_off_when_the_horizon_is_zero() -> None:
    temperatures = signal(4000, drift_per_tick=0.01, onset=500)
    _, verdicts = feed(temperatures[np.newaxis, :], AlertSettings(trend_horizon_readings=0))
    assert not any(trending for _, trending, *_ in verdicts)


def test_reset_forgets_a_slot() -> None:
    temperatures = np.stack([signal(4000, drift_per_tick=0.01, onset=500)] * 2)
    tracker, _ = feed(temperatures)
    assert tracker.view(np.array([0, 1])).trending.all()
    tracker.reset(np.array([1]))
    view = tracker.view(np.array([0, 1]))
    assert view.trending.tolist() == [True, False]
    assert np.isnan(view.period[1])


@pytest.mark.parametrize("period", [80.0, 100.0, 120.0, 300.0])
def test_the_cycle_is_found(period: float) -> None:
    temperatures = signal(1000, period=period)
    fine = temperatures.reshape(100, 10).mean(axis=1)
    assert _period(fine[np.newaxis, :])[0] == pytest.approx(period, rel=0.05)


@pytest.mark.parametrize("period", [80.0, 120.0])
def test_the_cycle_is_known_from_a_few_hundred_readings(period: float) -> None:
    """A machine's first incident often comes before it has 1,000 readings: its cycle is found
    from what it has, once that is a few hundred readings, and not before."""
    early = 10 * PERIOD_MIN_BLOCKS - COARSE
    tracker, _ = feed(signal(early + WINDOW, period=period)[np.newaxis, :])
    assert np.isnan(tracker.view(np.array([0])).period[0])
    tracker, _ = feed(
        signal(10 * PERIOD_MIN_BLOCKS + COARSE + WINDOW, period=period)[np.newaxis, :]
    )
    assert tracker.view(np.array([0])).period[0] == pytest.approx(period, rel=0.1)


def test_no_cycle_no_period() -> None:
    noise = np.random.default_rng(3).normal(70, 2, 1000).reshape(100, 10).mean(axis=1)
    assert np.isnan(_period(noise[np.newaxis, :])[0])


def test_a_stuck_sensor_is_left_out() -> None:
    """A sensor stuck at a trough for 150 readings and then freed would make the machine look as
    if it rose from there; its repeated readings are left out instead."""
    healthy = np.stack([signal(4000, seed=seed) for seed in range(3)])
    stuck = healthy.copy()
    trough = np.argmin(stuck[:, 2000:2100], axis=1) + 2000
    for row, start in enumerate(trough.tolist()):
        stuck[row, start : start + 150] = stuck[row, start]
    clean, _ = feed(healthy)
    frozen, _ = feed(stuck)
    np.testing.assert_array_less(frozen._coarse_n, clean._coarse_n)  # readings left out
    for row in range(3):
        _, verdicts = feed(stuck[row][np.newaxis, :])
        assert not any(trending for _, trending, *_ in verdicts)


def feed_with_gaps(temperatures: np.ndarray, gaps: list[tuple[int, int]]) -> list[int]:
    """Feed one machine's readings as the agent does when it stops reporting during ``gaps``:
    its window restarts after each, and the path is fed again once the window is full. Returns
    the ticks at which it was trending."""
    tracker = TrendTracker(AlertSettings(), 1)
    slots = np.arange(1)
    threshold = np.full(1, THRESHOLD)
    missing = np.zeros(temperatures.shape[0], dtype=np.bool_)
    for start, end in gaps:
        missing[start:end] = True
    run: list[float] = []
    trending = []
    for t, value in enumerate(temperatures.astype(np.float32).tolist()):
        if missing[t]:
            run = []
            continue
        run.append(value)
        if len(run) >= WINDOW:
            window = np.array(run[-WINDOW:], dtype=np.float32)[np.newaxis, :]
            tracker.update(slots, window, np.array([len(run)]), threshold)
            if tracker.view(slots).trending[0]:
                trending.append(t)
    return trending


def peak_gaps(temperatures: np.ndarray, every: int = 900) -> list[tuple[int, int]]:
    """50 readings around a peak of the cycle, every ``every`` readings from 1,000 on."""
    gaps = []
    for start in range(1000, temperatures.shape[0] - 500, every):
        peak = start + int(np.argmax(temperatures[start : start + 100]))
        gaps.append((peak - 25, peak + 25))
    return gaps


@pytest.mark.parametrize("seed", [0, 3])
def test_a_gap_in_the_readings_does_not_make_a_trend(seed: int) -> None:
    """A machine that stops reporting over the top of its cycle: the means around the gap read
    low, and a line starting there would rise to the threshold; lines over a gap are not
    trusted until it has left them."""
    temperatures = signal(6000, seed=seed, level=74.0)
    assert feed_with_gaps(temperatures, []) == []
    assert feed_with_gaps(temperatures, peak_gaps(temperatures)) == []


def test_a_sensor_stuck_over_a_peak_does_not_make_a_trend() -> None:
    """The same gap from a sensor stuck over the top of its cycle, its readings left out."""
    temperatures = signal(6000, seed=1, level=74.0)
    for start, end in peak_gaps(temperatures):
        temperatures[start:end] = temperatures[start]
    _, verdicts = feed(temperatures[np.newaxis, :])
    assert not any(trending for _, trending, *_ in verdicts)


def feed_across_restart(
    temperatures: np.ndarray, restart: int, missing: int, folder: Path | None
) -> list[bool]:
    """One machine fed as the agent does, with seq = tick, stopped at ``restart``: the state
    saved to ``folder`` (None: nothing saved), a new tracker started from it, ``missing``
    readings lost meanwhile, and a fresh window after. Returns trending per tick after it."""
    threshold = np.full(1, THRESHOLD)
    slots = np.arange(1)
    data = temperatures.astype(np.float32)
    before = TrendTracker(AlertSettings(), 1)
    for t in range(WINDOW - 1, restart):
        window = data[np.newaxis, t - WINDOW + 1 : t + 1]
        before.update(slots, window, np.array([t + 1]), threshold, np.array([t]))
    after = TrendTracker(AlertSettings(), 1)
    if folder is not None:
        before.save(folder, {"m": 0})
        assert after.load(folder, lambda machine_id: 0) == 1
    start = restart + missing
    trending = []
    for t in range(start + WINDOW - 1, data.shape[0]):
        window = data[np.newaxis, t - WINDOW + 1 : t + 1]
        after.update(slots, window, np.array([t - start + 1]), threshold, np.array([t]))
        trending.append(bool(after.view(slots).trending[0]))
    return trending


def test_a_restart_with_the_state_saved_carries_on_warning(tmp_path: Path) -> None:
    """Saved and loaded, a machine far along a drift is still warned at its first readings
    after a short restart; without the file, the path is blind for MIN_COARSE coarse steps."""
    temperatures = signal(4000, drift_per_tick=0.02, level=80.0)
    _, verdicts = feed(temperatures[np.newaxis, :])
    assert any(trending for t, trending, *_ in verdicts if 1900 <= t < 2000)
    kept = feed_across_restart(temperatures, 2000, missing=3, folder=tmp_path)
    assert kept[0] and all(kept[:500])
    blind = feed_across_restart(temperatures, 2000, missing=3, folder=None)
    assert not any(blind[: MIN_COARSE * COARSE - WINDOW])


@pytest.mark.parametrize("seed", [0, 3])
def test_readings_lost_over_a_restart_make_a_gap_as_any_other(tmp_path: Path, seed: int) -> None:
    """Fifty readings lost over the top of the cycle while the agent was down: the means
    there read low, and a line over them would rise; it waits for the gap to leave it."""
    temperatures = signal(6000, seed=seed, level=74.0)
    for start, end in peak_gaps(temperatures)[:3]:
        assert not any(feed_across_restart(temperatures, start, end - start, tmp_path))


@pytest.mark.parametrize("damage", ["cut short", "text for numbers"])
def test_a_damaged_state_file_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    tracker = TrendTracker(AlertSettings(), 1)
    path = tmp_path / STATE_FILE
    if damage == "cut short":
        path.write_bytes(b"PK\x03\x04 cut short")
    else:
        tracker._fine_n[0] = 3
        tracker.save(tmp_path, {"m": 0})
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        arrays["r__fine"] = arrays["r__fine"].astype(str)
        with path.open("wb") as file:
            np.savez(file, **arrays)
    assert TrendTracker(AlertSettings(), 1).load(tmp_path, lambda machine_id: 0) == 0
    assert "ignoring the saved slow-path state" in caplog.text


def test_a_state_file_no_check_foresaw_never_stops_start_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever a part's load raises, start-up goes on (the alert states' restore would
    otherwise be retried at every tick, and the agent never tick)."""
    from agent.learned import LearnedState
    from agent.window import WindowStore

    class Broken:
        def snapshot(self, directory: Path, slot_of: dict[str, int]) -> object:
            raise AssertionError("not saved in this test")

        def load(self, directory: Path, slot_for: object) -> int:
            raise TypeError("a 0-d array where a list was expected")

    kept = LearnedState(tmp_path)
    kept.add("broken part", Broken(), 300.0)
    kept.load(WindowStore(window=WINDOW, features=4, max_machines=8))
    assert "ignoring the saved broken part" in caplog.text


def test_the_level_is_derived_again_after_a_restart_not_saved(tmp_path: Path) -> None:
    """The level gate's figures (agent.alerts) are not in the file, so a file written before
    they existed reads back; after loading they are unknown until the next fine step."""
    temperatures = signal(1000)
    before, _ = feed(temperatures[np.newaxis, :])
    assert np.isfinite(before.view(np.array([0])).level_rise).all()
    before.save(tmp_path, {"m": 0})
    with np.load(tmp_path / STATE_FILE) as data:
        assert not [name for name in data.files if "level_rise" in name or "usual_peak" in name]
    after = TrendTracker(AlertSettings(), 1)
    assert after.load(tmp_path, lambda machine_id: 0) == 1
    view = after.view(np.array([0]))
    assert np.isnan(view.level_rise).all() and np.isnan(view.usual_peak).all()


def level_rises(temperatures: np.ndarray) -> np.ndarray:
    """The level gate's rise (agent.alerts) of one machine after each reading, fed as the agent
    feeds it; NaN while unknown."""
    tracker = TrendTracker(AlertSettings(), 1)
    data = temperatures.astype(np.float32)[np.newaxis]
    out = []
    for t in range(WINDOW - 1, data.shape[1]):
        tracker.update(
            np.array([0]), data[:, t - WINDOW + 1 : t + 1], np.array([t + 1]), np.array([THRESHOLD])
        )
        out.append(float(tracker.view(np.array([0])).level_rise[0]))
    return np.array(out)


@pytest.mark.parametrize("period", [85.0, 90.0, 115.0])
def test_the_level_of_a_machine_whose_cycle_is_not_100_readings_stands_still(
    monkeypatch: pytest.MonkeyPatch, period: float
) -> None:
    """A healthy machine with no wear, its cycle 85-115 readings long: over 100 readings what
    is left of its cycle swung the level by about 1 °C, peak to peak, cycle by cycle; over
    whole cycles the level stands still."""
    rng = np.random.default_rng(5)
    t = np.arange(3000, dtype=np.float64)
    temperatures = 70.0 + 10.0 * np.sin(2 * np.pi * t / period) + rng.normal(0, 0.5, t.size)
    rise = level_rises(temperatures)[1000:]  # the cycle known from 300 readings on
    assert np.nanmax(np.abs(rise)) < 0.35
    monkeypatch.setattr(trend, "LEVEL_WHOLE_CYCLES", False)
    assert np.nanmax(np.abs(level_rises(temperatures)[1000:])) > 0.6


def test_a_long_cycle_still_lets_a_ramp_lift_the_level() -> None:
    """A cycle of 350 readings: the short mean spans one cycle, the long one more than one, so
    a ramp shows as a rise while a healthy machine's level stays still."""
    ramp = signal(4000, drift_per_tick=0.006, onset=2000, period=350.0, level=60.0, seed=2)
    healthy = signal(4000, period=350.0, level=60.0, seed=2)
    rises = []
    for temperatures in (ramp, healthy):
        tracker, _ = feed(temperatures[np.newaxis, :])
        view = tracker.view(np.arange(1))
        assert 300 < float(view.period[0]) < 400
        assert view.level_rise is not None
        rises.append(float(view.level_rise[0]))
    assert rises[0] > 0.8 and abs(rises[1]) < 0.3, rises


def test_periodic_writes_run_beside_the_tick_and_the_last_one_at_stop(tmp_path: Path) -> None:
    """A due write copies the arrays and writes them on a thread of its own; the write at
    stop waits for it, then writes what the path holds then."""
    from agent.learned import LearnedState
    from agent.window import WindowStore

    store = WindowStore(window=WINDOW, features=4, max_machines=8)
    slot = store.slot_for("m")
    assert slot is not None
    tracker = TrendTracker(AlertSettings(), 8)
    kept = LearnedState(tmp_path)
    kept.add("slow path", tracker, 0.0)
    tracker._fine_n[slot] = 3
    kept.save(store, only_due=True)
    writer = kept._writer
    assert writer is not None
    writer.join(10)
    assert TrendTracker(AlertSettings(), 8).load(tmp_path, lambda m: 0) == 1
    tracker._fine_n[slot] = 7
    kept.save(store)  # at stop
    again = TrendTracker(AlertSettings(), 8)
    assert again.load(tmp_path, lambda m: 0) == 1 and again._fine_n[0] == 7
