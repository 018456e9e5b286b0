"""The `forewarn` commands as a user runs them: separate processes over a real mosquitto.

A configuration error and `forewarn demo` (its own embedded broker) need no mosquitto: those
tests are not marked integration.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import (
    Mosquitto,
    Recorder,
    forewarn_command,
    forewarn_env,
    free_port,
)


def healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


@pytest.mark.integration
def test_agent_and_simulator_processes_end_to_end(
    mosquitto: Mosquitto, tmp_path: Path, subscribe: Callable[[str], Recorder]
) -> None:
    metrics_port = free_port()
    env = forewarn_env(
        mosquitto,
        FOREWARN_METRICS__PORT=str(metrics_port),
        FOREWARN_METRICS__HOST="127.0.0.1",
        FOREWARN_AGENT__TICK_INTERVAL_S="0.05",
    )
    status = subscribe("factory/_agents/+/status")
    alerts = subscribe("factory/+/alerts")
    agent_log = (tmp_path / "agent.log").open("wb")
    agent = subprocess.Popen(
        forewarn_command("agent"), env=env, cwd=tmp_path, stdout=agent_log, stderr=agent_log
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and healthz(metrics_port) != 200:
            time.sleep(0.2)
        assert healthz(metrics_port) == 200, (tmp_path / "agent.log").read_text()
        simulate = subprocess.run(
            forewarn_command(
                "simulate",
                "--machines",
                "8",
                "--rate",
                "20",
                "--duration",
                "15",
                "--overheat",
                "2",
                "--seed",
                "5",
            ),
            env=env,
            cwd=tmp_path,
            capture_output=True,
            timeout=120,
        )
        assert simulate.returncode == 0, simulate.stderr.decode()
        assert alerts.wait_for(
            lambda ms: any(p["severity"] == "critical" for _, p, _ in ms), timeout_s=10
        ), (tmp_path / "agent.log").read_text()
    finally:
        agent.send_signal(signal.SIGTERM)
        code = agent.wait(timeout=60)
    assert code == 0, (tmp_path / "agent.log").read_text()
    assert status.wait_for(lambda ms: any(p["status"] == "offline" for _, p, _ in ms), timeout_s=10)
    statuses = [p["status"] for _, p, _ in status.snapshot()]
    assert statuses[0] == "online" and statuses[-1] == "offline", statuses


def test_bad_configuration_stops_with_key_value_and_fix(tmp_path: Path) -> None:
    """Stops at the settings, before any broker: not marked integration."""
    result = subprocess.run(
        forewarn_command("agent"),
        env=forewarn_env(FOREWARN_MQTT__PORT="70000"),
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 2
    message = result.stderr.decode()
    assert "FOREWARN_MQTT__PORT=70000" in message
    assert "less than or equal to 65535" in message


@pytest.mark.slow
def test_demo_runs_on_its_embedded_broker_and_exits_zero(tmp_path: Path) -> None:
    """`forewarn demo` brings its own broker (amqtt, in Python): not marked integration."""
    result = subprocess.run(
        forewarn_command("demo", "--duration", "30", "--rate", "4", "--machines", "8"),
        env=forewarn_env(FOREWARN_METRICS__PORT=str(free_port())),
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
    )
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    lines = re.findall(r"^ALERT (\S+) (warning|critical) (firing|resolved)", out, re.MULTILINE)
    assert lines, out
    warned = [m for m, severity, status in lines if (severity, status) == ("warning", "firing")]
    critical = [m for m, severity, status in lines if (severity, status) == ("critical", "firing")]
    assert any(
        m in critical
        and lines.index((m, "warning", "firing")) < lines.index((m, "critical", "firing"))
        for m in warned
    ), out
    assert "forewarn demo finished" in out
