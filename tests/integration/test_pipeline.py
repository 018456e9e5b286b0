"""Simulator → real mosquitto → agent → alerts on MQTT and metrics over HTTP.

Where a test counts readings exactly, the simulator publishes at QoS 1 (QoS 0 may lose a
reading, and then the count says nothing about the agent), and the test waits for the count
with a deadline rather than for a fixed time.
"""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.app import Agent
from config.settings import Settings, load_settings
from simulator.publish import SimulatorPublisher, build_fleet
from tests.conftest import Mosquitto, Recorder, free_port
from tests.faultkit import holds_within

ALERT_KEYS = {
    "machine_id",
    "severity",
    "status",
    "ts",
    "temperature_c",
    "forecast_c",
    "threshold_c",
    "model_version",
}


def settings_for(mosquitto: Mosquitto, tmp_path: Path, **simulator: object) -> Settings:
    """The agent on the test broker, fast ticks; the simulator at QoS 1, so none is lost."""
    settings = load_settings(_env_file=None)
    settings.mqtt = settings.mqtt.model_copy(
        update={"host": mosquitto.host, "port": mosquitto.port, "client_id": "agent-under-test"}
    )
    settings.metrics = settings.metrics.model_copy(update={"host": "127.0.0.1", "port": 0})
    settings.agent = settings.agent.model_copy(update={"tick_interval_s": 0.05})
    settings.simulator = settings.simulator.model_copy(update={"qos": 1, **simulator})
    return settings


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def accepted(agent: Agent) -> float:
    return agent.metrics.registry.get_sample_value("forewarn_readings_total") or 0.0


def run_simulator(settings: Settings) -> threading.Thread:
    publisher = SimulatorPublisher(settings.mqtt, settings.simulator, settings.alerts.threshold_c)
    thread = threading.Thread(target=publisher.run, name="test-simulator")
    thread.start()
    return thread


def warned_before_critical(by_machine: dict[str, list[tuple[str, str]]]) -> list[str]:
    """Machines whose first warning firing came before their first critical firing."""
    return [
        machine
        for machine, seq in by_machine.items()
        if ("warning", "firing") in seq
        and ("critical", "firing") in seq
        and seq.index(("warning", "firing")) < seq.index(("critical", "firing"))
    ]


def alert_sequences(
    messages: list[tuple[str, dict[str, object], bool]],
) -> dict[str, list[tuple[str, str]]]:
    by_machine: dict[str, list[tuple[str, str]]] = {}
    for _, payload, _ in messages:
        by_machine.setdefault(str(payload["machine_id"]), []).append(
            (str(payload["severity"]), str(payload["status"]))
        )
    return by_machine


@pytest.mark.integration
def test_overheat_warns_before_critical_on_mqtt(
    mosquitto: Mosquitto,
    tmp_path: Path,
    running_agent: Callable[[Settings], Agent],
    subscribe: Callable[[str], Recorder],
) -> None:
    settings = settings_for(
        mosquitto, tmp_path, machines=12, rate_hz=20.0, duration_s=18.0, overheat=3, seed=3
    )
    alerts = subscribe("factory/+/alerts")
    agent = running_agent(settings)
    simulator = run_simulator(settings)
    simulator.join(timeout=60)
    assert not simulator.is_alive()
    published = 12 * 18 * 20
    # Every reading taken (QoS 1: none may be lost on the way) and the warning-then-critical
    # of at least one machine published; the claims below are then about a finished run.
    assert holds_within(lambda: accepted(agent) >= published, 30), (
        f"{accepted(agent):.0f} of {published} readings taken; "
        f"mosquitto log: {mosquitto.log.read_text()}"
    )
    assert holds_within(
        lambda: bool(warned_before_critical(alert_sequences(alerts.snapshot()))), 10
    ), f"no machine was warned before going critical: {alert_sequences(alerts.snapshot())}"

    messages = alerts.snapshot()
    for topic, payload, _ in messages:
        assert payload.keys() >= ALERT_KEYS
        assert topic == f"factory/{payload['machine_id']}/alerts"
        assert payload["status"] in {"firing", "resolved"}
        assert payload["severity"] in {"warning", "critical"}
    by_machine = alert_sequences(messages)
    print("alert sequences:", by_machine)
    fleet = build_fleet(settings.simulator, settings.alerts.threshold_c)
    overheating = {fleet.machine_ids[plan.machine_index] for plan in fleet.overheats}
    assert set(by_machine) <= overheating, "a healthy machine raised an alert"
    # Each alert was raised once per episode: no duplicate firing while firing.
    for machine, seq in by_machine.items():
        for earlier, later in itertools.pairwise(seq):
            assert earlier != later, f"{machine} repeated {earlier}"

    registry = agent.metrics.registry
    assert accepted(agent) == published, "every published reading is accepted exactly once"
    assert registry.get_sample_value("forewarn_forecasts_total") > 0


@pytest.mark.integration
def test_metrics_pass_promtool_and_health_follows_the_broker(
    mosquitto: Mosquitto,
    tmp_path: Path,
    running_agent: Callable[[Settings], Agent],
    promtool: str,
) -> None:
    settings = settings_for(
        mosquitto, tmp_path, machines=5, rate_hz=20.0, duration_s=3.0, overheat=0
    )
    agent = running_agent(settings)
    base = f"http://127.0.0.1:{agent.http.port}"
    status, body = http_get(base + "/healthz")
    assert status == 200, body  # healthy before any reading arrived
    run_simulator(settings).join(timeout=30)
    published = 5 * 3 * 20
    # The count moves at each tick; once it holds every reading, so do the other metrics.
    assert holds_within(lambda: accepted(agent) >= published, 30), accepted(agent)

    status, text = http_get(base + "/metrics")
    assert status == 200
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=30
    )
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    exposition = text.decode()
    for name in (
        "forewarn_readings_total",
        'forewarn_readings_rejected_total{reason="bad_json"}',
        "forewarn_forecasts_total",
        'forewarn_alerts_total{severity="warning"}',
        "forewarn_tick_duration_seconds_bucket",
        "forewarn_reading_to_forecast_seconds_bucket",
        "forewarn_pending_oldest_age_seconds",
        "forewarn_batch_size",
        "forewarn_machines",
        "forewarn_model_info",
        "forewarn_machine_temperature_celsius",
    ):
        assert name in exposition, f"{name} missing from /metrics"
    registry = agent.metrics.registry
    assert registry.get_sample_value("forewarn_machines") == 5
    # Every reading of a machine with a full window is timed to its forecast; the first
    # window - 1 readings of each machine may not be (nothing is forecast yet).
    taken = accepted(agent)
    timed = registry.get_sample_value("forewarn_reading_to_forecast_seconds_count")
    window = agent.store.window
    assert taken == published
    assert taken - 5 * (window - 1) <= timed <= taken
    mean = registry.get_sample_value("forewarn_reading_to_forecast_seconds_sum") / timed
    assert 0 < mean < settings.agent.tick_interval_s + 1.0

    mosquitto.process.terminate()
    mosquitto.process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and http_get(base + "/healthz")[0] != 503:
        time.sleep(0.1)
    assert http_get(base + "/healthz")[0] == 503, "healthz must turn 503 without the broker"


def test_healthz_is_503_until_connected(tmp_path: Path) -> None:
    """No broker at all (a free port nobody listens on): not marked integration."""
    settings = load_settings(_env_file=None)
    settings.mqtt = settings.mqtt.model_copy(update={"host": "127.0.0.1", "port": free_port()})
    settings.metrics = settings.metrics.model_copy(update={"host": "127.0.0.1", "port": 0})
    agent = Agent(settings)
    agent.start()
    try:
        time.sleep(0.5)
        status, body = http_get(f"http://127.0.0.1:{agent.http.port}/healthz")
        assert status == 503, body
        assert b'"mqtt_connected":false' in body
    finally:
        agent.stop()


@pytest.mark.integration
def test_malformed_readings_are_counted_and_skipped(
    mosquitto: Mosquitto,
    tmp_path: Path,
    running_agent: Callable[[Settings], Agent],
) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    settings = settings_for(mosquitto, tmp_path)
    agent = running_agent(settings)
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    bad = [
        b"not json",
        b'{"machine_id": "m-1", "ts": 1, "seq": 1}',
        b'{"machine_id": "m-1", "ts": 1, "seq": 1, "temperature_c": "hot", '
        b'"vibration_hz": 1, "pressure_psi": 1, "rpm": 1}',
        b'{"machine_id": "m-1", "ts": 1, "seq": 2, "temperature_c": -1e9, '
        b'"vibration_hz": 1, "pressure_psi": 1, "rpm": 1}',
    ]
    good = (
        b'{"machine_id": "m-1", "ts": 1, "seq": 3, "temperature_c": 70, '
        b'"vibration_hz": 35, "pressure_psi": 121, "rpm": 1640}'
    )
    for payload in [*bad, good, good]:
        client.publish("factory/m-1/telemetry", payload, qos=1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()
    registry = agent.metrics.registry

    def rejected(reason: str) -> float:
        return (
            registry.get_sample_value("forewarn_readings_rejected_total", {"reason": reason}) or 0.0
        )

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and rejected("duplicate") < 1:
        time.sleep(0.05)
    assert rejected("bad_json") == 1
    assert rejected("missing_field") == 1
    assert rejected("bad_type") == 1
    assert rejected("out_of_range") == 1
    assert rejected("duplicate") == 1
    assert registry.get_sample_value("forewarn_readings_total") == 1
    assert agent.health()[0], "bad input must not hurt the agent"
