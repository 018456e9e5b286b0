"""Fault scenarios end to end through a real mosquitto: ground truth, alerts, stale, silence."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import jsonschema
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.app import Agent
from agent.silence import silence_payload
from config.settings import Settings, load_settings
from config.topics import silence_topic
from simulator.publish import SimulatorPublisher
from tests.conftest import Mosquitto, Recorder
from tests.faultkit import COOL_C, HOT_C, Readings, holds_within

pytestmark = pytest.mark.integration

RATE_HZ = 40.0
MIX = {
    "overheat": 2,
    "cooling_failure": 2,
    "dropout": 2,
    "stuck_sensor": 2,
    "spikes": 2,
    "noisy_sensor": 2,
    "bad_payload": 2,
}


SILENCE_RUNS_OUT_S = 4.0
"""A silence short enough to run out within the test, long enough to outlast its critical."""


def make_settings(mosquitto: Mosquitto, tmp_path: Path, **simulator: object) -> Settings:
    settings = load_settings(_env_file=None)
    settings.mqtt = settings.mqtt.model_copy(
        update={"host": mosquitto.host, "port": mosquitto.port, "client_id": "alerting-agent"}
    )
    settings.metrics = settings.metrics.model_copy(update={"host": "127.0.0.1", "port": 0})
    settings.agent = settings.agent.model_copy(
        update={"tick_interval_s": 0.02, "stale_after_s": 1.0}
    )
    settings.simulator = settings.simulator.model_copy(update=simulator)
    return settings


def stale_firings(messages: list[tuple[str, dict[str, object], bool]]) -> set[str]:
    """Machines with a "stale firing" among the messages."""
    return {
        str(p["machine_id"])
        for _, p, _ in messages
        if (p["severity"], p["status"]) == ("stale", "firing")
    }


def triples(messages: list[tuple[str, dict[str, object], bool]]) -> list[tuple[str, str, str]]:
    """(machine, severity, status) of each alert message, in order."""
    return [(str(p["machine_id"]), str(p["severity"]), str(p["status"])) for _, p, _ in messages]


def sample(agent: Agent, name: str, **labels: str) -> float | None:
    """One sample of the agent's metrics, as Prometheus would scrape it."""
    return agent.metrics.registry.get_sample_value(name, labels)


def by_machine(recorder: Recorder) -> dict[str, list[tuple[str, str]]]:
    sequences: dict[str, list[tuple[str, str]]] = {}
    for _, payload, _ in recorder.snapshot():
        sequences.setdefault(str(payload["machine_id"]), []).append(
            (str(payload["severity"]), str(payload["status"]))
        )
    return sequences


def test_every_fault_kind_end_to_end(
    mosquitto: Mosquitto,
    tmp_path: Path,
    running_agent: Callable[[Settings], Agent],
    subscribe: Callable[[str], Recorder],
) -> None:
    """Each fault kind gets what docs/alerting.md promises for it: overheats and failing coolers go
    critical; dropouts go stale and resolve when the readings resume; spikes, stuck sensors
    and bad payloads raise no overheat alert; a noisy sensor (whose noisy forecasts do not
    count towards a warning once its error shows the noise) never goes critical and leaves
    no warning firing. Seed 21 was chosen so that both dropouts outlast
    stale_after_s with room to spare and a noisy sensor warns when the noise gate is off."""
    truth_file = tmp_path / "truth.jsonl"
    settings = make_settings(
        mosquitto,
        tmp_path,
        machines=20,
        rate_hz=RATE_HZ,
        duration_s=16.0,
        faults=MIX,
        ground_truth=truth_file,
        seed=21,
    )
    alerts = subscribe("factory/+/alerts")
    agent = running_agent(settings)
    publisher = SimulatorPublisher(settings.mqtt, settings.simulator, settings.alerts.threshold_c)
    publisher.run()
    run_ticks = publisher.stats.ticks
    # Every machine stops with the run and goes stale a second later: wait for the last of
    # those alerts, so every message of the run is in (the in-run ones came before them).
    everyone = settings.simulator.machines
    assert alerts.wait_for(lambda ms: len(stale_firings(ms)) >= everyone, 10), (
        f"not every machine went stale after the run: {sorted(stale_firings(alerts.snapshot()))}"
    )

    truth = [orjson.loads(line) for line in truth_file.read_text().splitlines()]
    kinds = {record["fault"] for record in truth}
    assert kinds == set(MIX), f"ground truth lacks kinds: {set(MIX) - kinds}"
    sequences = by_machine(alerts)
    print("ground truth:", truth)
    print("alerts:", sequences)
    stale_after_s = settings.agent.stale_after_s
    for record in truth:
        machine, kind = str(record["machine_id"]), record["fault"]
        seen = sequences.get(machine, [])
        overheat_alerts = [(sev, status) for sev, status in seen if sev != "stale"]
        if kind in ("overheat", "cooling_failure"):
            assert record["crossing_tick"] is not None, record
            assert ("critical", "firing") in seen, f"{kind} on {machine} never went critical"
        elif kind in ("spikes", "bad_payload", "stuck_sensor"):
            assert overheat_alerts == [], (kind, seen)
        elif kind == "noisy_sensor":
            # The noise must have been on, long enough, while the machine was forecast.
            start, end = int(record["start_tick"]), int(record["end_tick"])
            assert 2 * agent.forecaster.window <= start and end <= run_ticks, record
            # The noise gate (tests/unit/test_alerts.py) holds back warnings once the noise
            # shows in the forecast error, but a warning can come in the few forecasts before
            # it does: the promise here is no critical and no warning left firing.
            assert ("critical", "firing") not in overheat_alerts, f"noisy {machine}: {seen}"
            assert overheat_alerts.count(("warning", "firing")) == overheat_alerts.count(
                ("warning", "resolved")
            ), f"noisy sensor {machine} left warning: {seen}"
        elif kind == "dropout":
            assert overheat_alerts == [], (kind, seen)
            silent_s = (int(record["end_tick"]) - int(record["start_tick"])) / RATE_HZ
            # The scenario must make the condition happen: a gap clearly over stale_after_s.
            assert silent_s >= stale_after_s + 0.5, f"the dropout of {machine} is too short"
            # The gap's episode: stale fires, then resolves when the readings resume (the
            # stale alert every machine gets after the run comes after it, and never resolves).
            assert ("stale", "resolved") in seen, f"dropout of {silent_s:.2f} s: {seen}"
            resolved = seen.index(("stale", "resolved"))
            assert seen[resolved - 1] == ("stale", "firing"), seen
    schema = json.loads((resources.files("wire") / "schemas/alert.schema.json").read_text())
    for _, payload, _retained in alerts.snapshot():
        jsonschema.validate(payload, schema)  # every published alert matches the shipped schema
    rejected = {
        reason: agent.metrics.registry.get_sample_value(
            "forewarn_readings_rejected_total", {"reason": reason}
        )
        for reason in ("bad_json", "missing_field", "bad_type", "out_of_range", "duplicate")
    }
    assert sum(v or 0 for v in rejected.values()) > 0, rejected
    assert agent.health()[0]


def test_a_silenced_machine_is_computed_and_counted_but_not_published(
    mosquitto: Mosquitto,
    tmp_path: Path,
    running_agent: Callable[[Settings], Agent],
    subscribe: Callable[[str], Recorder],
) -> None:
    """A silence retained before the agent starts is honoured from its first tick: of two
    overheating machines only the unsilenced one's alerts are published, while the silenced
    one's are still counted."""
    settings = make_settings(
        mosquitto, tmp_path, machines=6, rate_hz=20.0, duration_s=12.0, overheat=2, seed=4
    )
    publisher = SimulatorPublisher(settings.mqtt, settings.simulator, settings.alerts.threshold_c)
    hot = [publisher.fleet.machine_ids[p.machine_index] for p in publisher.fleet.overheats]
    silenced, loud = hot
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    client.publish(
        silence_topic("factory", silenced),
        silence_payload(time.time() + 3600, "bearing swap"),
        qos=1,
        retain=True,
    ).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()
    alerts = subscribe("factory/+/alerts")
    agent = running_agent(settings)
    assert holds_within(lambda: sample(agent, "forewarn_machines_silenced") == 1, 5)
    thread = threading.Thread(target=publisher.run)
    thread.start()
    thread.join(timeout=60)
    # After the run both machines go stale; the loud one's stale alert is its last message.
    assert alerts.wait_for(lambda ms: loud in stale_firings(ms), 10), by_machine(alerts)

    sequences = by_machine(alerts)
    assert silenced not in sequences, sequences[silenced]
    assert ("critical", "firing") in sequences.get(loud, []), sequences
    counted = sample(agent, "forewarn_alerts_silenced_total", severity="critical")
    assert counted and counted >= 1
    assert sample(agent, "forewarn_machines_silenced") == 1


def test_when_a_silence_ends_the_machines_current_state_is_published_once(
    mosquitto: Mosquitto,
    tmp_path: Path,
    running_agent: Callable[[Settings], Agent],
    subscribe: Callable[[str], Recorder],
) -> None:
    """A subscriber must never get a "resolved" for an alert it was not told about: when a
    silence ends on a machine that is still alerting, whether lifted (an empty retained
    message) or run out, its current state goes out once; a machine that is ok when its
    silence ends gets nothing. An unsilenced machine in the same state shows that the
    silenced ones really went critical while silenced."""
    settings = make_settings(mosquitto, tmp_path)
    # Only silences end here: no machine may go stale while the test waits.
    settings.agent = settings.agent.model_copy(update={"stale_after_s": 60.0})
    alerts = subscribe("factory/+/alerts")
    agent = running_agent(settings)
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()

    def silence(machine_id: str, payload: bytes) -> None:
        client.publish(
            silence_topic("factory", machine_id), payload, qos=1, retain=True
        ).wait_for_publish(5)

    runs_out_at = time.time() + SILENCE_RUNS_OUT_S
    silence("m-lifted", silence_payload(time.time() + 3600, "bearing swap"))
    silence("m-cool", silence_payload(time.time() + 3600, "filter change"))
    silence("m-expiring", silence_payload(runs_out_at, "quick check"))
    assert holds_within(lambda: sample(agent, "forewarn_machines_silenced") == 3, 5)

    readings = Readings(mosquitto)  # type: ignore[arg-type]  # host and port are all it uses
    temperatures = {"m-lifted": HOT_C, "m-expiring": HOT_C, "m-loud": HOT_C, "m-cool": COOL_C}
    readings.burst(temperatures, agent.forecaster.window + 5)
    assert alerts.wait_for(lambda ms: ("m-loud", "critical", "firing") in triples(ms), 10)
    assert holds_within(
        lambda: sample(agent, "forewarn_alerts_silenced_total", severity="critical") == 2, 5
    ), "both hot silenced machines went critical, silently"
    assert time.time() < runs_out_at, "too slow: the short silence ran out before its critical"
    assert {m for m, _, _ in triples(alerts.snapshot())} == {"m-loud"}, "a silence leaked"

    silence("m-lifted", b"")
    silence("m-cool", b"")
    assert alerts.wait_for(
        lambda ms: {m for m, _, _ in triples(ms)} >= {"m-lifted", "m-expiring"},
        SILENCE_RUNS_OUT_S + 5,
    ), by_machine(alerts)
    # "Once": a good number of ticks later, still one message each (a repeat would come at
    # the next tick).
    ticks = sample(agent, "forewarn_ticks_total") or 0.0
    assert holds_within(lambda: (sample(agent, "forewarn_ticks_total") or 0.0) >= ticks + 25, 10)
    readings.close()
    client.disconnect()
    client.loop_stop()

    sequences = by_machine(alerts)
    assert sequences["m-lifted"] == [("critical", "firing")], sequences
    assert sequences["m-expiring"] == [("critical", "firing")], sequences
    assert "m-cool" not in sequences, "an ok machine has no state to publish"
    republished = [p for _, p, _ in alerts.snapshot() if p["machine_id"] != "m-loud"]
    assert all(p["temperature_c"] == HOT_C for p in republished), republished
    assert sample(agent, "forewarn_machines_silenced") == 0
