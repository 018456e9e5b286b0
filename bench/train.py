"""The shipped training recipe, three seeds: how good, and how repeatable, a trained model is.

Trains the recipe behind ``models/default.pt`` (``forewarn train``'s defaults) once per seed and
reports each model's next-step RMSE on the seed split (targets t = 804..999, °C) with mean ± std,
next to the seed recipe's reference (2.80 ± 0.17 °C over 5 seeds) and the baselines. Each model
is a single trained network, never an average of several.

    python -m bench.train                   # a table (takes several minutes per seed)
    python -m bench.train --json            # one JSON object on stdout
    python -m bench.train --seeds 1,2,3 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import torch

from models.checkpoint import forecaster_from_checkpoint
from models.evaluate import seed_split
from models.train import TrainConfig, train

SEED_RECIPE_RMSE_C = (2.80, 0.17)
"""The seed recipe's LSTM on the same split: mean and std over 5 seeds (reference numbers)."""


def _progress(message: str) -> None:
    if not message.startswith("  batch"):
        print(message, file=sys.stderr, flush=True)


def run(seeds: list[int], threads: int, device: str) -> dict[str, Any]:
    torch.set_num_threads(threads)
    runs: list[dict[str, Any]] = []
    baselines: dict[str, float] = {}
    for seed in seeds:
        started = time.monotonic()
        config = TrainConfig(seed=seed, device=device, threads=threads)
        checkpoint = train(config, progress=_progress)
        forecaster = forecaster_from_checkpoint(checkpoint, device="cpu", threads=threads)
        errors = seed_split(forecaster)
        baselines = {k: v["rmse_c"] for k, v in errors.items() if k != "checkpoint"}
        runs.append(
            {
                "seed": seed,
                "rmse_c": errors["checkpoint"]["rmse_c"],
                "mae_c": errors["checkpoint"]["mae_c"],
                "train_seconds": round(time.monotonic() - started, 1),
                "best_epoch": checkpoint.report.get("best_epoch"),
            }
        )
        print(
            f"seed {seed}: seed-split RMSE {runs[-1]['rmse_c']:.3f} °C "
            f"({runs[-1]['train_seconds']:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    values = [float(r["rmse_c"]) for r in runs]
    return {
        "recipe": {k: v for k, v in vars(TrainConfig()).items() if k not in ("seed", "device")},
        "threads": threads,
        "runs": runs,
        "rmse_c_mean": statistics.fmean(values),
        "rmse_c_std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "seed_recipe_rmse_c": {"mean": SEED_RECIPE_RMSE_C[0], "std": SEED_RECIPE_RMSE_C[1]},
        "baselines_rmse_c": baselines,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seeds", default="2024,2025,2026", help="comma-separated seeds")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for training")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    args = parser.parse_args(argv)
    report = run([int(s) for s in args.seeds.split(",")], args.threads, args.device)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{'seed':>6}  {'RMSE °C':>8}  {'MAE °C':>7}  {'train s':>8}")
    for r in report["runs"]:
        print(
            f"{r['seed']:>6}  {r['rmse_c']:>8.3f}  {r['mae_c']:>7.3f}  {r['train_seconds']:>8.0f}"
        )
    print(
        f"mean ± std: {report['rmse_c_mean']:.3f} ± {report['rmse_c_std']:.3f} °C "
        f"(seed recipe {SEED_RECIPE_RMSE_C[0]:.2f} ± {SEED_RECIPE_RMSE_C[1]:.2f} °C)"
    )
    print(
        "baselines: " + ", ".join(f"{k} {v:.3f} °C" for k, v in report["baselines_rmse_c"].items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
