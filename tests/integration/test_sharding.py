"""Several agents on one real mosquitto: topic-sharded filters, a shared group, MQTT 5.

Scaling out keeps each machine's readings on one agent, or its windows break; these tests
publish a simulated fleet through mosquitto and look at what each in-process agent took.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.app import Agent
from agent.silence import silence_payload
from config.settings import Settings, load_settings
from config.topics import silence_topic
from simulator.publish import SimulatorPublisher, simulated_topic
from tests.conftest import Mosquitto
from tests.faultkit import holds_within

pytestmark = pytest.mark.integration

TEMPLATE = "plant/{line}/{machine_id}/telemetry"
"""The simulator fills {line} with line-1, line-2, line-3 by machine number."""


def settings_for(mosquitto: Mosquitto, client_id: str, **mqtt_extra: Any) -> Settings:
    """An agent's settings on the test broker; validated, as start-up would (no model_copy)."""
    return load_settings(
        _env_file=None,
        mqtt={
            "host": mosquitto.host,
            "port": mosquitto.port,
            "client_id": client_id,
            "telemetry_topic": TEMPLATE,
            **mqtt_extra,
        },
        metrics={"host": "127.0.0.1", "port": 0},
        agent={"tick_interval_s": 0.05},
        model={"kind": "persistence"},
        simulator={"qos": 1, "rate_hz": 20.0, "overheat": 0, "seed": 5},
    )


def publish_fleet(settings: Settings, machines: int, duration_s: float) -> SimulatorPublisher:
    """Run the simulator to the end: ``machines`` machines, every reading at QoS 1."""
    simulator = settings.simulator.model_copy(
        update={"machines": machines, "duration_s": duration_s}
    )
    publisher = SimulatorPublisher(settings.mqtt, simulator, settings.alerts.threshold_c)
    publisher.run()
    return publisher


def accepted(agent: Agent) -> int:
    return int(agent.metrics.registry.get_sample_value("forewarn_readings_total") or 0)


def rejected(agent: Agent) -> float:
    families = agent.metrics.registry.collect()
    return sum(
        sample.value
        for family in families
        if family.name == "forewarn_readings_rejected"
        for sample in family.samples
        if sample.name == "forewarn_readings_rejected_total"
    )


def machines_seen(agent: Agent) -> set[str]:
    """Every machine the agent took a reading of (read after it stopped: no tick runs then)."""
    return {
        machine for machine, slot in agent.store.slot_of.items() if agent.store.last_seq[slot] >= 0
    }


def line_of(settings: Settings, machine_index: int, machine_id: str) -> str:
    return simulated_topic(settings.mqtt, machine_id, machine_index).split("/")[1]


def test_topic_sharded_agents_each_own_their_lines_and_together_cover_the_fleet(
    mosquitto: Mosquitto,
    running_agent: Callable[[Settings], Agent],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="agent.ingest")
    line_1 = running_agent(
        settings_for(mosquitto, "forewarn-line-1", subscriptions=["plant/line-1/+/telemetry"])
    )
    lines_2_3 = running_agent(
        settings_for(
            mosquitto,
            "forewarn-lines-2-3",
            subscriptions="plant/line-2/+/telemetry, plant/line-3/+/telemetry",
        )
    )
    publisher = publish_fleet(line_1.settings, machines=12, duration_s=2.0)
    published = publisher.stats.readings
    ticks = publisher.stats.ticks
    assert published == 12 * ticks > 0
    assert holds_within(lambda: accepted(line_1) + accepted(lines_2_3) >= published, 20), (
        f"{accepted(line_1)} + {accepted(lines_2_3)} of {published} readings arrived; "
        f"mosquitto log: {mosquitto.log.read_text()}"
    )
    time.sleep(0.3)  # nothing more may come
    line_1.stop()
    lines_2_3.stop()

    ids = publisher.fleet.machine_ids
    lines = {machine: line_of(line_1.settings, index, machine) for index, machine in enumerate(ids)}
    on_line_1 = {machine for machine, line in lines.items() if line == "line-1"}
    assert machines_seen(line_1) == on_line_1
    assert machines_seen(lines_2_3) == set(ids) - on_line_1
    assert machines_seen(line_1).isdisjoint(machines_seen(lines_2_3))
    # Every reading once, on its machine's agent: none lost, none twice.
    assert accepted(line_1) == len(on_line_1) * ticks
    assert accepted(lines_2_3) == (len(ids) - len(on_line_1)) * ticks
    assert rejected(line_1) == rejected(lines_2_3) == 0

    connects = [r.getMessage() for r in caplog.records if r.getMessage().startswith("connected")]
    assert any(
        "forewarn-lines-2-3" in line
        and "plant/line-2/+/telemetry, plant/line-3/+/telemetry" in line
        and "factory/+/silence" in line
        for line in connects
    ), connects


def test_a_shared_group_gives_each_reading_to_one_agent_but_splits_machines_on_mosquitto(
    mosquitto: Mosquitto,
    running_agent: Callable[[Settings], Agent],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """mosquitto hands a shared group's messages out in turn, whatever their topic: every
    reading reaches exactly one agent, yet each machine's readings are split between both
    (with an odd fleet the turns do not line up with machines), so neither holds a whole
    window. This is why docs/operating.md shards by topic on mosquitto."""
    caplog.set_level(logging.INFO, logger="agent.ingest")
    first = running_agent(settings_for(mosquitto, "forewarn-a", shared_group="forewarn"))
    second = running_agent(settings_for(mosquitto, "forewarn-b", shared_group="forewarn"))
    # A retained silence must reach every agent of the group: control topics are not shared.
    silencer = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    silencer.connect(mosquitto.host, mosquitto.port)
    silencer.loop_start()
    silence = silencer.publish(
        silence_topic("factory", "m-0"), silence_payload(time.time() + 600, "test"), 1, True
    )
    silence.wait_for_publish(5)
    silencer.disconnect()
    silencer.loop_stop()

    publisher = publish_fleet(first.settings, machines=5, duration_s=2.0)
    published = publisher.stats.readings
    assert holds_within(lambda: accepted(first) + accepted(second) >= published, 20), (
        f"{accepted(first)} + {accepted(second)} of {published} readings arrived"
    )
    time.sleep(0.3)
    first.stop()
    second.stop()

    assert accepted(first) + accepted(second) == published
    assert rejected(first) == rejected(second) == 0, "a reading reached both agents"
    assert accepted(first) > 0 and accepted(second) > 0
    fleet = set(publisher.fleet.machine_ids)
    assert machines_seen(first) == machines_seen(second) == fleet, "round robin splits machines"
    assert first.silences.silenced("m-0", time.time())
    assert second.silences.silenced("m-0", time.time())
    connects = [r.getMessage() for r in caplog.records if r.getMessage().startswith("connected")]
    assert any(
        "$share/forewarn/plant/+/+/telemetry" in line and ", factory/+/silence" in line
        for line in connects
    ), connects


def test_an_mqtt5_agent_takes_readings_and_resumes_its_session(
    mosquitto: Mosquitto, running_agent: Callable[[Settings], Agent]
) -> None:
    settings = settings_for(mosquitto, "forewarn-v5", protocol="5", persistent_session=True)
    agent = running_agent(settings)
    assert agent.client.protocol == mqtt.MQTTv5
    assert not agent.session_resumed
    published = publish_fleet(settings, machines=3, duration_s=1.0).stats.readings
    assert holds_within(lambda: accepted(agent) == published, 20), accepted(agent)
    agent.stop()

    # Published while the agent is away: the broker keeps its MQTT 5 session and queues them.
    away = publish_fleet(settings, machines=3, duration_s=1.0).stats.readings
    back = running_agent(settings)
    assert back.session_resumed, "the broker kept no MQTT 5 session for the agent"
    assert holds_within(lambda: accepted(back) == away, 20), f"{accepted(back)} of {away}"
