"""The demo shows prediction: its overheating machines are warned well before they go critical.

The demo's fleet (``forewarn demo``: 12 machines at 1 Hz, 2 of them overheating with the steady
shape, seed 7) is streamed through the agent's own tick, one reading per machine per second of
reading time, as the live demo's publisher and tick thread do.
"""

from __future__ import annotations

import re

import numpy as np

from agent.app import Agent
from config.settings import load_settings
from simulator.fleet import Fleet
from simulator.publish import build_fleet
from wire.reading import Reading


def test_each_overheating_machine_is_warned_10_s_before_it_goes_critical_in_the_first_minute() -> (
    None
):
    settings = load_settings(_env_file=None)
    settings.metrics = settings.metrics.model_copy(update={"host": "127.0.0.1", "port": 0})
    settings.simulator = settings.simulator.model_copy(
        update={"machines": 12, "rate_hz": 1.0, "overheat": 2, "overheat_shape": "steady"}
    )
    assert settings.simulator.seed == 7
    fleet = build_fleet(settings.simulator, settings.alerts.threshold_c)
    history = fleet.history(0, 90).astype(np.float32)
    agent = Agent(settings)
    first: dict[tuple[str, str], tuple[int, str]] = {}
    try:
        for second in range(90):
            for index, machine_id in enumerate(fleet.machine_ids):
                agent.hand_off(Reading(machine_id, float(second), second, history[index, second]))
            for event in agent.tick():
                if event.status == "firing":
                    first.setdefault((event.machine_id, event.severity), (second, event.line()))
    finally:
        agent.http.stop()
    overheating = {fleet.machine_ids[plan.machine_index] for plan in fleet.overheats}
    assert len(overheating) == 2
    for machine_id in overheating:
        warned_at, line = first[(machine_id, "warning")]
        critical_at, _ = first[(machine_id, "critical")]
        assert warned_at < 60, line
        assert critical_at - warned_at >= 10, (line, critical_at)
        # The line says when, and between what bounds: "in 10 s, 6–19".
        assert re.search(r" in \d+ s, \d+–\d+ \(threshold", line), line
    assert {machine_id for machine_id, _ in first} == overheating


def test_the_steady_shape_climbs_on_machines_whose_cycle_climbs() -> None:
    fleet = Fleet(12, seed=7, overheat=2, overheat_within_ticks=50, steady_overheats=True)
    params = fleet.params
    for plan in fleet.overheats:
        trough = (0.75 * params.period_ticks - params.phase_ticks) % params.period_ticks
        assert trough[plan.machine_index] <= 30
        assert (plan.onset_tick, plan.planned_crossing_tick, plan.power) == (15, 65, 1.0)
        clean = fleet.clean_temperature(np.arange(90, dtype=np.float64))[plan.machine_index]
        assert clean[65] >= 97.0
        assert clean[:15].max() < 90.0
