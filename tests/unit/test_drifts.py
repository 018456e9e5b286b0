"""The slow-drift scenario family (simulator.faults.plan_slow_drifts)."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.faults import (
    DRIFT_REACH_TICKS,
    DRIFT_SHAPES,
    drift_kind,
    first_crossing,
    slow_drift_run_ticks,
)
from simulator.fleet import Fleet
from simulator.groundtruth import GroundTruthLog


def test_every_shape_and_reach_on_machines_of_their_own() -> None:
    fleet = Fleet(40, seed=3, slow_drifts=2)
    kinds = sorted(p.kind for p in fleet.drifts)
    expected = sorted(
        drift_kind(shape, reach) for shape in DRIFT_SHAPES for reach in DRIFT_REACH_TICKS
    )
    assert kinds == sorted(expected * 2)
    assert len({p.machine_index for p in fleet.drifts}) == 12
    assert fleet.crossing_plans[-12:] == fleet.drifts


@pytest.mark.parametrize("seed", [1, 2])
def test_the_mean_reaches_the_threshold_reach_readings_after_onset(seed: int) -> None:
    """Averaged over whole cycles and the wear's sawtooth, the noise-free temperature is at the
    threshold ``reach`` readings after the onset (the drift itself is then exactly as planned)."""
    fleet = Fleet(20, seed=seed, slow_drifts=1)
    params = fleet.params
    for plan in fleet.drifts:
        i = plan.machine_index
        at = plan.onset_tick + plan.reach_ticks
        mean = params.base_c[i] + params.trend_c_per_tick[i] * params.maintenance_ticks[i] / 2
        assert mean + plan._rise(np.array([float(plan.reach_ticks)]))[0] == pytest.approx(95.0)
        assert plan.excess(np.array([float(plan.onset_tick)]))[0] == 0.0
        # The readings cross (a cycle's peak) well before the mean gets there.
        assert plan.onset_tick < plan.planned_crossing_tick < at


def test_an_exponential_drift_rises_late() -> None:
    fleet = Fleet(20, seed=4, slow_drifts=1)
    for plan in fleet.drifts:
        half = plan._rise(np.array([plan.reach_ticks / 2.0]))[0] / plan.needed_c
        assert half == pytest.approx(0.5 if plan.shape == "linear" else 0.182, abs=0.01)


def test_drifts_are_repaired_and_the_run_covers_them() -> None:
    fleet = Fleet(20, seed=5, slow_drifts=1)
    ticks = slow_drift_run_ticks(fleet.drifts)
    history = fleet.history(0, ticks)
    t = np.arange(ticks, dtype=np.float64)
    for plan in fleet.drifts:
        excess = plan.excess(t)
        assert excess[: plan.onset_tick + 1].max() == 0.0
        assert excess[plan.repair_tick + plan.recover_ticks :].max() == 0.0
        crossing = first_crossing(
            history[plan.machine_index, :, 0],
            plan.onset_tick,
            95.0,
            fleet.last_spikes_c[plan.machine_index],
        )
        assert crossing is not None and crossing < plan.repair_tick


def test_ground_truth_names_the_drift() -> None:
    fleet = Fleet(20, seed=6, slow_drifts=1)
    log = GroundTruthLog(fleet, None)
    ticks = slow_drift_run_ticks(fleet.drifts)
    history = fleet.history(0, ticks)
    clean = history[:, :, 0] - fleet.last_spikes_c
    for tick in range(ticks):
        log.observe(tick, clean[:, tick])
    log.close(ticks - 1)
    faults = {record["fault"] for record in log.records}
    assert faults == {p.kind for p in fleet.drifts}
    assert all(record["crossing_tick"] is not None for record in log.records)


def test_fleets_without_drifts_are_unchanged() -> None:
    """The family draws after everything else: a fleet without it is the fleet of before."""
    mix = {"overheat": 2, "dropout": 2}
    before = Fleet(20, seed=7, faults=mix, run_ticks=500)
    with_drifts = Fleet(20, seed=7, faults=mix, run_ticks=500, slow_drifts=1)
    assert before.ramps == with_drifts.ramps
    assert before.window_faults == with_drifts.window_faults
    drifting = {p.machine_index for p in with_drifts.drifts}
    faulty = {p.machine_index for p in before.ramps} | {
        f.machine_index for f in before.window_faults
    }
    assert not drifting & faulty
    assert Fleet(20, seed=7, faults=mix, run_ticks=500, slow_drifts=0).drifts == []
