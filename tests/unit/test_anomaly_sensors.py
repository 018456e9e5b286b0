"""The calibrated per-sensor score and the default anomaly rule, on series of known shape."""

from __future__ import annotations

import numpy as np
import pytest

from agent.anomaly_alert import AnomalyAlertState, AnomalyRule
from agent.anomaly_sensors import ScorerParams, SensorScorer

WARM = 1000


def run(
    series: np.ndarray, warm_up: int = WARM, params: ScorerParams | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stream (machines, rows, sensors) through the scorer and the default rule:
    (machine scores, firing, per-sensor scores, drivers), each (machines, rows, ...)."""
    machines, rows, sensors = series.shape
    scorer = SensorScorer(sensors, machines, params or ScorerParams(warm_up=warm_up))
    alert = AnomalyAlertState(capacity=machines)
    slots = np.arange(machines)
    score = np.zeros((machines, rows))
    firing = np.zeros((machines, rows), dtype=bool)
    per_sensor = np.zeros((machines, rows, sensors))
    driver = np.zeros((machines, rows), dtype=np.int64)
    for i in range(rows):
        result = scorer.update(slots, series[:, i, :])
        assert (result.rarity >= result.machine).all()
        alert.update(slots, result.machine, result.rarity)
        score[:, i] = result.machine
        firing[:, i] = alert.firing
        per_sensor[:, i] = result.score
        driver[:, i] = result.driver
    return score, firing, per_sensor, driver


def normal_shapes(seed: int, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    ar = np.zeros(n)
    noise = rng.normal(0.0, 1.0, n)
    for i in range(1, n):
        ar[i] = 0.9 * ar[i - 1] + noise[i]
    return {
        "gaussian": 50.0 + rng.normal(0.0, 2.0, n),
        "seasonal": 62.0 + 6.0 * np.sin(2 * np.pi * t / 200) + rng.normal(0.0, 0.8, n),
        "counts": rng.poisson(4.0, n).astype(float),
        "heavy_tailed": 10.0 + rng.standard_t(3, n),
        "autocorrelated": 20.0 + ar,
        "stepped": np.round(30.0 + 3.0 * np.sin(2 * np.pi * t / 200) + rng.normal(0.0, 0.3, n)),
        "huge": 1e12 + rng.normal(0.0, 1e9, n),
    }


def test_the_same_score_means_the_same_rarity_on_normal_series_of_any_shape() -> None:
    """Calibration: on normal series of seven shapes, a score of 0.2 (a 1-in-100 row before
    the correction for several statistics) is passed at about the same rate, and the default
    rule (0.5) never fires."""
    shapes = normal_shapes(seed=41, n=6000)
    series = np.stack(list(shapes.values()))[:, :, None]
    score, firing, _, _ = run(series)
    rates = (score[:, WARM:] >= 0.2).mean(axis=1)
    for name, rate, fired in zip(shapes, rates, firing[:, WARM:].sum(axis=1), strict=True):
        assert 0.0005 <= rate <= 0.05, (name, rate)
        assert fired == 0, (name, fired)
    assert rates.max() / max(rates.min(), 1e-9) < 20, dict(zip(shapes, rates, strict=True))


@pytest.mark.parametrize(
    "series",
    [
        np.full(3000, 7.0),
        np.zeros(3000),
        np.full(3000, 1e300),
        np.r_[np.full(1500, 5.0), np.full(1500, 6.0)],
        np.tile([0.0, 1.0], 1500),
        np.random.default_rng(5).integers(0, 3, 3000).astype(float),
        np.r_[np.random.default_rng(6).normal(0.0, 1e-12, 1500), np.full(1500, 1e15)],
        np.r_[np.full(1500, -1e308), np.full(1500, 1e308)],
    ],
    ids=["constant", "zeros", "huge", "step", "alternating", "integers", "tiny_then_huge", "max"],
)
def test_hostile_series_never_give_a_nan_or_out_of_range_score(series: np.ndarray) -> None:
    series = series.copy()
    series[2000] = np.nan  # a missing reading too
    score, _, per_sensor, _ = run(series[None, :, None], warm_up=500)
    assert np.isfinite(score).all() and np.isfinite(per_sensor).all()
    assert (score >= 0.0).all() and (score <= 1.0).all()
    assert (per_sensor >= 0.0).all() and (per_sensor <= 1.0).all()


def test_a_flat_series_that_stays_flat_never_fires() -> None:
    score, firing, _, _ = run(np.full((1, 3000, 1), 21.0))
    assert not firing.any() and score.max() == 0.0


def seasonal(seed: int, n: int = 4000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 62.0 + 6.0 * np.sin(2 * np.pi * t / 200) + rng.normal(0.0, 0.8, n)


def test_runaway_drift_stuck_and_noisy_sensors_all_fire_and_a_single_spike_never_does() -> None:
    base = np.stack([seasonal(seed) for seed in range(60, 66)])
    faulty = base.copy()
    faulty[0, 2500:] += 0.35 * np.arange(1, 1501)  # runaway
    faulty[1, 2500:] += 0.01 * np.arange(1, 1501)  # slow drift: +15 over 1,500 rows
    faulty[2, 2500:] = faulty[2, 2499]  # stuck
    faulty[3, 2500:] += np.random.default_rng(7).normal(0.0, 3.0, 1500)  # noisy
    faulty[4, 2500] += 40.0  # one spike
    _, firing, _, _ = run(faulty[:, :, None])
    assert not firing[:, WARM:2500].any()
    first = [int(np.argmax(f[2500:])) if f[2500:].any() else None for f in firing]
    assert first[0] is not None and first[0] < 60, first
    assert first[1] is not None and first[1] < 1500, first
    assert first[2] is not None and first[2] < 60, first
    assert first[3] is not None and first[3] < 60, first
    assert first[4] is None and first[5] is None, first


def test_a_departure_is_not_absorbed_while_it_lasts_and_a_reset_learns_the_new_normal() -> None:
    series = seasonal(8, 6000)
    series[2000:] += 30.0  # a step that stays
    scorer = SensorScorer(1, 1, ScorerParams(warm_up=WARM))
    alert = AnomalyAlertState(capacity=1)
    slot = np.zeros(1, dtype=np.int64)
    firing = []
    for i, value in enumerate(series):
        if i == 5000:
            scorer.reset(slot)  # the operator re-baselines after maintenance
            alert.reset(slot)
        result = scorer.update(slot, np.array([[value]]))
        alert.update(slot, result.machine, result.rarity)
        firing.append(bool(alert.firing[0]))
    assert all(firing[2020:5000]), "a lasting departure must keep firing until re-baselined"
    assert not any(firing[5000:]), "after a re-baseline the new level is the normal"


def test_a_broken_relation_between_sensors_fires_and_names_the_sensor() -> None:
    """Current follows load, flow follows load; then flow stops following while each sensor
    stays inside its own normal range: only the relation shows it."""
    rng = np.random.default_rng(9)
    n = 4000
    load = np.cumsum(rng.normal(0.0, 0.3, n))
    load = 50.0 + 10.0 * np.sin(2 * np.pi * np.arange(n) / 700) + 0.2 * load
    current = 2.0 * load + rng.normal(0.0, 0.5, n)
    flow = 0.5 * load + rng.normal(0.0, 0.2, n)
    broken = flow.copy()
    broken[3000:] = flow[3000] + rng.normal(0.0, 0.2, n - 3000)  # flow stops following
    healthy = np.stack([current, flow], axis=1)
    faulty = np.stack([current, broken], axis=1)
    score, firing, per_sensor, driver = run(np.stack([healthy, faulty]))
    assert not firing[0, WARM:].any()
    assert not firing[1, WARM:3000].any()
    assert firing[1, 3000:].any()
    first = 3000 + int(np.argmax(firing[1, 3000:]))
    assert driver[1, first] in (0, 1)
    assert per_sensor[1, first].max() < score[1, first], "the relation, not one sensor, fired"


def coupled_fleet(seed: int, machines: int, rows: int) -> np.ndarray:
    """Machines like the simulator's: a cycling temperature and three sensors that follow it
    through their own noise (vibration, pressure, rpm), (machines, rows, 4)."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)[:, None] + rng.uniform(0.0, 100.0, machines)
    temperature = 70.0 + 12.0 * np.sin(2 * np.pi * t / 100) + rng.normal(0, 2.0, t.shape)
    vibration = 0.5 * temperature + rng.normal(0.0, 5.0, t.shape)
    pressure = 100.0 + 0.3 * temperature + rng.normal(0.0, 2.0, t.shape)
    rpm = 1500.0 + 2.0 * temperature + rng.normal(0.0, 50.0, t.shape)
    return np.stack([temperature, vibration, pressure, rpm], axis=2).transpose(1, 0, 2).copy()


def test_one_sensor_leaving_the_others_fires_on_its_residual_and_is_named() -> None:
    """Pressure stops following temperature on half the fleet (its level and spread stay in
    range): the whole vector's distance dilutes that with three other sensors' noise, each
    sensor's residual given the others does not."""
    fleet = coupled_fleet(2, 20, 2500)
    rng = np.random.default_rng(3)
    usual = fleet[:10, :1500, 2].mean()
    fleet[10:, 1500:, 2] = usual + rng.normal(0.0, 2.0, (10, 1000))
    _score, firing, _per_sensor, driver = run(fleet, warm_up=500)
    assert not firing[:10, 500:].any(), "no healthy machine fires"
    assert not firing[10:, 500:1500].any()
    late = firing[10:, 1800:]
    named = [np.mean(driver[10 + m, 1800:][late[m]] == 2) for m in range(10) if late[m].any()]
    assert np.median(named) > 0.5, "pressure is named while its alert fires"
    assert firing[10:, 1500:].any(axis=1).sum() >= 9


def test_state_round_trips_so_learning_survives_a_restart() -> None:
    """Every learned array, the relation's and the cycle's included (three coupled sensors)."""
    series = coupled_fleet(5, 2, 1500)
    a = SensorScorer(4, 2, ScorerParams(warm_up=500))
    slots = np.arange(2)
    for i in range(1200):
        a.update(slots, series[:, i])
    assert a.res_count.min() > 0 and np.isfinite(a.cycle_length(slots)).all()
    b = SensorScorer(4, 2, ScorerParams(warm_up=500))
    b.load(a.state())
    for i in range(1200, 1500):
        ra, rb = a.update(slots, series[:, i]), b.update(slots, series[:, i])
        assert (ra.machine == rb.machine).all() and (ra.rarity == rb.rarity).all()
    with pytest.raises(ValueError, match="learned for other sensors"):
        SensorScorer(2, 1).load(a.state())


def test_a_state_saved_before_the_residual_test_learns_it_afresh_without_paging() -> None:
    """An older state file has the relation's arrays but not the residual's: the residual
    starts afresh (its own row count), and is not judged against a law it never learned."""
    series = coupled_fleet(6, 20, 3000)
    slots = np.arange(20)
    a = SensorScorer(4, 20, ScorerParams(warm_up=500))
    for i in range(1500):
        a.update(slots, series[:, i])
    b = SensorScorer(4, 20, ScorerParams(warm_up=500))
    b.load({k: v for k, v in a.state().items() if not k.startswith("res_")})
    assert b.rel_count.min() > 0 and b.res_count.max() == 0
    peak = np.zeros((2, 20))
    for i in range(1500, 3000):
        peak[0] = np.maximum(peak[0], a.update(slots, series[:, i]).machine)
        peak[1] = np.maximum(peak[1], b.update(slots, series[:, i]).machine)
    assert (peak[1] >= 0.5).sum() <= (peak[0] >= 0.5).sum() + 1


def test_the_rule_confirms_before_firing_and_waits_before_resolving() -> None:
    rule = AnomalyRule(fire_score=0.5, confirm_rows=3, clear_score=0.3, clear_rows=4)
    state = AnomalyAlertState(rule, capacity=1)
    slot = np.zeros(1, dtype=np.int64)
    trace = [0.6, 0.6, 0.1, 0.6, 0.6, 0.6, 0.4, 0.1, 0.1, 0.1, 0.1, 0.1]
    fired_at, resolved_at = [], []
    for i, score in enumerate(trace):
        fired, resolved = state.update(slot, np.array([score]), np.array([score]))
        fired_at += [i] * len(fired)
        resolved_at += [i] * len(resolved)
    assert fired_at == [5] and resolved_at == [10]


@pytest.mark.parametrize(
    ("scores", "rarities", "fires_at"),
    [
        ([0.6, 0.0, 0.0], [0.6, 0.6, 0.6], 2),  # an onset, confirmed by two rare rows
        ([0.0, 0.0, 0.0, 0.0], [0.6, 0.6, 0.6, 0.6], None),  # rare rows, but no onset
        ([0.6, 0.0, 0.0, 0.0], [0.6, 0.6, 0.2, 0.6], None),  # the confirmation broke
        ([0.6, 0.0, 0.6, 0.0, 0.0], [0.6, 0.2, 0.6, 0.6, 0.6], 4),  # a second onset, confirmed
    ],
)
def test_the_rule_starts_on_an_onset_and_confirms_on_the_rows_rarity(
    scores: list[float], rarities: list[float], fires_at: int | None
) -> None:
    """The machine score marks an onset on its first row only: the rows that confirm it are
    read as their rarity, and rare rows with no onset before them start nothing."""
    state = AnomalyAlertState(AnomalyRule(confirm_rows=3), capacity=1)
    slot = np.zeros(1, dtype=np.int64)
    fired_at = [
        i
        for i, (score, rarity) in enumerate(zip(scores, rarities, strict=True))
        if len(state.update(slot, np.array([score]), np.array([rarity]))[0])
    ]
    assert fired_at == ([] if fires_at is None else [fires_at])
    if fires_at is not None:
        assert state.onset[0] == 0.6, "the onset's score is kept for the firing message"


def test_a_lasting_step_scores_as_one_onset_then_holds_at_the_clear_level() -> None:
    """The machine score marks where a departure starts; while it lasts the score holds at
    the rule's clear level (the alert keeps firing) instead of scoring every row as new, so one
    threshold above that level flags the onset and not the tail."""
    series = seasonal(12, 4000)
    series[2500:] += 30.0
    score, firing, per_sensor, _ = run(series[None, :, None])
    assert score[0, 2500:2520].max() >= 0.5, "the step's onset must score"
    assert firing[0, 2520:].all(), "the alert keeps firing while the departure lasts"
    tail = score[0, 2700:]
    assert (tail >= 0.3).all() and (tail < 0.5).all(), "the tail holds at the clear level"
    assert (per_sensor[0, 2700:, 0] >= 0.5).all(), "the sensor's own score shows the departure"


def test_the_onset_output_reports_an_episode_once_and_the_machine_score_every_row() -> None:
    """A lasting step is one event: the onset output scores its first rows and then nothing
    for it (an onset against the recent normal may still show, under the fire level), while
    the machine score (what the rule confirms on) holds on every row."""
    series = seasonal(12, 4000)
    series[2500:] += 30.0
    scorer = SensorScorer(1, 1, ScorerParams(warm_up=WARM))
    slot = np.zeros(1, dtype=np.int64)
    machine, onset = np.zeros(4000), np.zeros(4000)
    for i in range(4000):
        result = scorer.update(slot, series[None, i : i + 1])
        machine[i], onset[i] = result.machine[0], result.onset[0]
    assert onset[2500:2520].max() >= 0.5, "the step's first rows report its onset"
    assert (onset <= machine).all(), "the onset output never exceeds the machine score"
    assert onset[2520:].max() < 0.5, "the step is not reported again at the fire level"
    assert (machine[2600:] >= 0.3).all(), "the machine score holds while the departure lasts"
    assert (onset[2600:] == 0).mean() > 0.95, "the onset output adds nothing for it"


def test_a_run_of_slots_scores_as_the_same_slots_in_any_order() -> None:
    """Consecutive slots are read and written as views, others gathered and scattered: the
    two paths give the same scores and the same learned state, to the bit."""
    machines, rows = 100, 700
    rng = np.random.default_rng(3)
    data = 50.0 + 0.01 * rng.normal(0.0, 3.0, (rows, machines, 4)).cumsum(axis=0)
    data[500:, :10, 0] += np.linspace(0.0, 30.0, rows - 500)[:, None]  # ten run away
    data[300, 20:30, 1] = np.nan  # a sensor that did not report
    in_order = SensorScorer(4, machines, ScorerParams(warm_up=200))
    shuffled = SensorScorer(4, machines, ScorerParams(warm_up=200))
    order = rng.permutation(machines)
    back = np.argsort(order)
    for row in range(rows):
        a = in_order.update(np.arange(machines), data[row])
        b = shuffled.update(order, data[row][order])
        for field in ("machine", "onset", "score", "driver", "warm"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field)[back])
    assert a.machine[:10].max() >= 0.5  # the runaways did score
    for name, array in in_order.state().items():
        np.testing.assert_array_equal(array, shuffled.state()[name], err_msg=name)


def stream_frozen(series: np.ndarray, params: ScorerParams) -> tuple[np.ndarray, SensorScorer]:
    """One sensor of one machine through the scorer and the default rule, its normal frozen
    while the alert fires (as in the agent): whether the alert fires on each row, and the
    scorer."""
    slot = np.zeros(1, dtype=np.int64)
    scorer = SensorScorer(1, 1, params)
    alert = AnomalyAlertState(capacity=1)
    firing = np.zeros(len(series), dtype=bool)
    for i, value in enumerate(series):
        result = scorer.update(slot, np.array([[value]]), frozen=alert.firing[slot])
        alert.update(slot, result.machine, result.rarity)
        firing[i] = alert.firing[0]
    return firing, scorer


def fired_at(firing: np.ndarray) -> np.ndarray:
    return np.flatnonzero(firing[1:] & ~firing[:-1]) + 1


def cyclic(period: int, n: int, seed: int = 11) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 60.0 + 10.0 * np.sin(2 * np.pi * t / period) + rng.normal(0.0, 0.5, n)


def cooling_failure(series: np.ndarray, start: int, end: int, rise: float) -> np.ndarray:
    """The level rises by ``rise`` from ``start`` (time constant 100 rows) until ``end``,
    when it is repaired: on a cycle of swing 10, the cycle's peaks leave the band, not its
    troughs."""
    out = series.copy()
    out[start:end] += rise * (1.0 - np.exp(-np.arange(end - start) / 100.0))
    return out


def test_a_departure_that_leaves_the_band_at_each_cycle_s_peak_fires_once() -> None:
    """A cooling failure on a cyclic machine: it is out of its normal band near each peak of
    its cycle and back inside near each trough. The departure lasts through the troughs, so
    the alert fires once and stays firing (the normal frozen while it fires, as in the agent),
    instead of resolving and firing again with every cycle, as it did with ``settle_rows`` 0."""
    series = cooling_failure(cyclic(100, 4000), 2500, 4000, 14.0)
    for settle in (ScorerParams().settle_rows, 0):
        params = ScorerParams(warm_up=WARM, settle_rows=settle, settle_cycles=0.0)
        firing, _ = stream_frozen(series, params)
        fired = fired_at(firing)
        assert not firing[WARM:2500].any()
        if settle:
            assert len(fired) == 1 and firing[fired[0] :].all(), fired
        else:
            assert len(fired) > 1, f"without settle_rows it flapped: fired at {fired}"


@pytest.mark.parametrize("period", [400, 1000])
def test_a_fault_near_each_peak_of_a_slow_cycle_pages_once_and_ends_a_cycle_after_repair(
    period: int,
) -> None:
    """On a slow cycle the troughs stay calm for far longer than ``settle_rows`` while the
    fault shows at each peak: the alert used to resolve in every trough and fire again at the
    next peak (400 rows: 3 pages in 3 cycles). The scorer times the machine's cycle while it
    is normal, and a lasting departure settles only after a calm 1.2 cycles: one page, and
    once the machine is repaired the alert resolves within about that."""
    warm, start, end = 5 * period, 6 * period, 9 * period
    series = cooling_failure(cyclic(period, 11 * period), start, end, 14.0)
    firing, scorer = stream_frozen(series, ScorerParams(warm_up=warm))
    assert not firing[warm:start].any()
    fired = fired_at(firing)
    assert len(fired) == 1 and start < fired[0] < start + period, f"fired at {fired}"
    assert firing[fired[0] : end].all(), "the alert stays firing while the fault lasts"
    ended = np.flatnonzero(~firing[end:])
    assert len(ended) and ended[0] < 1.2 * period + 150, "a repair resolves within ~a cycle"
    assert not firing[end + ended[0] :].any()
    cycle = scorer.cycle_length(np.zeros(1, dtype=np.int64))[0]
    assert abs(cycle - period) < 0.05 * period, f"learned cycle {cycle}, not {period}"


@pytest.mark.parametrize("shape", ["gaussian", "autocorrelated", "heavy_tailed", "counts"])
def test_a_machine_without_a_cycle_settles_in_settle_rows(shape: str) -> None:
    """Noise and random walks cross their band at irregular times: no cycle is learned for
    them, and a step's end resolves its alert after ``settle_rows`` (and the rule's clear
    rows), not after some long pseudo-cycle."""
    series = normal_shapes(seed=5, n=4000)[shape]
    spread = float(np.std(series[:2000]))
    series[2500:3000] += 12.0 * spread
    firing, scorer = stream_frozen(series, ScorerParams(warm_up=WARM))
    assert np.isnan(scorer.cycle_length(np.zeros(1, dtype=np.int64))[0])
    assert firing[2600:3000].all()
    ended = np.flatnonzero(~firing[3000:])
    settle = ScorerParams().settle_rows
    assert len(ended) and ended[0] < settle + 60, f"resolved {ended[:1]} rows after the end"
