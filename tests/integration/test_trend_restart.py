"""The slow path across an agent restart, through a real mosquitto: a machine far along a drift
is still seen trending at its first forecasts after the restart, because its long trends were
kept in the state directory (without them the path is blind for 500 readings)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from agent.app import Agent
from config.settings import Settings, load_settings
from simulator.signal import readings_from_temperature
from tests.conftest import Mosquitto
from tests.integration.test_anomaly_alerts import Feeder

pytestmark = pytest.mark.integration

MACHINE = "m-drift"


def settings_for(mosquitto: Mosquitto, state_dir: Path) -> Settings:
    settings = load_settings(_env_file=None)
    settings.mqtt = settings.mqtt.model_copy(
        update={"host": mosquitto.host, "port": mosquitto.port, "client_id": "trend-agent"}
    )
    settings.metrics = settings.metrics.model_copy(update={"host": "127.0.0.1", "port": 0})
    settings.agent = settings.agent.model_copy(
        update={"tick_interval_s": 0.01, "state_dir": state_dir, "stale_after_s": 1e6}
    )
    return settings


def drift(readings: int, rng: np.random.Generator) -> np.ndarray:
    """The seed's cycle and noise on a mean rising 0.008 °C a reading from 65 °C: trending
    from about reading 600, still under 95 °C at 1,450."""
    t = np.arange(readings, dtype=np.float64)
    temperature = 65.0 + 10.0 * np.sin(2 * np.pi * t / 100) + 0.008 * t + rng.normal(0, 2, readings)
    return readings_from_temperature(temperature, rng)


def wait_for_seq(agent: Agent, seq: int, timeout_s: float = 60.0) -> int:
    """The machine's slot once the agent has taken in reading ``seq`` and ticked after it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        slot = agent.store.slot_of.get(MACHINE)
        if slot is not None and agent.store.last_seq[slot] >= seq:
            time.sleep(0.2)  # a few more ticks
            return slot
        time.sleep(0.05)
    raise AssertionError(f"the agent did not take in reading {seq} of {MACHINE}")


def trending(agent: Agent, slot: int) -> bool:
    return bool(agent.ticker.policy.trend.view(np.array([slot])).trending[0])


def test_the_slow_path_carries_on_after_a_restart(
    mosquitto: Mosquitto, running_agent: Callable[[Settings], Agent], tmp_path: Path
) -> None:
    rows = drift(1450, np.random.default_rng(5))
    settings = settings_for(mosquitto, tmp_path / "state")
    feeder = Feeder(mosquitto, len(rows))
    first = running_agent(settings)
    feeder.send(MACHINE, rows[:1400])
    assert trending(first, wait_for_seq(first, 1399))
    first.stop()
    assert (tmp_path / "state" / "trend.npz").exists()

    second = running_agent(settings.model_copy(deep=True))
    feeder.send(MACHINE, rows[1400:1425])  # seq carries on: 1,400 to 1,424
    slot = wait_for_seq(second, 1424)
    feeder.close()
    assert trending(second, slot), "blind after the restart, as if nothing had been kept"
