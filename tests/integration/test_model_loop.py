"""The documented loop, over a real mosquitto: record → train → shadow → promote.

An agent serving the shipped Ridge records what a small simulated fleet sends;
`forewarn train --from-recording` (an LSTM, two epochs) writes a model into the agent's model
directory; `forewarn model shadow` loads it beside the Ridge, `forewarn model status` compares
the two on the same readings, `forewarn model promote` serves it. Afterwards the alerts and
`forewarn_model_info` carry its version, the drift ratios start afresh against its own test
skill (`forewarn_model_test_skill`), and every reading published was counted, and recorded
in one unbroken run per machine: a swap needs nothing from the recording. (A candidate
trained this briefly forecasts worse than the Ridge; the loop, not the model, is under test.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.app import Agent
from agent.drift import EXPORT_EVERY_S
from config.settings import Settings, load_settings
from forewarn.cli import main
from forewarn.modelcmd import fetch_status
from models.recording import read_recording, segments
from models.skill import reference_from_report
from simulator.fleet import Fleet
from tests.conftest import Mosquitto, Recorder
from tests.faultkit import holds_within
from tests.modelfiles import RIDGE, copy_model
from wire.payload import encode_reading

pytestmark = pytest.mark.integration

MACHINES = [f"m-{i}" for i in range(6)]
RECORDED = 240
"""Readings per machine before training: the last 15 % and the 15 % before it each hold one
window and its horizon (35 readings), as the time split needs."""
COMPARED = 15
"""Readings per machine, one per tick, with the candidate shadowed and then once promoted:
more than the drift watch's warm-up (10)."""
TOTAL = RECORDED + 2 * COMPARED + 3


class Sender:
    """Publishes the simulator's readings of MACHINES, QoS 1, a second apart in the past."""

    def __init__(self, mosquitto: Mosquitto, agent: Agent) -> None:
        history = Fleet(machines=len(MACHINES), seed=5, overheat=0, run_ticks=TOTAL)
        self.values = history.history(0, TOTAL)
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        self.client.connect(mosquitto.host, mosquitto.port)
        self.client.loop_start()
        self.start_ts = time.time() - TOTAL - 10
        self.seq = 0
        self.published = 0
        self.agent = agent

    def round(self, hot: str | None = None) -> None:
        """One reading per machine (``hot`` reads 100 °C), published and taken in by a tick:
        the next round is the next reading after the forecasts this one was given."""
        infos = []
        for index, machine_id in enumerate(MACHINES):
            values = self.values[index, self.seq].copy()
            if machine_id == hot:
                values[0] = 100.0
            payload = encode_reading(machine_id, self.start_ts + self.seq, self.seq, values)
            infos.append(self.client.publish(f"factory/{machine_id}/telemetry", payload, qos=1))
        for info in infos:
            info.wait_for_publish(5)
        self.seq += 1
        self.published += len(MACHINES)
        assert holds_within(lambda: self.accepted() == self.published, 10), "round not taken"

    def burst(self, rounds: int) -> None:
        """``rounds`` readings per machine, as fast as they go (several per machine a tick)."""
        for _ in range(rounds):
            for index, machine_id in enumerate(MACHINES):
                values = self.values[index, self.seq]
                payload = encode_reading(machine_id, self.start_ts + self.seq, self.seq, values)
                self.client.publish(f"factory/{machine_id}/telemetry", payload, qos=1)
            self.seq += 1
            self.published += len(MACHINES)
        assert holds_within(lambda: self.accepted() == self.published, 20), "burst not taken"

    def accepted(self) -> float:
        return self.agent.metrics.registry.get_sample_value("forewarn_readings_total") or 0.0

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def loop_settings(mosquitto: Mosquitto, tmp_path: Path) -> Settings:
    return load_settings(
        _env_file=None,
        mqtt={"host": mosquitto.host, "port": mosquitto.port, "client_id": "loop-agent"},
        metrics={"host": "127.0.0.1", "port": 0},
        agent={"tick_interval_s": 0.02, "state_dir": tmp_path / "state"},
        model={
            "kind": "ridge",
            "runtime": "numpy",
            "checkpoint": tmp_path / "models" / "ridge.json",
            "directory": tmp_path / "models",
            "watch_interval_s": 0,
        },
        drift={"memory_readings": 50, "warm_up_readings": 10},
        recording={"enabled": True, "directory": tmp_path / "recordings"},
    )


def test_record_train_shadow_promote(
    mosquitto: Mosquitto,
    running_agent: Callable[[Settings], Agent],
    subscribe: Callable[[str], Recorder],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    copy_model(RIDGE, tmp_path / "models", "ridge")
    agent = running_agent(loop_settings(mosquitto, tmp_path))
    value = agent.metrics.registry.get_sample_value
    ridge_skill = value("forewarn_model_test_skill")
    alerts = subscribe("factory/+/alerts")
    cli = ["--broker", f"{mosquitto.host}:{mosquitto.port}", "--agent", "loop-agent"]
    sender = Sender(mosquitto, agent)
    try:
        # Record.
        sender.burst(RECORDED)
        assert holds_within(
            lambda: value("forewarn_recording_readings_total") == sender.published, 10
        )

        # Train on the recording, into the agent's model directory.
        candidate = tmp_path / "models" / "candidate.pt"
        recordings = str(tmp_path / "recordings")
        train = ["train", "--from-recording", recordings, "--kind", "lstm", "--epochs", "2"]
        assert main([*train, "--output", str(candidate)]) == 0
        report = orjson.loads(candidate.with_suffix(".json").read_bytes())["report"]
        reference = reference_from_report(report)
        assert reference is not None and reference.windows

        # Shadow it, and compare the two on the same readings.
        assert main(["model", "shadow", "candidate.json", *cli]) == 0
        assert holds_within(lambda: value("forewarn_shadow_active") == 1.0, 20)
        shadow = agent.models.shadow
        assert shadow is not None and shadow.forecaster.kind == "lstm"
        live_version = agent.forecaster.version
        for _ in range(COMPARED):
            sender.round()
        assert holds_within(
            lambda: (value("forewarn_shadow_compared_readings_total") or 0) >= len(MACHINES), 10
        )
        time.sleep(EXPORT_EVERY_S)
        sender.round()  # its tick exports the Ridge's warmed-up drift ratios
        assert holds_within(lambda: value("forewarn_model_drift_machines") == len(MACHINES), 5)
        assert value("forewarn_model_test_skill") == ridge_skill
        capsys.readouterr()
        url = f"http://127.0.0.1:{agent.http.port}/metrics"
        assert main(["model", "status", "--url", url]) == 0
        shown = capsys.readouterr().out
        assert f"live    {live_version}" in shown and f"shadow  {shadow.version}" in shown
        assert shown.count(" °C") == 2, shown  # a 1-step RMSE for each, on the same readings
        assert f"drift   test skill {ridge_skill:.3f}; ratio over {len(MACHINES)} machines" in shown

        # Promote it.
        assert main(["model", "promote", *cli]) == 0
        assert holds_within(lambda: agent.forecaster.version == shadow.version, 20)
        served = fetch_status(url).live
        assert served["version"] == shadow.version and served["kind"] == "lstm", served
        assert value("forewarn_model_test_skill") == pytest.approx(reference.skill)
        assert value("forewarn_shadow_active") == 0.0
        sender.round()
        # The Ridge's ratios are gone at once; the new model's come after its own warm-up.
        assert holds_within(lambda: value("forewarn_model_drift_machines") == 0, 5)
        assert value("forewarn_model_drift_ratio", {"quantile": "1"}) is None
        for i in range(COMPARED):
            sender.round(hot="m-0" if i >= COMPARED - 4 else None)
        time.sleep(EXPORT_EVERY_S)
        sender.round(hot="m-0")
        assert holds_within(lambda: value("forewarn_model_drift_machines") == len(MACHINES), 5)
        assert alerts.wait_for(
            lambda messages: any(body["severity"] == "critical" for _, body, _ in messages), 10
        ), alerts.snapshot()
    finally:
        sender.close()

    fired = [body for _, body, _ in alerts.snapshot() if body["status"] == "firing"]
    assert fired and {body["model_version"] for body in fired} == {shadow.version}
    assert sender.seq == TOTAL
    assert value("forewarn_readings_total") == sender.published
    assert holds_within(
        lambda: value("forewarn_recording_readings_total") == sender.published, 10
    ), "the recording lost readings across the swaps"
    recording = read_recording(tmp_path / "recordings")
    assert recording.files == 1
    for machine_id in MACHINES:
        ts, seq, _ = recording.machines[machine_id]
        assert seq.tolist() == list(range(TOTAL))
        assert segments(ts, seq) == [(0, TOTAL)]
    np.testing.assert_allclose(recording.machines["m-1"][2], sender.values[1], atol=6e-4)
