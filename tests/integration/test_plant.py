"""Connecting a plant: topic templates and field/unit mapping, against a real mosquitto.

Two mapping errors stop the agent before it connects; their tests need no broker and are not
marked integration.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.alerts import AlertEvent
from agent.app import Agent, MachineView
from config.errors import ConfigError
from config.fields import FEATURES
from config.mqtt import MqttSettings
from config.readings import MappingSettings
from config.settings import Settings, load_settings
from models.checkpoint import TorchForecaster
from simulator.fleet import Fleet
from simulator.publish import SimulatorPublisher
from tests.conftest import Mosquitto, Recorder, forewarn_command, forewarn_env, free_port
from tests.faultkit import holds_within
from wire import sparkplug
from wire.mapping import FieldMapping
from wire.payload import encode_reading

PLANT_TOPIC = "plant/{line}/{machine_id}/sensors"
PLANT_ALERTS = "plant/{machine_id}/forewarn/alerts"
PLANT_FIELDS: dict[str, Any] = {
    "asset": "machine_id",
    "time_ms": {"feature": "ts", "scale": 0.001},
    "temp": {"feature": "temperature_c", "unit": "degF"},
    "vib": "vibration_hz",
    "press": {"feature": "pressure_psi", "unit": "bar"},
    "speed": "rpm",
}


def agent_settings(
    mosquitto: Mosquitto | None,
    client_id: str,
    fields: dict[str, Any] | None = None,
    tick_interval_s: float = 60.0,
    **mqtt: object,
) -> Settings:
    """Settings of a test agent; by default its tick thread waits 60 s: the test ticks.

    Without ``mosquitto``, a free port nobody listens on: for an agent that never connects.
    """
    settings = load_settings(_env_file=None)
    host, port = (mosquitto.host, mosquitto.port) if mosquitto else ("127.0.0.1", free_port())
    settings.mqtt = MqttSettings.model_validate(
        dict(settings.mqtt)
        | {"host": host, "port": port, "client_id": client_id}
        | {"restore_timeout_s": 0, "persistent_session": False}
        | mqtt
    )
    settings.metrics = settings.metrics.model_copy(update={"host": "127.0.0.1", "port": 0})
    settings.agent = settings.agent.model_copy(
        update={"tick_interval_s": tick_interval_s, "stale_after_s": 300.0}
    )
    settings.mapping = MappingSettings(fields=fields or {})
    return settings


@pytest.fixture
def agents() -> Iterator[Callable[..., Agent]]:
    started: list[Agent] = []

    def start(settings: Settings, **kwargs: Any) -> Agent:
        agent = Agent(settings, **kwargs)
        agent.start()
        started.append(agent)
        assert agent.wait_connected(10), "agent did not connect to mosquitto"
        return agent

    yield start
    for agent in started:
        agent.stop(flush_timeout_s=1)


@pytest.fixture
def publisher(mosquitto: Mosquitto) -> Iterator[mqtt.Client]:
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


def wait_subscribed(agent: Agent, publisher: mqtt.Client, topic: str) -> None:
    """Wait until the agent's subscription covers ``topic`` (its SUBSCRIBE may be in flight).

    Publishes an undecodable probe there until one reaches the agent: refused on arrival (a
    Sparkplug topic), or waiting in its hand-off for the tick that decodes it. Then a last
    probe, a fence: the broker delivers one publisher's messages on a topic in order, so once
    the fence has reached the agent no earlier probe is still on its way. On a JSON topic the
    fence itself is recognised, in the hand-off or as a tick decodes it; on a Sparkplug topic,
    where every probe is refused as it arrives, by the next refusal. Ticks then empty the
    hand-off, so the probes are counted (``bad_json``) and gone before the test's own readings.
    """
    registry = agent.metrics.registry

    def rejected() -> float:
        return (
            registry.get_sample_value("forewarn_readings_rejected_total", {"reason": "bad_json"})
            or 0.0
        )

    pending = agent.ingest._pending
    deadline = time.monotonic() + 10
    while not pending and not rejected():
        assert time.monotonic() < deadline, f"the agent never subscribed to {topic}"
        publisher.publish(topic, b"probe", qos=1)
        time.sleep(0.1)
    fence = f"fence {time.monotonic()}".encode()
    decoded = threading.Event()
    decode = agent.decoder.decode

    def noting_the_fence(payload: bytes | bytearray, *args: Any) -> Any:
        if payload == fence:
            decoded.set()
        return decode(payload, *args)

    agent.decoder.decode = noting_the_fence  # type: ignore[method-assign]
    try:
        refused = rejected()
        publisher.publish(topic, fence, qos=1)
        sparkplug = topic.startswith("spBv1.0/")
        while not (
            decoded.is_set()
            or any(isinstance(item, tuple) and item[1] == fence for item in list(pending))
            or (sparkplug and rejected() > refused)
        ):
            assert time.monotonic() < deadline, f"the fence on {topic} never arrived"
            time.sleep(0.01)
        while pending:
            agent.tick()
    finally:
        del agent.decoder.decode  # the class's method again
    assert rejected()


def wait_pending(agent: Agent, count: int, timeout_s: float = 10.0) -> None:
    pending = agent.ingest._pending
    deadline = time.monotonic() + timeout_s
    while len(pending) < count:
        assert time.monotonic() < deadline, f"{len(pending)} of {count} readings arrived"
        time.sleep(0.005)


@pytest.mark.integration
def test_plant_topic_tree_in_fahrenheit_gives_the_same_forecasts_and_alerts(
    mosquitto: Mosquitto,
    agents: Callable[..., Agent],
    publisher: mqtt.Client,
    subscribe: Callable[[str], Recorder],
) -> None:
    native = agents(agent_settings(mosquitto, "native-agent"))
    plant = agents(
        agent_settings(
            mosquitto,
            "plant-agent",
            PLANT_FIELDS,
            telemetry_topic=PLANT_TOPIC,
            alerts_topic=PLANT_ALERTS,
        )
    )
    wait_subscribed(native, publisher, "factory/probe/telemetry")
    wait_subscribed(plant, publisher, "plant/line-0/probe/sensors")
    plant_alerts = subscribe("plant/+/forewarn/alerts")
    native_alerts = subscribe("factory/+/alerts")
    views: dict[str, list[list[MachineView]]] = {"native": [], "plant": []}
    native.tick_listeners.append(views["native"].append)
    plant.tick_listeners.append(views["plant"].append)
    events: dict[str, list[AlertEvent]] = {"native": [], "plant": []}

    fleet = Fleet(3, seed=5, overheat=1, overheat_within_ticks=45)
    ts0 = time.time() - 120
    for tick in range(70):
        values = fleet.readings(tick)
        for index, machine_id in enumerate(fleet.machine_ids):
            payload = encode_reading(machine_id, ts0 + tick, tick + 1, values[index])
            publisher.publish(f"factory/{machine_id}/telemetry", payload, qos=1)
            native_fields = orjson.loads(payload)
            shaped = orjson.dumps(  # what a plant gateway sends: its names, °F, bar, ms
                {
                    "asset": machine_id,
                    "time_ms": round(native_fields["ts"] * 1000),
                    "seq": native_fields["seq"],
                    "temp": native_fields["temperature_c"] * 9 / 5 + 32,
                    "vib": native_fields["vibration_hz"],
                    "press": native_fields["pressure_psi"] / 14.503773773,
                    "speed": native_fields["rpm"],
                }
            )
            line = f"line-{index % 2 + 1}"
            publisher.publish(f"plant/{line}/{machine_id}/sensors", shaped, qos=1)
        wait_pending(native, len(fleet.machine_ids))
        wait_pending(plant, len(fleet.machine_ids))
        events["native"] += native.tick()
        events["plant"] += plant.tick()

    def key(event: AlertEvent) -> tuple[str, str, str]:
        return (event.machine_id, event.severity, event.status)

    assert any(e.status == "firing" for e in events["native"]), "the overheat raised no alert"
    assert [key(e) for e in events["plant"]] == [key(e) for e in events["native"]]
    for ours, theirs in zip(events["plant"], events["native"], strict=True):
        assert ours.temperature_c == pytest.approx(theirs.temperature_c, abs=1e-3)
        assert ours.forecast_c == pytest.approx(theirs.forecast_c, abs=1e-3)
    assert len(views["plant"]) == len(views["native"]) > 0
    for ours_rows, theirs_rows in zip(views["plant"], views["native"], strict=True):
        assert [(r.machine_id, r.state) for r in ours_rows] == [
            (r.machine_id, r.state) for r in theirs_rows
        ]
        for ours_row, theirs_row in zip(ours_rows, theirs_rows, strict=True):
            assert ours_row.temperature_c == pytest.approx(theirs_row.temperature_c, abs=1e-3)
            assert ours_row.forecast_c == pytest.approx(theirs_row.forecast_c, abs=1e-3)
    assert plant.metrics.registry.get_sample_value("forewarn_readings_total") == 70 * 3

    # The plant's alerts land on its own template, as the same plain JSON.
    expected = len(events["plant"])
    assert plant_alerts.wait_for(lambda m: len(m) >= expected, 10)
    assert native_alerts.wait_for(lambda m: len(m) >= expected, 10)
    for topic, alert, _ in plant_alerts.snapshot():
        assert topic == f"plant/{alert['machine_id']}/forewarn/alerts"
    assert [
        (a["machine_id"], a["severity"], a["status"]) for _, a, _ in plant_alerts.snapshot()
    ] == [key(e) for e in events["plant"]]
    assert {t for t, _, _ in native_alerts.snapshot()} == {
        f"factory/{e.machine_id}/alerts" for e in events["native"]
    }


@pytest.mark.integration
def test_simulator_publishes_a_plant_shaped_stream_the_agent_reads(
    mosquitto: Mosquitto, agents: Callable[..., Agent], publisher: mqtt.Client
) -> None:
    # The machine id comes from the payload: the template has no {machine_id} level.
    fields = PLANT_FIELDS
    plant = agents(
        agent_settings(mosquitto, "plant-agent", fields, telemetry_topic="plant/{line}/data")
    )
    wait_subscribed(plant, publisher, "plant/line-0/data")
    settings = agent_settings(mosquitto, "sim", fields, telemetry_topic="plant/{line}/data")
    settings.simulator = settings.simulator.model_copy(
        update={"machines": 4, "rate_hz": 20.0, "duration_s": 1.0}
    )
    simulator = SimulatorPublisher(
        settings.mqtt,
        settings.simulator,
        settings.alerts.threshold_c,
        mapping=FieldMapping(settings.mapping.field_maps(), FEATURES),
    )
    thread = threading.Thread(target=simulator.run)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    wait_pending(plant, 4 * 20)
    plant.tick()
    assert plant.metrics.registry.get_sample_value("forewarn_readings_total") == 4 * 20
    assert sorted(plant.store.slot_of) == sorted(simulator.fleet.machine_ids)
    rejected = plant.metrics.registry.get_sample_value(
        "forewarn_readings_rejected_total", {"reason": "missing_field"}
    )
    assert not rejected


@pytest.mark.integration
def test_a_model_of_fewer_features_is_fed_only_those(
    mosquitto: Mosquitto, agents: Callable[..., Agent], publisher: mqtt.Client
) -> None:
    features = ("temperature_c", "vibration_hz")
    model = TorchForecaster.new(features=features, window=20, horizon=5, device="cpu")
    agent = agents(
        agent_settings(mosquitto, "partial", {"temp": {"feature": "temperature_c", "unit": "F"}}),
        forecaster=model,
    )
    wait_subscribed(agent, publisher, "factory/probe/telemetry")
    for seq in range(1, 26):  # temperature and vibration only: no pressure, no rpm
        reading = {"machine_id": "kiln-1", "ts": time.time() - 60 + seq, "seq": seq}
        payload = orjson.dumps(reading | {"temp": 150.0 + seq, "vibration_hz": 30.0})
        publisher.publish("factory/kiln-1/telemetry", payload, qos=1)
    wait_pending(agent, 25)
    agent.tick()
    assert agent.metrics.registry.get_sample_value("forewarn_forecasts_total") == 1
    latest = agent.store.latest(np.array([agent.store.slot_of["kiln-1"]]))
    assert latest.shape == (1, 2)
    assert float(latest[0, 0]) == pytest.approx((175.0 - 32) * 5 / 9, abs=1e-3)


def test_a_mapping_to_a_feature_the_model_lacks_stops_start_up() -> None:
    """Refused while the agent is built, before any connection: no broker needed."""
    model = TorchForecaster.new(features=("temperature_c", "vibration_hz"), window=20, horizon=5)
    settings = agent_settings(None, "bad", {"spindle_speed": "rpm"})
    with pytest.raises(ConfigError, match=r"'spindle_speed'.*'rpm'"):
        Agent(settings, forecaster=model)


def test_a_mapping_error_stops_the_agent_command_naming_the_field() -> None:
    """A configuration error, named before any connection: no broker needed (one that was
    tried first would fail the command with another message)."""
    env = forewarn_env(
        FOREWARN_MQTT__PORT=str(free_port()),
        FOREWARN_MAPPING__FIELDS='{"temp": {"feature": "temperature_c", "unit": "psi"}}',
        FOREWARN_METRICS__PORT="0",
    )
    result = subprocess.run(
        forewarn_command("agent"), env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "FOREWARN_MAPPING__FIELDS" in result.stderr
    assert "'temp'" in result.stderr and "'psi'" in result.stderr


SPARKPLUG_FIELDS: dict[str, Any] = {
    "Sensors/Temperature": {"feature": "temperature_c", "unit": "degF"},
    "Sensors/Vibration": "vibration_hz",
    "Sensors/Pressure": {"feature": "pressure_psi", "unit": "kPa"},
    "Drive/Speed": "rpm",
}


def stale_machines(messages: list[tuple[str, dict[str, object], bool]]) -> set[str]:
    return {
        str(p["machine_id"])
        for _, p, _ in messages
        if p["severity"] == "stale" and p["status"] == "firing"
    }


@pytest.mark.integration
def test_sparkplug_ddata_from_the_simulator_drives_the_agent_and_ndeath_makes_it_stale(
    mosquitto: Mosquitto,
    agents: Callable[..., Agent],
    publisher: mqtt.Client,
    subscribe: Callable[[str], Recorder],
) -> None:
    alerts = subscribe("factory/+/alerts")
    agent = agents(
        agent_settings(
            mosquitto, "spb-agent", SPARKPLUG_FIELDS, tick_interval_s=0.05, sparkplug_group="line-a"
        )
    )
    wait_subscribed(agent, publisher, "spBv1.0/line-a/DDATA/probe/probe")
    settings = agent_settings(mosquitto, "edge-7", SPARKPLUG_FIELDS, sparkplug_group="line-a")
    settings.simulator = settings.simulator.model_copy(
        update={"machines": 3, "rate_hz": 20.0, "duration_s": 2.0, "format": "sparkplug"}
    )
    simulator = SimulatorPublisher(
        settings.mqtt,
        settings.simulator,
        settings.alerts.threshold_c,
        mapping=FieldMapping(settings.mapping.field_maps(), FEATURES),
    )
    started = time.monotonic()
    thread = threading.Thread(target=simulator.run)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    machines = set(simulator.fleet.machine_ids)
    # The NDEATH at the simulator's end: every device is stale within seconds, long before
    # stale_after_s (300 s) would have said so.
    assert alerts.wait_for(lambda m: stale_machines(m) == machines, 10), alerts.snapshot()
    assert time.monotonic() - started < 60
    registry = agent.metrics.registry
    assert registry.get_sample_value("forewarn_readings_total") == 3 * 40
    assert (registry.get_sample_value("forewarn_forecasts_total") or 0) > 0
    # The metrics arrived in °F and kPa and were converted like JSON fields.
    slot = agent.store.slot_of[simulator.fleet.machine_ids[0]]
    temperature = float(agent.store.latest(np.array([slot]))[0, 0])
    assert 20.0 < temperature < 120.0, f"{temperature} is not a °C reading"


@pytest.mark.integration
def test_sparkplug_aliases_from_birth_and_ddeath_of_one_device(
    mosquitto: Mosquitto,
    agents: Callable[..., Agent],
    publisher: mqtt.Client,
    subscribe: Callable[[str], Recorder],
) -> None:
    alerts = subscribe("factory/+/alerts")
    fields = {"T": "temperature_c", "V": "vibration_hz", "P": "pressure_psi", "S": "rpm"}
    agent = agents(
        agent_settings(mosquitto, "spb", fields, tick_interval_s=0.05, sparkplug_group="+")
    )
    # The agent's SUBSCRIBE may still be on its way: wait until a probe NBIRTH gets through.
    deadline = time.monotonic() + 10
    while ("g1", "probe", None) not in agent.sparkplug.aliases:
        assert time.monotonic() < deadline, "the agent never subscribed to Sparkplug B"
        publisher.publish("spBv1.0/g1/NBIRTH/probe", sparkplug.encode({}, 0, 0), qos=1)
        time.sleep(0.1)
    now = time.time()
    first = {"T": 70.0, "V": 30.0, "P": 120.0, "S": 1500.0}
    for device in ("press-1", "press-2"):
        birth = sparkplug.encode(first, int(now * 1000), 0, birth=True)
        publisher.publish(f"spBv1.0/g1/DBIRTH/gw/{device}", birth, qos=1)
    for step in range(1, 6):
        for device in ("press-1", "press-2"):
            message = sparkplug.Payload(timestamp=int((now + step) * 1000), seq=step)
            for alias, value in enumerate(first.values(), start=1):  # aliases only, no names
                message.metrics.add(alias=alias, datatype=sparkplug.DOUBLE, double_value=value)
            topic = f"spBv1.0/g1/DDATA/gw/{device}"
            publisher.publish(topic, message.SerializeToString(), qos=1)
    publisher.publish("spBv1.0/g1/DDATA/gw/press-1", b"not protobuf at all", qos=1)
    registry = agent.metrics.registry
    deadline = time.monotonic() + 10
    while (registry.get_sample_value("forewarn_readings_total") or 0) < 10:
        assert time.monotonic() < deadline, "the aliased DDATA readings were not accepted"
        time.sleep(0.05)
    # Refused as it arrives, after the readings: not necessarily by the tick that counted them.
    assert holds_within(
        lambda: bool(
            registry.get_sample_value("forewarn_readings_rejected_total", {"reason": "bad_json"})
        ),
        10,
    ), "the DDATA that is not Sparkplug B was not refused"
    publisher.publish("spBv1.0/g1/DDEATH/gw/press-2", sparkplug.encode({}, 0, 6), qos=1)
    assert alerts.wait_for(lambda m: stale_machines(m) == {"press-2"}, 10), alerts.snapshot()
    time.sleep(0.5)
    assert stale_machines(alerts.snapshot()) == {"press-2"}, "only the dead device is stale"
