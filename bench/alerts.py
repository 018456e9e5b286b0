"""Alert quality on a simulated fleet with known faults: recall, lead time, false warnings.

Three policies see the same readings through the agent's own path (window store, batched
forecast, anomaly scorer, alert policy — ``Agent.tick`` without the network):

* forewarn — the shipped forecaster, its forecast widened by each machine's own error;
* static_threshold — no forecast: the reading itself must reach the threshold;
* linear_extrapolation — a straight line fitted over the window and extended over the horizon
  (what Prometheus ``predict_linear`` does);
* linear_extrapolation_matched — the same line at its best lead among a few warning settings
  that raise no more false warnings than forewarn: a fair comparison of lead at an equal or
  lower false-warning rate (any forecaster buys lead with false warnings).

All use the agent's alert settings unless said otherwise. A fault's crossing is its first
reading at or over the threshold leaving out the sensor spikes (see ``run_policy``).

With ``--runtimes onnx,numpy`` forewarn's policy also runs on each torch-free runtime
(docs/runtimes.md) over the same model, made into a serving file in memory, and ``runtimes``
says for each whether its alerts are identical to torch's: every event (tick, machine,
severity, status) the same. The history is replayed tick by tick, so what is alerted depends
on the readings alone, never on how fast a runtime forecasts.

    python -m bench.alerts            # a table
    python -m bench.alerts --json     # {"policies": {...}} on stdout
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from numpy.typing import NDArray

from config.settings import Settings
from config.simulator import FAULT_KINDS
from forewarn.alert_quality import Outcome, alert_fleet, bench_settings, fleet_mix, run_policy
from models.base import Forecaster
from models.baselines import LinearExtrapolationForecaster, PersistenceForecaster
from models.checkpoint import TorchForecaster
from simulator.fleet import Fleet

MATCH_GRID = [(sigma, confirm) for sigma in (0.0, 2.0) for confirm in (3, 5, 8, 12)]
"""(warning_sigma, warning_confirm_ticks) pairs tried for the baseline at a matched false rate."""


def matched_baseline(
    forecaster: Forecaster,
    fleet: Fleet,
    history: NDArray[np.float64],
    settings: Settings,
    reference: Outcome,
) -> Outcome:
    """The baseline at its best lead among settings with no more false warnings than
    ``reference``: "a longer lead at an equal or lower false-warning rate" compares policies at
    the same false rate, and any forecaster can buy lead with false warnings.

    Tries :data:`MATCH_GRID`; the winner has the longest median lead, then the higher recall.
    Its settings are in ``settings`` of the result (none qualified: the strictest one's).
    """
    tried = []
    for sigma, confirm in MATCH_GRID:
        alerts = settings.alerts.model_copy(
            update={"warning_sigma": sigma, "warning_confirm_ticks": confirm}
        )
        outcome = run_policy(
            forecaster, fleet, history, settings.model_copy(update={"alerts": alerts})
        )
        outcome.settings = {"warning_sigma": sigma, "warning_confirm_ticks": confirm}
        tried.append(outcome)
    qualified = [o for o in tried if o.false_warnings_per_10k <= reference.false_warnings_per_10k]
    if not qualified:
        return min(tried, key=lambda o: o.false_warnings_per_10k)
    return max(
        qualified,
        key=lambda o: (o.median_lead_ticks or 0.0, min(o.recall.values(), default=0.0)),
    )


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--machines", type=int, default=200)
    parser.add_argument("--ticks", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--warning-sigma", type=float, help="override alerts.warning_sigma for forewarn"
    )
    parser.add_argument(
        "--warning-margin-max", type=float, help="override alerts.warning_margin_max_c"
    )
    parser.add_argument("--warning-confirm", type=int, help="override alerts.warning_confirm_ticks")
    parser.add_argument(
        "--policies",
        default="forewarn,static_threshold,linear_extrapolation",
        help="comma-separated subset to run",
    )
    parser.add_argument(
        "--runtimes",
        default="",
        help="comma-separated torch-free runtimes (onnx, numpy) to run forewarn's policy on "
        "too, each compared with torch's alerts event by event",
    )
    parser.add_argument(
        "--no-match",
        dest="match",
        action="store_false",
        help="skip the search for linear extrapolation's settings at forewarn's false rate",
    )
    args = parser.parse_args(argv)
    settings = bench_settings()
    tuning = {
        "warning_sigma": args.warning_sigma,
        "warning_margin_max_c": args.warning_margin_max,
        "warning_confirm_ticks": args.warning_confirm,
    }
    settings.alerts = settings.alerts.model_copy(
        update={k: v for k, v in tuning.items() if v is not None}
    )
    fleet, history = alert_fleet(args.machines, args.ticks, args.seed)
    mix = fleet_mix(args.machines)
    model = TorchForecaster.from_path(None, device="cpu")
    policies: dict[str, Forecaster] = {
        "forewarn": model,
        # No forecast: the last reading held over the horizon, i.e. a static threshold rule.
        "static_threshold": PersistenceForecaster(
            horizon=model.horizon, window=model.window, features=model.features
        ),
        "linear_extrapolation": LinearExtrapolationForecaster(
            horizon=model.horizon, window=model.window, features=model.features
        ),
    }
    chosen = args.policies.split(",")
    outcomes = {
        name: run_policy(f, fleet, history, settings)
        for name, f in policies.items()
        if name in chosen
    }
    if args.match and "forewarn" in outcomes and "linear_extrapolation" in chosen:
        outcomes["linear_extrapolation_matched"] = matched_baseline(
            policies["linear_extrapolation"], fleet, history, settings, outcomes["forewarn"]
        )
    runtimes = compare_runtimes(model, fleet, history, settings, args.runtimes, outcomes)
    report = {
        "fleet": {"machines": args.machines, "ticks": args.ticks, "seed": args.seed, "mix": mix},
        "policies": {
            name: {k: v for k, v in vars(outcome).items() if k != "events"}
            for name, outcome in outcomes.items()
        },
        "runtimes": runtimes,
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print(
        f"{args.machines} machines x {args.ticks} ticks, seed {args.seed}, faults {mix} "
        f"(kinds: {', '.join(FAULT_KINDS)})"
    )
    print(
        f"{'policy':<29} {'recall overheat':>15} {'recall cooling':>15} {'median lead':>12} "
        f"{'p10 lead':>9} {'false/10k':>10}  false/10k by machine kind"
    )
    for name, o in outcomes.items():
        print(
            f"{name:<29} {o.recall.get('overheat', 0):>15.0%} "
            f"{o.recall.get('cooling_failure', 0):>15.0%} {o.median_lead_ticks or 0:>12.1f} "
            f"{o.p10_lead_ticks or 0:>9.1f} {o.false_warnings_per_10k:>10.2f}  "
            f"{o.false_warnings_per_10k_by_kind}"
        )
    matched = outcomes.get("linear_extrapolation_matched")
    if matched is not None:
        print(f"linear_extrapolation_matched: the best lead of {MATCH_GRID} at {matched.settings}")
    for runtime, verdict in runtimes.items():
        print(
            f"forewarn on {runtime}: {verdict['events']} alert events, "
            + (
                "identical to torch's"
                if verdict["identical"]
                else f"{verdict['differing']} differ from torch's "
                f"(first: {verdict['first_difference']})"
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
