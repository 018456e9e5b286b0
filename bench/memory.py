"""The agent's resident memory by fleet size: 1,000, 10,000 and 100,000 machines.

Feeding 100,000 machines a full window each through MQTT is 2.1 million messages, minutes of
publishing on a small machine, for a figure that does not depend on the transport. So each
size runs in a fresh process that builds the agent exactly as ``forewarn agent`` does
(``Agent(settings)`` with the agent's own settings: window store, forecaster, anomaly scorer,
alert policy, metrics, the MQTT client left unconnected) and feeds it readings through its own
hand-off and tick, ``window`` readings per machine, half the fleet per tick (1 Hz readings at
the default 0.5 s tick), until every machine has a full window and its first forecast. What is
left out is what does not grow with the fleet: paho's socket buffers and the network thread.

    python -m bench.memory                         # a table
    python -m bench.memory --json                  # one JSON object on stdout
    python -m bench.memory --one 5000 --ticks 100  # one size, then 100 more ticks (profiling)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.loadgen import peak_rss_mb, rss_mb, rss_split_mb

SIZES = (1_000, 10_000, 100_000)
REPO = Path(__file__).resolve().parents[1]


def _agent() -> Any:
    """The agent as ``forewarn agent`` builds it; the metrics listener on a free loopback port."""
    from agent.app import Agent
    from config.settings import load_settings

    settings = load_settings()
    settings.metrics.host = "127.0.0.1"
    settings.metrics.port = 0
    return Agent(settings)


def feed(machines: int, extra_ticks: int = 0) -> dict[str, Any]:
    """Build an agent, fill ``machines`` windows, tick; RSS before and after, tick times."""
    from wire.reading import Reading

    pid = os.getpid()
    agent = _agent()
    agent.forecaster.warm_up()
    baseline = rss_mb(pid)
    window = agent.forecaster.window
    features = len(agent.forecaster.features)
    ids = [f"mem-{i:06d}" for i in range(machines)]
    rng = np.random.default_rng(3)
    # A plausible healthy machine (°C, Hz, psi, rpm): no alerts, so no alert traffic.
    typical = np.array([60.0, 35.0, 120.0, 1650.0, 1.0, 1.0][:features], dtype=np.float32)
    level = typical * rng.uniform(0.9, 1.1, size=(machines, features)).astype(np.float32)
    rounds = window + extra_ticks // 2
    t0 = time.time() - rounds - 1
    tick_s: list[float] = []
    filled_at = window - 1  # from this round on every machine is forecast
    after_fill: float | None = None
    for step in range(rounds):
        noise = rng.normal(0.0, 0.01, size=(machines, features)).astype(np.float32)
        values = level * (1 + noise)
        ts = t0 + step
        for half in (0, 1):
            for i in range(half, machines, 2):
                agent.hand_off(Reading(ids[i], ts, step, values[i].copy()))
            started = time.perf_counter()
            agent.tick()
            if step >= filled_at:
                tick_s.append(time.perf_counter() - started)
        if step == filled_at:
            after_fill = rss_mb(pid)
    forecasts = int(agent.metrics.registry.get_sample_value("forewarn_forecasts_total") or 0)
    rss = rss_mb(pid)
    return {
        "machines": machines,
        "baseline_mb": _mb(baseline),
        "rss_mb": _mb(rss),
        "rss_after_fill_mb": _mb(after_fill),
        "peak_rss_mb": _mb(peak_rss_mb(pid)),
        **rss_split_mb(pid),
        "forecasts": forecasts,
        "tick_s_p50": round(float(np.median(tick_s)), 4) if tick_s else None,
        "store_mb": _mb(_store_bytes(agent) / 2**20),
    }


def _store_bytes(agent: Any) -> float:
    """Bytes held by the per-slot arrays of the window store, policy and anomaly scorer."""
    total = 0
    for owner in (agent.store, agent.policy, agent.anomaly):
        for value in vars(owner).values():
            if isinstance(value, np.ndarray) and value.base is None:  # views hold no memory
                total += value.nbytes
    return float(total)


def _mb(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def measure(sizes: tuple[int, ...] = SIZES, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Each size in a fresh process (RSS never shrinks back, so sizes must not share one)."""
    results: dict[str, Any] = {}
    for size in sizes:
        completed = subprocess.run(
            [sys.executable, "-m", "bench.memory", "--one", str(size), "--json"],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"bench.memory --one {size} failed:\n{completed.stderr[-2000:]}")
        results[str(size)] = json.loads(completed.stdout)
    report: dict[str, Any] = {
        "rss_mb": {size: r["rss_mb"] for size, r in results.items()},
        "sizes": results,
    }
    report |= growth(results)
    return report


def growth(results: dict[str, Any]) -> dict[str, Any]:
    """Memory per machine, from the two largest sizes (the slope, not the fixed cost)."""
    sizes = sorted(results, key=int)
    if len(sizes) < 2:
        return {"per_machine_kb": None, "baseline_mb": None}
    small, large = results[sizes[-2]], results[sizes[-1]]
    per_machine = (large["rss_mb"] - small["rss_mb"]) * 1024 / (int(sizes[-1]) - int(sizes[-2]))
    return {
        "per_machine_kb": round(per_machine, 2),
        "per_1k_machines_mb": round(per_machine * 1000 / 1024, 2),
        "baseline_mb": results[sizes[0]]["baseline_mb"],
    }


def _table(report: dict[str, Any]) -> str:
    lines = [
        "agent memory (fresh process per size, the agent's own settings, in-process feed)",
        f"{'machines':>9} {'RSS MB':>8} {'anon MB':>8} {'file MB':>8} {'peak MB':>8} "
        f"{'arrays MB':>10} {'tick p50 s':>11}",
    ]
    for size, r in report["sizes"].items():
        lines.append(
            f"{int(size):>9,} {r['rss_mb']:>8.1f} {r.get('anon_mb') or 0:>8.1f} "
            f"{r.get('file_mb') or 0:>8.1f} {r['peak_rss_mb']:>8.1f} {r['store_mb']:>10.1f} "
            f"{r['tick_s_p50'] or 0:>11.3f}"
        )
    lines.append(
        "(anon: the process's own memory; file: mapped libraries, shared and reclaimable, and "
        "higher on a fresh install than on a warm one)"
    )
    lines.append(
        f"before any machine: {report['baseline_mb']} MB; growth {report['per_machine_kb']} "
        f"KB per machine ({report['per_1k_machines_mb']} MB per 1,000)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated")
    parser.add_argument("--one", type=int, metavar="N", help="measure N machines in this process")
    parser.add_argument("--ticks", type=int, default=0, help="with --one: ticks after the fill")
    args = parser.parse_args(argv)
    if args.one is not None:
        result = feed(args.one, args.ticks)
        print(json.dumps(result) if args.json else result)
        return 0
    report = measure(tuple(int(s) for s in args.sizes.split(",")))
    print(json.dumps(report) if args.json else _table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
