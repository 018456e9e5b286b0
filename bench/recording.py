"""What recording costs the agent, through a real mosquitto: CPU with recording on and off.

    python -m bench.recording            # a table (progress on stderr)
    python -m bench.recording --json     # one JSON object on stdout

A fresh mosquitto on a free loopback port; 5,000 machines × 1 Hz published live (the
simulator's payloads, :func:`bench.loadgen.publish_live`) at QoS 1; two agent processes
(``python -m forewarn.cli agent``, as deployed) subscribed to the same readings at once, one
with ``recording.enabled`` and one without. Both take every reading of the same stream at the
same moments, so the comparison is interleaved as finely as it can be: each round of
``--round-seconds`` measures the CPU time (/proc, all threads) of both processes over the same
span, and the per-round ratio on/off is reported with its median. Their counts of readings
taken (``forewarn_readings_total``) say both kept up.

The recording agent writes to a folder capped small (``--cap-mib``, files of ``--file-kib``)
so that rotation and dropping of the oldest file happen during the run; a sampler thread
reads the folder's size every 50 ms, and its largest value is reported against the cap. The
bytes per reading are the agent's own counters (``forewarn_recording_bytes_total`` over
``forewarn_recording_readings_total``), and from them how many days of this fleet a 10 GB
(10^10 bytes) folder holds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.e2e import PREFIX, SPAWN, AgentProcess
from bench.loadgen import LiveSlice, broker, cpu_seconds, publish_live
from models.recording import recording_files

TEN_GB = 10**10
NOT_RECORDED = "forewarn_recording_readings_dropped_total{"


def log(message: str) -> None:
    print(f"[recording] {message}", file=sys.stderr, flush=True)


class FolderWatch:
    """Samples the recording folder's size in a thread; keeps the largest seen."""

    def __init__(self, folder: Path, every_s: float = 0.05) -> None:
        self.folder = folder
        self.every_s = every_s
        self.largest = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FolderWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def size(self) -> int:
        total = 0
        for path in recording_files(self.folder):
            with contextlib.suppress(FileNotFoundError):  # dropped since the listing
                total += path.stat().st_size
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.largest = max(self.largest, self.size())
            self.samples += 1
            self._stop.wait(self.every_s)


def writer_cost(machines: int, ticks: int, folder: Path) -> float:
    """CPU µs per reading of the recorder's own work (picking, packing, compressing, writing a
    tick of ``machines`` simulated readings), measured in this process on its own, alone."""
    import numpy as np

    from agent.metrics import AgentMetrics
    from agent.recording import Recorder
    from config.fields import FEATURES
    from config.recording import RecordingSettings
    from simulator.fleet import Fleet
    from wire.reading import Reading

    fleet = Fleet(machines=machines, seed=11, machine_prefix="r-")
    folder.mkdir(parents=True, exist_ok=True)  # what Recorder.start does; no writer thread
    settings = RecordingSettings(enabled=True, directory=folder, max_bytes=64 * 1024 * 1024)
    recorder = Recorder(settings, FEATURES, AgentMetrics())
    accepted = np.ones(machines, dtype=np.bool_)
    spent = 0.0
    for step in range(ticks):
        values = fleet.readings(step).astype(np.float32)
        now = time.time()
        readings = [
            Reading(machine_id, now + i / machines, step, values[i])
            for i, machine_id in enumerate(fleet.machine_ids)
        ]
        started = time.thread_time()
        recorder.record(readings, accepted)
        recorder.flush()
        spent += time.thread_time() - started
    recorder.stop()
    return 1e6 * spent / (machines * ticks)


def run(args: argparse.Namespace) -> dict[str, Any]:
    machines = args.machines
    cap = args.cap_mib * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="forewarn-bench-recording-") as tmp:
        workdir = Path(tmp)
        folder = workdir / "recordings"
        with broker(workdir) as bench_broker:
            log(f"{machines:,} machines at 1 Hz, QoS 1, two agents (recording on / off)")
            recording_env = {
                "FOREWARN_RECORDING__ENABLED": "true",
                "FOREWARN_RECORDING__DIRECTORY": str(folder),
                "FOREWARN_RECORDING__MAX_BYTES": str(cap),
                "FOREWARN_RECORDING__FILE_BYTES": str(args.file_kib * 1024),
            }
            on = AgentProcess(
                workdir, bench_broker.port, 1, "agent-recording-on", extra_env=recording_env
            )
            off = AgentProcess(workdir, bench_broker.port, 1, "agent-recording-off")
            start_at = time.time() + 1.0
            sent = [SPAWN.Value("q", 0) for _ in range(args.publishers)]
            stop = SPAWN.Event()
            publishers = [
                SPAWN.Process(
                    target=publish_live,
                    args=(
                        bench_broker.port,
                        LiveSlice(PREFIX, machines, worker, args.publishers, 1.0, "r-"),
                        1,
                        start_at,
                        sent[worker],
                        stop,
                    ),
                )
                for worker in range(args.publishers)
            ]
            rounds: list[dict[str, float]] = []
            try:
                with FolderWatch(folder) as watch:
                    for publisher in publishers:
                        publisher.start()
                    deadline = time.monotonic() + 300
                    while (
                        min(
                            agent.samples().get("forewarn_forecasts_total", 0)
                            for agent in (on, off)
                        )
                        < machines
                    ):
                        if time.monotonic() > deadline:
                            raise RuntimeError("the windows did not fill within 5 minutes")
                        time.sleep(1.0)
                    log("windows full; measuring")
                    for index in range(args.rounds):
                        taken0 = [a.samples().get("forewarn_readings_total", 0) for a in (on, off)]
                        cpu0 = [cpu_seconds(a.pid) for a in (on, off)]
                        at0 = time.perf_counter()
                        time.sleep(args.round_seconds)
                        cpu = [cpu_seconds(a.pid) - c for a, c in zip((on, off), cpu0, strict=True)]
                        span = time.perf_counter() - at0
                        taken = [
                            a.samples().get("forewarn_readings_total", 0) - t
                            for a, t in zip((on, off), taken0, strict=True)
                        ]
                        per = [1e6 * c / max(1.0, t) for c, t in zip(cpu, taken, strict=True)]
                        row = {
                            "span_s": round(span, 2),
                            "on_cpu_s": round(cpu[0], 2),
                            "off_cpu_s": round(cpu[1], 2),
                            "on_taken": int(taken[0]),
                            "off_taken": int(taken[1]),
                            "on_us_per_reading": round(per[0], 1),
                            "off_us_per_reading": round(per[1], 1),
                            "ratio_per_reading": round(per[0] / per[1], 3),
                            "on_cpu_cores": round(cpu[0] / span, 3),
                            "off_cpu_cores": round(cpu[1] / span, 3),
                            "on_readings_per_s": round(taken[0] / span),
                            "off_readings_per_s": round(taken[1] / span),
                            "ratio": round(cpu[0] / cpu[1], 3) if cpu[1] else float("nan"),
                        }
                        rounds.append(row)
                        log(f"round {index + 1}: {row}")
                    samples = on.samples()
                    folder_now = watch.size()
                largest, watch_samples = watch.largest, watch.samples
            finally:
                stop.set()
                for publisher in publishers:
                    publisher.join(30)
                    if publisher.is_alive():
                        publisher.kill()
                on.stop()
                off.stop()
        log("the recorder alone, in this process")
        alone_us = writer_cost(machines, 20, workdir / "alone")
    recorded = samples.get("forewarn_recording_readings_total", 0.0)
    written = samples.get("forewarn_recording_bytes_total", 0.0)
    per_reading = written / recorded if recorded else float("nan")
    ratios = [r["ratio"] for r in rounds]
    on_total = sum(r["on_cpu_s"] for r in rounds)
    off_total = sum(r["off_cpu_s"] for r in rounds)
    on_per = 1e6 * on_total / max(1, sum(r["on_taken"] for r in rounds))
    off_per = 1e6 * off_total / max(1, sum(r["off_taken"] for r in rounds))
    return {
        "machines": machines,
        "rate_hz": 1.0,
        "cores": os.cpu_count(),
        "rounds": rounds,
        "cpu_ratio_median": round(statistics.median(ratios), 3),
        "cpu_ratio_overall": round(on_total / off_total, 3),
        "extra_cpu_percent": round(100 * (on_total / off_total - 1), 1),
        "on_us_per_reading": round(on_per, 1),
        "off_us_per_reading": round(off_per, 1),
        "per_reading_ratio_median": round(
            statistics.median(r["ratio_per_reading"] for r in rounds), 3
        ),
        "per_reading_ratio_overall": round(on_per / off_per, 3),
        "extra_cpu_per_reading_percent": round(100 * (on_per / off_per - 1), 1),
        "recorder_alone_us_per_reading": round(alone_us, 2),
        "recorder_alone_percent_of_off_agent": round(100 * alone_us / off_per, 1),
        "cap_bytes": cap,
        "file_bytes": args.file_kib * 1024,
        "folder_largest_bytes": largest,
        "folder_samples": watch_samples,
        "folder_now_bytes": folder_now,
        "folder_within_cap": largest <= cap,
        "files_dropped": int(samples.get("forewarn_recording_files_dropped_total", 0)),
        "readings_recorded": int(recorded),
        "readings_not_recorded": int(
            sum(v for k, v in samples.items() if k.startswith(NOT_RECORDED))
        ),
        "bytes_per_reading": round(per_reading, 2),
        "days_in_10_gb": round(TEN_GB / (per_reading * machines * 86400), 1),
    }


def targets(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets: ≤ 10 % more agent CPU with recording on, measured while both
    agents took the fleet's full rate (95 % of it or more), and a folder within its cap."""
    offered = report["machines"] * report["rate_hz"]
    rounds = report["rounds"]
    taken = min(
        statistics.mean(r["on_readings_per_s"] for r in rounds),
        statistics.mean(r["off_readings_per_s"] for r in rounds),
    )
    at_rate = taken >= 0.95 * offered
    extra = max(report["extra_cpu_percent"], report["extra_cpu_per_reading_percent"])
    return {
        "at_full_rate": {"offered_per_s": offered, "taken_per_s": round(taken), "met": at_rate},
        "cpu": {"extra_percent": extra, "target_percent": 10.0, "met": at_rate and extra <= 10.0},
        "cap": {"met": bool(report["folder_within_cap"])},
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        f"recording at {report['machines']:,} machines × 1 Hz, through mosquitto "
        f"({report['cores']} cores), agent CPU on vs off, both agents on the same stream:",
        f"{'round':>5} {'on cores':>9} {'off cores':>10} {'on rd/s':>8} {'off rd/s':>9} "
        f"{'ratio':>6} {'on µs/rd':>9} {'off µs/rd':>10} {'ratio':>6}",
    ]
    for i, r in enumerate(report["rounds"], 1):
        lines.append(
            f"{i:>5} {r['on_cpu_cores']:>9.3f} {r['off_cpu_cores']:>10.3f} "
            f"{r['on_readings_per_s']:>8} {r['off_readings_per_s']:>9} {r['ratio']:>6.3f} "
            f"{r['on_us_per_reading']:>9.1f} {r['off_us_per_reading']:>10.1f} "
            f"{r['ratio_per_reading']:>6.3f}"
        )
    lines += [
        f"CPU on/off: median {report['cpu_ratio_median']:.3f}, overall "
        f"{report['cpu_ratio_overall']:.3f} ({report['extra_cpu_percent']:+.1f} %; target ≤ +10 %)",
        f"CPU per reading taken: on {report['on_us_per_reading']} µs, off "
        f"{report['off_us_per_reading']} µs: median ratio "
        f"{report['per_reading_ratio_median']:.3f}, "
        f"overall {report['per_reading_ratio_overall']:.3f} "
        f"({report['extra_cpu_per_reading_percent']:+.1f} %)",
        f"the recorder alone: {report['recorder_alone_us_per_reading']} µs per reading, "
        f"{report['recorder_alone_percent_of_off_agent']} % of the agent's CPU per reading",
        f"folder: largest {report['folder_largest_bytes']:,} B of a {report['cap_bytes']:,} B cap "
        f"({report['folder_samples']} samples; within cap: {report['folder_within_cap']}), "
        f"{report['files_dropped']} files dropped",
        f"{report['bytes_per_reading']} bytes per reading ({report['readings_recorded']:,} "
        f"recorded, {report['readings_not_recorded']} not): a 10 GB folder holds "
        f"{report['days_in_10_gb']} days of this fleet",
    ]
    verdict = report.get("targets")
    if verdict:
        rate = verdict["at_full_rate"]
        lines.append(
            f"targets: full rate {rate['met']} ({rate['taken_per_s']:,} of "
            f"{rate['offered_per_s']:,.0f} readings/s taken), CPU ≤ +10 % "
            f"{verdict['cpu']['met']} (+{verdict['cpu']['extra_percent']} % at worst), "
            f"cap {verdict['cap']['met']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=int, default=5000)
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--round-seconds", type=float, default=10.0)
    parser.add_argument("--cap-mib", type=int, default=2, help="the recording folder's cap")
    parser.add_argument("--file-kib", type=int, default=256, help="the recording's file size")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    report = run(args)
    report["targets"] = targets(report)
    print(json.dumps(report) if args.json else table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
