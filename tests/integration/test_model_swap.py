"""Swapping the served model over a real mosquitto: SIGHUP on an agent process, a changed
file, the retained command topic, a refused model, shadow then promote, and a promotion that
survives a restart. Readings keep flowing through the broker while models change; every one
published is counted by the agent."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.app import Agent
from config.settings import Settings, load_settings
from config.topics import model_command_topic
from forewarn.cli import main
from forewarn.modelcmd import read_status
from tests.conftest import Mosquitto, forewarn_command, forewarn_env, free_port
from tests.faultkit import holds_within
from tests.modelfiles import LSTM, RIDGE, copy_model, derived_ridge

MACHINES = [f"m-{i}" for i in range(6)]


class Fleet:
    """A paho client publishing one reading per machine per call, QoS 1, counted."""

    def __init__(self, mosquitto: Mosquitto) -> None:
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        self.client.connect(mosquitto.host, mosquitto.port)
        self.client.loop_start()
        self.seq = 0
        self.published = 0

    def step(self) -> None:
        infos = []
        for index, machine_id in enumerate(MACHINES):
            body = {
                "machine_id": machine_id,
                "ts": time.time(),
                "seq": self.seq,
                "temperature_c": 60.0 + index + 0.3 * (self.seq % 4),
                "vibration_hz": 30.0,
                "pressure_psi": 100.0,
                "rpm": 1500.0,
            }
            topic = f"factory/{machine_id}/telemetry"
            infos.append(self.client.publish(topic, orjson.dumps(body), qos=1))
        for info in infos:
            info.wait_for_publish(5)
        self.seq += 1
        self.published += len(MACHINES)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def sample(text: str, name: str, **labels: str) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def model_env(mosquitto: Mosquitto, tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    return forewarn_env(
        mosquitto,
        FOREWARN_METRICS__PORT=str(port),
        FOREWARN_METRICS__HOST="127.0.0.1",
        FOREWARN_AGENT__TICK_INTERVAL_S="0.05",
        FOREWARN_AGENT__STATE_DIR=str(tmp_path / "state"),
        FOREWARN_MODEL__KIND="ridge",
        FOREWARN_MODEL__RUNTIME="numpy",
        FOREWARN_MODEL__CHECKPOINT=str(tmp_path / "models" / "ridge.json"),
        FOREWARN_MODEL__DIRECTORY=str(tmp_path / "models"),
        **extra,
    )


def start_process(env: dict[str, str], tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    log = (tmp_path / "agent.log").open("ab")
    agent = subprocess.Popen(
        forewarn_command("agent"), env=env, cwd=tmp_path, stdout=log, stderr=log
    )
    ready = holds_within(lambda: _ready(port), 60)
    assert ready, (tmp_path / "agent.log").read_text()
    return agent


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def version_of(port: int) -> str:
    text = metrics_text(port)
    return read_status(text).live["version"]


@pytest.mark.integration
def test_sighup_swaps_the_model_of_an_agent_process_and_a_promotion_survives_a_restart(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """SIGHUP reads the changed file again (the process keeps running, every reading counted);
    a `forewarn model serve` command swaps in the LSTM; after a restart, with the retained
    command cleared, the agent serves the LSTM from its state directory's record."""
    copy_model(RIDGE, tmp_path / "models", "ridge")
    copy_model(LSTM, tmp_path / "models", "lstm")
    port = free_port()
    env = model_env(mosquitto, tmp_path, port, FOREWARN_MODEL__WATCH_INTERVAL_S="0")
    agent = start_process(env, tmp_path, port)
    fleet = Fleet(mosquitto)
    try:
        for _ in range(22):
            fleet.step()
        first = version_of(port)
        derived_ridge(tmp_path / "models", "ridge", "retrained")
        agent.send_signal(signal.SIGHUP)
        assert holds_within(lambda: version_of(port) != first, 20), (
            tmp_path / "agent.log"
        ).read_text()
        for _ in range(3):
            fleet.step()
        assert agent.poll() is None, "SIGHUP ended the agent"
        assert holds_within(
            lambda: sample(metrics_text(port), "forewarn_readings_total") == fleet.published, 10
        ), "a reading was lost across the swap"

        served = subprocess.run(
            forewarn_command("model", "serve", "lstm.json"),
            env=env,
            capture_output=True,
            timeout=60,
        )
        assert served.returncode == 0, served.stderr.decode()
        assert holds_within(lambda: read_status(metrics_text(port)).live["kind"] == "lstm", 20)
        promoted = version_of(port)
    finally:
        fleet.close()
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=60) == 0, (tmp_path / "agent.log").read_text()

    clear = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    clear.connect(mosquitto.host, mosquitto.port)
    clear.loop_start()
    topic = model_command_topic("factory", "forewarn-agent")
    clear.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
    clear.disconnect()
    clear.loop_stop()
    agent = start_process(env, tmp_path, port)
    try:
        assert version_of(port) == promoted
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)


def in_process_settings(mosquitto: Mosquitto, tmp_path: Path) -> Settings:
    return load_settings(
        _env_file=None,
        mqtt={"host": mosquitto.host, "port": mosquitto.port, "client_id": "swap-agent"},
        metrics={"host": "127.0.0.1", "port": 0},
        agent={"tick_interval_s": 0.05, "state_dir": tmp_path / "state"},
        model={
            "kind": "ridge",
            "runtime": "numpy",
            "checkpoint": tmp_path / "models" / "ridge.json",
            "directory": tmp_path / "models",
            "watch_interval_s": 0.1,
        },
    )


@pytest.mark.integration
def test_file_change_command_refusal_shadow_and_promote_under_flowing_readings(
    mosquitto: Mosquitto,
    tmp_path: Path,
    running_agent: Callable[[Settings], Agent],
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "models"
    copy_model(RIDGE, folder, "ridge")
    copy_model(LSTM, folder, "lstm")
    bad = copy_model(LSTM, folder, "truncated")
    bad.with_suffix(".npz").write_bytes(bad.with_suffix(".npz").read_bytes()[:1000])
    agent = running_agent(in_process_settings(mosquitto, tmp_path))
    registry = agent.metrics.registry
    fleet = Fleet(mosquitto)
    broker = f"{mosquitto.host}:{mosquitto.port}"
    cli = ["--broker", broker, "--agent", "swap-agent"]
    try:
        for _ in range(22):
            fleet.step()
        start = agent.forecaster.version

        # A changed file is swapped in once it holds still.
        derived_ridge(folder, "ridge", "retrained")
        assert holds_within(lambda: agent.forecaster.version != start, 10)
        fleet.step()

        # A refused model: the ridge keeps serving, the reason is counted.
        before = agent.forecaster.version
        assert main(["model", "serve", "truncated.json", *cli]) == 0
        assert holds_within(
            lambda: (
                registry.get_sample_value(
                    "forewarn_model_reload_failures_total", {"reason": "load"}
                )
                == 1.0
            ),
            10,
        )
        assert agent.forecaster.version == before
        fleet.step()

        # Shadow the LSTM, compare on the same readings, then promote it.
        assert main(["model", "shadow", "lstm.json", *cli]) == 0
        assert holds_within(lambda: agent.models.shadow is not None, 10)
        shadow_version = agent.models.shadow.version if agent.models.shadow else ""
        for _ in range(5):
            fleet.step()
            # Each reading in a tick of its own: a 1-step forecast is closed by the next seq.
            time.sleep(0.2)
        assert holds_within(
            lambda: (
                (registry.get_sample_value("forewarn_shadow_compared_readings_total") or 0)
                >= 3 * len(MACHINES)
            ),
            10,
        )
        capsys.readouterr()
        url = f"http://127.0.0.1:{agent.http.port}/metrics"
        assert main(["model", "status", "--url", url]) == 0
        shown = capsys.readouterr().out
        assert shadow_version in shown and "1-step RMSE" in shown and "refused for load: 1" in shown
        assert main(["model", "promote", *cli]) == 0
        assert holds_within(lambda: agent.forecaster.version == shadow_version, 10)
        assert agent.models.shadow is None
        for _ in range(2):
            fleet.step()
        assert holds_within(
            lambda: registry.get_sample_value("forewarn_readings_total") == fleet.published, 10
        ), "a reading was lost across the swaps"
    finally:
        fleet.close()
