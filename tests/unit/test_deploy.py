"""The shipped systemd unit and mosquitto config stay in step with the agent's behaviour."""

from __future__ import annotations

import configparser
import threading
from pathlib import Path

import pytest

from agent.app import Agent
from config.mqtt import MqttSettings
from config.settings import load_settings
from forewarn.broker import free_port
from forewarn.cli import EXIT_CONFIG

REPO = Path(__file__).resolve().parents[2]


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(REPO / "deploy" / "forewarn-agent.service")
    return parser


def test_the_unit_restarts_a_failed_agent_but_not_a_misconfigured_one() -> None:
    service = unit()["Service"]
    assert service["ExecStart"].endswith("forewarn agent")
    assert service["Restart"] == "on-failure"  # the watchdog's exit status 1, kill -9
    assert service["RestartPreventExitStatus"] == str(EXIT_CONFIG)
    assert service["KillSignal"] == "SIGTERM"


def test_the_unit_reloads_the_model_on_sighup_and_gives_the_agent_a_state_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`systemctl reload` sends SIGHUP (a model reload, not an exit); StateDirectory= is where
    the agent records its promoted model, read through $STATE_DIRECTORY."""
    from agent.modelswap import state_dir

    service = unit()["Service"]
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["StateDirectory"] == "forewarn"
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    assert state_dir(load_settings(_env_file=None)) == tmp_path


def tick_join_timeout_s(monkeypatch: pytest.MonkeyPatch) -> float:
    """How long ``Agent.stop`` waits for the running tick: the timeout it joins its tick
    thread with, seen as it stops a started agent (no broker needed; it never connects)."""
    settings = load_settings(
        _env_file=None,
        mqtt={"host": "127.0.0.1", "port": free_port(), "restore_timeout_s": 0},
        metrics={"host": "127.0.0.1", "port": 0},
        model={"kind": "persistence"},
    )
    timeouts: list[float | None] = []
    join = threading.Thread.join

    def noting_join(thread: threading.Thread, timeout: float | None = None) -> None:
        if thread.name == "forewarn-tick":
            timeouts.append(timeout)
        join(thread, timeout)

    agent = Agent(settings)
    agent.start()
    monkeypatch.setattr(threading.Thread, "join", noting_join)
    agent.stop(flush_timeout_s=0)
    monkeypatch.undo()
    assert len(timeouts) == 1 and timeouts[0] is not None, f"stop joined the tick: {timeouts}"
    return timeouts[0]


def test_the_unit_waits_for_the_last_tick_and_the_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    """systemd must not kill the agent while stop() may still wait for the running tick and
    then for the broker's acknowledgements (flush_timeout_s); both bounds are the agent's own."""
    stop_timeout = float(unit()["Service"]["TimeoutStopSec"])
    assert stop_timeout > tick_join_timeout_s(monkeypatch) + MqttSettings().flush_timeout_s


def test_the_broker_config_keeps_sessions_and_queues_enough() -> None:
    lines = (REPO / "config" / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    settings = dict(line.split(None, 1) for line in lines if line and not line.startswith("#"))
    assert settings["persistence"] == "true"
    assert int(settings["max_queued_messages"]) >= 100_000
    assert "persistent_client_expiration" in settings
    assert int(settings["autosave_interval"]) <= 300
