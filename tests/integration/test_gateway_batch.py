"""Gateway batches through a real mosquitto: the simulator as a gateway, and a raw publisher.

The agent must forecast every machine a batch carries, count readings from batches exactly as
single ones, and count each bad element of a batch (and each batch it cannot read) under its
reason in its /metrics.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from agent.app import Agent, MachineView
from config.settings import Settings, load_settings
from simulator.publish import SimulatorPublisher, build_fleet
from tests.conftest import Mosquitto, Recorder
from tests.faultkit import holds_within
from wire.reading import REJECT_REASONS

pytestmark = pytest.mark.integration

GATEWAY_TOPIC = "factory/_gateway/{}/telemetry"


def settings_for(mosquitto: Mosquitto, **sections: dict[str, object]) -> Settings:
    settings = load_settings(_env_file=None, **sections)
    settings.mqtt = settings.mqtt.model_copy(
        update={"host": mosquitto.host, "port": mosquitto.port, "client_id": "agent-under-test"}
    )
    settings.metrics = settings.metrics.model_copy(update={"host": "127.0.0.1", "port": 0})
    settings.agent = settings.agent.model_copy(update={"tick_interval_s": 0.05})
    return settings


def scrape(agent: Agent) -> dict[tuple[str, str], float]:
    """The agent's /metrics over HTTP: (sample name, reason label or "") -> value."""
    url = f"http://127.0.0.1:{agent.http.port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, sample.labels.get("reason", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def rejected(metrics: dict[tuple[str, str], float]) -> dict[str, float]:
    """Every reason's rejection count, the zeros included."""
    return {r: metrics[("forewarn_readings_rejected_total", r)] for r in REJECT_REASONS}


def test_the_simulator_as_a_gateway_gets_every_machine_forecast(
    mosquitto: Mosquitto,
    running_agent: Callable[[Settings], Agent],
    subscribe: Callable[[str], Recorder],
) -> None:
    machines, rate_hz, duration_s, per_batch = 12, 20.0, 3.0, 5
    settings = settings_for(
        mosquitto,
        simulator={
            "machines": machines,
            "rate_hz": rate_hz,
            "duration_s": duration_s,
            "gateway_batch": per_batch,
            "qos": 1,
        },
    )
    batches = subscribe("factory/_gateway/+/telemetry")
    singles = subscribe("factory/+/telemetry")
    agent = running_agent(settings)
    forecast: set[str] = set()
    lock = threading.Lock()

    def on_tick(rows: list[MachineView]) -> None:
        with lock:
            forecast.update(row.machine_id for row in rows)

    agent.tick_listeners.append(on_tick)
    publisher = SimulatorPublisher(settings.mqtt, settings.simulator, settings.alerts.threshold_c)
    thread = threading.Thread(target=publisher.run, name="test-gateway")
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()

    ticks = round(duration_s * rate_hz)
    expected = machines * ticks
    registry = agent.metrics.registry
    assert holds_within(lambda: registry.get_sample_value("forewarn_readings_total") == expected), (
        f"{registry.get_sample_value('forewarn_readings_total')} of {expected} readings accepted"
    )
    fleet = build_fleet(settings.simulator, settings.alerts.threshold_c)
    assert holds_within(lambda: forecast == set(fleet.machine_ids)), (
        f"never forecast: {sorted(set(fleet.machine_ids) - forecast)}"
    )
    assert set(rejected(scrape(agent)).values()) == {0.0}

    # The fleet went out as batches of up to 5 (5 + 5 + 2 a tick), none as single messages.
    assert (publisher.stats.readings, publisher.stats.messages) == (expected, ticks * 3)
    assert holds_within(lambda: len(batches.snapshot()) == ticks * 3)
    lists = [payload["readings"] for _, payload, _ in batches.snapshot()]
    assert sorted({len(r) for r in lists if isinstance(r, list)}) == [2, 5]
    assert {topic for topic, _, _ in batches.snapshot()} == {
        GATEWAY_TOPIC.format(settings.simulator.client_id)
    }
    assert singles.snapshot() == []


def good(machine_id: str, seq: object, **changes: object) -> dict[str, object]:
    """A valid reading object, fields changed (a value of ... removes the field)."""
    reading: dict[str, object] = {
        "machine_id": machine_id,
        "ts": time.time(),
        "seq": seq,
        "temperature_c": 70.0,
        "vibration_hz": 35.0,
        "pressure_psi": 120.0,
        "rpm": 1650.0,
    }
    return {k: v for k, v in {**reading, **changes}.items() if v is not ...}


class Publisher:
    """A raw paho client: what any gateway would run."""

    def __init__(self, mosquitto: Mosquitto) -> None:
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        self.client.connect(mosquitto.host, mosquitto.port)
        self.client.loop_start()

    def send(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_bad_elements_and_bad_batches_are_counted_by_reason(
    mosquitto: Mosquitto, running_agent: Callable[[Settings], Agent]
) -> None:
    settings = settings_for(
        mosquitto,
        limits={"max_batch_readings": 200},
        agent={"max_pending_readings": 100},
    )
    agent = running_agent(settings)
    gateway = GATEWAY_TOPIC.format("gw-1")
    publisher = Publisher(mosquitto)
    try:
        mixed = [
            good("g-1", 1),
            good("g-2", 1),
            good("g-3", 1),
            good("g-4", ...),  # no seq
            good("g-5", 1, temperature_c="hot"),
            good("g-6", 1, rpm=1e9),
            "a garbled frame",
            good("g-1", 1),  # the same reading again: a duplicate
        ]
        publisher.send(gateway, orjson.dumps({"v": 1, "readings": mixed}))
        publisher.send(gateway, b"not json at all")
        publisher.send(gateway, b'{"readings": 5}')
        too_many = [good(f"t-{i}", 1) for i in range(201)]
        publisher.send(gateway, orjson.dumps({"readings": too_many}))
        # A machine named _gateway on its own topic: a reading, not a batch.
        publisher.send("factory/_gateway/telemetry", orjson.dumps(good("_gateway", 1)))

        def accepted() -> float:
            return scrape(agent)[("forewarn_readings_total", "")]

        assert holds_within(lambda: accepted() == 4), f"{accepted()} readings accepted, not 4"
        assert holds_within(lambda: rejected(scrape(agent))["duplicate"] == 1)
        # The hand-off (100) is empty now: a batch of 150 keeps 100, drops 50 as overload.
        publisher.send(gateway, orjson.dumps({"readings": [good(f"o-{i}", 1) for i in range(150)]}))
        assert holds_within(lambda: accepted() == 104), f"{accepted()} readings accepted, not 104"
    finally:
        publisher.close()
    counts = rejected(scrape(agent))
    assert {reason: n for reason, n in counts.items() if n} == {
        "missing_field": 1,
        "bad_type": 1,
        "out_of_range": 1,
        "bad_json": 3,  # the garbled element, the payload that is not JSON, the one without a list
        "duplicate": 1,
        "too_large": 1,  # one batch of 201 readings: one rejection
        "overload": 50,
    }
    assert "_gateway" in agent.store.slot_of
