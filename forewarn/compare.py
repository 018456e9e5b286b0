"""`forewarn evaluate --compare`: the seed's comparison table, measured on the shipped models.

The measuring is :mod:`models.compare`; this module adds what the models layer may not import,
the alert bench (the agent's own tick, :mod:`forewarn.alert_quality`), and prints the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping
from typing import Any

from config.settings import Settings
from forewarn.alert_quality import alert_fleet, bench_settings, run_policy
from models.base import Forecaster

logger = logging.getLogger("forewarn")

EXIT_CONFIG = 2


def alert_scores(machines: int, ticks: int, seed: int, threshold_c: float) -> Any:
    """A function giving a forecaster's alert quality on one fleet of the alert bench (the
    same fleet for every row), with the agent's default alert settings."""
    fleet, history = alert_fleet(machines, ticks, seed)
    settings = bench_settings()
    settings.alerts = settings.alerts.model_copy(update={"threshold_c": threshold_c})

    def scores(forecaster: Forecaster) -> Mapping[str, Any]:
        # The fleet's bad payloads and gaps are meant: the agent's warning for each would
        # bury the table's progress lines.
        agent_log = logging.getLogger("agent")
        level = agent_log.level
        agent_log.setLevel(logging.ERROR)
        try:
            outcome = run_policy(forecaster, fleet, history, settings)
        finally:
            agent_log.setLevel(level)
        lead = outcome.median_lead_ticks
        return {
            "recall": None if outcome.overall_recall is None else round(outcome.overall_recall, 4),
            "median_lead_ticks": lead,
            "false_warnings_per_10k": round(outcome.false_warnings_per_10k, 3),
            "recall_by_kind": {k: round(v, 4) for k, v in outcome.recall.items()},
            "alert_seconds": outcome.seconds,
        }

    return scores


def run_compare(args: argparse.Namespace, settings: Settings) -> int:
    """Measure every row and print the table (or, with ``--json``, one JSON object)."""
    from models.compare import ROWS, compare, load_rows, parse_checkpoint_overrides
    from models.serving import CheckpointError, default_threads

    if args.plot is not None:
        print("error: --plot draws one checkpoint; leave it out with --compare", file=sys.stderr)
        return EXIT_CONFIG
    chosen = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in chosen if k not in ROWS]
    if unknown or not chosen:
        print(
            f"error: --kinds {args.kinds!r}: {', '.join(unknown) or 'none given'} not among "
            f"{', '.join(ROWS)}",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if args.seconds <= 0:
        print(f"error: --seconds {args.seconds} must be above 0", file=sys.stderr)
        return EXIT_CONFIG
    if args.threads < 0:
        print(f"error: --threads {args.threads} must be 0 (one per core) or more", file=sys.stderr)
        return EXIT_CONFIG
    threads = args.threads or default_threads()
    try:
        overrides = parse_checkpoint_overrides(args.checkpoint or [])
        rows = load_rows(overrides, threads=threads, kinds=chosen)
        scores = alert_scores(
            args.alert_machines, args.alert_ticks, args.alert_seed, settings.alerts.threshold_c
        )
    except (ValueError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    report = compare(rows, alerts=scores, seconds=args.seconds, progress=logger.info)
    report["setup"] = {
        "threads": threads,
        "batch": 1000,
        "alert_fleet": {
            "machines": args.alert_machines,
            "ticks": args.alert_ticks,
            "seed": args.alert_seed,
        },
        "gradient_ratio": "|d y / d x_1| / |d y / d x_T|, mean over 256 simulated windows",
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print(table(report))
    return 0


def _number(value: float | None, spec: str) -> str:
    """``value`` formatted, or a dash as wide for a column that does not apply to the row."""
    width = int("".join(c for c in spec.split(",")[0].split(".")[0] if c.isdigit()) or 0)
    return f"{'-':>{width}}" if value is None else format(value, spec)


def table(report: Mapping[str, Any]) -> str:
    """The comparison as a fixed-width table, one row per kind."""
    setup = report["setup"]
    fleet = setup["alert_fleet"]
    lines = [
        f"windows/s at batch {setup['batch']:,} with {setup['threads']} thread(s); alert bench: "
        f"{fleet['machines']} machines x {fleet['ticks']} ticks, seed {fleet['seed']}; gradient "
        "ratio |dy/dx_1| / |dy/dx_T| over windows of 20 / 50 / 100",
        f"{'kind':<21} {'params':>7} {'torch/s':>9} {'onnx/s':>9} {'numpy/s':>9} "
        f"{'seed RMSE':>9} {'fleet RMSE':>10} {'recall':>6} {'lead':>5} {'false/10k':>9} "
        f"{'grad 20':>9} {'grad 50':>9} {'grad 100':>9}",
    ]
    for kind, row in report["kinds"].items():
        rates = row["windows_per_s"]
        ratio = row["gradient_ratio"]
        lines.append(
            f"{kind:<21} {row['parameters']:>7,} "
            + " ".join(_number(rates.get(r), ">9,.0f") for r in ("torch", "onnx", "numpy"))
            + f" {row['seed_rmse_c']:>9.3f} {row['fleet_rmse_c']:>10.3f} "
            f"{_number(row['recall'], '>6.0%')} {_number(row['median_lead_ticks'], '>5.1f')} "
            f"{_number(row['false_warnings_per_10k'], '>9.2f')} "
            + " ".join(_number(ratio[n], ">9.2e") for n in ("20", "50", "100"))
        )
    return "\n".join(lines)
