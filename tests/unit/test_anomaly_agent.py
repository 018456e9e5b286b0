"""The calibrated per-sensor scorer inside the agent's tick (``anomaly.enabled``)."""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path

import jsonschema
import numpy as np
import orjson
import pytest
from numpy.typing import NDArray

from agent.alerts import CRITICAL, OK, WARNING, AlertEvent
from agent.anomaly_alert import AnomalyRule
from agent.anomaly_events import (
    ADDED_SINCE,
    AnomalyAlerts,
    AnomalyEvent,
    RestoredAnomaly,
    anomaly_payload,
)
from agent.anomaly_sensors import ScorerParams, SensorScorer
from agent.app import Agent
from agent.rebaseline import RebaselineQueue, rebaseline_payload
from agent.restore import RestoredAlert
from agent.silence import silence_payload
from config.settings import load_settings
from tests.faultkit import LastValue
from wire.reading import Reading

SCHEMA = json.loads((resources.files("wire") / "schemas/anomaly.schema.json").read_text())


def make_agent(
    enabled: bool,
    max_machines: int = 100,
    shared_group: str | None = None,
    state_dir: Path | None = None,
) -> Agent:
    config = load_settings(_env_file=None)
    config.mqtt = config.mqtt.model_copy(update={"shared_group": shared_group})
    config.metrics = config.metrics.model_copy(update={"host": "127.0.0.1", "port": 0})
    config.agent = config.agent.model_copy(
        update={"max_machines": max_machines, "state_dir": state_dir}
    )
    config.anomaly = config.anomaly.model_copy(update={"enabled": enabled, "warm_up_readings": 60})
    return Agent(config)


def feed(agent: Agent, machines: list[str], rows: np.ndarray, start: int = 0) -> None:
    """rows: (ticks, machines, 4); one reading per machine per tick."""
    t0 = time.time() - 10_000
    for step, values in enumerate(rows):
        for m, machine_id in enumerate(machines):
            seq = start + step
            agent.hand_off(Reading(machine_id, t0 + seq, seq, values[m].astype(np.float32)))
        agent.tick()


def sample(
    agent: Agent, name: str, machine_id: str | None = None, severity: str | None = None
) -> float | None:
    labels = {"machine_id": machine_id} if machine_id else {}
    if severity is not None:
        labels["severity"] = severity
    return agent.metrics.registry.get_sample_value(name, labels)


def healthy(rng: np.random.Generator, ticks: int, machines: int) -> np.ndarray:
    t = np.arange(ticks)[:, None]
    temperature = 70.0 + 5.0 * np.sin(2 * np.pi * t / 100) + rng.normal(0, 1.0, (ticks, machines))
    noise = rng.normal(0.0, 1.0, (ticks, machines, 3)) * [2.0, 1.0, 20.0]
    others = temperature[..., None] * [0.5, 0.3, 2.0] + [0.0, 100.0, 1500.0] + noise
    return np.concatenate([temperature[..., None], others], axis=2)


def test_off_by_default_and_then_nothing_is_scored() -> None:
    assert load_settings(_env_file=None).anomaly.enabled is False
    agent = make_agent(False)
    assert agent.ticker.anomaly_alerts is None
    feed(agent, ["m-1"], healthy(np.random.default_rng(1), 30, 1))
    assert sample(agent, "forewarn_machine_sensor_anomaly_score", "m-1") is None


def test_every_feature_is_scored_and_a_stuck_sensor_fires_the_anomaly_alert() -> None:
    rng = np.random.default_rng(2)
    agent = make_agent(True)
    machines = ["m-ok", "m-stuck"]
    rows = healthy(rng, 300, 2)
    rows[200:, 1, 2] = rows[199, 1, 2]  # m-stuck's pressure repeats its last value
    feed(agent, machines, rows)
    alerts = agent.ticker.anomaly_alerts
    assert alerts is not None
    scorer, alert = alerts.scorer, alerts.state
    ok, stuck = agent.store.slot_of["m-ok"], agent.store.slot_of["m-stuck"]
    assert scorer.sensors == 4
    assert not alert.firing[ok] and alert.firing[stuck]
    assert sample(agent, "forewarn_anomaly_alerts_firing") == 1.0
    # Once the onset has passed, a lasting departure holds the machine score at the rule's
    # clear level (0.3), so the alert stays firing; the gauge shows the departure's rarity in
    # full, which a scrape every few seconds sees (the machine score marks its onset on one row).
    assert alerts.machine[stuck] == pytest.approx(0.3)
    score = sample(agent, "forewarn_machine_sensor_anomaly_score", "m-stuck")
    assert score is not None and score >= AnomalyRule().fire_score


def test_a_firing_message_reports_the_onset_not_the_rows_that_confirmed_it() -> None:
    """The machine score marks an onset on its first row and the rule confirms it on the next
    rows' rarity, whose machine score may be far lower: the message that says "firing" must
    still carry a score at or over the level the alert fires at."""
    rng = np.random.default_rng(2)
    agent = make_agent(True)
    events = recorded(agent)
    rows = healthy(rng, 300, 1)
    rows[200:, 0, 2] = rows[199, 0, 2]  # the pressure sticks
    feed(agent, ["m"], rows)
    fired = [event for event in events if event.status == "firing"]
    assert fired, "the stuck sensor fires"
    assert all(event.anomaly_score >= AnomalyRule().fire_score for event in fired), fired


class _BrokenModel:
    """A forecaster whose every forward raises, as a model on a lost GPU would."""

    def forecast(self, windows: np.ndarray) -> np.ndarray:
        raise RuntimeError("CUDA error: device lost")


def test_a_model_that_fails_every_forecast_stops_no_anomaly_alert() -> None:
    """Anomaly alerts need no forecast: a failing model is counted and logged, and the tick
    goes on scoring, alerting and publishing them."""
    rng = np.random.default_rng(2)
    agent = make_agent(True)
    agent.ticker.forecaster = _BrokenModel()  # type: ignore[assignment]
    events = recorded(agent)
    rows = healthy(rng, 300, 1)
    rows[200:, 0, 2] = rows[199, 0, 2]  # the pressure sticks
    feed(agent, ["m"], rows)
    assert any(event.status == "firing" for event in events), events
    failures = sample(agent, "forewarn_forecast_failures_total")
    assert failures is not None and failures > 200
    assert sample(agent, "forewarn_forecasts_total") == 0.0
    assert sample(agent, "forewarn_ticks_total") == 300.0


def test_a_model_that_fails_every_forecast_still_lets_the_readings_page_a_critical() -> None:
    """The overheat warning needs a forecast, the critical only readings over the threshold:
    a broken model must not keep a machine that is overheating from paging."""
    agent = make_agent(False)
    agent.ticker.forecaster = _BrokenModel()  # type: ignore[assignment]
    published: list[tuple[str, str]] = []
    publish = agent.publisher.publish

    def record(event: AlertEvent) -> None:
        published.append((event.severity, event.status))
        publish(event)

    agent.publisher.publish = record  # type: ignore[method-assign]
    rows = healthy(np.random.default_rng(4), 80, 1)
    rows[60:, 0, 0] = 99.0  # over the 95 °C threshold from reading 60 on
    feed(agent, ["m"], rows)
    assert ("critical", "firing") in published, published
    assert not any(severity == "warning" for severity, _ in published), published


def test_an_evicted_slot_forgets_what_its_machine_learned() -> None:
    rng = np.random.default_rng(3)
    agent = make_agent(True, max_machines=2)
    feed(agent, ["a", "b"], healthy(rng, 80, 2))
    alerts = agent.ticker.anomaly_alerts
    assert alerts is not None
    scorer = alerts.scorer
    slot_a = agent.store.slot_of["a"]
    assert scorer.count[slot_a] > 0
    feed(agent, ["c"], healthy(rng, 1, 1), start=100)  # evicts the least recently seen
    evicted = [s for s in (0, 1) if agent.store.machine_ids[s] == "c"]
    assert evicted and scorer.count[evicted[0]] <= 1


def readings(machine_id: str, rows: np.ndarray, start: int = 0) -> list[Reading]:
    t0 = time.time() - 10_000
    return [
        Reading(machine_id, t0 + start + i, start + i, row.astype(np.float32))
        for i, row in enumerate(rows)
    ]


def test_every_reading_is_scored_not_only_the_newest_of_each_tick() -> None:
    """Readings that arrive faster than ticks give the scorer exactly what one per tick does."""
    rows = healthy(np.random.default_rng(4), 200, 1)[:, 0, :]
    one_by_one, bunched = make_agent(True), make_agent(True)
    feed(one_by_one, ["m"], rows[:, None, :])
    for i in range(0, len(rows), 7):  # seven readings a tick
        for reading in readings("m", rows[i : i + 7], start=i):
            bunched.hand_off(reading)
        bunched.tick()
    a, b = one_by_one.ticker.anomaly_alerts, bunched.ticker.anomaly_alerts
    assert a is not None and b is not None
    assert b.scorer.count[0] == len(rows)
    np.testing.assert_array_equal(a.scorer.mean[0], b.scorer.mean[0])
    np.testing.assert_array_equal(a.machine[:1], b.machine[:1])


def test_the_learned_normal_is_frozen_while_the_alert_fires() -> None:
    rng = np.random.default_rng(5)
    agent = make_agent(True)
    rows = healthy(rng, 400, 1)
    rows[200:, 0, 0] += 15.0  # a lasting step up
    feed(agent, ["m"], rows[:220])
    alerts = agent.ticker.anomaly_alerts
    assert alerts is not None and alerts.state.firing[0]
    frozen = alerts.scorer.mean[0].copy()
    feed(agent, ["m"], rows[220:], start=220)
    assert alerts.state.firing[0], "a departure that lasts keeps firing"
    np.testing.assert_array_equal(alerts.scorer.mean[0], frozen)


@pytest.mark.parametrize(
    "column",
    [
        np.full(300, 5.0),  # constant
        np.zeros(300),  # flat at zero
        np.round(np.random.default_rng(6).normal(20, 2, 300)),  # integer-valued
        np.r_[np.full(150, 1.0), np.full(150, 3.0e38)],  # a jump to float32's largest
        np.r_[np.random.default_rng(7).normal(0, 1e37, 150), np.full(150, -3.0e38)],
    ],
)
def test_hostile_readings_in_the_agent_never_give_a_nan_or_out_of_range_score(
    column: np.ndarray,
) -> None:
    agent = make_agent(True)
    rows = np.repeat(column[:, None], 4, axis=1)
    for reading in readings("m", rows):
        agent.hand_off(reading)
    agent.tick()  # every reading scored, in order
    alerts = agent.ticker.anomaly_alerts
    assert alerts is not None and alerts.scorer.count[0] == len(rows)
    assert alerts is not None
    scores = np.r_[alerts.machine[:1], alerts.sensor_score[0], alerts.peak[:1]]
    assert np.isfinite(scores).all() and (scores >= 0).all() and (scores <= 1).all(), scores
    payload = orjson.loads(anomaly_payload(alerts.event(0, "m", time.time()), "v"))
    jsonschema.validate(payload, SCHEMA)


def test_learned_state_round_trips_through_the_state_dir(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    saved = make_agent(True)
    rows = healthy(rng, 80, 2)
    for m, machine_id in enumerate(("a", "b")):
        for reading in readings(machine_id, rows[:, m]):
            saved.hand_off(reading)
    saved.tick()
    alerts = saved.ticker.anomaly_alerts
    assert alerts is not None
    alerts.rebaselined_at["b"] = 123.0
    alerts.save(tmp_path, saved.store.slot_of)

    loaded = make_agent(True)
    loaded.store.slot_for("c")  # slots differ from the saved run's
    again = loaded.ticker.anomaly_alerts
    assert again is not None
    assert again.load(tmp_path, loaded.store.slot_for) == 2
    for machine_id in ("a", "b"):
        old, new = saved.store.slot_of[machine_id], loaded.store.slot_of[machine_id]
        np.testing.assert_array_equal(again.scorer.mean[new], alerts.scorer.mean[old])
        assert again.scorer.count[new] == alerts.scorer.count[old] == 80
    assert again.rebaselined_at == {"b": 123.0}


def test_a_state_file_for_other_features_is_ignored(tmp_path: Path) -> None:
    agent = make_agent(True)
    alerts = agent.ticker.anomaly_alerts
    assert alerts is not None
    other = AnomalyAlerts(SensorScorer(2, 8), AnomalyRule(), ("a_c", "b_c"), 8)
    other.save(tmp_path, {"m": 0})
    assert alerts.load(tmp_path, agent.store.slot_for) == 0


@pytest.mark.parametrize("damage", ["empty", "cut short", "wrong shapes"])
def test_a_damaged_state_file_is_ignored_and_start_up_goes_on(tmp_path: Path, damage: str) -> None:
    """A power loss can leave the file empty or cut short; a hand-made one can hold arrays of
    the wrong length: the machines learn afresh, nothing raises."""
    agent = make_agent(True)
    alerts = agent.ticker.anomaly_alerts
    assert alerts is not None
    path = alerts.save(tmp_path, {"a": 0, "b": 1})
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "cut short":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        arrays["machine_ids"] = np.array(["a", "b", "c"])
        with path.open("wb") as file:
            np.savez(file, **arrays)
    assert alerts.load(tmp_path, agent.store.slot_for) == 0
    assert len(agent.store) == 0, "a machine was given a slot from a file that was ignored"


def test_per_sensor_series_only_behind_their_setting() -> None:
    rows = healthy(np.random.default_rng(9), 30, 1)
    plain = make_agent(True)
    feed(plain, ["m"], rows)
    assert sample(plain, "forewarn_machine_sensor_anomaly_score", "m") is not None
    assert (
        plain.metrics.registry.get_sample_value(
            "forewarn_machine_sensor_score", {"machine_id": "m", "sensor": "rpm"}
        )
        is None
    )
    detailed = make_agent(True)
    detailed.settings.anomaly.sensor_metrics = True
    feed(detailed, ["m"], rows)
    for sensor in detailed.forecaster.features:
        labels = {"machine_id": "m", "sensor": sensor}
        value = detailed.metrics.registry.get_sample_value("forewarn_machine_sensor_score", labels)
        assert value is not None, labels  # one series per feature
    detailed.metrics.drop_machine("m")
    labels = {"machine_id": "m", "sensor": "rpm"}
    assert (
        detailed.metrics.registry.get_sample_value("forewarn_machine_sensor_score", labels) is None
    )


def test_rebaseline_commands_malformed_or_cleared_are_ignored() -> None:
    queue = RebaselineQueue("factory")
    queue.handle("factory/m-1/rebaseline", b"")
    queue.handle("factory/m-1/rebaseline", b"not json")
    queue.handle("factory/m-1/rebaseline", b'{"reason": "no at"}')
    queue.handle("factory/m-1/rebaseline", b"[1, 2]")
    # An "at" that is no time: "nan" would be applied again and again (it compares to nothing),
    # "inf" would make every later re-baseline of the machine look applied already.
    for at in (b'"nan"', b'"inf"', b'"-inf"', b"true", b'"100"'):
        queue.handle("factory/m-1/rebaseline", b'{"at": ' + at + b', "reason": "x"}')
    queue.handle("factory/m-2/rebaseline", rebaseline_payload(100.0, "bearing swap"))
    assert queue.take() == [("m-2", 100.0, "bearing swap")]
    assert queue.take() == []


def full_store_with_b_firing() -> tuple[Agent, AnomalyAlerts, np.ndarray]:
    """An agent whose store (2 slots) is full, its least recently seen machine "b" with an
    anomaly alert fired and published: the next new machine evicts it."""
    rng = np.random.default_rng(10)
    agent = make_agent(True, max_machines=2)
    rows = healthy(rng, 300, 2)
    rows[200:, 0, 2] = rows[199, 0, 2]  # b's pressure sticks
    for machine_id, column in (("b", 0), ("a", 1)):  # b is the least recently seen
        for reading in readings(machine_id, rows[:, column]):
            agent.hand_off(reading)
    agent.tick()
    alerts = agent.ticker.anomaly_alerts
    assert alerts is not None and alerts.announced[agent.store.slot_of["b"]]
    return agent, alerts, rows


def test_an_evicted_machine_whose_anomaly_alert_fired_is_resolved_first() -> None:
    """Else its retained anomaly message would say "firing" for ever."""
    agent, _alerts, rows = full_store_with_b_firing()
    resolved = sample(agent, "forewarn_anomaly_alerts_resolved_total")
    agent.hand_off(readings("c", rows[:1, 1])[0])
    agent.tick()
    assert "b" not in agent.store.slot_of
    assert sample(agent, "forewarn_anomaly_alerts_resolved_total") == (resolved or 0) + 1


def test_a_silenced_machine_s_eviction_resolves_its_anomaly_alert_when_the_silence_ends() -> None:
    """A silence holds back what a person would be told, the eviction's "resolved" included
    (as the overheat alert's "stale"); but the machine is gone from the store, so nothing else
    would ever correct its retained "firing": the resolution is published once the silence
    ends, under the alert_id subscribers were told."""
    agent, alerts, rows = full_store_with_b_firing()
    told = alerts.alert_id[agent.store.slot_of["b"]]
    agent.silences.handle("factory/b/silence", silence_payload(time.time() + 3600, "work"))
    published = recorded(agent)
    silenced = sample(agent, "forewarn_anomaly_alerts_silenced_total") or 0.0
    agent.hand_off(readings("c", rows[:1, 1])[0])
    agent.tick()
    assert "b" not in agent.store.slot_of
    assert not published, [(e.machine_id, e.status, e.reason) for e in published]
    assert sample(agent, "forewarn_anomaly_alerts_silenced_total") == silenced + 1
    agent.tick()
    assert not published, "held back for as long as the silence lasts"
    agent.silences.handle("factory/b/silence", b"")
    agent.tick()
    assert [(e.machine_id, e.status, e.reason, e.alert_id) for e in published] == [
        ("b", "resolved", "evicted", told)
    ]
    agent.tick()
    assert len(published) == 1, "published once"


def test_a_silenced_machine_s_eviction_retires_its_overheat_alert_when_the_silence_ends() -> None:
    """The overheat alert's side of the same rule: the "stale" that retires an evicted
    machine's alert is held back by its silence (as before) and published once the silence
    runs out, where it used to be dropped, leaving the retained "critical" for ever."""
    agent = make_agent(False, max_machines=2)
    hot = np.tile([99.0, 45.0, 130.0, 1700.0], (30, 1))
    for reading in readings("b", hot):
        agent.hand_off(reading)
    agent.tick()
    assert agent.policy.state[agent.store.slot_of["b"]] == CRITICAL
    agent.silences.handle("factory/b/silence", silence_payload(time.time() + 3600, "work"))
    published: list[AlertEvent] = []
    publish = agent.publisher.publish

    def record(event: AlertEvent) -> None:
        published.append(event)
        publish(event)

    agent.publisher.publish = record  # type: ignore[method-assign]
    for machine_id in ("a", "c"):
        agent.hand_off(readings(machine_id, hot[:1, :] - 30.0)[0])
        agent.tick()
    assert "b" not in agent.store.slot_of
    assert not published, [(e.machine_id, e.severity, e.status) for e in published]
    assert sample(agent, "forewarn_alerts_silenced_total", None, "stale") == 1.0
    agent.tick()
    assert not published, "held back for as long as the silence lasts"
    # The silence runs out (a message whose "until" has passed reads as one that ran out).
    agent.silences.handle("factory/b/silence", silence_payload(time.time() - 1, "work"))
    agent.tick()
    assert [(e.machine_id, e.severity, e.status) for e in published] == [("b", "stale", "firing")]


@pytest.mark.parametrize("shared_group", [None, "forewarn"])
def test_a_restored_anomaly_of_a_machine_not_heard_counts_only_without_sharding(
    shared_group: str | None,
) -> None:
    """Under sharding, a machine known only from its retained anomaly alert may report to
    another agent: this one neither counts nor publishes it (as for overheat alerts)."""
    agent = make_agent(True, shared_group=shared_group)
    alerts = agent.ticker.anomaly_alerts
    assert alerts is not None
    slot = agent.store.slot_for("m-elsewhere")
    assert slot is not None
    alerts.restore(slot, RestoredAnomaly("m-elsewhere", True, "m-elsewhere-anomaly-1", 4))
    agent.tick()
    expected = 0.0 if shared_group else 1.0
    assert sample(agent, "forewarn_anomaly_alerts_firing") == expected
    assert alerts.out_of_sync(len(agent.store)).size == 0, "nothing to publish either way"


@pytest.mark.parametrize(
    "added", [("score_past",), ADDED_SINCE], ids=["onset history", "every array added"]
)
def test_a_state_file_from_before_an_array_was_added_still_loads(
    tmp_path: Path, added: tuple[str, ...]
) -> None:
    """Files written before the scorer kept its onset history, its residual test or its
    cycle lack those arrays: the rest of what the machines learned is taken back, the new
    arrays start afresh."""
    agent = make_agent(True)
    alerts = agent.ticker.anomaly_alerts
    assert alerts is not None
    alerts.scorer.mean[0, 0] = 71.5
    alerts.scorer.count[0] = 600
    path = alerts.save(tmp_path, {"a": 0})
    with np.load(path) as data:
        older = {k: data[k] for k in data.files if k.removeprefix("s_") not in added}
        assert len(older) == len(data.files) - len(added)
    with path.open("wb") as file:
        np.savez(file, **older)  # type: ignore[arg-type]
    again = make_agent(True)
    loaded = again.ticker.anomaly_alerts
    assert loaded is not None
    assert loaded.load(tmp_path, again.store.slot_for) == 1
    assert loaded.scorer.mean[again.store.slot_of["a"], 0] == 71.5


def test_only_machines_that_learned_are_saved(tmp_path: Path) -> None:
    """A machine known only from a retained message (another agent's, under sharding) has
    learned nothing here: saving it would place it before this agent's own at start-up."""
    agent = make_agent(True)
    alerts = agent.ticker.anomaly_alerts
    assert alerts is not None
    alerts.scorer.count[0] = 600
    path = alerts.save(tmp_path, {"own": 0, "other-agents": 1})
    with np.load(path) as data:
        assert [str(m) for m in data["machine_ids"]] == ["own"]


def recorded(agent: Agent) -> list[AnomalyEvent]:
    """The anomaly events the agent hands its publisher from now on."""
    events: list[AnomalyEvent] = []
    publish = agent.publisher.publish_anomaly

    def record(event: AnomalyEvent) -> None:
        events.append(event)
        publish(event)

    agent.publisher.publish_anomaly = record  # type: ignore[method-assign]
    return events


def test_a_restored_firing_alert_without_a_learned_normal_learns_one_and_resolves() -> None:
    """A retained "firing" read back with no saved normal for the machine (no state_dir, a lost
    or older file): the machine learns its normal afresh, so its warm-up must teach it even
    though the alert fires; then the alert resolves under the same alert_id."""
    agent = make_agent(True)
    alerts = agent.ticker.anomaly_alerts
    assert alerts is not None
    slot = agent.store.slot_for("m")
    alerts.restore(slot, RestoredAnomaly("m", True, "m-anomaly-1", 4))
    published = recorded(agent)
    rng = np.random.default_rng(14)
    steady = [70.0, 35.0, 121.0, 1640.0] + rng.normal(0, 1, (200, 1, 4)) * [1.0, 2.0, 1.0, 20.0]
    feed(agent, ["m"], steady)
    assert not alerts.state.firing[slot], "still firing on a normal it never learned"
    assert [(e.status, e.alert_id, e.seq) for e in published] == [("resolved", "m-anomaly-1", 5)]
    low, high = published[0].sensors["temperature_c"].expected_range or (0.0, 0.0)
    assert low < 70.0 < high


def test_a_retained_anomaly_that_finds_no_free_slot_evicts_nothing() -> None:
    """More retained alerts than ``max_machines`` (a sharded fleet's agent reads every
    machine's): a machine known only from its retained anomaly alert does not take the slot of
    one restored before it; the start-up restore never evicts."""
    agent = make_agent(True, max_machines=2)
    alerts = agent.ticker.anomaly_alerts
    assert alerts is not None
    agent.restore.anomalies = [RestoredAnomaly("z", True, "z-anomaly-1", 7)]
    overheat = [RestoredAlert("x", WARNING, "x-1", 3), RestoredAlert("y", OK, "y-1", 2)]
    published = recorded(agent)
    agent.restore.resume(
        overheat, agent.store, agent.policy, agent.anomaly, then=agent.ticker._restore_learned
    )
    agent.tick()
    assert set(agent.store.slot_of) == {"x", "y"}
    assert agent.policy.state[agent.store.slot_of["x"]] == WARNING
    assert sample(agent, "forewarn_machines_evicted_total") == 0.0
    assert not published, [(e.machine_id, e.status, e.alert_id) for e in published]


def start_up(agent: Agent) -> None:
    """Run the tick thread's start-up (the restore read is set beforehand) and stop it."""
    if agent.restore.result is None:
        agent.restore.result = []
    agent.ticker.start()
    try:
        assert agent.restore.done.wait(10), "the start-up restore did not finish"
    finally:
        agent.stop_event.set()
        agent.ticker.join(10)


def test_with_fewer_slots_than_saved_machines_the_most_recently_seen_come_first(
    tmp_path: Path,
) -> None:
    """``agent.max_machines`` lowered since the state was saved: the machines last heard keep
    what they learned, rather than the first ones in the file."""
    saved = make_agent(True)
    rows = healthy(np.random.default_rng(23), 70, 3)
    for m, machine_id in enumerate(("a", "b", "c")):  # c is the most recently seen
        for reading in readings(machine_id, rows[:, m]):
            saved.hand_off(reading)
        saved.tick()
    learned = saved.ticker.anomaly_alerts
    assert learned is not None
    learned.save(tmp_path, saved.store.slot_of)
    agent = make_agent(True, max_machines=2, state_dir=tmp_path)
    start_up(agent)
    assert set(agent.store.slot_of) == {"b", "c"}, list(agent.store.slot_of)


@pytest.mark.parametrize("shared_group", [None, "forewarn"])
def test_the_saved_state_s_machines_take_their_slots_before_the_retained_alerts(
    tmp_path: Path, shared_group: str | None
) -> None:
    """Under sharding every agent reads every machine's retained alerts. Those of machines it
    never serves must not fill ``max_machines`` before the machines of its own saved state
    find a slot, or what it learned about them is lost at every restart. Through the start-up
    path the tick thread runs; the saved machine is then the last to give way to a new one."""
    saved = make_agent(True)
    feed(saved, ["own"], healthy(np.random.default_rng(21), 80, 1))
    learned = saved.ticker.anomaly_alerts
    assert learned is not None
    learned.save(tmp_path, saved.store.slot_of)

    agent = make_agent(True, max_machines=2, shared_group=shared_group, state_dir=tmp_path)
    agent.restore.anomalies = [
        RestoredAnomaly(f"other-{i}", True, f"other-{i}-anomaly-1", 3) for i in (1, 2)
    ]
    agent.restore.result = [RestoredAlert("other-3", CRITICAL, "other-3-1", 2)]
    start_up(agent)
    alerts = agent.ticker.anomaly_alerts
    assert alerts is not None
    assert set(agent.store.slot_of) == {"own", "other-3"}, list(agent.store.slot_of)
    assert alerts.scorer.count[agent.store.slot_of["own"]] == 80, "the learned normal loaded"
    assert sample(agent, "forewarn_machines_evicted_total") == 0.0
    agent.hand_off(readings("new", healthy(np.random.default_rng(22), 1, 1)[:, 0])[0])
    agent.tick()
    assert set(agent.store.slot_of) == {"own", "new"}, "a machine only restored gives way first"


def test_a_retained_rebaseline_older_than_the_retained_alert_is_not_applied_again() -> None:
    """Without a state file, a restart reads the retained re-baseline again and knows nothing
    of having applied it; but the machine's retained anomaly message was published after the
    command, so the command was applied before it: applying it again would resolve an episode
    that began after the re-baseline. A command newer than the message is applied."""
    agent = make_agent(True)
    alerts = agent.ticker.anomaly_alerts
    assert alerts is not None
    agent.restore.anomalies = [RestoredAnomaly("m", True, "m-anomaly-2", 5, 2000.0)]
    agent.restore.resume(
        [], agent.store, agent.policy, agent.anomaly, then=agent.ticker._restore_learned
    )
    slot = agent.store.slot_of["m"]
    agent.ticker._apply_rebaselines([("m", 1500.0, "bearing swap")])
    assert alerts.state.firing[slot], "the older command must not resolve the later episode"
    assert sample(agent, "forewarn_anomaly_rebaselines_total") == 0.0
    agent.ticker._apply_rebaselines([("m", 2500.0, "new bearing")])
    assert not alerts.state.firing[slot]
    assert sample(agent, "forewarn_anomaly_rebaselines_total") == 1.0


def test_the_resolution_a_rebaseline_causes_says_so() -> None:
    """The docs' contract: a message for a re-baselined machine carries "reason", so that a
    subscriber tells an operator's re-baseline from an anomaly that went away."""
    agent = make_agent(True)
    rows = healthy(np.random.default_rng(15), 300, 1)
    rows[200:, 0, 2] = rows[199, 0, 2]  # the pressure sticks: the alert fires
    feed(agent, ["m"], rows)
    alerts, queue = agent.ticker.anomaly_alerts, agent.rebaselines
    assert alerts is not None and queue is not None and alerts.announced[0]
    published = recorded(agent)
    queue.handle("factory/m/rebaseline", rebaseline_payload(time.time(), "sensor replaced"))
    agent.tick()
    assert [(e.status, e.reason) for e in published] == [
        ("resolved", "re-baselined: sensor replaced")
    ]
    payload = orjson.loads(anomaly_payload(published[0], "v"))
    jsonschema.validate(payload, SCHEMA)
    assert payload["reason"] == "re-baselined: sensor replaced"


def test_no_expected_range_is_published_before_the_normal_is_learned_again() -> None:
    """A re-baseline held back by a silence is published once the silence is lifted, a few
    readings into the machine's new warm-up: those readings are no learned normal yet, so the
    message says null (the schema's "null before it learned one"), not their own spread."""
    agent = make_agent(True)
    rows = healthy(np.random.default_rng(16), 310, 1)
    rows[200:, 0, 2] = rows[199, 0, 2]  # the pressure sticks: the alert fires
    feed(agent, ["m"], rows[:300])
    alerts, queue = agent.ticker.anomaly_alerts, agent.rebaselines
    assert alerts is not None and queue is not None and alerts.announced[0]
    agent.silences.handle("factory/m/silence", silence_payload(time.time() + 3600, "work"))
    queue.handle("factory/m/rebaseline", rebaseline_payload(time.time(), "sensor replaced"))
    agent.tick()
    feed(agent, ["m"], rows[300:], start=300)  # ten readings of the new warm-up
    published = recorded(agent)
    agent.silences.handle("factory/m/silence", b"")
    agent.tick()
    assert [e.status for e in published] == ["resolved"]
    assert {s.expected_range for s in published[0].sensors.values()} == {None}
    payload = orjson.loads(anomaly_payload(published[0], "v"))
    jsonschema.validate(payload, SCHEMA)


def test_an_alert_held_back_when_the_agent_stops_is_published_after_the_restart(
    tmp_path: Path,
) -> None:
    """A stuck sensor fires while the machine is silenced (the same holds under an open
    overheat incident): nothing is published, so its retained anomaly message says nothing of
    it. After a restart the alert must still be firing, learning still frozen, and it is
    published once the silence ends; the learned normal alone cannot fire it again, as a
    departure that lasts no longer scores over the rule's clear level."""
    rows = healthy(np.random.default_rng(17), 400, 1)
    rows[200:, 0, 2] = rows[199, 0, 2]  # the pressure sticks
    first = make_agent(True)
    until = time.time() + 3600
    first.silences.handle("factory/m/silence", silence_payload(until, "work"))
    published = recorded(first)
    feed(first, ["m"], rows[:300])
    alerts = first.ticker.anomaly_alerts
    assert alerts is not None and alerts.state.firing[0] and not published
    held_id = alerts.alert_id[0]
    alerts.save(tmp_path, first.store.slot_of)

    second = make_agent(True)
    again = second.ticker.anomaly_alerts
    assert again is not None
    assert again.load(tmp_path, second.store.slot_for) == 1
    second.silences.handle("factory/m/silence", silence_payload(until, "work"))
    published = recorded(second)
    feed(second, ["m"], rows[300:], start=300)
    assert not published, "held back while the silence lasts"
    second.silences.handle("factory/m/silence", b"")
    second.tick()
    assert [(e.status, e.alert_id, e.driver) for e in published] == [
        ("firing", held_id, "pressure_psi")
    ]


@pytest.mark.parametrize(
    ("retained", "firing"),
    [
        (None, True),  # held back: nothing retained
        (RestoredAnomaly("m", True, "m-anomaly-1", 3), True),  # published when saved
        (RestoredAnomaly("m", False, "m-anomaly-1", 4), False),  # resolved after the save
    ],
)
def test_the_saved_alert_state_gives_way_to_a_newer_retained_message(
    tmp_path: Path, retained: RestoredAnomaly | None, firing: bool
) -> None:
    """The file is written every few minutes: a crash can leave it older than the retained
    message (a resolution published after it), which then says where the alert stands."""
    saved = AnomalyAlerts(SensorScorer(4, 4), AnomalyRule(), ("a", "b", "c", "d"), 4)
    saved.scorer.count[0] = 600  # a machine this agent scored (only those are saved)
    saved.state.firing[0], saved.seq[0], saved.alert_id[0] = True, 3, "m-anomaly-1"
    saved.peak[0], saved.driver[0] = 0.93, 2
    saved.save(tmp_path, {"m": 0})
    loaded = AnomalyAlerts(SensorScorer(4, 4), AnomalyRule(), ("a", "b", "c", "d"), 4)
    slots: dict[str, int] = {}
    if retained is not None:
        loaded.restore(0, retained)
        slots["m"] = 0
    assert loaded.load(tmp_path, lambda m: slots.setdefault(m, 0)) == 1
    assert bool(loaded.state.firing[0]) is firing
    assert int(loaded.seq[0]) == (retained.seq if retained else 3), "seq goes on"
    if retained is None:  # published before any reading: the episode's peak and driver
        event = loaded.event(0, "m", time.time())
        assert (event.status, event.alert_id, event.seq) == ("firing", "m-anomaly-1", 4)
        assert (event.anomaly_score, event.driver) == (0.93, "c")


def test_a_resolution_held_back_when_the_agent_stops_is_published_after_the_restart(
    tmp_path: Path,
) -> None:
    """The alert fired and was published, then resolved while held back (an overheat incident,
    a silence): the retained message still says "firing", the file (as new: the same seq)
    says resolved. The restarted agent resumes the file's state and owes subscribers the
    resolution, under the same alert_id."""
    saved = AnomalyAlerts(SensorScorer(4, 4), AnomalyRule(), ("a", "b", "c", "d"), 4)
    saved.scorer.count[0] = 600  # a machine this agent scored (only those are saved)
    saved.seq[0], saved.announced[0], saved.alert_id[0] = 3, True, "m-anomaly-1"
    saved.save(tmp_path, {"m": 0})
    loaded = AnomalyAlerts(SensorScorer(4, 4), AnomalyRule(), ("a", "b", "c", "d"), 4)
    loaded.restore(0, RestoredAnomaly("m", True, "m-anomaly-1", 3))
    assert loaded.load(tmp_path, lambda m: 0) == 1
    assert list(loaded.out_of_sync(1)) == [0]
    event = loaded.event(0, "m", time.time())
    assert (event.status, event.alert_id, event.seq) == ("resolved", "m-anomaly-1", 4)


def test_an_episode_never_published_leaves_no_alert_id_to_the_next() -> None:
    """Held back from start to end (an overheat incident, a silence), an episode is never
    published: the next one, published, gets an alert_id of its own, not the old one's."""
    alerts = AnomalyAlerts(
        SensorScorer(2, 2, ScorerParams(warm_up=100)), AnomalyRule(), ("a", "b"), 2
    )
    rows = np.random.default_rng(18).normal(0, 1, (600, 2)) + np.array([50.0, 20.0])
    rows[300:306, 0] += 40.0  # short departures, each firing then resolving
    rows[450:456, 0] += 40.0
    ids: list[str] = []
    for i, row in enumerate(rows):
        alerts.score_readings(np.array([0]), row[None])
        changed = alerts.take_changed()
        alerts.open_ids(changed, ["m"], 1000.0 + i)  # what the tick does; nothing published
        if len(changed) and alerts.state.firing[0]:
            ids.append(alerts.alert_id[0])
    assert len(ids) >= 2 and len(set(ids)) == len(ids), ids


class FailingForecaster(LastValue):
    """A model that fails every forecast (the tick logs it and goes on)."""

    def forecast(self, windows: NDArray[np.float32]) -> NDArray[np.float32]:
        raise RuntimeError("the model failed")


def test_the_learned_state_is_saved_at_stop_even_when_the_last_tick_fails(tmp_path: Path) -> None:
    """The tick loop writes the learned state at stop after a last tick; a tick that raises
    (here the model) must not cost what every machine learned since the last write."""
    config = load_settings(_env_file=None)
    config.metrics = config.metrics.model_copy(update={"host": "127.0.0.1", "port": 0})
    config.agent = config.agent.model_copy(update={"state_dir": tmp_path, "tick_interval_s": 0.05})
    config.mqtt = config.mqtt.model_copy(update={"restore_timeout_s": 0.0})
    config.anomaly = config.anomaly.model_copy(update={"enabled": True})
    agent = Agent(config, forecaster=FailingForecaster())
    agent.restore.start()
    agent.ticker.start()
    assert agent.restore.done.wait(10)
    for reading in readings("m", healthy(np.random.default_rng(19), 30, 1)[:, 0]):
        agent.hand_off(reading)
    agent.stop_event.set()
    agent.ticker.join(10)
    with np.load(tmp_path / "anomaly.npz") as saved:
        assert list(saved["machine_ids"]) == ["m"] and saved["s_count"][0] == 30
