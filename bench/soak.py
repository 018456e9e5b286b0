"""Soak: a fleet through a real mosquitto into the agent, for minutes, watched every second.

Runs mosquitto, `forewarn agent` and `forewarn simulate` as separate processes (as deployed)
and checks what a long run must keep:

* /healthz answers 200 at every probe;
* the agent takes at least 95 % of the readings the broker delivered to it (taken + rejected);
* forecasts keep coming (in every 10 s after warm-up);
* the agent's resident memory after warm-up (the first fifth of the run, at least until the
  windows are full) grows by < 10 %.

    python -m bench.soak                                  # 1,000 machines at 2 Hz for 5 min
    python -m bench.soak --machines 200 --duration 60     # shorter
    python -m bench.soak --json                           # one JSON object on stdout

Exit status 0 when every check passes, 1 otherwise. Needs mosquitto (`make test` installs it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from forewarn.broker import free_port, stop_process, wait_for_port


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), ""
    except OSError:
        return 0, ""


def _samples(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("forewarn_") and " " in line:
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def soak(machines: int, rate_hz: float, duration_s: float, workdir: Path) -> dict[str, object]:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    broker_port, metrics_port = free_port(), free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {broker_port} 127.0.0.1\nallow_anonymous true\n"
        "max_queued_messages 100000\nlog_type error\nlog_type warning\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOREWARN_")}
    env |= {
        "FOREWARN_MQTT__HOST": "127.0.0.1",
        "FOREWARN_MQTT__PORT": str(broker_port),
        "FOREWARN_METRICS__HOST": "127.0.0.1",
        "FOREWARN_METRICS__PORT": str(metrics_port),
    }
    command = [sys.executable, "-m", "forewarn.cli"]
    logs = {name: (workdir / f"{name}.log").open("wb") for name in ("broker", "agent", "sim")}
    processes: list[subprocess.Popen[bytes]] = []
    report: dict[str, object] = {"machines": machines, "rate_hz": rate_hz, "duration_s": duration_s}
    try:
        broker = subprocess.Popen(
            [mosquitto, "-c", str(conf)], stdout=logs["broker"], stderr=logs["broker"]
        )
        processes.append(broker)
        wait_for_port(broker_port)
        agent = subprocess.Popen(
            [*command, "agent"], env=env, cwd=workdir, stdout=logs["agent"], stderr=logs["agent"]
        )
        processes.append(agent)
        health = f"http://127.0.0.1:{metrics_port}/healthz"
        deadline = time.monotonic() + 120
        while _get(health)[0] != 200:
            if time.monotonic() > deadline or agent.poll() is not None:
                raise RuntimeError("the agent did not become healthy; see agent.log")
            time.sleep(0.2)
        simulator = subprocess.Popen(
            [
                *command,
                "simulate",
                "--machines",
                str(machines),
                "--rate",
                str(rate_hz),
                "--duration",
                str(duration_s),
                "--qos",
                "1",
            ],
            env=env,
            cwd=workdir,
            stdout=logs["sim"],
            stderr=logs["sim"],
        )
        processes.append(simulator)
        started = time.monotonic()
        probes = unhealthy = 0
        rss: list[tuple[float, int]] = []
        forecasts: list[tuple[float, float]] = []
        last: dict[str, float] = {}
        while simulator.poll() is None and time.monotonic() - started < duration_s + 60:
            status, _ = _get(health)
            probes += 1
            unhealthy += status != 200
            code, text = _get(f"http://127.0.0.1:{metrics_port}/metrics")
            now = time.monotonic() - started
            if code == 200:
                last = _samples(text)
                forecasts.append((now, last.get("forewarn_forecasts_total", 0.0)))
            rss.append((now, _rss_bytes(agent.pid)))
            time.sleep(1.0)
        time.sleep(2.0)  # the last readings reach a tick
        last = _samples(_get(f"http://127.0.0.1:{metrics_port}/metrics")[1]) or last
    finally:
        for process in reversed(processes):
            stop_process(process, timeout_s=30)
        for log in logs.values():
            log.close()

    taken = last.get("forewarn_readings_total", 0.0)
    rejected = sum(v for k, v in last.items() if k.startswith("forewarn_readings_rejected_total"))
    delivered = taken + rejected
    warm_up_s = max(duration_s / 5, 2 * 20 / rate_hz)  # and windows (20 readings) are full
    warm = [value for at, value in rss if at >= warm_up_s]
    growth = (warm[-1] - warm[0]) / warm[0] if len(warm) >= 2 and warm[0] else float("nan")
    stalled_windows = [
        round(t0)
        for (t0, f0), (t1, f1) in zip(forecasts, forecasts[10:], strict=False)
        if warm_up_s <= t0 and t1 <= duration_s and f1 <= f0
    ]
    report |= {
        "published": int(machines * rate_hz * duration_s),
        "delivered_to_agent": int(delivered),
        "taken": int(taken),
        "taken_pct": round(100 * taken / delivered, 2) if delivered else 0.0,
        "rejected": {
            k.split('"')[1]: int(v)
            for k, v in last.items()
            if k.startswith("forewarn_readings_rejected_total") and v
        },
        "ticks_skipped": int(last.get("forewarn_ticks_skipped_total", 0.0)),
        "forecasts": int(last.get("forewarn_forecasts_total", 0.0)),
        "healthz_probes": probes,
        "healthz_not_200": unhealthy,
        "rss_after_warm_up_mb": round(warm[0] / 2**20, 1) if warm else None,
        "rss_at_end_mb": round(warm[-1] / 2**20, 1) if warm else None,
        "rss_growth_pct": round(100 * growth, 2),
        "seconds_without_new_forecasts": stalled_windows,
    }
    report["passed"] = bool(
        unhealthy == 0
        and delivered
        and taken >= 0.95 * delivered
        and not stalled_windows
        and growth < 0.10
    )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=2.0, help="readings per machine per s")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="forewarn-soak-") as directory:
        result = soak(args.machines, args.rate, args.duration, Path(directory))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>32}  {value}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
