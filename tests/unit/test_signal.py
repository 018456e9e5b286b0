"""The seed's reference series and the simulated fleet."""

from __future__ import annotations

import numpy as np
import pytest

from config.fields import FEATURES
from config.simulator import SimulatorSettings
from simulator.fleet import Fleet, plan_overheats
from simulator.publish import build_fleet, encode_reading, overheat_within_ticks
from simulator.signal import MachineParams, seed_series

# The seed evaluated next-step forecasts on the last 20 % of its 980 windows of 20 readings:
# windows 784..979, whose targets are readings t = 804..999.
SEED_TARGETS = np.arange(804, 1000)


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def test_seed_series_reference_numbers() -> None:
    series = seed_series(n=1000)
    temperature = series.readings[:, 0]
    t = SEED_TARGETS
    # The noise floor: the best any forecaster of the noisy reading can do on average.
    assert rmse(series.clean_temperature[t], temperature[t]) == pytest.approx(2.378, abs=1e-3)
    # Persistence: predict reading t with reading t - 1.
    assert rmse(temperature[t - 1], temperature[t]) == pytest.approx(3.237, abs=1e-3)


def test_seed_series_shape_and_physics() -> None:
    series = seed_series(n=1000)
    assert series.readings.shape == (1000, len(FEATURES))
    t = np.arange(1000)
    expected_clean = 70.0 + 10.0 * np.sin(2.0 * np.pi * t / 100.0) + 0.01 * t
    np.testing.assert_allclose(series.clean_temperature, expected_clean)
    noise = series.readings[:, 0] - series.clean_temperature
    # 20 spikes of +5..15 °C on top of N(0, 2) noise.
    assert (noise > 5.0 + 3 * 2.0).sum() <= 20
    assert abs(np.median(noise)) < 0.5
    # The coupled sensors follow temperature as in the seed.
    vibration, pressure, rpm = series.readings[:, 1], series.readings[:, 2], series.readings[:, 3]
    temperature = series.readings[:, 0]
    assert np.corrcoef(temperature, pressure)[0, 1] > 0.5
    assert abs(np.mean(vibration - 0.5 * temperature)) < 1.0
    assert abs(np.mean(rpm - 1500.0 - 2.0 * temperature)) < 10.0


def test_seed_series_is_reproducible_and_seed_dependent() -> None:
    a, b = seed_series(200), seed_series(200)
    np.testing.assert_array_equal(a.readings, b.readings)
    assert not np.array_equal(a.readings, seed_series(200, seed=43).readings)


def test_fleet_is_deterministic_per_seed() -> None:
    one, two = Fleet(8, seed=11, overheat=2), Fleet(8, seed=11, overheat=2)
    np.testing.assert_array_equal(one.history(0, 50), two.history(0, 50))
    assert one.overheats == two.overheats
    other = Fleet(8, seed=12, overheat=2)
    assert not np.allclose(Fleet(8, seed=11).history(0, 50), other.history(0, 50))


def test_machines_differ() -> None:
    fleet = Fleet(6, seed=3)
    clean = fleet.clean_temperature(np.arange(200, dtype=np.float64))
    for i in range(6):
        for j in range(i + 1, 6):
            assert not np.allclose(clean[i], clean[j])
    readings = fleet.history(0, 50)
    assert len({tuple(np.round(r[:, 0], 3)) for r in readings}) == 6


def test_machine_ids_are_zero_padded_and_prefixed() -> None:
    assert Fleet(3, seed=0).machine_ids == ["m-000", "m-001", "m-002"]
    ids = Fleet(1200, seed=0, machine_prefix="press-").machine_ids
    assert ids[0] == "press-0000"
    assert ids[-1] == "press-1199"
    assert len(set(ids)) == 1200


@pytest.mark.parametrize("seed", [0, 1, 7, 2024])
def test_healthy_machines_stay_below_90_for_20000_ticks(seed: int) -> None:
    # Drawn bounds: base <= 72, swing <= 11, wear <= 0.015 °C/tick * 400 ticks = 6 -> <= 89 °C.
    fleet = Fleet(100, seed=seed)
    clean = fleet.clean_temperature(np.arange(20_000, dtype=np.float64))
    assert clean.shape == (100, 20_000)
    assert clean.max() < 90.0
    # ...and the maintenance cycle keeps the wear trend from drifting over time.
    first, last = clean[:, :2000].mean(), clean[:, -2000:].mean()
    assert abs(last - first) < 2.0


@pytest.mark.parametrize("within_ticks", [40, 120, 400])
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
def test_overheating_machines_cross_before_within_ticks(seed: int, within_ticks: int) -> None:
    fleet = Fleet(12, seed=seed, overheat=4, overheat_within_ticks=within_ticks)
    assert len(fleet.overheats) == 4
    overheating = {plan.machine_index for plan in fleet.overheats}
    ticks = np.arange(within_ticks, dtype=np.float64)
    clean = fleet.clean_temperature(ticks)
    history = fleet.history(0, within_ticks)
    for plan in fleet.overheats:
        index = plan.machine_index
        assert plan.onset_tick < plan.planned_crossing_tick < within_ticks
        # Not hot before the ramp starts...
        assert clean[index, : plan.onset_tick + 1].max() < fleet.threshold_c
        # ...over the threshold by the planned crossing, at whatever phase of its cycle...
        assert clean[index, plan.planned_crossing_tick] >= fleet.threshold_c
        # ...and the readings (with noise and spikes) cross within the span too.
        assert history[index, :, 0].max() >= fleet.threshold_c
    healthy = [i for i in range(fleet.size) if i not in overheating]
    assert clean[healthy].max() < 90.0


def test_overheat_recovers_after_hold() -> None:
    fleet = Fleet(4, seed=5, overheat=1, overheat_within_ticks=120)
    plan = fleet.overheats[0]
    peak_tick = plan.onset_tick + np.sqrt(plan.peak_excess_c / plan.coefficient)
    after = peak_tick + plan.hold_ticks + plan.recover_ticks + 1
    ticks = np.arange(int(after), int(after) + 200, dtype=np.float64)
    assert np.all(plan.excess(ticks) == 0.0)
    assert fleet.clean_temperature(ticks)[plan.machine_index].max() < 90.0


def test_plan_overheats_rejects_too_short_a_span() -> None:
    params = MachineParams.draw(5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="40 ticks"):
        plan_overheats(params, 1, 39, 95.0, np.random.default_rng(0))
    assert plan_overheats(params, 0, 10, 95.0, np.random.default_rng(0)) == []
    assert len(plan_overheats(params, 2, 40, 95.0, np.random.default_rng(0))) == 2


def test_fleet_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        Fleet(0, seed=1)
    with pytest.raises(ValueError):
        Fleet(3, seed=1, overheat=4)


def test_history_and_readings_shapes() -> None:
    fleet = Fleet(5, seed=9, overheat=1)
    assert fleet.history(0, 30).shape == (5, 30, len(FEATURES))
    assert fleet.history(100, 1).shape == (5, 1, len(FEATURES))
    assert fleet.readings(7).shape == (5, len(FEATURES))
    assert fleet.clean_temperature(np.arange(10, dtype=np.float64)).shape == (5, 10)


def test_history_noise_is_around_the_clean_signal() -> None:
    fleet = Fleet(50, seed=4)
    history = fleet.history(0, 400)
    clean = fleet.clean_temperature(np.arange(400, dtype=np.float64))
    residual = history[:, :, 0] - clean
    # N(0, 1.5..2.5) noise plus +5..15 °C spikes on ~2 % of readings.
    assert abs(np.median(residual)) < 0.2
    assert 1.5 < np.std(residual[residual < 5]) < 3.0
    assert 0.005 < np.mean(residual > 9.0) < 0.05


def test_encode_reading_payload() -> None:
    import orjson

    values = np.array([95.12345, 40.0, 130.5, 1690.0])
    payload = encode_reading("m-007", 1700000000.123456, 42, values)
    assert b"\n" not in payload
    data = orjson.loads(payload)
    assert data == {
        "machine_id": "m-007",
        "ts": 1700000000.123,
        "seq": 42,
        "temperature_c": 95.123,
        "vibration_hz": 40.0,
        "pressure_psi": 130.5,
        "rpm": 1690.0,
        "schema": 1,
    }
    with pytest.raises(ValueError):
        encode_reading("m-1", 0.0, 0, np.array([1.0, 2.0, 3.0]))


@pytest.mark.parametrize(
    ("duration_s", "rate_hz", "expected"),
    [
        (None, 1.0, 50),  # no duration: within the first 50 s
        (None, 2.0, 100),
        (300.0, 1.0, 200),  # two thirds of the run
        (30.0, 1.0, 40),  # never below the 40-tick minimum that plan_overheats needs
        (None, 0.1, 40),
    ],
)
def test_overheat_within_ticks(duration_s: float | None, rate_hz: float, expected: int) -> None:
    settings = SimulatorSettings(duration_s=duration_s, rate_hz=rate_hz)
    assert overheat_within_ticks(settings) == expected


def test_build_fleet_follows_settings() -> None:
    settings = SimulatorSettings(machines=7, overheat=2, seed=3, machine_prefix="x-")
    fleet = build_fleet(settings, threshold_c=90.0)
    assert fleet.size == 7
    assert len(fleet.overheats) == 2
    assert fleet.threshold_c == 90.0
    assert fleet.machine_ids[0] == "x-000"
    again = build_fleet(settings, threshold_c=90.0)
    np.testing.assert_array_equal(fleet.history(0, 5), again.history(0, 5))


def test_the_ground_truth_crossing_leaves_the_spikes_out() -> None:
    from simulator.faults import first_crossing

    readings = np.array([80.0, 97.0, 90.0, 94.0, 95.5, 96.0])
    spikes = np.array([0.0, 12.0, 0.0, 0.0, 0.0, 0.0])
    assert first_crossing(readings, 0, 95.0) == 1  # the spike alone
    assert first_crossing(readings, 0, 95.0, spikes) == 4
    assert first_crossing(readings, 5, 95.0, spikes) == 5


def test_a_fleet_says_which_spikes_it_added() -> None:
    fleet = Fleet(12, seed=4, faults={"overheat": 2, "spikes": 2}, run_ticks=600)
    history = fleet.history(0, 600)
    assert fleet.last_spikes_c.shape == history.shape[:2]
    assert 0.01 < float((fleet.last_spikes_c > 0).mean()) < 0.04
    spikes = fleet.last_spikes_c[fleet.last_spikes_c > 0]
    assert spikes.min() >= 5.0 and spikes.max() <= 15.0
