"""Drift detected on a machine whose behaviour changes, through a real mosquitto and /metrics.

Five machines report one reading per agent tick (each round is published once the agent has
taken the previous one, so every reading is one step after the forecast made before it). Four
run the simulator's healthy signal throughout; the fifth runs it for 150 readings and then
turns into a fast, regular cycle (12 readings a period) that no machine of the model's training
fleets had. The drift ratio of the healthy ones stays near 1, the changed machine's climbs
past ForewarnModelDrift's 1.5, and before the change it was near 1 too. The agent records
the run meanwhile: every reading comes back from the recording, one unbroken run per machine.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.app import Agent
from agent.drift import EXPORT_EVERY_S
from config.settings import Settings, load_settings
from models.recording import read_recording, segments
from simulator.fleet import Fleet
from tests.conftest import Mosquitto
from wire.payload import encode_reading

pytestmark = pytest.mark.integration

ROUNDS = 450
CHANGE_AT = 150
HEALTHY = ["m-1", "m-2", "m-3", "m-4"]
CHANGED = "m-changed"


def series() -> dict[str, np.ndarray]:
    """(ROUNDS + 1, features) readings per machine."""
    history = Fleet(machines=5, seed=11, overheat=0, run_ticks=ROUNDS + 1).history(0, ROUNDS + 1)
    out = {machine_id: history[i] for i, machine_id in enumerate(HEALTHY)}
    changed = history[4].copy()
    t = np.arange(CHANGE_AT, ROUNDS + 1)
    changed[CHANGE_AT:, 0] = 70.0 + 8.0 * np.sin(2.0 * np.pi * t / 12.0)
    out[CHANGED] = changed
    return out


def drift_ratios(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    ratios = {}
    for line in text.splitlines():
        if line.startswith("forewarn_machine_model_drift_ratio{"):
            machine_id = line.split('machine_id="', 1)[1].split('"', 1)[0]
            ratios[machine_id] = float(line.rsplit(" ", 1)[1])
        elif line.startswith('forewarn_model_drift_ratio{quantile="1"}'):
            ratios["fleet max"] = float(line.rsplit(" ", 1)[1])
    return ratios


def test_drift_shows_on_the_machine_whose_behaviour_changed_and_not_the_others(
    mosquitto: Mosquitto, running_agent: Callable[[Settings], Agent], tmp_path: Path
) -> None:
    settings = load_settings(_env_file=None)
    settings.mqtt = settings.mqtt.model_copy(
        update={"host": mosquitto.host, "port": mosquitto.port, "client_id": "drift-agent"}
    )
    settings.metrics = settings.metrics.model_copy(update={"host": "127.0.0.1", "port": 0})
    settings.agent = settings.agent.model_copy(update={"tick_interval_s": 0.01})
    settings.drift = settings.drift.model_copy(
        update={"memory_readings": 200, "warm_up_readings": 100}
    )
    settings.recording = settings.recording.model_copy(
        update={"enabled": True, "directory": tmp_path / "recordings"}
    )
    agent = running_agent(settings)
    readings = series()
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    start_ts = time.time() - ROUNDS - 10  # a second apart, in the past: none from the future
    accepted = agent.metrics.readings
    before_change: dict[str, float] = {}
    try:
        for i in range(ROUNDS + 1):
            if i in (CHANGE_AT, ROUNDS):
                time.sleep(EXPORT_EVERY_S + 0.1)  # the next tick exports the ratios
            for machine_id, values in readings.items():
                payload = encode_reading(machine_id, start_ts + i, i, values[i])
                client.publish(f"factory/{machine_id}/telemetry", payload, qos=1).wait_for_publish(
                    5
                )
            deadline = time.monotonic() + 10
            while accepted._value.get() < (i + 1) * len(readings):
                assert time.monotonic() < deadline, f"round {i} not taken in"
                time.sleep(0.002)
            if i == CHANGE_AT:
                time.sleep(0.1)
                before_change = drift_ratios(agent.http.port)
        time.sleep(0.1)
        after = drift_ratios(agent.http.port)
    finally:
        client.loop_stop()
        client.disconnect()

    assert set(before_change) == {*HEALTHY, CHANGED, "fleet max"}, before_change
    assert all(0.7 < before_change[m] < 1.3 for m in (*HEALTHY, CHANGED)), before_change
    assert after[CHANGED] > 1.5, after
    assert all(0.7 < after[m] < 1.3 for m in HEALTHY), after
    assert after["fleet max"] == after[CHANGED]

    recorded = agent.metrics.recording_readings
    deadline = time.monotonic() + 10
    while recorded._value.get() < (ROUNDS + 1) * len(readings):
        assert time.monotonic() < deadline, "the recording did not catch up"
        time.sleep(0.05)
    recording = read_recording(tmp_path / "recordings")
    assert set(recording.machines) == set(readings)
    for machine_id, (ts, seq, values) in recording.machines.items():
        assert seq.tolist() == list(range(ROUNDS + 1))
        assert segments(ts, seq) == [(0, ROUNDS + 1)]
        # As published: the payload carries three decimals.
        np.testing.assert_allclose(values, readings[machine_id], rtol=0, atol=5e-4 + 1e-4)
