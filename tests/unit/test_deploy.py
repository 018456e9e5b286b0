"""The shipped systemd unit and mosquitto config stay in step with the agent's behaviour."""

from __future__ import annotations

import configparser
from pathlib import Path

from config.mqtt import MqttSettings
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


def test_the_unit_waits_for_the_last_tick_and_the_flush() -> None:
    stop_timeout = float(unit()["Service"]["TimeoutStopSec"])
    last_tick_s = 30  # Agent.stop joins the tick thread for at most this long
    assert stop_timeout > last_tick_s + MqttSettings().flush_timeout_s


def test_the_broker_config_keeps_sessions_and_queues_enough() -> None:
    lines = (REPO / "config" / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    settings = dict(line.split(None, 1) for line in lines if line and not line.startswith("#"))
    assert settings["persistence"] == "true"
    assert int(settings["max_queued_messages"]) >= 100_000
    assert "persistent_client_expiration" in settings
    assert int(settings["autosave_interval"]) <= 300
