"""Forecast-path throughput: the agent's path against a bare forward and a per-machine loop.

All three use the same loaded model, the same batch and the agent's own thread setting, in one
run, so the ratios are comparable even on a noisy machine.

    python -m bench.inference            # a table
    python -m bench.inference --json     # one JSON object on stdout
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from agent.reading import Reading
from agent.window import WindowStore
from models.checkpoint import TorchForecaster
from simulator.fleet import Fleet


def _best_rate(run: Callable[[], object], windows: int, seconds: float) -> float:
    """Windows per second of the best of several repeats (the least disturbed one)."""
    run()  # warm-up
    rates: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(rates) < 3:
        started = time.perf_counter()
        run()
        rates.append(windows / (time.perf_counter() - started))
    return max(rates) if len(rates) < 5 else statistics.quantiles(rates, n=10)[-1]


def _filled_store(batch: int, window: int, features: int) -> WindowStore:
    fleet = Fleet(machines=batch, seed=1)
    history = fleet.history(0, window + 1).astype(np.float32)
    store = WindowStore(window, features, max_machines=batch)
    for tick in range(window + 1):
        for machine, machine_id in enumerate(fleet.machine_ids):
            store.append(Reading(machine_id, float(tick), tick, history[machine, tick]), 0.0)
    return store


def measure(batch: int, forecaster: TorchForecaster, seconds: float) -> dict[str, float]:
    store = _filled_store(batch, forecaster.window, len(forecaster.features))
    slots = np.arange(batch)
    windows = store.windows(slots)
    # The network normalises its own input, so the bare forward takes the raw windows.
    scaled = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
    module = forecaster.module

    def agent_path() -> object:
        store.fresh[:batch] = True
        ready = store.take_ready()
        return forecaster.forecast(ready.windows)

    @torch.inference_mode()
    def bare_torch() -> object:
        return module(scaled)

    @torch.inference_mode()
    def per_machine_loop() -> object:
        return [module(scaled[i : i + 1]) for i in range(batch)]

    loop_windows = min(batch, 1000)

    @torch.inference_mode()
    def loop_sample() -> object:
        return [module(scaled[i : i + 1]) for i in range(loop_windows)]

    results = {
        "agent_per_s": _best_rate(agent_path, batch, seconds),
        "torch_per_s": _best_rate(bare_torch, batch, seconds),
        "loop_per_s": _best_rate(
            per_machine_loop if batch <= 1000 else loop_sample, loop_windows, seconds
        ),
    }
    results["agent_vs_torch"] = results["agent_per_s"] / results["torch_per_s"]
    results["agent_vs_loop"] = results["agent_per_s"] / results["loop_per_s"]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--batches", default="100,1000,10000", help="comma-separated sizes")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = parser.parse_args(argv)
    forecaster = TorchForecaster.from_path(None, device="cpu")
    batches = {
        str(b): measure(b, forecaster, args.seconds) for b in map(int, args.batches.split(","))
    }
    report = {"threads": forecaster.threads, "model": forecaster.version, "batches": batches}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"model {report['model']}, {report['threads']} thread(s); windows per second")
    print(
        f"{'batch':>7} {'agent':>10} {'bare torch':>11} {'loop':>9} {'agent/torch':>12} "
        f"{'agent/loop':>11}"
    )
    for batch, r in batches.items():
        print(
            f"{batch:>7} {r['agent_per_s']:>10,.0f} {r['torch_per_s']:>11,.0f} "
            f"{r['loop_per_s']:>9,.0f} {r['agent_vs_torch']:>12.2f} {r['agent_vs_loop']:>11.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
