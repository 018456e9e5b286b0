"""The calibrated per-sensor scorer inside the agent's tick (``anomaly.enabled``)."""

from __future__ import annotations

import time

import numpy as np

from agent.app import Agent
from config.settings import load_settings
from wire.reading import Reading


def make_agent(enabled: bool, max_machines: int = 100) -> Agent:
    config = load_settings(_env_file=None)
    config.metrics = config.metrics.model_copy(update={"host": "127.0.0.1", "port": 0})
    config.agent = config.agent.model_copy(update={"max_machines": max_machines})
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


def sample(agent: Agent, name: str, machine_id: str | None = None) -> float | None:
    labels = {"machine_id": machine_id} if machine_id else {}
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
    assert agent.ticker.sensors is None
    feed(agent, ["m-1"], healthy(np.random.default_rng(1), 30, 1))
    assert sample(agent, "forewarn_machine_sensor_anomaly_score", "m-1") is None


def test_every_feature_is_scored_and_a_stuck_sensor_fires_the_anomaly_alert() -> None:
    rng = np.random.default_rng(2)
    agent = make_agent(True)
    machines = ["m-ok", "m-stuck"]
    rows = healthy(rng, 300, 2)
    rows[200:, 1, 2] = rows[199, 1, 2]  # m-stuck's pressure repeats its last value
    feed(agent, machines, rows)
    scorer, alert = agent.ticker.sensors  # type: ignore[misc]
    ok, stuck = agent.store.slot_of["m-ok"], agent.store.slot_of["m-stuck"]
    assert scorer.sensors == 4
    assert not alert.firing[ok] and alert.firing[stuck]
    assert sample(agent, "forewarn_anomaly_alerts_firing") == 1.0
    # Once the onset has passed, a lasting departure holds the machine score at the rule's
    # clear level (0.3), so the alert stays firing.
    score = sample(agent, "forewarn_machine_sensor_anomaly_score", "m-stuck")
    assert score is not None and score >= 0.3


def test_an_evicted_slot_forgets_what_its_machine_learned() -> None:
    rng = np.random.default_rng(3)
    agent = make_agent(True, max_machines=2)
    feed(agent, ["a", "b"], healthy(rng, 80, 2))
    scorer, _ = agent.ticker.sensors  # type: ignore[misc]
    slot_a = agent.store.slot_of["a"]
    assert scorer.count[slot_a] > 0
    feed(agent, ["c"], healthy(rng, 1, 1), start=100)  # evicts the least recently seen
    evicted = [s for s in (0, 1) if agent.store.machine_ids[s] == "c"]
    assert evicted and scorer.count[evicted[0]] <= 1
