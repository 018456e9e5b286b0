"""Alert quality on a simulated fleet with known faults: recall, lead time, false warnings.

The machinery behind ``python -m bench.alerts`` and the alert columns of ``forewarn evaluate
--compare``: a fleet's history streamed through the agent's own tick (window store, batched
forecast, anomaly scorer, alert policy) with a given forecaster, and its warnings scored
against the simulator's ground truth. It lives here, above the agent, because the models
layer may not import the agent; the benchmark imports it from here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from agent.alerts import AlertEvent, AlertPolicy
from agent.anomaly import AnomalyScorer
from agent.app import Agent
from config.settings import Settings, load_settings
from models.base import Forecaster
from simulator.badpayload import bad_payloads
from simulator.faults import (
    BAD_PAYLOAD_PROBABILITY,
    CROSSING_KINDS,
    MIN_RAMP_RUN_TICKS,
    first_crossing,
)
from simulator.fleet import Fleet
from wire.reading import Reading, Rejected

MIX = {
    "overheat": 30,
    "cooling_failure": 30,
    "dropout": 20,
    "stuck_sensor": 20,
    "spikes": 20,
    "noisy_sensor": 20,
    "bad_payload": 20,
}
"""The fixed mix of every scenario; the remaining machines are healthy."""


@dataclass
class Outcome:
    recall: dict[str, float]
    median_lead_ticks: float | None
    p10_lead_ticks: float | None
    false_warnings_per_10k: float
    false_warnings_by_kind: dict[str, int] = field(default_factory=dict)
    false_warnings_per_10k_by_kind: dict[str, float] = field(default_factory=dict)
    settings: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    crossings: int = 0
    caught: int = 0
    events: list[tuple[int, str, str, str]] = field(default_factory=list, repr=False)
    """Every warning and critical message (tick, machine, severity, status), in order: what
    ``bench.alerts --runtimes`` compares between runtimes."""

    @property
    def overall_recall(self) -> float | None:
        """Crossings warned about before they happened, of all crossing faults together."""
        return self.caught / self.crossings if self.crossings else None


def fleet_mix(machines: int) -> dict[str, int]:
    """:data:`MIX` scaled to a fleet of ``machines`` (it is given for 200), at least one each."""
    return {kind: max(1, count * machines // 200) for kind, count in MIX.items()}


def alert_fleet(machines: int, ticks: int, seed: int) -> tuple[Fleet, NDArray[np.float64]]:
    """The benchmark's fleet with every fault of :data:`MIX`, and its history."""
    if machines < 2 * len(MIX) or ticks < MIN_RAMP_RUN_TICKS:
        raise ValueError(
            f"an alert fleet needs at least {2 * len(MIX)} machines and {MIN_RAMP_RUN_TICKS} "
            f"ticks (its faults need room to happen), not {machines} machines and {ticks} ticks"
        )
    fleet = Fleet(machines, seed, faults=fleet_mix(machines), run_ticks=ticks)
    return fleet, fleet.history(0, ticks)


def bench_settings() -> Settings:
    """The agent's default settings, ignoring any .env, with the metrics server on a free port
    and no machine ever stale (the history is replayed faster than real time)."""
    settings = load_settings(_env_file=None)
    settings.metrics = settings.metrics.model_copy(update={"host": "127.0.0.1", "port": 0})
    settings.agent = settings.agent.model_copy(update={"stale_after_s": 1e9})
    return settings


@dataclass
class Run:
    """What one policy did on one fleet: every warning and critical message, with its tick."""

    fleet: Fleet
    history: NDArray[np.float64]
    spikes: NDArray[np.float64]
    messages: dict[str, list[tuple[int, AlertEvent]]]
    hold_ticks: float
    seconds: float


def stream(
    forecaster: Forecaster, fleet: Fleet, history: NDArray[np.float64], settings: Settings
) -> Run:
    """Stream the fleet's history through the agent's tick, one reading per machine per tick
    (timestamps one second apart, so the hold in seconds is as many ticks), and keep every
    warning and critical message."""
    spikes = fleet.last_spikes_c  # from the one history() call that made ``history``
    started = time.monotonic()
    agent = Agent(settings, forecaster=forecaster)
    ticks = history.shape[1]
    messages: dict[str, list[tuple[int, AlertEvent]]] = {}
    rng = np.random.default_rng(0)
    values32 = history.astype(np.float32)
    for tick in range(ticks):
        silent = set(fleet.silent(tick))
        broken = set(fleet.bad_payload_machines(tick))
        for m, machine_id in enumerate(fleet.machine_ids):
            if m in silent:
                continue
            values = values32[m, tick]
            if m in broken and rng.random() < BAD_PAYLOAD_PROBABILITY:
                for payload in bad_payloads(machine_id, float(tick), tick, values, rng):
                    try:
                        agent.hand_off(agent.decoder.decode(payload, machine_id))
                    except Rejected as rejected:
                        agent.reject(rejected.reason, rejected.detail)
            else:
                agent.hand_off(Reading(machine_id, float(tick), tick, values))
        for event in agent.tick():
            if event.severity in ("warning", "critical"):
                messages.setdefault(event.machine_id, []).append((tick, event))
    agent.http.stop()
    return Run(
        fleet=fleet,
        history=history,
        spikes=spikes,
        messages=messages,
        hold_ticks=settings.alerts.keep_firing_for_s,
        seconds=time.monotonic() - started,
    )


def replay(
    forecaster: Forecaster, fleet: Fleet, history: NDArray[np.float64], settings: Settings
) -> Run:
    """:func:`stream`'s result, faster, for a fleet without window faults (every machine reports
    every tick, as in the slow-drift family): every machine's forecasts computed up front in
    large batches, then the agent's own anomaly scorer and alert policy driven tick by tick as
    its tick drives them, without the window store and the hand-off around them. The per-tick
    cost of those, not the forecaster, bounds a 20,000-tick stream."""
    if fleet.window_faults:
        raise ValueError("replay needs a fleet without window faults; stream() takes any")
    started = time.monotonic()
    machines, ticks, features = history.shape
    window = forecaster.window
    values = history.astype(np.float32)
    forecasts = np.empty((machines, ticks - window + 1, forecaster.horizon), dtype=np.float32)
    for m in range(machines):
        windows = sliding_window_view(values[m], (window, features))[:, 0]
        forecasts[m] = forecaster.forecast(np.ascontiguousarray(windows))
    temperatures = values[:, :, 0]
    policy = AlertPolicy(settings.alerts, machines)
    anomaly = AnomalyScorer(forecaster.horizon, machines)
    slots = np.arange(machines, dtype=np.int64)
    interval = np.ones(machines)
    messages: dict[str, list[tuple[int, AlertEvent]]] = {}
    for tick in range(window - 1, ticks):
        ahead = forecasts[:, tick - window + 1]
        scores = anomaly.update(
            slots, temperatures[:, tick], np.full(machines, tick, dtype=np.int64), ahead
        )
        events = policy.update(
            slots,
            fleet.machine_ids,
            temperatures[:, tick - window + 1 : tick + 1],
            ahead,
            interval,
            float(tick),
            scores,
            anomaly.spread(slots),
            anomaly.noise_ratio(slots),
            reading_ts=np.full(machines, float(tick)),
            appended=np.full(machines, tick + 1, dtype=np.int64),
        )
        for event in events:
            if event.severity in ("warning", "critical"):
                messages.setdefault(event.machine_id, []).append((tick, event))
    return Run(
        fleet=fleet,
        history=history,
        spikes=fleet.last_spikes_c,
        messages=messages,
        hold_ticks=settings.alerts.keep_firing_for_s,
        seconds=time.monotonic() - started,
    )


def run_policy(
    forecaster: Forecaster, fleet: Fleet, history: NDArray[np.float64], settings: Settings
) -> Outcome:
    """Stream the fleet's history through the agent's tick and score the first warnings.

    A fault's crossing is its first reading at or over the threshold with the sensor spikes
    left out: a spike is never an overheat (see :func:`simulator.faults.first_crossing`).
    """
    run = stream(forecaster, fleet, history, settings)
    spikes = run.spikes
    machines, ticks, _ = history.shape
    first_warning: dict[str, list[int]] = {}
    for machine_id, messages in run.messages.items():
        for tick, event in messages:
            if event.severity == "warning" and event.status == "firing":
                if event.previous_state == "critical":
                    continue  # a step down continues an episode; it is not a new warning
                first_warning.setdefault(machine_id, []).append(tick)

    fault_of = {fleet.machine_ids[p.machine_index]: p for p in fleet.crossing_plans}
    window_fault_of = {fleet.machine_ids[f.machine_index]: f.kind for f in fleet.window_faults}
    leads: list[int] = []
    caught = {kind: 0 for kind in CROSSING_KINDS}
    total = {kind: 0 for kind in CROSSING_KINDS}
    false_warnings = 0
    false_by_kind: dict[str, int] = {}
    for machine_id, plan in fault_of.items():
        index = fleet.machine_ids.index(machine_id)
        crossing = first_crossing(
            history[index, :, 0], plan.onset_tick, fleet.threshold_c, spikes[index]
        )
        total[plan.kind] += 1
        warnings = first_warning.get(machine_id, [])
        before = [t for t in warnings if plan.onset_tick <= t <= (crossing or ticks)]
        if crossing is not None and before:
            caught[plan.kind] += 1
            leads.append(crossing - before[0])
        early = len([t for t in warnings if t < plan.onset_tick])
        false_warnings += early
        if early:
            false_by_kind[plan.kind] = false_by_kind.get(plan.kind, 0) + early
    for machine_id, warnings in first_warning.items():
        if machine_id in fault_of:
            continue
        false_warnings += len(warnings)
        kind = window_fault_of.get(machine_id, "healthy")
        false_by_kind[kind] = false_by_kind.get(kind, 0) + len(warnings)
    kind_of = {**window_fault_of, **{m: p.kind for m, p in fault_of.items()}}
    machines_of: dict[str, int] = {}
    for machine_id in fleet.machine_ids:
        kind = kind_of.get(machine_id, "healthy")
        machines_of[kind] = machines_of.get(kind, 0) + 1
    return Outcome(
        recall={k: caught[k] / total[k] for k in sorted(CROSSING_KINDS) if total[k]},
        median_lead_ticks=float(np.median(leads)) if leads else None,
        p10_lead_ticks=float(np.percentile(leads, 10)) if leads else None,
        false_warnings_per_10k=false_warnings / (machines * ticks) * 10_000,
        false_warnings_by_kind=false_by_kind,
        # Per kind of machine, so that spikes, dropouts and bad payloads can be compared with
        # healthy machines: a fault that caused warnings would stand out here.
        false_warnings_per_10k_by_kind={
            kind: round(false_by_kind.get(kind, 0) / (count * ticks) * 10_000, 2)
            for kind, count in sorted(machines_of.items())
        },
        seconds=round(run.seconds, 1),
        crossings=sum(total.values()),
        caught=sum(caught.values()),
        events=sorted(
            (tick, machine_id, event.severity, event.status)
            for machine_id, messages in run.messages.items()
            for tick, event in messages
        ),
    )
