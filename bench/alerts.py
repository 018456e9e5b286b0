"""Alert quality on simulated fleets with known faults: recall, lead, incidents, false warnings.

Two scenario families, each streamed through the agent's own path (window store, batched
forecast, anomaly scorer, alert policy with its slow path: ``Agent.tick`` without the network):

* **fast** — overheats and cooling failures that cross the threshold 100-300 ticks after their
  onset, among dropouts, stuck and noisy sensors, spikes and bad payloads (:data:`MIX`), 200
  machines x 2,000 ticks. Policies compared on the same readings:

  - forewarn — the shipped forecaster, its forecast widened by each machine's own error, and the
    slow path;
  - static_threshold — no forecast: the reading itself must reach the threshold;
  - linear_extrapolation — a straight line fitted over the window and extended over the horizon
    (what Prometheus ``predict_linear`` does);
  - linear_extrapolation_matched — the same line at its best lead among a few warning settings
    that raise no more false warnings than forewarn (any forecaster buys lead with false
    warnings).

* **slow** — slow drifts (:func:`simulator.faults.plan_slow_drifts`: linear and exponential,
  their mean reaching the threshold 2,000, 5,000 or 20,000 readings after onset) among healthy
  machines, run until every drift has crossed and been repaired. forewarn is compared with the
  *anchor*, the one-liner a plant writes in Prometheus: a least-squares line over the last N
  readings, warning when it reaches the threshold within forewarn's longest horizon
  (``alerts.trend_horizon_readings``), on ``confirm`` readings in a row, for N in
  {100, 1,000, 5,000} and confirm in {3, 5, 8, 12}, computed vectorised outside the agent.

Scoring, the same for every policy and family, is :mod:`forewarn.alert_scoring` (incidents,
lead from the incident open at the crossing, false warnings, pages per episode, interval
calibration); the streaming through the agent is :mod:`forewarn.alert_quality`. The anchor's
incidents are held as long as forewarn's (``alerts.keep_firing_for_s``).

    python -m bench.alerts                      # fast family, seed 11, a table
    python -m bench.alerts --json               # {"policies": {...}, "incidents": ...}
    python -m bench.alerts --json --seeds 23,31,47 --slow --cost   # the full report

With ``--runtimes onnx,numpy`` forewarn's policy also runs on each torch-free runtime
(docs/runtimes.md) over the same model, made into a serving file in memory, on the first seed's
fast fleet, and ``runtimes`` says for each whether its alerts are identical to torch's: every
warning and critical message (tick, machine, severity, status) the same. The history is
replayed tick by tick, so what is alerted depends on the readings alone, never on how fast a
runtime forecasts.

With several seeds the outcomes are pooled (each fault and each machine-tick counts once). The
forecaster runs on one CPU thread: on a shared machine, more threads collapse under load.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from agent.app import Agent
from config.settings import Settings
from config.simulator import FAULT_KINDS
from forewarn.alert_quality import (
    Outcome,
    alert_fleet,
    bench_settings,
    fleet_mix,
    replay,
    run_policy,
    stream,
)
from forewarn.alert_scoring import Score, incidents_from_hot, score, score_run
from models.base import Forecaster
from models.baselines import LinearExtrapolationForecaster, PersistenceForecaster
from models.checkpoint import TorchForecaster
from simulator.faults import slow_drift_run_ticks
from simulator.fleet import Fleet
from wire.reading import Reading

ANCHOR_WINDOWS = (100, 1_000, 5_000)
ANCHOR_CONFIRMS = (3, 5, 8, 12)


# --- the fast family ---------------------------------------------------------------------------


MATCH_GRID = [(sigma, confirm) for sigma in (0.0, 2.0) for confirm in (3, 5, 8, 12)]
"""(warning_sigma, warning_confirm_ticks) pairs tried for the baseline at a matched false rate."""


def with_alerts(settings: Settings, **update: object) -> Settings:
    return settings.model_copy(update={"alerts": settings.alerts.model_copy(update=update)})


def fast_family(
    seeds: list[int],
    machines: int,
    ticks: int,
    settings: Settings,
    chosen: list[str],
    match: bool,
) -> dict[str, Score]:
    """Pooled scores of each policy over the seeds' fast fleets."""
    model = TorchForecaster.from_path(None, device="cpu", threads=1)
    policies: dict[str, Forecaster] = {
        "forewarn": model,
        "static_threshold": PersistenceForecaster(
            horizon=model.horizon, window=model.window, features=model.features
        ),
        "linear_extrapolation": LinearExtrapolationForecaster(
            horizon=model.horizon, window=model.window, features=model.features
        ),
    }
    # The baselines are judged on their forecast alone, as before the slow path existed.
    plain = with_alerts(settings, trend_horizon_readings=0)
    pooled: dict[str, Score] = {}
    tried: dict[tuple[float, int], Score] = {}
    for seed in seeds:
        fleet, history = alert_fleet(machines, ticks, seed)
        for name, forecaster in policies.items():
            if name in chosen:
                run = stream(forecaster, fleet, history, settings if name == "forewarn" else plain)
                pooled.setdefault(name, Score()).merge(score_run(seed, run))
        if match and "forewarn" in chosen and "linear_extrapolation" in chosen:
            for sigma, confirm in MATCH_GRID:
                grid = with_alerts(plain, warning_sigma=sigma, warning_confirm_ticks=confirm)
                run = stream(policies["linear_extrapolation"], fleet, history, grid)
                tried.setdefault((sigma, confirm), Score()).merge(score_run(seed, run))
    if tried:
        reference = pooled["forewarn"].summary()
        pooled["linear_extrapolation_matched"] = best_at_false_rate(tried, reference)[1]
    return pooled


Key = TypeVar("Key", tuple[float, int], tuple[int, int])


def best_at_false_rate(tried: dict[Key, Score], reference: dict[str, Any]) -> tuple[Key, Score]:
    """The setting with the longest median lead (then the highest recall) among those with no
    more false warnings and no larger false-alert share than ``reference``; none qualifying:
    the one with the fewest false warnings."""

    summaries = {key: s.summary() for key, s in tried.items()}
    ok = [
        key
        for key, s in summaries.items()
        if float(s["false_warnings_per_10k"]) <= float(reference["false_warnings_per_10k"])
        and float(s["false_alert_share"] or 0) <= float(reference["false_alert_share"] or 0)
    ]
    if not ok:
        key = min(summaries, key=lambda k: float(summaries[k]["false_warnings_per_10k"]))
    else:
        key = max(
            ok,
            key=lambda k: (
                float(summaries[k]["median_lead_ticks"] or 0.0),
                float(summaries[k]["recall_pooled"] or 0.0),
            ),
        )
    return key, tried[key]


# --- the slow family ---------------------------------------------------------------------------


def slow_fleet(seed: int, per_kind: int, healthy: int) -> tuple[Fleet, NDArray[np.float64]]:
    machines = per_kind * 6 + healthy
    fleet = Fleet(machines, seed, slow_drifts=per_kind)
    return fleet, fleet.history(0, slow_drift_run_ticks(fleet.drifts))


def anchor_ahead(
    temperatures: NDArray[np.float64], window: int, horizon: int
) -> NDArray[np.float64]:
    """The anchor's line, vectorised: at each tick, a least-squares line over each machine's
    last ``window`` readings, evaluated ``horizon`` readings ahead (-inf before ``window``
    readings exist). A line rising to the threshold within the horizon is there by then."""
    machines, ticks = temperatures.shape
    j = np.arange(ticks, dtype=np.float64)
    zeros = np.zeros((machines, 1))
    cy = np.concatenate([zeros, np.cumsum(temperatures, axis=1)], axis=1)
    cjy = np.concatenate([zeros, np.cumsum(temperatures * j, axis=1)], axis=1)
    t = np.arange(window - 1, ticks)
    sy = cy[:, t + 1] - cy[:, t + 1 - window]
    sjy = cjy[:, t + 1] - cjy[:, t + 1 - window]
    centre = t - (window - 1) / 2.0
    slope = (sjy - centre * sy) / (window * (window * window - 1) / 12.0)
    ahead = np.full((machines, ticks), -np.inf)
    ahead[:, t] = sy / window + slope * (t + horizon - centre)
    return ahead


def anchor_family(
    seeds: list[int],
    fleets: dict[int, tuple[Fleet, NDArray[np.float64], NDArray[np.float64]]],
    horizon: int,
    hold: int,
    threshold: float,
) -> dict[tuple[int, int], Score]:
    """The anchor's pooled score for every window and confirm."""
    out: dict[tuple[int, int], Score] = {}
    for seed in seeds:
        fleet, history, spikes = fleets[seed]
        temperatures = history[:, :, 0]
        for window in ANCHOR_WINDOWS:
            over = anchor_ahead(temperatures, window, horizon) >= threshold
            cs = np.concatenate([np.zeros((over.shape[0], 1)), np.cumsum(over, axis=1)], axis=1)
            for confirm in ANCHOR_CONFIRMS:
                confirmed = np.zeros_like(over)
                confirmed[:, confirm - 1 :] = (cs[:, confirm:] - cs[:, :-confirm]) == confirm
                incidents = {
                    machine_id: incidents_from_hot(confirmed[m], hold)
                    for m, machine_id in enumerate(fleet.machine_ids)
                }
                result = score(seed, fleet, history, spikes, incidents, hold)
                out.setdefault((window, confirm), Score()).merge(result)
    return out


# --- cost --------------------------------------------------------------------------------------


def tick_cost(machines: int, ticks: int, settings: Settings) -> dict[str, object]:
    """Median tick at ``machines`` machines with the slow path on and off, interleaved: two
    agents take the same readings and tick in turn, so load on the machine hits both alike."""
    model = TorchForecaster.from_path(None, device="cpu", threads=1)
    fleet = Fleet(machines, 3)
    warm_up = 25
    history = fleet.history(0, warm_up + ticks).astype(np.float32)
    agents = {
        "on": Agent(settings, forecaster=model),
        "off": Agent(with_alerts(settings, trend_horizon_readings=0), forecaster=model),
    }
    times: dict[str, list[float]] = {"on": [], "off": []}
    ids = fleet.machine_ids
    for tick in range(warm_up + ticks):
        order = ("on", "off") if tick % 2 == 0 else ("off", "on")
        for name in order:
            agent = agents[name]
            for m, machine_id in enumerate(ids):
                agent.hand_off(Reading(machine_id, float(tick), tick, history[m, tick]))
            started = time.perf_counter()
            agent.tick()
            if tick >= warm_up:
                times[name].append(time.perf_counter() - started)
    for agent in agents.values():
        agent.http.stop()
    on, off = float(np.median(times["on"])), float(np.median(times["off"]))
    return {
        "machines": machines,
        "ticks": ticks,
        "median_tick_s_slow_on": round(on, 4),
        "median_tick_s_slow_off": round(off, 4),
        "growth": round(on / off - 1.0, 4),
        "note": "the tick includes draining the hand-off of one reading per machine",
    }


def compare_runtimes(
    model: TorchForecaster,
    fleet: Fleet,
    history: NDArray[np.float64],
    settings: Settings,
    runtimes: str,
    outcomes: dict[str, Outcome],
) -> dict[str, dict[str, object]]:
    """forewarn's policy on each runtime named in ``runtimes`` (comma-separated), its events
    compared with torch's (run here if ``outcomes`` lacks them); its outcome joins
    ``outcomes`` as ``forewarn_<runtime>``."""
    names = [name for name in runtimes.split(",") if name and name != "torch"]
    if not names:
        return {}
    from bench.inference import serving_forecasters

    lean = serving_forecasters(model)
    unknown = sorted(set(names) - set(lean))
    if unknown:
        raise SystemExit(f"--runtimes: {', '.join(unknown)} cannot run here (have: {sorted(lean)})")
    if "forewarn" not in outcomes:
        outcomes["forewarn"] = run_policy(model, fleet, history, settings)
    reference = outcomes["forewarn"].events
    verdicts: dict[str, dict[str, object]] = {}
    for name in names:
        outcome = outcomes[f"forewarn_{name}"] = run_policy(lean[name], fleet, history, settings)
        differing = sorted(set(outcome.events) ^ set(reference))
        verdicts[name] = {
            "identical": outcome.events == reference,
            "events": len(outcome.events),
            "torch_events": len(reference),
            "differing": len(differing),
            "first_difference": list(differing[0]) if differing else None,
        }
    return verdicts


# --- the command -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--machines", type=int, default=200)
    parser.add_argument("--ticks", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--seeds", help="comma-separated seeds, pooled (overrides --seed)")
    parser.add_argument("--warning-sigma", type=float, help="override alerts.warning_sigma")
    parser.add_argument(
        "--warning-margin-max", type=float, help="override alerts.warning_margin_max_c"
    )
    parser.add_argument("--warning-confirm", type=int, help="override alerts.warning_confirm_ticks")
    parser.add_argument("--keep-firing-for", type=float, help="override alerts.keep_firing_for_s")
    parser.add_argument(
        "--trend-horizon", type=int, help="override alerts.trend_horizon_readings (0: off)"
    )
    parser.add_argument("--trend-sigma", type=float, help="override alerts.trend_sigma")
    parser.add_argument("--trend-confirm", type=int, help="override alerts.trend_confirm")
    parser.add_argument(
        "--policies",
        default="forewarn,static_threshold,linear_extrapolation",
        help="fast family: comma-separated subset to run ('' to skip the family)",
    )
    parser.add_argument(
        "--no-match",
        dest="match",
        action="store_false",
        help="skip the search for linear extrapolation's settings at forewarn's false rate",
    )
    parser.add_argument("--slow", action="store_true", help="run the slow-drift family")
    parser.add_argument("--slow-per-kind", type=int, default=4, help="drifts per shape and reach")
    parser.add_argument("--slow-healthy", type=int, default=36, help="healthy machines beside")
    parser.add_argument(
        "--slow-replay",
        action="store_true",
        help="slow family: forecasts batched up front, then the agent's alert policy and anomaly "
        "scorer tick by tick (forewarn.alert_quality.replay; the same messages, several times "
        "faster)",
    )
    parser.add_argument(
        "--runtimes",
        default="",
        help="comma-separated torch-free runtimes (onnx, numpy) to run forewarn's policy on "
        "and compare alert by alert with torch's, on the first seed's fast fleet",
    )
    parser.add_argument("--cost", action="store_true", help="measure the slow path's tick cost")
    parser.add_argument("--cost-machines", type=int, default=10_000)
    parser.add_argument("--cost-ticks", type=int, default=40)
    args = parser.parse_args(argv)
    # Rejected bad payloads and evictions log on purpose; here they would drown the report.
    logging.getLogger("agent").setLevel(logging.ERROR)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [args.seed]
    settings = bench_settings()
    tuning = {
        "warning_sigma": args.warning_sigma,
        "warning_margin_max_c": args.warning_margin_max,
        "warning_confirm_ticks": args.warning_confirm,
        "keep_firing_for_s": args.keep_firing_for,
        "trend_horizon_readings": args.trend_horizon,
        "trend_sigma": args.trend_sigma,
        "trend_confirm": args.trend_confirm,
    }
    settings = with_alerts(settings, **{k: v for k, v in tuning.items() if v is not None})
    report: dict[str, Any] = {
        "seeds": seeds,
        "alerts": settings.alerts.model_dump(exclude={"overrides"}),
    }
    chosen = [p for p in args.policies.split(",") if p]
    fast: dict[str, Score] = {}
    if chosen:
        fast = fast_family(seeds, args.machines, args.ticks, settings, chosen, args.match)
        report["fleet"] = {
            "machines": args.machines,
            "ticks": args.ticks,
            "mix": fleet_mix(args.machines),
        }
        report["policies"] = {name: s.summary() for name, s in fast.items()}
    slow_report: dict[str, Any] | None = None
    if args.slow:
        slow_report = slow_family(seeds, args, settings)
        report["slow"] = slow_report
    if args.runtimes:
        fleet, history = alert_fleet(args.machines, args.ticks, seeds[0])
        model = TorchForecaster.from_path(None, device="cpu", threads=1)
        report["runtimes"] = compare_runtimes(model, fleet, history, settings, args.runtimes, {})
    if args.cost:
        report["cost"] = tick_cost(args.cost_machines, args.cost_ticks, settings)
    if args.json:
        print(json.dumps(report))
        return 0
    print_report(report, fast, slow_report)
    return 0


def slow_family(
    seeds: list[int], args: argparse.Namespace, settings: Settings
) -> dict[str, object]:
    model = TorchForecaster.from_path(None, device="cpu", threads=1)
    fleets = {}
    forewarn = Score()
    for seed in seeds:
        fleet, history = slow_fleet(seed, args.slow_per_kind, args.slow_healthy)
        spikes = fleet.last_spikes_c
        fleets[seed] = (fleet, history, spikes)
        run = (replay if args.slow_replay else stream)(model, fleet, history, settings)
        forewarn.merge(score_run(seed, run))
    reference = forewarn.summary()
    horizon = settings.alerts.trend_horizon_readings
    hold = int(settings.alerts.keep_firing_for_s)
    anchors = anchor_family(seeds, fleets, horizon, hold, settings.alerts.threshold_c)
    (window, confirm), best = best_at_false_rate(anchors, reference)
    best_summary = best.summary()
    ratio = None
    if best_summary["median_lead_ticks"] and reference["median_lead_ticks"]:
        ratio = round(
            float(reference["median_lead_ticks"]) / float(best_summary["median_lead_ticks"]), 3
        )
    return {
        "fleet": {
            "per_kind": args.slow_per_kind,
            "healthy": args.slow_healthy,
            "ticks": {seed: int(fleets[seed][1].shape[1]) for seed in seeds},
        },
        "horizon_readings": horizon,
        "forewarn": reference,
        "anchor_best": {"window": window, "confirm": confirm, **best_summary},
        "lead_ratio_vs_anchor": ratio,
        "anchor_grid": [
            {
                "window": w,
                "confirm": c,
                **{
                    k: v
                    for k, v in s.summary().items()
                    if k
                    in (
                        "recall_pooled",
                        "median_lead_ticks",
                        "false_warnings_per_10k",
                        "false_alert_share",
                    )
                },
            }
            for (w, c), s in sorted(anchors.items())
        ],
    }


def print_report(
    report: dict[str, Any], fast: dict[str, Score], slow: dict[str, Any] | None
) -> None:
    print(f"seeds {report['seeds']} (kinds: {', '.join(FAULT_KINDS)})")
    if fast:
        print(
            f"{'policy':<29} {'recall':>7} {'median lead':>12} {'p10':>6} {'false/10k':>10} "
            f"{'pages/ep':>9} {'updates/ep':>11} {'unresolved':>11} {'calibration':>12}"
        )
        for name, s in fast.items():
            o = s.summary()
            print(
                f"{name:<29} {_pct(o['recall_pooled']):>7} {o['median_lead_ticks'] or 0:>12.1f} "
                f"{o['p10_lead_ticks'] or 0:>6.1f} {o['false_warnings_per_10k']:>10.2f} "
                f"{o['pages_per_episode'] or 0:>9.2f} {o['updates_per_episode'] or 0:>11.2f} "
                f"{o['unresolved_after_repair']:>11} {_pct(o['interval_calibration']):>12}"
            )
    if slow is not None:
        for name, o in (("forewarn", slow["forewarn"]), ("anchor (best)", slow["anchor_best"])):
            assert isinstance(o, dict)
            print(
                f"slow {name:<24} recall {_pct(o['recall_pooled'])}, median lead "
                f"{o['median_lead_ticks']} ({_pct(o['median_lead_share'])} of the drift), "
                f"false/10k {o['false_warnings_per_10k']}, pages/episode {o['pages_per_episode']}"
            )
        print(f"slow lead ratio vs the anchor: {slow['lead_ratio_vs_anchor']}")
    for runtime, verdict in report.get("runtimes", {}).items():
        print(
            f"forewarn on {runtime}: {verdict['events']} alert messages, "
            + (
                "identical to torch's"
                if verdict["identical"]
                else f"{verdict['differing']} differ from torch's "
                f"(first: {verdict['first_difference']})"
            )
        )


def _pct(value: Any) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{float(value):.0%}"
    )


if __name__ == "__main__":
    sys.exit(main())
