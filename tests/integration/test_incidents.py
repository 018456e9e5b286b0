"""One page per overheat episode, end to end through a real mosquitto and the shipped settings.

A machine's level rises until its cycle carries the reading across the threshold at every peak
and back below it in every trough, stays there, and is then repaired. Without the hold each
trough would end the incident and each peak would page again; with the shipped
``keep_firing_for_s`` the machine gets one page, its escalation and step-downs are updates of
the same ``alert_id`` with consecutive ``seq``, and the incident resolves after the repair.

The readings carry timestamps one second apart but are published faster than real time: the
hold runs on reading timestamps, so the episode's 40 minutes of readings take seconds here.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.app import Agent
from config.settings import Settings, load_settings
from simulator.signal import readings_from_temperature
from tests.conftest import Mosquitto, Recorder
from wire.payload import encode_reading

pytestmark = pytest.mark.integration

READINGS = 2600
THRESHOLD_C = 95.0


def episode(rng: np.random.Generator) -> np.ndarray:
    """Temperatures of one overheat at 1 reading per second: ramp, plateau, repair, normal."""
    t = np.arange(READINGS, dtype=np.float64)
    level = np.interp(t, [0, 150, 1100, 1500, 1600], [74.0, 74.0, 92.0, 92.0, 70.0])
    return level + 9.0 * np.sin(2.0 * np.pi * t / 100.0) + rng.normal(0.0, 1.0, READINGS)


def test_one_page_for_a_machine_whose_reading_crosses_many_times_in_one_episode(
    mosquitto: Mosquitto,
    running_agent: Callable[[Settings], Agent],
    subscribe: Callable[[str], Recorder],
) -> None:
    settings = load_settings(_env_file=None)
    settings.mqtt = settings.mqtt.model_copy(
        update={"host": mosquitto.host, "port": mosquitto.port, "client_id": "incident-agent"}
    )
    settings.metrics = settings.metrics.model_copy(update={"host": "127.0.0.1", "port": 0})
    settings.agent = settings.agent.model_copy(update={"tick_interval_s": 0.01})
    assert settings.alerts.threshold_c == THRESHOLD_C
    rng = np.random.default_rng(5)
    hot = episode(rng)
    calm = 72.0 + 9.0 * np.sin(2.0 * np.pi * np.arange(READINGS) / 100.0)
    calm += rng.normal(0.0, 1.0, READINGS)
    crossings = int(np.sum((hot[1:] >= THRESHOLD_C) & (hot[:-1] < THRESHOLD_C)))
    assert crossings >= 5, "the episode must cross the threshold many times"

    alerts = subscribe("factory/+/alerts")
    running_agent(settings)
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    start_ts = time.time() - READINGS  # a second apart, ending now: none is from the future
    for machine_id, series in (("m-cycle", hot), ("m-calm", calm)):
        values = readings_from_temperature(series, rng)
        for i in range(READINGS):
            payload = encode_reading(machine_id, start_ts + i, i, values[i])
            client.publish(f"factory/{machine_id}/telemetry", payload, qos=1).wait_for_publish(5)
            if i % 4 == 3:
                time.sleep(0.01)  # about one reading per tick: the agent sees each peak
        if machine_id == "m-cycle":

            def resolved(messages: list[tuple[str, dict[str, object], bool]]) -> bool:
                return any(p["status"] == "resolved" for _, p, _ in messages)

            assert alerts.wait_for(resolved, 30), alerts.snapshot()
    client.loop_stop()
    client.disconnect()
    time.sleep(0.5)

    messages = [p for _, p, _ in alerts.snapshot()]
    mine = [p for p in messages if p["machine_id"] == "m-cycle"]
    pages = [p for p in mine if p["previous_state"] == "ok"]
    story = [(p["severity"], p["status"], p["previous_state"], p["seq"]) for p in mine]
    assert len(pages) == 1, f"{crossings} crossings paged {len(pages)} times: {story}"
    assert len({p["alert_id"] for p in mine}) == 1, story
    assert ("critical", "firing") in [(p["severity"], p["status"]) for p in mine], story
    assert mine[-1]["status"] == "resolved", story
    seqs = [int(str(p["seq"])) for p in mine]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), story
    assert not [p for p in messages if p["machine_id"] == "m-calm"]
