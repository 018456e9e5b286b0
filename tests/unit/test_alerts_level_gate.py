"""The level gate (agent.alerts, ``warning_level_rise_c``): a forecast that reaches the warning
level at the top of a healthy machine's cycle opens no warning; a ramp's forecast still does.

Readings are the seed's shape (a ±10 °C cycle, 2 °C of noise, a sawtooth of wear) fed as the
agent feeds them; the forecasts are made up: over the threshold for a few ticks at one peak,
standing for the forecaster's overshoot there.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agent.alerts import AlertPolicy
from config.alerts import AlertSettings

THRESHOLD = 95.0
WINDOW = 20
HOT_AT = 1_500  # the overshooting forecast comes at this tick, for 5 ticks


def readings(ticks: int, ramp_from: int | None = None, jump_from: int | None = None) -> np.ndarray:
    """A machine's readings; from ``ramp_from`` its level climbs 0.05 °C per reading, from
    ``jump_from`` it stands 16 °C higher (a cooling failure that went quickly)."""
    rng = np.random.default_rng(3)
    t = np.arange(ticks, dtype=np.float64)
    level = 70.0 + 0.01 * np.mod(t, 330.0) + 10.0 * np.sin(2 * np.pi * t / 100.0)
    if ramp_from is not None:
        level += 0.05 * np.maximum(t - ramp_from, 0.0)
    if jump_from is not None:
        level += np.where(t >= jump_from, 16.0, 0.0)
    return level + rng.normal(0.0, 2.0, ticks)


def pages(temperatures: np.ndarray, **overrides: Any) -> list[int]:
    """Ticks at which the machine was paged (a message leaving ok)."""
    overrides.setdefault("trend_horizon_readings", 5_000)
    policy = AlertPolicy(AlertSettings(**overrides), capacity=1)
    slots = np.array([0])
    data = temperatures.astype(np.float32)[np.newaxis]
    out = []
    for t in range(WINDOW - 1, HOT_AT + 10):
        peak = THRESHOLD + 1.0 if HOT_AT <= t < HOT_AT + 5 else 80.0
        events = policy.update(
            slots,
            ["m-0"],
            data[:, t - WINDOW + 1 : t + 1],
            np.full((1, 15), peak, dtype=np.float32),
            np.ones(1),
            float(t),
            spread=np.full(1, 1.0),
            reading_ts=np.array([float(t)]),
            appended=np.array([t + 1]),
        )
        out += [t for e in events if e.previous_state == "ok" and e.status == "firing"]
    return out


def test_a_forecast_overshooting_a_healthy_machines_peak_opens_no_warning() -> None:
    healthy = readings(HOT_AT + 10)
    assert pages(healthy, warning_level_rise_c=0.0) == [HOT_AT + 2]  # the gate off: paged
    assert pages(healthy) == []


def test_a_ramp_is_still_warned() -> None:
    """A level climbing 0.05 °C per reading for 150 readings is 2.5 °C over its mean of 500."""
    ramp = readings(HOT_AT + 10, ramp_from=HOT_AT - 150)
    assert pages(ramp) == [HOT_AT + 2]


def test_readings_far_over_the_usual_peak_are_warned_at_once() -> None:
    """A machine that stepped up 16 °C 8 readings ago: its mean over 100 readings has not
    moved yet, but its readings are over its usual peak."""
    jumped = readings(HOT_AT + 10, jump_from=HOT_AT - 8)
    paged = pages(jumped)
    assert len(paged) == 1 and HOT_AT + 2 <= paged[0] < HOT_AT + 5, paged
    assert pages(jumped, warning_above_usual_peak_c=30.0) == []


def test_not_gated_before_the_level_is_known() -> None:
    """Before a machine has 100 readings its level is unknown: a hot forecast warns as ever."""
    policy = AlertPolicy(AlertSettings(), capacity=1)
    data = readings(60).astype(np.float32)[np.newaxis]
    fired = []
    for t in range(WINDOW - 1, 60):
        events = policy.update(
            np.array([0]),
            ["m-0"],
            data[:, t - WINDOW + 1 : t + 1],
            np.full((1, 15), THRESHOLD + 1.0, dtype=np.float32),
            np.ones(1),
            float(t),
            spread=np.full(1, 1.0),
            reading_ts=np.array([float(t)]),
            appended=np.array([t + 1]),
        )
        fired += [e.severity for e in events]
    assert fired[:1] == ["warning"]
