"""Alert quality as an operator meets it: incidents, lead, false warnings, interval calibration.

Scores what a policy paged (the messages :func:`forewarn.alert_quality.stream` kept, or a
hot/not-hot series such as the slow-drift anchor's) against a fleet's ground truth, the same for
every policy and scenario family:

* an *incident* runs from a page (a message leaving ok) to its resolution;
* **lead** is a fault's crossing (its first reading at or over the threshold, spikes left out)
  minus the start of the incident still open at the crossing; a warning that resolved before
  the crossing earns nothing, and an incident that began before the fault's onset counts from
  the onset;
* a **false warning** is a page that opens as a warning on a machine without a crossing fault,
  or before its onset (one that opens as critical is counted apart as a false critical);
* **incidents per episode**: pages of incidents that overlap a fault's episode (onset to
  repaired, plus the hold), the messages after each page, and incidents still open at the end
  of the run although the machine was repaired;
* **interval calibration**: for the page of each incident open at a crossing that came after
  it, whether the crossing fell inside its stated 10-90 % time-to-threshold interval.

With several seeds, :class:`Score` pools the records (each fault and machine-tick counts once).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agent.alerts import AlertEvent
from forewarn.alert_quality import Run
from simulator.faults import DriftPlan, RampPlan, first_crossing
from simulator.fleet import Fleet, OverheatPlan


@dataclass
class Incident:
    start: int
    end: int | None  # the tick of its resolution; None: still open at the end of the run
    first: AlertEvent | None  # its page (None for the anchor's incidents)
    messages: int


def incidents_of(messages: list[tuple[int, AlertEvent]]) -> list[Incident]:
    """A machine's incidents: from each message leaving ok to the next resolution."""
    out: list[Incident] = []
    for tick, event in messages:
        if event.previous_state == "ok" and event.status == "firing":
            out.append(Incident(tick, None, event, 1))
        elif out and out[-1].end is None:
            out[-1].messages += 1
            if event.status == "resolved":
                out[-1].end = tick
    return out


def incidents_from_hot(hot: NDArray[np.bool_], hold: int) -> list[Incident]:
    """Incidents of a hot/not-hot series held ``hold`` ticks after the last hot one."""
    out: list[Incident] = []
    ticks = hot.shape[0]
    for tick in np.flatnonzero(hot).tolist():
        if out and out[-1].end is not None and tick <= out[-1].end:
            out[-1].end = tick + hold
        else:
            out.append(Incident(tick, tick + hold, None, 1))
    for incident in out:
        if incident.end is not None and incident.end >= ticks:
            incident.end = None
    return out


@dataclass
class FaultRecord:
    """One crossing fault and how a policy met it."""

    seed: int
    machine_id: str
    kind: str
    onset: int
    crossing: int | None
    lead: int | None  # None: missed
    cause: str  # why it was missed ("" when caught)
    pages: int
    updates: int
    unresolved: int
    inside: bool | None  # its page's interval held the crossing; None: no interval stated
    open_interval: bool = False


@dataclass
class Score:
    """A policy's outcome on one or more fleets: records to pool, then summary figures."""

    faults: list[FaultRecord] = field(default_factory=list)
    false_pages: dict[str, int] = field(default_factory=dict)
    false_criticals: dict[str, int] = field(default_factory=dict)
    machine_ticks: dict[str, int] = field(default_factory=dict)
    false_ticks: dict[str, int] = field(default_factory=dict)
    all_machine_ticks: int = 0
    seconds: float = 0.0

    def merge(self, other: Score) -> None:
        self.faults += other.faults
        for mine, theirs in (
            (self.false_pages, other.false_pages),
            (self.false_criticals, other.false_criticals),
            (self.machine_ticks, other.machine_ticks),
            (self.false_ticks, other.false_ticks),
        ):
            for kind, count in theirs.items():
                mine[kind] = mine.get(kind, 0) + count
        self.all_machine_ticks += other.all_machine_ticks
        self.seconds += other.seconds

    def summary(self, kinds: frozenset[str] | None = None) -> dict[str, Any]:
        faults = [f for f in self.faults if kinds is None or f.kind in kinds]
        leads = [f.lead for f in faults if f.lead is not None]
        shares = [
            f.lead / (f.crossing - f.onset)
            for f in faults
            if f.lead is not None and f.crossing is not None and f.crossing > f.onset
        ]
        by_kind: dict[str, list[FaultRecord]] = {}
        for f in faults:
            by_kind.setdefault(f.kind, []).append(f)
        machine_ticks = sum(self.machine_ticks.values())
        calibrated = [f for f in faults if f.inside is not None]
        return {
            "recall": {
                k: _ratio(sum(f.lead is not None for f in v), len(v)) for k, v in by_kind.items()
            },
            "recall_pooled": _ratio(len(leads), len(faults)),
            "faults": len(faults),
            "median_lead_ticks": float(np.median(leads)) if leads else None,
            "p10_lead_ticks": float(np.percentile(leads, 10)) if leads else None,
            "median_lead_share": float(np.median(shares)) if shares else None,
            "median_lead_ticks_by_kind": {
                k: float(np.median([f.lead for f in v if f.lead is not None]))
                for k, v in sorted(by_kind.items())
                if any(f.lead is not None for f in v)
            },
            "false_warnings_per_10k": _per_10k(sum(self.false_pages.values()), machine_ticks),
            "false_warnings_per_10k_by_kind": {
                k: _per_10k(self.false_pages.get(k, 0), n)
                for k, n in sorted(self.machine_ticks.items())
            },
            "false_warnings": sum(self.false_pages.values()),
            # Over every machine-tick, the faults' own ticks after onset included: the measure
            # of the fast family's target and of the benchmark before incidents.
            "false_warnings_per_10k_machine_ticks": _per_10k(
                sum(self.false_pages.values()), self.all_machine_ticks
            ),
            "false_criticals_per_10k": _per_10k(sum(self.false_criticals.values()), machine_ticks),
            "false_criticals_by_kind": dict(sorted(self.false_criticals.items())),
            "false_alert_share": _ratio(sum(self.false_ticks.values()), machine_ticks, 5),
            "pages_per_episode": _mean([f.pages for f in faults]),
            "updates_per_episode": _mean([f.updates for f in faults]),
            "unresolved_after_repair": sum(f.unresolved for f in faults),
            "interval_calibration": _ratio(
                sum(bool(f.inside) for f in calibrated), len(calibrated)
            ),
            "intervals": len(calibrated),
            "open_intervals": sum(f.open_interval for f in calibrated),
            "misses": [
                {"seed": f.seed, "machine_id": f.machine_id, "kind": f.kind, "cause": f.cause}
                for f in faults
                if f.lead is None
            ],
            "seconds": round(self.seconds, 1),
        }


def _ratio(a: float, b: float, digits: int = 4) -> float | None:
    return round(a / b, digits) if b else None


def _per_10k(count: int, machine_ticks: int) -> float:
    return round(count / machine_ticks * 10_000, 3) if machine_ticks else 0.0


def _mean(values: list[int]) -> float | None:
    return round(float(np.mean(values)), 3) if values else None


def repaired_tick(plan: OverheatPlan | RampPlan | DriftPlan, ticks: int) -> int:
    """The tick from which a crossing fault adds nothing any more (repaired and cooled)."""
    excess = plan.excess(np.arange(ticks, dtype=np.float64))
    hot = np.flatnonzero(excess > 1e-9)
    return int(hot[-1]) + 1 if hot.size else ticks


def score(
    seed: int,
    fleet: Fleet,
    history: NDArray[np.float64],
    spikes: NDArray[np.float64],
    incidents: dict[str, list[Incident]],
    hold_ticks: float,
) -> Score:
    """Score a policy's incidents against the fleet's ground truth."""
    ticks = history.shape[1]
    out = Score(all_machine_ticks=len(fleet.machine_ids) * ticks)
    plans = {fleet.machine_ids[p.machine_index]: p for p in fleet.crossing_plans}
    window_kind = {fleet.machine_ids[f.machine_index]: f.kind for f in fleet.window_faults}
    for index, machine_id in enumerate(fleet.machine_ids):
        mine = incidents.get(machine_id, [])
        plan = plans.get(machine_id)
        if plan is None:
            kind = window_kind.get(machine_id, "healthy")
            false = mine
            quiet_ticks = ticks
        else:
            kind = "before_onset"
            false = [i for i in mine if i.start < plan.onset_tick]
            quiet_ticks = plan.onset_tick
        out.machine_ticks[kind] = out.machine_ticks.get(kind, 0) + quiet_ticks
        # A page that opens as critical (readings over the threshold with no forecast before)
        # is a false critical, not a false warning; the anchor only warns.
        criticals = sum(i.first is not None and i.first.severity == "critical" for i in false)
        out.false_pages[kind] = out.false_pages.get(kind, 0) + len(false) - criticals
        out.false_criticals[kind] = out.false_criticals.get(kind, 0) + criticals
        out.false_ticks[kind] = out.false_ticks.get(kind, 0) + sum(
            min(quiet_ticks, ticks if i.end is None else i.end) - i.start for i in false
        )
        if plan is None:
            continue
        crossing = first_crossing(
            history[index, :, 0], plan.onset_tick, fleet.threshold_c, spikes[index]
        )
        episode_end = repaired_tick(plan, ticks) + hold_ticks
        episode = [
            i
            for i in mine
            if i.start <= episode_end and (i.end is None or i.end >= plan.onset_tick)
        ]
        open_at: Incident | None = None
        lead: int | None = None
        cause = ""
        if crossing is None:
            cause = "never crossed within the run"
        else:
            open_at = next(
                (i for i in mine if i.start <= crossing and (i.end is None or i.end >= crossing)),
                None,
            )
        if crossing is not None and open_at is not None:
            lead = crossing - max(open_at.start, plan.onset_tick)
        elif crossing is not None:
            later = [i for i in mine if i.start > crossing]
            ended = [
                i.end for i in mine if i.end is not None and plan.onset_tick <= i.end < crossing
            ]
            if ended:
                cause = f"an incident resolved {crossing - ended[-1]} ticks before the crossing"
            elif later:
                cause = f"first paged {later[0].start - crossing} ticks after the crossing"
            else:
                cause = "never paged"
        inside: bool | None = None
        open_interval = False
        page = None if open_at is None else open_at.first
        if (
            open_at is not None
            and page is not None
            and crossing is not None
            and lead is not None
            and lead > 0
            and page.time_to_threshold_low_s is not None
        ):
            started = open_at.start
            low = started + page.time_to_threshold_low_s
            high = page.time_to_threshold_high_s
            open_interval = high is None
            inside = low <= crossing and (high is None or crossing <= started + high)
        out.faults.append(
            FaultRecord(
                seed=seed,
                machine_id=machine_id,
                kind=plan.kind,
                onset=plan.onset_tick,
                crossing=crossing,
                lead=lead,
                cause=cause,
                pages=len(episode),
                updates=sum(i.messages - 1 for i in episode),
                unresolved=sum(i.end is None for i in episode),
                inside=inside,
                open_interval=open_interval,
            )
        )
    return out


def score_run(seed: int, run: Run) -> Score:
    """Score a streamed run: its messages made into incidents, then :func:`score`."""
    incidents = {m: incidents_of(msgs) for m, msgs in run.messages.items()}
    result = score(seed, run.fleet, run.history, run.spikes, incidents, run.hold_ticks)
    result.seconds = run.seconds
    return result
