"""forewarn.alert_quality.replay: the agent's alert messages without the agent around them."""

from __future__ import annotations

import numpy as np
import pytest

from forewarn.alert_quality import alert_fleet, bench_settings, replay, stream
from models.checkpoint import TorchForecaster
from simulator.fleet import Fleet

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_replay_sends_the_messages_the_agent_sends() -> None:
    """Four machines, two of them overheating, streamed through the agent and replayed: every
    alert message the same, at the same tick, with the same interval."""
    fleet = Fleet(4, seed=3, overheat=2, overheat_within_ticks=200)
    history = fleet.history(0, 400)
    model = TorchForecaster.from_path(None, device="cpu")
    settings = bench_settings()

    def messages(run_messages: dict) -> dict:
        return {
            machine: [
                (tick, e.severity, e.status, e.previous_state, e.time_to_threshold_high_s)
                for tick, e in events
            ]
            for machine, events in run_messages.items()
        }

    streamed = messages(stream(model, fleet, history, settings).messages)
    replayed = messages(replay(model, fleet, history, settings).messages)
    assert sum(len(events) for events in streamed.values()) >= 2
    assert replayed.keys() == streamed.keys()
    for machine, events in streamed.items():
        assert [e[:4] for e in replayed[machine]] == [e[:4] for e in events]
        np.testing.assert_allclose(
            [np.nan if e[4] is None else e[4] for e in replayed[machine]],
            [np.nan if e[4] is None else e[4] for e in events],
            atol=0.2,
        )


def test_replay_refuses_a_fleet_with_window_faults() -> None:
    fleet, history = alert_fleet(14, 400, seed=1)
    model = TorchForecaster.from_path(None, device="cpu")
    with pytest.raises(ValueError, match="without window faults"):
        replay(model, fleet, history, bench_settings())
