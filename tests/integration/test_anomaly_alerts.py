"""The anomaly alert end to end through a real mosquitto: its lifecycle on its own retained topic,
its restore (and the learned normal's) after a restart, inhibition under an open overheat
incident, re-baselining by the retained MQTT command that `forewarn anomaly rebaseline`
sends, a sharded agent's saved machines placed before other agents' retained alerts, and an
evicted machine's resolution held back by its silence.

Readings carry timestamps one second apart, ending now, and are published faster than real
time; each machine learns its normal on its first 500 readings (``anomaly.warm_up_readings``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import jsonschema
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.app import Agent
from agent.silence import silence_payload
from config.settings import Settings, load_settings
from config.topics import silence_topic
from forewarn.cli import main
from simulator.signal import readings_from_temperature
from tests.conftest import Mosquitto, Recorder
from wire.payload import encode_reading

pytestmark = pytest.mark.integration

Messages = list[tuple[str, dict[str, object], bool]]
SCHEMA = json.loads((resources.files("wire") / "schemas/anomaly.schema.json").read_text())


def agent_settings(mosquitto: Mosquitto, state_dir: Path, client_id: str) -> Settings:
    settings = load_settings(_env_file=None)
    settings.mqtt = settings.mqtt.model_copy(
        update={"host": mosquitto.host, "port": mosquitto.port, "client_id": client_id}
    )
    settings.metrics = settings.metrics.model_copy(update={"host": "127.0.0.1", "port": 0})
    settings.agent = settings.agent.model_copy(
        update={"tick_interval_s": 0.01, "state_dir": state_dir, "stale_after_s": 1e6}
    )
    # The overheat incident must end soon after the machine cools for the inhibition test: a
    # short hold, not stretched to the machine's cycle nor kept open by the slow path's trend
    # (the jump to 100 °C and back to 86 °C is a rise it would rightly call heading up).
    settings.alerts = settings.alerts.model_copy(
        update={"keep_firing_for_s": 20.0, "keep_firing_cycles": 0.0, "trend_horizon_readings": 0}
    )
    settings.anomaly = settings.anomaly.model_copy(update={"enabled": True})
    return settings


class Feeder:
    """Publishes readings of machines at one-second timestamps that end about now."""

    def __init__(self, mosquitto: Mosquitto, readings: int) -> None:
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        self.client.connect(mosquitto.host, mosquitto.port)
        self.client.loop_start()
        self.t0 = time.time() - readings - 5
        self.seq: dict[str, int] = {}

    def send(self, machine_id: str, rows: np.ndarray) -> None:
        for values in rows:
            seq = self.seq.get(machine_id, 0)
            self.seq[machine_id] = seq + 1
            payload = encode_reading(machine_id, self.t0 + seq, seq, values)
            self.client.publish(f"factory/{machine_id}/telemetry", payload, qos=1)
            if seq % 4 == 3:
                time.sleep(0.01)  # about one reading per tick

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def normal(rng: np.random.Generator, n: int, level: float = 70.0) -> np.ndarray:
    t = np.arange(n)
    return readings_from_temperature(
        level + 3.0 * np.sin(2 * np.pi * t / 50) + rng.normal(0, 0.8, n), rng
    )


def statuses(recorder: Recorder, machine_id: str) -> list[tuple[str, str, int]]:
    return [
        (str(p["status"]), str(p["alert_id"]), int(str(p["seq"])))
        for _, p, _ in recorder.snapshot()
        if p["machine_id"] == machine_id
    ]


def metric(agent: Agent, name: str) -> float:
    return agent.metrics.registry.get_sample_value(name) or 0.0


def test_lifecycle_on_its_own_topic_restored_with_the_learned_normal_after_a_restart(
    mosquitto: Mosquitto,
    running_agent: Callable[[Settings], Agent],
    subscribe: Callable[[str], Recorder],
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(11)
    settings = agent_settings(mosquitto, tmp_path / "state", "anomaly-agent")
    anomalies = subscribe("factory/+/anomaly")
    overheat = subscribe("factory/+/alerts")
    first = running_agent(settings)
    feeder = Feeder(mosquitto, 1000)
    stuck = normal(rng, 650)
    stuck[600:, 2] = stuck[599, 2]  # the pressure sensor sticks
    feeder.send("m-stuck", stuck)
    feeder.send("m-ok", normal(rng, 650))

    def fired(messages: Messages) -> bool:
        return any(p["status"] == "firing" for _, p, _ in messages)

    assert anomalies.wait_for(fired, 30), anomalies.snapshot()
    time.sleep(0.5)
    story = statuses(anomalies, "m-stuck")
    assert [s for s, _, _ in story] == ["firing"], story
    firing = next(p for _, p, _ in anomalies.snapshot() if p["machine_id"] == "m-stuck")
    jsonschema.validate(firing, SCHEMA)
    assert firing["driver"] == "pressure_psi" and firing["previous_state"] == "ok", str(firing)
    sensors = firing["sensors"]
    assert isinstance(sensors, dict) and set(sensors) == {
        "temperature_c",
        "vibration_hz",
        "pressure_psi",
        "rpm",
    }
    assert not statuses(anomalies, "m-ok")
    assert not overheat.snapshot(), "the overheat alerts topic is not the anomaly alert's"
    slot = first.store.slot_of["m-ok"]
    alerts = first.ticker.anomaly_alerts
    assert alerts is not None
    learned = float(alerts.scorer.mean[slot, 0])
    first.stop()
    assert (tmp_path / "state" / "anomaly.npz").exists()

    # A restarted agent: no second "firing", the same alert resolves once the sensor works.
    second = running_agent(settings.model_copy(deep=True))
    alerts = second.ticker.anomaly_alerts
    assert alerts is not None
    slot = second.store.slot_of["m-ok"]
    assert alerts.scorer.mean[slot, 0] == pytest.approx(learned)
    assert alerts.state.firing[second.store.slot_of["m-stuck"]]
    # A lasting departure settles after 50 calm readings, then the rule clears after 10.
    feeder.send("m-stuck", normal(rng, 120))

    def resolved(messages: Messages) -> bool:
        return any(p["status"] == "resolved" for _, p, _ in messages)

    assert anomalies.wait_for(resolved, 30), statuses(anomalies, "m-stuck")
    feeder.close()
    story = statuses(anomalies, "m-stuck")
    assert [s for s, _, _ in story] == ["firing", "resolved"], story
    assert story[1][1] == story[0][1] and story[1][2] == story[0][2] + 1, story
    for _, payload, _ in anomalies.snapshot():
        jsonschema.validate(payload, SCHEMA)


def test_an_anomaly_is_held_back_while_an_overheat_incident_is_open(
    mosquitto: Mosquitto,
    running_agent: Callable[[Settings], Agent],
    subscribe: Callable[[str], Recorder],
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(12)
    settings = agent_settings(mosquitto, tmp_path / "state", "inhibit-agent")
    anomalies = subscribe("factory/+/anomaly")
    overheat = subscribe("factory/+/alerts")
    agent = running_agent(settings)
    feeder = Feeder(mosquitto, 800)
    rows = normal(rng, 720)
    rows[550:600, 0] = 100.0 + rng.normal(0, 0.5, 50)  # overheats: critical, and anomalous
    rows[600:, 0] = 86.0 + rng.normal(0, 0.5, 120)  # under the threshold, still anomalous
    feeder.send("m-hot", rows)

    def overheat_over(messages: Messages) -> bool:
        return any(p["status"] == "resolved" for _, p, _ in messages)

    assert overheat.wait_for(overheat_over, 30), overheat.snapshot()
    assert anomalies.wait_for(lambda ms: bool(ms), 10), "published once the incident closed"
    feeder.close()
    incident = [p for _, p, _ in overheat.snapshot()]
    assert incident[0]["severity"] == "critical" and incident[0]["status"] == "firing"
    held = metric(agent, "forewarn_anomaly_alerts_inhibited_total")
    assert held >= 1, "the anomaly fired during the incident and was held back"
    story = [p for _, p, _ in anomalies.snapshot()]
    assert story[0]["status"] == "firing", story
    closed_at = next(float(str(p["ts"])) for p in incident if p["status"] == "resolved")
    assert float(str(story[0]["ts"])) >= closed_at - 0.001, (
        "nothing published while the incident was open"
    )


def test_an_anomaly_held_back_when_the_agent_restarts_is_still_published_after_it(
    mosquitto: Mosquitto,
    running_agent: Callable[[Settings], Agent],
    subscribe: Callable[[str], Recorder],
    tmp_path: Path,
) -> None:
    """The anomaly fires while the machine is silenced (held back as under an open overheat
    incident) and the agent restarts before the silence is lifted: its retained anomaly
    message says nothing of the alert, but the restarted agent still has it firing (the
    learned normal alone cannot fire it again: a departure that lasts holds at the rule's
    clear level) and publishes it once the silence is lifted."""
    rng = np.random.default_rng(14)
    settings = agent_settings(mosquitto, tmp_path / "state", "held-restart-agent")
    anomalies = subscribe("factory/+/anomaly")
    feeder = Feeder(mosquitto, 800)

    def silence(payload: bytes) -> None:
        feeder.client.publish(
            silence_topic("factory", "m-stuck"), payload, qos=1, retain=True
        ).wait_for_publish(5)

    silence(silence_payload(time.time() + 3600, "inspection"))
    first = running_agent(settings)
    rows = normal(rng, 720)
    rows[600:, 2] = rows[599, 2]  # the pressure sensor sticks
    feeder.send("m-stuck", rows[:660])
    alerts = first.ticker.anomaly_alerts
    assert alerts is not None

    def fired() -> bool:
        """The alert fired and every reading sent was scored."""
        slot = first.store.slot_of.get("m-stuck")
        if slot is None:
            return False
        return bool(alerts.state.firing[slot]) and alerts.scorer.count[slot] >= 660

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not fired():
        time.sleep(0.1)
    assert fired(), "the anomaly fired"
    assert metric(first, "forewarn_anomaly_alerts_silenced_total") >= 1
    first.stop()
    assert not anomalies.snapshot(), "held back by the silence"

    second = running_agent(settings.model_copy(deep=True))
    feeder.send("m-stuck", rows[660:])
    time.sleep(1.0)
    assert not anomalies.snapshot(), "still silenced"
    silence(b"")
    assert anomalies.wait_for(lambda ms: bool(ms), 10), "published once the silence was lifted"
    feeder.close()
    story = [p for _, p, _ in anomalies.snapshot()]
    assert [(p["status"], p["driver"]) for p in story] == [("firing", "pressure_psi")], story
    jsonschema.validate(story[0], SCHEMA)
    assert metric(second, "forewarn_anomaly_alerts_firing") == 1.0


def test_a_retained_rebaseline_command_is_applied_once(
    mosquitto: Mosquitto,
    running_agent: Callable[[Settings], Agent],
    subscribe: Callable[[str], Recorder],
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(13)
    settings = agent_settings(mosquitto, tmp_path / "state", "rebaseline-agent")
    anomalies = subscribe("factory/+/anomaly")
    agent = running_agent(settings)
    feeder = Feeder(mosquitto, 1800)
    feeder.send("m-fixed", normal(rng, 550))
    feeder.send("m-fixed", normal(rng, 40, level=80.0))  # after maintenance it runs warmer

    def fired(messages: Messages) -> bool:
        return any(p["status"] == "firing" for _, p, _ in messages)

    assert anomalies.wait_for(fired, 30), anomalies.snapshot()
    code = main(
        ["anomaly", "rebaseline", "m-fixed", "--broker", f"{mosquitto.host}:{mosquitto.port}"]
    )
    assert code == 0

    def resolved(messages: Messages) -> bool:
        return any(p["status"] == "resolved" for _, p, _ in messages)

    assert anomalies.wait_for(resolved, 15), statuses(anomalies, "m-fixed")
    assert metric(agent, "forewarn_anomaly_rebaselines_total") == 1.0
    # The new level is learned as normal.
    feeder.send("m-fixed", normal(rng, 700, level=80.0))
    time.sleep(1.0)
    story = [(p["status"], p["driver"]) for _, p, _ in anomalies.snapshot()]
    assert story[:2] == [("firing", "temperature_c"), ("resolved", None)], story
    # The warmer level is normal now: nothing the temperature drives fires again.
    assert ("firing", "temperature_c") not in story[2:], story
    alerts = agent.ticker.anomaly_alerts
    assert alerts is not None
    slot = agent.store.slot_of["m-fixed"]
    assert alerts.scorer.count[slot] > 650 and abs(alerts.scorer.mean[slot, 0] - 80.0) < 2.0
    agent.stop()

    # A restart reads the retained command again, and knows it has applied it.
    again = running_agent(settings.model_copy(deep=True))
    feeder.send("m-fixed", normal(rng, 20, level=80.0))
    time.sleep(1.0)
    feeder.close()
    assert metric(again, "forewarn_anomaly_rebaselines_total") == 0.0
    alerts = again.ticker.anomaly_alerts
    assert alerts is not None and "m-fixed" in alerts.rebaselined_at
    assert alerts.scorer.count[again.store.slot_of["m-fixed"]] > 700


def retained_anomaly(machine_id: str, status: str, seq: int) -> bytes:
    """A retained anomaly message as another agent publishes one."""
    return json.dumps(
        {
            "machine_id": machine_id,
            "severity": "anomaly",
            "status": status,
            "ts": time.time() - 60,
            "alert_id": f"{machine_id}-anomaly-1",
            "seq": seq,
            "previous_state": "ok",
            "anomaly_score": 0.9,
            "driver": "pressure_psi",
            "sensors": {},
            "model_version": "v",
            "schema": 1,
        }
    ).encode()


def test_a_sharded_agent_s_saved_machines_find_their_slots_among_other_agents_alerts(
    mosquitto: Mosquitto,
    running_agent: Callable[[Settings], Agent],
    tmp_path: Path,
) -> None:
    """Under sharding an agent reads every machine's retained alerts at start-up, most of them
    for machines another agent serves. They must not fill agent.max_machines before the
    machines of its own saved state find their slots: it would lose what it learned about
    them at every restart."""
    rng = np.random.default_rng(16)
    settings = agent_settings(mosquitto, tmp_path / "state", "line-1-agent")
    settings.mqtt = settings.mqtt.model_copy(update={"subscriptions": ["factory/m-own/telemetry"]})
    first = running_agent(settings)
    feeder = Feeder(mosquitto, 200)
    feeder.send("m-own", normal(rng, 120))
    feeder.send("m-elsewhere", normal(rng, 5))  # another agent's: this one never hears it
    alerts = first.ticker.anomaly_alerts
    assert alerts is not None

    def learned() -> bool:
        slot = first.store.slot_of.get("m-own")
        return slot is not None and alerts.scorer.count[slot] >= 120

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not learned():
        time.sleep(0.1)
    assert learned(), "the agent scored its machine's readings"
    assert "m-elsewhere" not in first.store.slot_of
    first.stop()
    # Other agents' machines have retained anomaly and overheat alerts on the broker.
    for i in range(3):
        machine_id = f"m-other-{i}"
        feeder.client.publish(
            f"factory/{machine_id}/anomaly", retained_anomaly(machine_id, "firing", 3), 1, True
        ).wait_for_publish(5)
        overheat = {"machine_id": machine_id, "status": "firing", "severity": "critical"}
        overheat |= {"alert_id": f"{machine_id}-1", "seq": 2}
        feeder.client.publish(
            f"factory/{machine_id}/alerts", json.dumps(overheat).encode(), 1, True
        ).wait_for_publish(5)
    feeder.close()

    again = settings.model_copy(deep=True)
    again.agent = again.agent.model_copy(update={"max_machines": 2})
    second = running_agent(again)
    alerts = second.ticker.anomaly_alerts
    assert alerts is not None
    assert "m-own" in second.store.slot_of, list(second.store.slot_of)
    assert alerts.scorer.count[second.store.slot_of["m-own"]] >= 120, "its learned normal loaded"
    assert len(second.store) == 2, "a free slot still takes another agent's alert"
    assert metric(second, "forewarn_machines_evicted_total") == 0.0


def test_an_evicted_machine_s_anomaly_resolution_waits_for_its_silence_to_end(
    mosquitto: Mosquitto,
    running_agent: Callable[[Settings], Agent],
    subscribe: Callable[[str], Recorder],
    tmp_path: Path,
) -> None:
    """A silenced machine that fired is evicted (the store is full): its "resolved" is held
    back while the silence lasts, and published once it is lifted, so the retained anomaly
    message ends "resolved", under the alert_id subscribers were told, not "firing" for ever."""
    rng = np.random.default_rng(18)
    settings = agent_settings(mosquitto, tmp_path / "state", "evict-silence-agent")
    settings.agent = settings.agent.model_copy(update={"max_machines": 2})
    anomalies = subscribe("factory/+/anomaly")
    agent = running_agent(settings)
    feeder = Feeder(mosquitto, 700)
    stuck = normal(rng, 650)
    stuck[600:, 2] = stuck[599, 2]  # the pressure sensor sticks
    feeder.send("m-stuck", stuck)

    def fired(messages: Messages) -> bool:
        return any(p["status"] == "firing" for _, p, _ in messages)

    assert anomalies.wait_for(fired, 30), anomalies.snapshot()
    told = statuses(anomalies, "m-stuck")[0][1]

    def silence(payload: bytes) -> None:
        feeder.client.publish(
            silence_topic("factory", "m-stuck"), payload, qos=1, retain=True
        ).wait_for_publish(5)

    silence(silence_payload(time.time() + 3600, "inspection"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not agent.silences.silenced("m-stuck", time.time()):
        time.sleep(0.05)
    for machine_id in ("m-a", "m-b"):  # the second takes m-stuck's slot
        feeder.send(machine_id, normal(rng, 3))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "m-stuck" in agent.store.slot_of:
        time.sleep(0.05)
    assert "m-stuck" not in agent.store.slot_of, "evicted"
    time.sleep(0.5)
    assert [s for s, _, _ in statuses(anomalies, "m-stuck")] == ["firing"], "held back"
    assert metric(agent, "forewarn_anomaly_alerts_silenced_total") >= 1

    silence(b"")

    def resolved(messages: Messages) -> bool:
        return any(p["status"] == "resolved" for _, p, _ in messages)

    assert anomalies.wait_for(resolved, 10), statuses(anomalies, "m-stuck")
    feeder.close()
    story = [p for _, p, _ in anomalies.snapshot() if p["machine_id"] == "m-stuck"]
    assert [(p["status"], p.get("reason"), p["alert_id"]) for p in story] == [
        ("firing", None, told),
        ("resolved", "evicted", told),
    ], story
    jsonschema.validate(story[1], SCHEMA)
    # What the broker keeps for a subscriber that comes later: the resolution.
    later = subscribe("factory/m-stuck/anomaly")
    assert later.wait_for(lambda ms: bool(ms), 5)
    assert [(p["status"], retained) for _, p, retained in later.snapshot()] == [("resolved", True)]
