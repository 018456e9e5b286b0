"""The overheat alert policy: a table of scenarios, identities, timing and vectorised use.

Default settings throughout unless a scenario says otherwise (threshold 95 °C, critical after 3
hot readings, resolve after 4 ticks below 95 - 2 = 93 °C), except that a warning here needs 2
hot forecasts (the shipped default is 3) and nothing is held after it was last hot
(keep_firing_for_s 0; the shipped default holds 120 s): the table reads more easily with short
streaks. The hold has its own scenarios, one tick being one second of readings.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from agent.alerts import (
    CRITICAL,
    OK,
    WARNING,
    AlertEvent,
    AlertPolicy,
    time_to_threshold,
)
from agent.trend import TrendView
from config.alerts import AlertSettings

COOL, WARM, HOT = 80.0, 94.0, 96.0  # below clear (93), in the hysteresis band, over (95)


class Harness:
    """Drives an AlertPolicy like the agent does: recent readings (newest last) and forecasts."""

    def __init__(
        self, machines: int = 1, horizon: int = 5, interval_s: float = 1.0, **overrides: Any
    ) -> None:
        overrides.setdefault("warning_confirm_ticks", 2)
        # The table reads tick by tick; the hold (keep_firing_for_s) has scenarios of its own.
        overrides.setdefault("keep_firing_for_s", 0.0)
        self.settings = AlertSettings(**overrides)
        self.policy = AlertPolicy(self.settings, capacity=machines)
        self.ids = [f"m-{i:03d}" for i in range(machines)]
        self.horizon = horizon
        self.recent = np.full((machines, 20), 70.0, dtype=np.float32)
        self.interval = np.full(machines, interval_s)
        self.now = 1_000.0

    def tick(
        self, reading: Any, forecast: Any, slots: Any = None, noise_ratio: float | None = None
    ) -> list[AlertEvent]:
        """One tick: ``reading`` per machine (or one for all); ``forecast`` is a peak (a flat
        forecast) or a whole forecast row, per machine or for all; ``noise_ratio``, when given,
        each machine's error against its usual (AnomalyScorer.noise_ratio)."""
        machines = len(self.ids)
        slots = np.arange(machines) if slots is None else np.asarray(slots, dtype=np.int64)
        self.now += 1.0
        self.recent[slots] = np.roll(self.recent[slots], -1, axis=1)
        self.recent[slots, -1] = np.broadcast_to(np.asarray(reading, np.float32), (len(slots),))
        forecast = np.asarray(forecast, dtype=np.float32)
        if forecast.ndim == 0 or (forecast.ndim == 1 and forecast.shape[0] == len(slots) > 1):
            rows = np.repeat(np.atleast_1d(forecast)[:, None], self.horizon, axis=1)
            rows = np.broadcast_to(rows, (len(slots), self.horizon))
        else:
            rows = np.broadcast_to(forecast, (len(slots), forecast.shape[-1]))
        return self.policy.update(
            slots,
            self.ids,
            self.recent[slots],
            np.ascontiguousarray(rows),
            self.interval[slots],
            self.now,
            None,
            None if noise_ratio is None else np.zeros(len(slots)),
            None if noise_ratio is None else np.full(len(slots), noise_ratio),
        )

    def run(self, steps: list[tuple[float, float]]) -> list[tuple[int, str]]:
        """(tick, "severity status") of every event over the steps."""
        out = []
        for index, (reading, forecast) in enumerate(steps):
            out.extend((index, f"{e.severity} {e.status}") for e in self.tick(reading, forecast))
        return out

    @property
    def state(self) -> int:
        return int(self.policy.state[0])


def warned() -> list[tuple[float, float]]:
    return [(COOL, HOT), (COOL, HOT)]  # warning fires on the 2nd tick


def critical() -> list[tuple[float, float]]:
    return [(HOT, HOT)] * 3  # warning on the 2nd tick, critical on the 3rd


SCENARIOS: list[tuple[str, dict[str, Any], list[tuple[float, float]], list[tuple[int, str]]]] = [
    ("quiet machine", {}, [(COOL, COOL)] * 10, []),
    ("single hot forecast does not warn", {}, [(COOL, HOT), (COOL, COOL)] * 5, []),
    ("hot forecast then warm does not warn", {}, [(COOL, HOT), (COOL, WARM)] * 5, []),
    ("two hot forecasts warn", {}, warned(), [(1, "warning firing")]),
    ("forecast exactly at threshold is hot", {}, [(COOL, 95.0)] * 2, [(1, "warning firing")]),
    (
        "warning_confirm_ticks=3 needs three",
        {"warning_confirm_ticks": 3},
        [(COOL, HOT), (COOL, HOT), (COOL, COOL), (COOL, HOT), (COOL, HOT), (COOL, HOT)],
        [(5, "warning firing")],
    ),
    ("single spike never fires critical", {}, [(COOL, COOL), (120.0, COOL), (COOL, COOL)] * 3, []),
    ("two hot readings do not fire critical", {}, [(HOT, COOL), (HOT, COOL), (COOL, COOL)] * 3, []),
    ("three hot readings fire critical", {}, [(HOT, COOL)] * 3, [(2, "critical firing")]),
    ("readings exactly at threshold are hot", {}, [(95.0, COOL)] * 3, [(2, "critical firing")]),
    (
        "critical_confirm_readings=1 fires on one reading",
        {"critical_confirm_readings": 1},
        [(COOL, COOL), (HOT, COOL)],
        [(1, "critical firing")],
    ),
    (
        "warning escalates to critical",
        {},
        [*warned(), (HOT, HOT), (HOT, HOT), (HOT, HOT)],
        [(1, "warning firing"), (4, "critical firing")],
    ),
    ("hot readings and forecast", {}, critical(), [(1, "warning firing"), (2, "critical firing")]),
    (
        "critical steps down to warning when readings clear but forecast is hot",
        {},
        [*critical(), *[(COOL, HOT)] * 4],
        [(1, "warning firing"), (2, "critical firing"), (6, "warning firing")],
    ),
    (
        "critical resolves when readings and forecast clear",
        {},
        [*critical(), *[(COOL, COOL)] * 4],
        [(1, "warning firing"), (2, "critical firing"), (6, "critical resolved")],
    ),
    (
        "critical holds while readings sit in the hysteresis band",
        {},
        [*critical(), *[(WARM, COOL)] * 10],
        [(1, "warning firing"), (2, "critical firing")],
    ),
    (
        "critical flapping readings do not re-fire",
        {},
        [*critical(), *[(HOT, HOT), (WARM, HOT)] * 5],
        [(1, "warning firing"), (2, "critical firing")],
    ),
    (
        "warning resolves after four clear ticks, not three",
        {},
        [*warned(), *[(COOL, COOL)] * 4],
        [(1, "warning firing"), (5, "warning resolved")],
    ),
    (
        "hysteresis: forecast between threshold - margin and threshold does not resolve",
        {},
        [*warned(), *[(COOL, WARM)] * 10],
        [(1, "warning firing")],
    ),
    (
        "hysteresis: reading in the band does not resolve a warning",
        {},
        [*warned(), *[(WARM, COOL)] * 10],
        [(1, "warning firing")],
    ),
    (
        "exactly threshold - margin is not clear",
        {},
        [*warned(), *[(93.0, 93.0)] * 6, *[(92.9, 92.9)] * 4],
        [(1, "warning firing"), (11, "warning resolved")],
    ),
    (
        "an interrupted clear streak starts over",
        {},
        [*warned(), *[(COOL, COOL)] * 3, (COOL, WARM), *[(COOL, COOL)] * 4],
        [(1, "warning firing"), (9, "warning resolved")],
    ),
    (
        "flapping forecast around the threshold fires once",
        {},
        [*warned(), *[(COOL, 94.5), (COOL, 95.5)] * 10],
        [(1, "warning firing")],
    ),
    (
        "clear_confirm_ticks=1 and margin 0",
        {"clear_confirm_ticks": 1, "clear_margin_c": 0.0},
        [*warned(), (COOL, 94.9)],
        [(1, "warning firing"), (2, "warning resolved")],
    ),
    (
        "a new episode after resolving",
        {},
        [*warned(), *[(COOL, COOL)] * 4, *warned()],
        [(1, "warning firing"), (5, "warning resolved"), (7, "warning firing")],
    ),
    (
        "hold: hot again within keep_firing_for_s continues the incident",
        {"keep_firing_for_s": 5.0},
        [*warned(), *[(COOL, COOL)] * 4, *warned()],
        [(1, "warning firing")],
    ),
    (
        "hold: a warning resolves keep_firing_for_s after it was last hot",
        {"keep_firing_for_s": 5.0},
        [*warned(), *[(COOL, COOL)] * 6],
        [(1, "warning firing"), (6, "warning resolved")],
    ),
    (
        "hold: clear_confirm_ticks still applies when it is the longer",
        {"keep_firing_for_s": 1.0},
        [*warned(), *[(COOL, COOL)] * 4],
        [(1, "warning firing"), (5, "warning resolved")],
    ),
    (
        "hold: readings cycling across the threshold stay one critical",
        {"keep_firing_for_s": 5.0},
        [*critical(), *([(COOL, COOL)] * 4 + [(HOT, HOT)] * 3) * 3, *[(COOL, COOL)] * 6],
        [(1, "warning firing"), (2, "critical firing"), (28, "critical resolved")],
    ),
    (
        "hold: a critical steps down once its readings are clear that long",
        {"keep_firing_for_s": 5.0},
        [*critical(), *[(COOL, HOT)] * 6, *[(COOL, COOL)] * 6],
        [
            (1, "warning firing"),
            (2, "critical firing"),
            (7, "warning firing"),
            (13, "warning resolved"),
        ],
    ),
    (
        "hold: a critical whose forecast was hot lately steps down to warning, not ok",
        {"keep_firing_for_s": 5.0},
        [*critical(), *[(COOL, COOL)] * 2, *[(COOL, HOT)] * 2, *[(COOL, COOL)] * 8],
        [
            (1, "warning firing"),
            (2, "critical firing"),
            (7, "warning firing"),
            (11, "warning resolved"),
        ],
    ),
    (
        "hold: only the alert's own condition renews it, not a forecast coming near",
        {"keep_firing_for_s": 5.0},
        [*warned(), *[(COOL, WARM), (COOL, COOL)] * 3, *[(COOL, COOL)] * 4],
        [(1, "warning firing"), (10, "warning resolved")],
    ),
    (
        "hold: a single hot reading (a spike) does not renew a critical",
        {"keep_firing_for_s": 5.0},
        [*critical(), *([(COOL, COOL)] * 4 + [(HOT, COOL)]) * 2, *[(COOL, COOL)] * 6],
        [(1, "warning firing"), (2, "critical firing"), (11, "critical resolved")],
    ),
]


@pytest.mark.parametrize(
    ("overrides", "steps", "expected"),
    [pytest.param(o, s, e, id=name) for name, o, s, e in SCENARIOS],
)
def test_state_machine(
    overrides: dict[str, Any], steps: list[tuple[float, float]], expected: list[tuple[int, str]]
) -> None:
    assert Harness(**overrides).run(steps) == expected


def test_states_follow_events() -> None:
    h = Harness()
    h.run(warned())
    assert h.state == WARNING
    h.run([(HOT, HOT)] * 3)
    assert h.state == CRITICAL
    h.run([(COOL, HOT)] * 4)
    assert h.state == WARNING
    h.run([(COOL, COOL)] * 4)
    assert h.state == OK


def test_previous_state_is_recorded() -> None:
    h = Harness()
    events = []
    for reading, forecast in [*critical(), *[(COOL, HOT)] * 4, *[(COOL, COOL)] * 4]:
        events.extend(h.tick(reading, forecast))
    assert [(e.previous_state, e.severity, e.status) for e in events] == [
        ("ok", "warning", "firing"),
        ("warning", "critical", "firing"),
        ("critical", "warning", "firing"),
        ("warning", "warning", "resolved"),
    ]


def test_alert_id_stable_within_an_episode_and_new_for_the_next() -> None:
    h = Harness()
    first: list[AlertEvent] = []
    for reading, forecast in [*warned(), *[(HOT, HOT)] * 3, *[(COOL, COOL)] * 4]:
        first.extend(h.tick(reading, forecast))
    assert [f"{e.severity} {e.status}" for e in first] == [
        "warning firing",
        "critical firing",
        "critical resolved",
    ]
    assert len({e.alert_id for e in first}) == 1
    assert first[0].alert_id.startswith("m-000")
    second: list[AlertEvent] = []
    for reading, forecast in [*warned(), *[(COOL, COOL)] * 4]:
        second.extend(h.tick(reading, forecast))
    assert len(second) == 2
    assert second[0].alert_id == second[1].alert_id
    assert second[0].alert_id != first[0].alert_id


def test_seq_increments_per_machine() -> None:
    h = Harness(machines=2)
    seqs: dict[str, list[int]] = {"m-000": [], "m-001": []}
    steps = [
        ([HOT, COOL], [HOT, COOL]),
        ([HOT, COOL], [HOT, COOL]),  # m-000 warns
        ([HOT, COOL], [HOT, HOT]),  # m-000 critical
        ([COOL, COOL], [COOL, HOT]),  # m-001 warns
    ] + [([COOL, COOL], [COOL, COOL])] * 4  # both resolve
    for readings, forecasts in steps:
        for event in h.tick(np.array(readings), np.array(forecasts)):
            seqs[event.machine_id].append(event.seq)
    assert seqs == {"m-000": [1, 2, 3], "m-001": [1, 2]}


def test_event_fields() -> None:
    h = Harness(interval_s=2.0)
    h.tick(COOL, [90.0, 92.0, 94.0, 96.0, 98.0])
    (event,) = h.tick(88.25, [90.0, 92.0, 94.0, 96.0, 98.0])
    assert event.machine_id == "m-000"
    assert event.severity == "warning"
    assert event.status == "firing"
    assert event.ts == h.now
    assert event.temperature_c == 88.25
    assert event.forecast_c == 98.0  # the peak of the forecast
    assert event.threshold_c == 95.0
    # The first step at or over 95 is step 4 (index 3): 4 intervals of 2 s.
    assert event.time_to_threshold_s == 8.0


def test_time_to_threshold_none_when_forecast_never_reaches() -> None:
    h = Harness()
    events = [e for _ in range(3) for e in h.tick(HOT, COOL)]
    (event,) = events
    assert event.severity == "critical"
    assert event.time_to_threshold_s is None


def test_time_to_threshold_function() -> None:
    forecasts = np.array(
        [
            [96.0, 97.0, 98.0],  # hot at the first step
            [90.0, 95.0, 99.0],  # second step, exactly at threshold
            [90.0, 91.0, 92.0],  # never
            [80.0, 81.0, 86.0],  # per-row threshold 85: third step
        ],
        dtype=np.float32,
    )
    threshold = np.array([95.0, 95.0, 95.0, 85.0])
    interval = np.array([1.0, 0.5, 1.0, 10.0])
    seconds = time_to_threshold(forecasts, threshold, interval)
    assert seconds[:2].tolist() == [1.0, 1.0]
    assert math.isnan(seconds[2])
    assert seconds[3] == 30.0


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {"severity": "warning", "status": "firing", "forecast_c": 96.14, "eta": 12.4},
            "ALERT m-007 warning firing forecast 96.1 °C in 12 s (threshold 95.0 °C)",
        ),
        (
            {"severity": "warning", "status": "firing", "forecast_c": 96.14, "eta": None},
            "ALERT m-007 warning firing forecast 96.1 °C (threshold 95.0 °C)",
        ),
        (
            {"severity": "critical", "status": "firing", "forecast_c": 99.0, "eta": 1.0},
            "ALERT m-007 critical firing reading 97.3 °C (threshold 95.0 °C)",
        ),
        (
            {"severity": "warning", "status": "resolved", "forecast_c": 90.0, "eta": None},
            "ALERT m-007 warning resolved reading 97.3 °C (threshold 95.0 °C)",
        ),
    ],
)
def test_event_line(kwargs: dict[str, Any], expected: str) -> None:
    event = AlertEvent(
        machine_id="m-007",
        severity=kwargs["severity"],
        status=kwargs["status"],
        ts=0.0,
        temperature_c=97.26,
        forecast_c=kwargs["forecast_c"],
        threshold_c=95.0,
        time_to_threshold_s=kwargs["eta"],
        alert_id="m-007-0",
        seq=1,
        previous_state="ok",
    )
    line = event.line()
    assert line == expected
    assert line.startswith(f"ALERT m-007 {kwargs['severity']} {kwargs['status']}")


def test_event_line_from_the_policy() -> None:
    h = Harness(interval_s=3.0)
    h.tick(COOL, [93.0, 94.0, 95.5, 96.1, 96.0])
    (event,) = h.tick(COOL, [93.0, 94.0, 95.5, 96.1, 96.0])
    assert event.line().startswith("ALERT m-000 warning firing forecast 96.1 °C in 9 s")


def test_many_machines_only_changed_ones_produce_events() -> None:
    machines = 1000
    h = Harness(machines=machines)
    rng = np.random.default_rng(0)
    warm_up = rng.uniform(60, 85, machines)
    hot = np.zeros(machines, dtype=bool)
    hot[rng.choice(machines, 37, replace=False)] = True
    forecasts = np.where(hot, HOT, COOL)
    assert h.tick(warm_up, forecasts) == []
    events = h.tick(warm_up, forecasts)
    assert sorted(e.machine_id for e in events) == sorted(h.ids[i] for i in np.flatnonzero(hot))
    assert {f"{e.severity} {e.status}" for e in events} == {"warning firing"}
    # Staying in state yields nothing.
    assert h.tick(warm_up, forecasts) == []
    assert h.policy.firing_counts(machines) == {"warning": 37, "critical": 0, "stale": 0}
    # Three of them overheat for real; only those three change.
    escalate = np.flatnonzero(hot)[:3]
    readings = warm_up.copy()
    readings[escalate] = 99.0
    events = [e for _ in range(3) for e in h.tick(readings, forecasts)]
    assert sorted(e.machine_id for e in events) == sorted(h.ids[i] for i in escalate)
    assert h.policy.firing_counts(machines) == {"warning": 34, "critical": 3, "stale": 0}


def test_update_of_a_subset_of_slots_leaves_others_alone() -> None:
    h = Harness(machines=3)
    h.tick([COOL] * 3, [HOT, HOT, HOT])
    # Only slot 2 gets a second forecast this tick (the others had no new reading).
    events = h.tick(COOL, HOT, slots=[2])
    assert [e.machine_id for e in events] == ["m-002"]
    assert h.policy.state.tolist() == [OK, OK, WARNING]
    assert h.policy.update(np.array([], dtype=np.int64), h.ids, None, None, None, 0.0) == []


def test_per_machine_thresholds() -> None:
    h = Harness(machines=2, overrides={"m-001": 85.0})
    events = [e for _ in range(2) for e in h.tick([COOL, COOL], [88.0, 88.0])]
    assert [(e.machine_id, e.threshold_c) for e in events] == [("m-001", 85.0)]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, [95.0, 95.0, 95.0]),
        ({"oven-*": 190.0}, [190.0, 190.0, 95.0]),
        ({"oven-*": 190.0, "oven-2": 200.0}, [190.0, 200.0, 95.0]),  # an exact id wins
        ({"*": 50.0, "press": 60.0}, [50.0, 50.0, 60.0]),
    ],
)
def test_threshold_overrides_by_id_and_pattern(
    overrides: dict[str, float], expected: list[float]
) -> None:
    policy = AlertPolicy(AlertSettings(overrides=overrides), capacity=3)
    ids = ["oven-1", "oven-2", "press"]
    slots = np.arange(3)
    policy.update(
        slots,
        ids,
        np.full((3, 20), 20.0, np.float32),
        np.full((3, 5), 20.0, np.float32),
        np.ones(3),
        0.0,
    )
    assert policy.threshold[:3].tolist() == expected


def test_warning_is_widened_by_the_machines_own_error_up_to_the_cap() -> None:
    """A forecast peak 3 °C under the threshold warns when the machine's error is 3 °C."""

    def warnings(spread: float, noise_ratio: float = 1.0, **settings: Any) -> int:
        policy = AlertPolicy(AlertSettings(**settings), capacity=1)
        recent = np.full((1, 20), 80.0, np.float32)
        forecast = np.full((1, 5), 92.0, np.float32)
        events = []
        for now in range(3):
            events += policy.update(
                np.arange(1),
                ["m"],
                recent,
                forecast,
                np.ones(1),
                float(now),
                None,
                np.array([spread]),
                np.array([noise_ratio]),
            )
        return sum(e.severity == "warning" for e in events)

    assert warnings(1.5) == 1  # by default 2 σ: 92 + 3 reaches 95 on the 3rd forecast
    assert warnings(1.0) == 0  # 92 + 2 does not
    assert warnings(30.0) == 1  # capped at 3 °C: 92 + 3
    assert warnings(30.0, warning_margin_max_c=2.0) == 0
    assert warnings(0.0, warning_sigma=1.0) == 0
    assert warnings(2.0, warning_sigma=1.0) == 0  # 92 + 2 < 95
    assert warnings(3.0, warning_sigma=1.0) == 1  # 92 + 3 reaches 95
    assert warnings(3.0, warning_sigma=0.5) == 0
    assert warnings(30.0, warning_sigma=1.0, warning_margin_max_c=2.0) == 0  # capped


def test_the_hold_runs_on_reading_timestamps_not_on_the_tick_clock() -> None:
    """A replay fed faster than real time (the tick clock stands still) holds as long, in
    readings, as a live machine; a tick clock racing ahead of the readings resolves nothing
    early."""

    def resolved_after(reading_step_s: float, tick_step_s: float) -> float | None:
        policy = AlertPolicy(AlertSettings(keep_firing_for_s=30.0, warning_confirm_ticks=1))
        recent = np.full((1, 20), COOL, dtype=np.float32)
        slots = np.array([0])
        for step in range(200):
            forecast = np.full((1, 5), HOT if step == 0 else COOL, dtype=np.float32)
            ts = np.array([step * reading_step_s])
            now = 1_000.0 + step * tick_step_s
            for event in policy.update(
                slots, ["m-0"], recent, forecast, np.ones(1), now, reading_ts=ts
            ):
                if event.status == "resolved":
                    return float(ts[0])
        return None

    assert resolved_after(reading_step_s=1.0, tick_step_s=0.0) == 30.0
    assert resolved_after(reading_step_s=1.0, tick_step_s=100.0) == 30.0
    assert resolved_after(reading_step_s=2.0, tick_step_s=1.0) == 30.0


def test_one_page_per_episode_for_a_machine_whose_cycle_crosses_many_times() -> None:
    """The shipped hold, on the seed's shape: a 100-reading cycle of ±10 °C on a level that
    rises through the threshold and is then repaired. The reading crosses the threshold in
    every cycle's peak and clears in every trough; the machine gets one page, and its
    incident resolves after the repair."""
    h = Harness(warning_confirm_ticks=3, keep_firing_for_s=AlertSettings().keep_firing_for_s)
    t = np.arange(3000)
    level = np.interp(t, [0, 400, 1400, 1600, 1800], [70.0, 70.0, 92.0, 92.0, 70.0])
    reading = level + 10.0 * np.sin(2 * np.pi * t / 100.0)
    crossings = int(np.sum((reading[1:] >= 95.0) & (reading[:-1] < 95.0)))
    events = [e for value in reading for e in h.tick(value, value + 3.0)]
    pages = [e for e in events if e.previous_state == "ok"]
    assert crossings >= 5
    assert len(pages) == 1
    assert len({e.alert_id for e in events}) == 1
    assert events[-1].status == "resolved"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


def test_ensure_capacity_keeps_state() -> None:
    h = Harness(machines=2)
    h.run(warned())
    assert h.policy.state.shape[0] == 2
    h.policy.ensure_capacity(5000)
    assert h.policy.state.shape[0] == 5000
    assert h.policy.state[:2].tolist() == [WARNING, WARNING]
    assert h.policy.state[2:].max() == OK
    assert h.policy.threshold[4999] == 95.0
    h.policy.ensure_capacity(10)  # never shrinks
    assert h.policy.state.shape[0] == 5000


def test_forecasts_made_from_a_sensor_gone_noisy_do_not_warn() -> None:
    """The forecaster extrapolates noise: at twice its usual error a machine is not warned on
    its forecast, and it is again once its error is back to usual; readings still go critical."""
    h = Harness(warning_confirm_ticks=2)

    def tick(reading: float, peak: float, ratio: float) -> list[str]:
        return [f"{e.severity} {e.status}" for e in h.tick(reading, peak, noise_ratio=ratio)]

    assert tick(COOL, HOT, 2.0) + tick(COOL, HOT, 2.0) + tick(COOL, HOT, 1.6) == []
    assert tick(COOL, HOT, 1.4) == []  # the first trusted hot forecast starts the streak
    assert tick(COOL, HOT, 1.0) == ["warning firing"]
    noisy = [tick(HOT, HOT, 3.0) for _ in range(3)]
    assert noisy[-1] == ["critical firing"], noisy
    off = Harness(warning_confirm_ticks=2, warning_noise_ratio_max=0.0)
    events = off.tick(70.0, HOT, noise_ratio=3.0) + off.tick(70.0, HOT, noise_ratio=3.0)
    assert [e.severity for e in events] == ["warning"]


def test_firing_counts_can_leave_out_machines_this_agent_never_heard() -> None:
    policy = AlertPolicy(AlertSettings(), capacity=3)
    policy.restore(0, CRITICAL, "a-1", 4)
    policy.restore(1, WARNING, "b-1", 2)
    policy.stale[2] = True
    assert policy.firing_counts(3) == {"warning": 1, "critical": 1, "stale": 1}
    heard = np.array([False, True, False])
    assert policy.firing_counts(3, heard) == {"warning": 1, "critical": 0, "stale": 0}


def test_a_machine_heading_for_its_threshold_keeps_the_trends_later_bound() -> None:
    """A peak the forecast sees reaching the threshold may fall just short, and a drifting
    machine then crosses at a later peak: the trend's 90 % bound stays the interval's end."""
    policy = AlertPolicy(AlertSettings(), 2)
    slots = np.array([0, 1])
    forecasts = np.tile(np.linspace(90.0, 97.0, 15, dtype=np.float32), (2, 1))
    nan = np.full(2, math.nan)
    trend = TrendView(
        trending=np.zeros(2, dtype=np.bool_),
        heading=np.array([True, False]),
        rising=np.array([True, False]),
        readings=np.array([400.0, math.nan]),
        low=np.array([200.0, math.nan]),
        high=np.array([900.0, math.nan]),
        period=nan,
    )
    policy._estimate(slots, forecasts, np.full(2, 95.0), np.full(2, 1.0), trend, np.ones(2))
    assert policy.eta_s[0] == policy.eta_s[1] <= 15  # the forecast sets the estimate
    assert policy.eta_low_s[0] == policy.eta_low_s[1]
    assert policy.eta_high_s[0] == 900.0
    assert policy.eta_high_s[1] < 20  # the forecast's own


def test_an_incident_stays_open_while_the_slow_path_sees_the_machine_rising() -> None:
    """A slow drift's first warning, at a peak, comes before its trend is confirmed: while the
    slow path sees the machine rising towards its threshold the incident stays open past the
    hold instead of resolving and paging again; once it no longer does, the hold runs out."""

    def resolved_at(rising_until: int) -> float | None:
        policy = AlertPolicy(AlertSettings(keep_firing_for_s=30.0, warning_confirm_ticks=1))
        recent = np.full((1, 20), COOL, dtype=np.float32)
        slots = np.array([0])
        quiet = policy.trend.view(slots)
        step = 0

        def view(_slots: np.ndarray) -> TrendView:
            return replace(quiet, rising=np.array([step < rising_until]))

        policy.trend.view = view  # type: ignore[method-assign, assignment]
        for step in range(300):
            forecast = np.full((1, 5), HOT if step == 0 else COOL, dtype=np.float32)
            events = policy.update(
                slots, ["m-0"], recent, forecast, np.ones(1), 1_000.0, reading_ts=np.array([step])
            )
            if any(event.status == "resolved" for event in events):
                return float(step)
        return None

    assert resolved_at(rising_until=0) == 30.0
    assert resolved_at(rising_until=100) == 129.0
