"""Start-up: from exec to ``/healthz`` 200, for each runtime, on a reachable broker.

A gateway restarts its agent after an update, a crash or a reboot; until ``/healthz`` answers
200 it forecasts nothing. Each run starts ``python -m forewarn.cli agent`` as a fresh process
(the shipped model, the agent's own settings but for the broker and the metrics port) against
a mosquitto already listening on loopback, and polls ``/healthz`` every 10 ms from the moment
of the exec: the time to the first 200 is the figure. Runtimes run in turns, so that a
neighbour's burst of load falls on all of them alike; the figure is the median of the runs.

What the time goes to is in ``python -X importtime -m forewarn.cli agent`` (imports) and the
agent's log (the broker's CONNACK, the alert restore's wait for retained alerts).

    python -m bench.startup                      # a table
    python -m bench.startup --json --runs 5      # one JSON object on stdout
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.loadgen import broker, http_get
from forewarn.broker import free_port

REPO = Path(__file__).resolve().parents[1]
RUNTIMES = ("numpy", "onnx", "torch")
POLL_S = 0.01
TIMEOUT_S = 120.0
TARGET_S = 1.5
"""The issue's limit for an agent serving without torch."""


def time_to_healthy(port: int, runtime: str, workdir: Path) -> float:
    """Seconds from the exec of one agent serving with ``runtime`` to its first 200."""
    metrics_port = free_port()
    env = dict(os.environ)
    env |= {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        "FOREWARN_LOG_LEVEL": "WARNING",
        "FOREWARN_MQTT__HOST": "127.0.0.1",
        "FOREWARN_MQTT__PORT": str(port),
        "FOREWARN_MQTT__CLIENT_ID": f"bench-startup-{runtime}",
        "FOREWARN_METRICS__HOST": "127.0.0.1",
        "FOREWARN_METRICS__PORT": str(metrics_port),
        "FOREWARN_MODEL__RUNTIME": runtime,
    }
    url = f"http://127.0.0.1:{metrics_port}/healthz"
    log = (workdir / f"agent-{runtime}.log").open("wb")
    started = time.perf_counter()
    # In the work directory: a developer's .env must not reconfigure the measured agent.
    process = subprocess.Popen(
        [sys.executable, "-m", "forewarn.cli", "agent"],
        env=env,
        cwd=workdir,
        stdout=log,
        stderr=log,
    )
    try:
        while http_get(url, timeout=1.0)[0] != 200:
            if process.poll() is not None or time.perf_counter() - started > TIMEOUT_S:
                tail = (workdir / f"agent-{runtime}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the agent ({runtime}) did not become healthy:\n{tail}")
            time.sleep(POLL_S)
        return time.perf_counter() - started
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def measure(runtimes: tuple[str, ...], runs: int) -> dict[str, Any]:
    """Each runtime ``runs`` times, in turns, against one broker."""
    seconds: dict[str, list[float]] = {runtime: [] for runtime in runtimes}
    with tempfile.TemporaryDirectory(prefix="forewarn-startup-") as directory:
        workdir = Path(directory)
        with broker(workdir) as bench_broker:
            for _ in range(runs):
                for runtime in runtimes:
                    seconds[runtime].append(time_to_healthy(bench_broker.port, runtime, workdir))
    report: dict[str, Any] = {
        "runs": runs,
        "healthy_s": {
            runtime: {
                "median": round(statistics.median(times), 3),
                "min": round(min(times), 3),
                "max": round(max(times), 3),
            }
            for runtime, times in seconds.items()
        },
    }
    lean = [report["healthy_s"][r]["median"] for r in runtimes if r != "torch"]
    report["targets"] = {
        "healthy_without_torch": {
            "target": f"<= {TARGET_S} s from exec to /healthz 200 without torch (median)",
            "value": ", ".join(
                f"{r} {report['healthy_s'][r]['median']} s" for r in runtimes if r != "torch"
            ),
            "met": bool(lean) and max(lean) <= TARGET_S,
        }
    }
    return report


def table(report: dict[str, Any]) -> str:
    lines = [
        f"exec to /healthz 200 on a reachable broker, median of {report['runs']} runs each",
        f"{'runtime':<8}{'median s':>10}{'min s':>8}{'max s':>8}",
    ]
    for runtime, figures in report["healthy_s"].items():
        lines.append(
            f"{runtime:<8}{figures['median']:>10.3f}{figures['min']:>8.3f}{figures['max']:>8.3f}"
        )
    for name, target in report["targets"].items():
        verdict = "MET" if target["met"] else "NOT MET"
        lines.append(f"{verdict:<8}{name}: {target['value']} ({target['target']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--runs", type=int, default=5, help="starts per runtime")
    parser.add_argument(
        "--runtimes", default=",".join(RUNTIMES), help="comma-separated: numpy, onnx, torch"
    )
    args = parser.parse_args(argv)
    runtimes = tuple(filter(None, args.runtimes.split(",")))
    report = measure(runtimes, max(1, args.runs))
    print(json.dumps(report) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
