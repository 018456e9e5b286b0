"""End to end through a real mosquitto on loopback: ingest, latency, memory, and where time goes.

    python -m bench.e2e            # a table (progress on stderr)
    python -m bench.e2e --json     # one JSON object on stdout

Every measurement gets a fresh mosquitto (unbounded queues, no persistence) on a free loopback
port; the agent runs as its own process (``python -m forewarn.cli agent``, configured by
``FOREWARN_*`` variables, as deployed), so its CPU and memory are its own.

**Ingest: a backlog drain.** On a 2-core machine a Python publisher is slower than the agent
(docs/sizing.md), so publishing live would measure the publisher. Instead the consumer
is frozen (SIGSTOP: it stays connected and subscribed, and the broker queues for it as it
does for a persistent session that is away), several publisher processes queue N readings
(5,000 machines, each its readings in ``seq`` and ``ts`` order), and the consumer is thawed:
the rate at which its count then rises is the most it can take, whatever the publishers could
do. Freezing rather than restarting the consumer keeps start-up (torch's import, the alert
restore) out of the timing and works for QoS 0 as well: mosquitto queues QoS 0 for a
connected subscriber that falls behind when its queue is unbounded. The agent's count is
``forewarn_readings_total`` plus ``forewarn_readings_rejected_total`` from /metrics (it moves
at each tick), the rate a least-squares slope over the middle 80 % of the drain; lost is N
minus that count at the end, and every rejection is reported by reason (both must be 0). The
same backlog, the same way, goes to a bare paho subscriber that only counts messages — with
``loop_start``, as the agent — for the ratio. The agent is started with a long keepalive and
watchdog limit so that being frozen for the publishing does not end its connection or
itself; neither changes its work per reading.

**Gateway batches** (``--batch N``): the same backlog as ``{"readings": [...]}`` batches of N
on ``<prefix>/_gateway/<gateway>/telemetry`` into the QoS 1 agent, readings per second against
single messages. An agent without batch support sees none of them: reported as null.

**Latency**: 5,000 machines × 1 Hz published live for ``--latency-seconds`` after the windows
fill, into an instrumented agent process (:mod:`bench.latency`: the real Agent, timed from each
reading's hand-off by paho to the return of the forecast that used it). The agent exports no
such metric; see that module.

**Memory**: :mod:`bench.memory`, a fresh process per fleet size.

**Profile** (py-spy, when installed): the agent during a QoS 1 drain (its network thread and
its tick thread), and the tick alone at 5,000 machines × 1 Hz.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench import memory, profiling
from bench.loadgen import (
    Broker,
    FleetSlice,
    LiveSlice,
    broker,
    child_pids,
    cpu_seconds,
    drain,
    http_get,
    mosquitto_path,
    parse_metrics,
    publish_live,
    publish_slice,
    rejected_by_reason,
    resume,
    rss_mb,
    suspend,
    sustained_rate,
)
from forewarn.broker import free_port

REPO = Path(__file__).resolve().parents[1]
PREFIX = "bench"
SPAWN = multiprocessing.get_context("spawn")
POLL_S = 0.25
"""How often a drain is sampled: the agent's count moves only at its ticks anyway."""
STALL_S = 15.0
"""A drain that has not moved for this long is over: what is missing is lost."""


def log(message: str) -> None:
    print(f"[e2e] {message}", file=sys.stderr, flush=True)


# --- consumers ---------------------------------------------------------------------------


class AgentProcess:
    """An agent (or the instrumented agent of :mod:`bench.latency`) as a process of its own."""

    poll_s = 1.0
    """Its count comes from /metrics, and a scrape is not free: ~30 ms of the agent's CPU,
    holding the GIL, with its 500 per-machine series. Once a second costs it ~3 %."""

    def __init__(
        self,
        workdir: Path,
        port: int,
        qos: int,
        name: str,
        module: tuple[str, ...] = ("forewarn.cli", "agent"),
        profile_to: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.metrics_port = free_port()
        env = dict(os.environ)
        env |= {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
            "FOREWARN_LOG_LEVEL": env.get("FOREWARN_LOG_LEVEL", "WARNING"),
            "FOREWARN_MQTT__HOST": "127.0.0.1",
            "FOREWARN_MQTT__PORT": str(port),
            "FOREWARN_MQTT__TOPIC_PREFIX": PREFIX,
            "FOREWARN_MQTT__CLIENT_ID": name,
            # As JSON: a plain FOREWARN_MQTT__TELEMETRY_QOS=0 fails validation (the string
            # "0" is not the literal 0), while a JSON section keeps the number.
            "FOREWARN_MQTT": json.dumps({"telemetry_qos": qos}),
            # Frozen while a backlog is published: neither the broker nor the watchdog may
            # take that for a dead agent.
            "FOREWARN_MQTT__KEEPALIVE_S": "600",
            "FOREWARN_AGENT__STALL_AFTER_S": "600",
            # ... nor may the agent take its machines, silent while it was frozen, for stale
            # (that would restart their windows and stop their forecasts for a while).
            "FOREWARN_AGENT__STALE_AFTER_S": "600",
            "FOREWARN_METRICS__HOST": "127.0.0.1",
            "FOREWARN_METRICS__PORT": str(self.metrics_port),
        }
        env |= extra_env or {}
        command = [sys.executable, "-m", *module]
        spy = profiling.py_spy() if profile_to is not None else None
        if profile_to is not None and spy is not None:
            command = profiling.spy_command(profile_to, command, spy)
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        # In the work directory: a developer's .env must not reconfigure the measured agent.
        self.process = subprocess.Popen(
            command, env=env, cwd=workdir, stdout=self._log, stderr=self._log
        )
        self.pid = self.process.pid
        self._wait_healthy(spy is not None and profile_to is not None)

    def _wait_healthy(self, under_profiler: bool) -> None:
        deadline = time.monotonic() + 180
        while http_get(f"http://127.0.0.1:{self.metrics_port}/healthz")[0] != 200:
            if time.monotonic() > deadline or self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the agent did not become healthy:\n{tail}")
            time.sleep(0.2)
        if under_profiler:
            children = child_pids(self.process.pid)
            if len(children) != 1:
                raise RuntimeError(f"expected one process under py-spy, found {children}")
            self.pid = children[0]
        time.sleep(1.0)  # the telemetry subscription is in place well before this

    def samples(self) -> dict[str, float]:
        return parse_metrics(http_get(f"http://127.0.0.1:{self.metrics_port}/metrics")[1])

    def count(self) -> int:
        """Readings the agent has judged: accepted plus rejected."""
        samples = self.samples()
        rejected = sum(rejected_by_reason(samples).values())
        return int(samples.get("forewarn_readings_total", 0)) + rejected

    def window(self) -> int:
        """The served model's window, from ``forewarn_model_info``."""
        for key in self.samples():
            if key.startswith("forewarn_model_info{") and 'window="' in key:
                return int(key.split('window="', 1)[1].split('"', 1)[0])
        raise RuntimeError("forewarn_model_info names no window")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)  # the agent, also when py-spy is its parent
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


class BareDrain:
    """The bare paho subscriber of :func:`bench.loadgen.drain`, in its own process."""

    poll_s = POLL_S  # a counter in shared memory: reading it costs the subscriber nothing

    def __init__(self, port: int, qos: int) -> None:
        self.counter = SPAWN.Value("q", 0, lock=False)
        ready, self._stop = SPAWN.Event(), SPAWN.Event()
        self.process = SPAWN.Process(
            target=drain,
            args=(port, f"{PREFIX}/+/telemetry", qos, self.counter, ready, self._stop),
        )
        self.process.start()
        if not ready.wait(30):
            raise RuntimeError("the bare drain subscriber did not subscribe")
        assert self.process.pid is not None
        self.pid = self.process.pid

    def count(self) -> int:
        return int(self.counter.value)

    def samples(self) -> dict[str, float]:
        return {}

    def stop(self) -> None:
        self._stop.set()
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()


Consumer = AgentProcess | BareDrain


# --- the backlog drain -------------------------------------------------------------------


@dataclass(frozen=True)
class Backlog:
    """N = machines × steps readings from ``publishers`` processes, at ``qos``; each machine's
    readings ``first_step`` .. ``first_step + steps - 1``, ``ts`` counted from ``t0``."""

    machines: int
    steps: int
    publishers: int
    qos: int
    t0: float
    first_step: int = 0
    batch: int = 0
    machine_prefix: str = "m-"

    @property
    def readings(self) -> int:
        return self.machines * self.steps

    def then(self, steps: int, batch: int = 0) -> Backlog:
        """The same machines' next ``steps`` readings."""
        return replace(self, first_step=self.first_step + self.steps, steps=steps, batch=batch)


def publish_backlog(port: int, backlog: Backlog) -> float:
    """Publish the backlog through the broker; returns the seconds publishing took."""
    results = [SPAWN.Value("q", 0) for _ in range(backlog.publishers)]
    workers = [
        SPAWN.Process(
            target=publish_slice,
            args=(
                port,
                FleetSlice(
                    PREFIX,
                    backlog.machines,
                    worker,
                    backlog.publishers,
                    backlog.steps,
                    backlog.t0,
                    backlog.first_step,
                    backlog.machine_prefix,
                    backlog.batch,
                ),
                backlog.qos,
                results[worker],
            ),
        )
        for worker in range(backlog.publishers)
    ]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    published = sum(int(r.value) for r in results)
    if published != backlog.readings:
        raise RuntimeError(f"publishers sent {published} of {backlog.readings} readings")
    return time.perf_counter() - started


def start_of(window: int, *steps: int) -> float:
    """A ``t0`` that puts every reading of the run (window + steps per machine) in the past."""
    return time.time() - window - sum(steps) - 10


def drain_backlog(consumer: Consumer, bench_broker: Broker, backlog: Backlog) -> dict[str, Any]:
    """Freeze the consumer, queue the backlog, thaw it, and time how fast its count rises."""
    total = backlog.readings
    base = consumer.count()
    forecasts0 = consumer.samples().get("forewarn_forecasts_total", 0.0)
    suspend(consumer.pid)
    try:
        publish_s = publish_backlog(bench_broker.port, backlog)
        time.sleep(0.5)  # the broker finishes routing
        cpu0, broker0 = cpu_seconds(consumer.pid), bench_broker.cpu_s()
    finally:
        started = time.perf_counter()
        resume(consumer.pid)
    samples: list[tuple[float, float]] = []
    moved_at = started
    count = 0
    while True:
        time.sleep(consumer.poll_s)
        now = time.perf_counter()
        latest = consumer.count() - base
        samples.append((now - started, latest))
        if latest != count:
            count, moved_at = latest, now
        if count >= total or now - moved_at > STALL_S:
            break
    elapsed = (moved_at if count < total else now) - started
    cpu = cpu_seconds(consumer.pid) - cpu0
    broker_cpu = bench_broker.cpu_s() - broker0
    rate = sustained_rate(samples, total)
    forecasts = consumer.samples().get("forewarn_forecasts_total", 0.0) - forecasts0
    return {
        "per_s": round(rate) if rate else None,
        "readings": total,
        "counted": count,
        "lost": total - count,
        "rejected": rejected_by_reason(consumer.samples()),
        "elapsed_s": round(elapsed, 2),
        "cpu_us_per_reading": round(1e6 * cpu / max(1, count), 1),
        "broker_cpu_us_per_reading": round(1e6 * broker_cpu / max(1, count), 1),
        "publish_s": round(publish_s, 1),
        "forecasts": int(forecasts),
    }


def ingest(workdir: Path, args: argparse.Namespace, qos: int) -> dict[str, Any]:
    """The agent's and the bare drain's backlog drains at ``qos`` (and batches at QoS 1).

    The ingest-only drain is repeated ``args.drains`` times, each on a fleet of its own (a
    machine id prefix per round, so that no window fills and nothing is forecast), each round
    followed by the bare drain of the same backlog on a broker of its own: the ratio is the
    median of the rounds' ratios, so that a neighbour's burst of load slows both of a pair.
    """
    result: dict[str, Any] = {}
    with broker(workdir) as bench_broker, broker(workdir) as bare_broker:
        agent = AgentProcess(workdir, bench_broker.port, qos, f"bench-agent-qos{qos}")
        bare = BareDrain(bare_broker.port, qos)
        try:
            window = result["window"] = agent.window()
            t0 = start_of(window, args.steps, args.steps)
            rounds: list[dict[str, Any]] = []
            for round_ in range(max(1, args.drains)):
                # First window - 1 readings per machine: no window is full yet, so this drain
                # is ingest alone (decode, hand-off, window store).
                first = Backlog(
                    args.machines,
                    window - 1,
                    args.publishers,
                    qos,
                    t0,
                    machine_prefix="m-" if round_ == 0 else f"m{round_}-",
                )
                log(f"QoS {qos}: agent, ingest only, backlog of {first.readings:,} readings")
                alone = drain_backlog(agent, bench_broker, first)
                log(f"QoS {qos}: agent, ingest only {alone['per_s']}/s; bare paho drain")
                paired = drain_backlog(bare, bare_broker, first)
                log(f"QoS {qos}: bare drain {paired['per_s']}/s")
                rounds.append({"agent": alone, "bare": paired})
            result["ingest_only_rounds"] = rounds
            result["ingest_only"] = _median_run([r["agent"] for r in rounds])
            # The first round's machines' next readings complete their windows, and from
            # then on each reading is forecast: the agent in service.
            first = replace(first, machine_prefix="m-")
            backlog = first.then(args.steps)
            log(f"QoS {qos}: agent, every reading forecast, backlog of {backlog.readings:,}")
            result["agent"] = drain_backlog(agent, bench_broker, backlog)
            log(f"QoS {qos}: agent {result['agent']['per_s']}/s")
            if qos == 1 and args.batch > 0:
                result["batch"] = batches(agent, bench_broker, backlog.then(args.steps, args.batch))
            log(f"QoS {qos}: bare paho drain")
            result["bare"] = drain_backlog(bare, bare_broker, backlog)
            log(f"QoS {qos}: bare drain {result['bare']['per_s']}/s")
        finally:
            agent.stop()
            bare.stop()
    agent_rate, bare_rate = result["agent"]["per_s"], result["bare"]["per_s"]
    ratios = [
        r["agent"]["per_s"] / r["bare"]["per_s"]
        for r in rounds
        if r["agent"]["per_s"] and r["bare"]["per_s"]
    ]
    result["summary"] = {
        "agent_max_per_s": agent_rate,
        "drain_per_s": bare_rate,
        "ingest_only_per_s": result["ingest_only"]["per_s"],
        "ingest_only_ratio": round(statistics.median(ratios), 2) if ratios else None,
        "ingest_only_ratios": [round(ratio, 2) for ratio in ratios],
        "ingest_only_lost": sum(r["agent"]["lost"] for r in rounds),
        "lost": result["agent"]["lost"],
        "rejected": result["agent"]["rejected"],
        "drain_lost": result["bare"]["lost"],
        "ratio": round(agent_rate / bare_rate, 2) if agent_rate and bare_rate else None,
        "agent_cpu_us_per_reading": result["agent"]["cpu_us_per_reading"],
        "drain_cpu_us_per_reading": result["bare"]["cpu_us_per_reading"],
        "forecasts": result["agent"]["forecasts"],
    }
    return result


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median rate among ``runs`` (the lower middle one of an even count)."""
    ranked = sorted(runs, key=lambda run: run["per_s"] or 0)
    return ranked[(len(ranked) - 1) // 2]


def batches(agent: AgentProcess, bench_broker: Broker, backlog: Backlog) -> dict[str, Any]:
    """Gateway batches into the same agent; null with a note when it takes none of them."""
    log(f"gateway batches of {backlog.batch}: {backlog.readings:,} readings")
    run = drain_backlog(agent, bench_broker, backlog)
    run["size"] = backlog.batch
    if run["counted"] == 0:
        run["per_s"] = None
        run["note"] = "no batch reading reached the agent: gateway batches not supported here"
    elif run["lost"] or run["rejected"]:
        run["note"] = f"incomplete: lost {run['lost']}, rejected {run['rejected']}"
    log(f"gateway batches: {run['per_s']}/s")
    return run


# --- latency ------------------------------------------------------------------------------


def latency(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """5,000 machines × 1 Hz live into the instrumented agent; its report plus CPU used."""
    out = workdir / "latency.json"
    machines = args.latency_machines
    with broker(workdir) as bench_broker:
        log(
            f"latency: {machines:,} machines at 1 Hz, QoS {args.latency_qos}, "
            f"{args.latency_seconds:.0f} s measured"
        )
        harness = AgentProcess(
            workdir, bench_broker.port, 1, "bench-latency", ("bench.latency", "--out", str(out))
        )
        start_at = time.time() + 1.0
        sent = [SPAWN.Value("q", 0) for _ in range(args.publishers)]
        stop = SPAWN.Event()
        publishers = [
            SPAWN.Process(
                target=publish_live,
                args=(
                    bench_broker.port,
                    LiveSlice(PREFIX, machines, worker, args.publishers, 1.0, "l-"),
                    args.latency_qos,
                    start_at,
                    sent[worker],
                    stop,
                ),
            )
            for worker in range(args.publishers)
        ]
        try:
            for publisher in publishers:
                publisher.start()
            # Measure once every machine has a full window and a forecast, plus a few ticks.
            deadline = time.monotonic() + 300
            while harness.samples().get("forewarn_forecasts_total", 0) < machines:
                if time.monotonic() > deadline:
                    raise RuntimeError("the windows did not fill within 5 minutes")
                time.sleep(0.5)
            time.sleep(2.0)
            os.kill(harness.pid, signal.SIGUSR1)
            cpu0, at0 = cpu_seconds(harness.pid), time.perf_counter()
            sent0 = sum(int(v.value) for v in sent)
            time.sleep(args.latency_seconds)
            cpu = cpu_seconds(harness.pid) - cpu0
            span = time.perf_counter() - at0
            published = sum(int(v.value) for v in sent) - sent0
            live_rss = rss_mb(harness.pid)
        finally:
            stop.set()
            harness.stop()
            for publisher in publishers:
                publisher.join(30)
                if publisher.is_alive():
                    publisher.kill()
    report: dict[str, Any] = json.loads(out.read_text())
    report["machines"] = machines
    report["cpu_cores_used"] = round(cpu / span, 2)
    report["rss_mb_live"] = None if live_rss is None else round(live_rss, 1)
    report["published_per_s"] = round(published / span)
    report["qos"] = args.latency_qos
    return report


# --- profiles -----------------------------------------------------------------------------


def profiles(workdir: Path, args: argparse.Namespace) -> dict[str, Any] | None:
    """py-spy over a QoS 1 drain and over ticks at 5,000 machines; None without py-spy."""
    spy = profiling.py_spy()
    if spy is None:
        return None
    drain_file, tick_file = workdir / "drain.raw", workdir / "tick.raw"
    with broker(workdir) as bench_broker:
        agent = AgentProcess(workdir, bench_broker.port, 1, "bench-profile", profile_to=drain_file)
        try:
            window = agent.window()
            first = Backlog(
                args.machines, window - 1, args.publishers, 1, start_of(window, args.steps)
            )
            backlog = first.then(args.steps)
            log(f"profile: QoS 1 drains of {first.readings:,} + {backlog.readings:,} under py-spy")
            drain_backlog(agent, bench_broker, first)
            under_profiler = drain_backlog(agent, bench_broker, backlog)
        finally:
            agent.stop()
    log(f"profile: ticks at {args.latency_machines:,} machines under py-spy")
    subprocess.run(
        profiling.spy_command(
            tick_file,
            [
                *(sys.executable, "-m", "bench.memory", "--one", str(args.latency_machines)),
                *("--ticks", "20", "--json"),
            ],
            spy,
        ),
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    return {
        "drain_qos1": profiling.profile_file(
            drain_file,
            [
                ("network thread", "Client.loop_forever", profiling.NETWORK_PARTS),
                ("tick thread", "Ticker._loop", profiling.TICK_PARTS),
            ],
        ),
        "drain_qos1_per_s_under_profiler": under_profiler["per_s"],
        "tick_5000": profiling.profile_file(
            tick_file, [("tick", "Ticker.tick", profiling.TICK_PARTS)]
        ),
    }


# --- the run and its table ----------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    from config.settings import load_settings

    settings = load_settings()
    report: dict[str, Any] = {
        "broker": _mosquitto_version(),
        "cores": os.cpu_count(),
        "tick_interval_s": settings.agent.tick_interval_s,
        "model_threads": settings.model.threads or None,
        "backlog": {
            "machines": args.machines,
            "steps": args.steps,
            "readings": args.machines * args.steps,
            "publishers": args.publishers,
        },
    }
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="forewarn-e2e-")))
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("qos1", lambda: ingest(workdir, args, 1)),
            ("qos0", lambda: ingest(workdir, args, 0)),
            ("latency", lambda: latency(workdir, args)),
            ("memory", lambda: memory.measure(_sizes(args.memory_sizes))),
        ]
        if args.profile:
            steps.append(("profile", lambda: profiles(workdir, args)))
        details: dict[str, Any] = {}
        for name, step in steps:
            if name in args.skip:
                continue
            started = time.perf_counter()
            details[name] = step()
            log(f"{name} done in {time.perf_counter() - started:.0f} s")
            if args.save is not None:  # a long run keeps what it measured if a later step fails
                args.save.write_text(json.dumps(report | {"details": details}))
    for qos in ("qos0", "qos1"):
        report[qos] = details[qos]["summary"] if qos in details else None
    report["batch"] = details.get("qos1", {}).get("batch")
    lat = details.get("latency")
    report["latency_ms"] = (
        None
        if lat is None
        else {
            "p50": lat["arrival_to_forecast_ms"]["p50"],
            "p99": lat["arrival_to_forecast_ms"]["p99"],
        }
    )
    report["tick_s"] = None if lat is None else lat["tick_s"]["p50"]
    mem = details.get("memory")
    report["rss_mb"] = None if mem is None else mem["rss_mb"]
    report["details"] = details
    report["targets"] = targets(report)
    return report


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(int(s) for s in text.split(",") if s)


def _mosquitto_version() -> str:
    try:
        out = subprocess.run([mosquitto_path(), "-h"], capture_output=True, text=True, check=False)
        return (out.stdout or out.stderr).splitlines()[0].strip()
    except (OSError, IndexError):
        return "mosquitto"


def targets(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's end-to-end targets, each as {"target", "value", "met"}."""
    out: dict[str, Any] = {}
    for qos in ("qos0", "qos1"):
        s = report.get(qos)
        if s:
            # The target is on ingest: the agent's per-message path against paho's own. With
            # every reading forecast as well, the model's share is the forecast path's target.
            ratio = s["ingest_only_ratio"]
            clean = s["ingest_only_lost"] == 0 and s["lost"] == 0 and not s["rejected"]
            out[f"{qos}_ingest"] = {
                "target": "agent ingest >= 0.6x bare paho drain (median of the drains), zero loss",
                "value": f"{ratio}x ingest only, {s['ratio']}x with every reading forecast; "
                f"lost {s['ingest_only_lost'] + s['lost']}, rejected {s['rejected'] or 0}",
                "met": bool(ratio and ratio >= 0.6 and clean),
            }
    lat = report.get("details", {}).get("latency")
    if report.get("latency_ms") and lat:
        # The tick is one reading interval (1 s at 1 Hz), not the agent's tick setting.
        limit = 1000.0 + 150
        p99 = report["latency_ms"]["p99"]
        kept_up = (lat.get("readings_per_s") or 0) >= 0.95 * lat["machines"]
        out["latency_p99"] = {
            "target": f"<= one reading interval + 150 ms = {limit:.0f} ms at "
            f"{lat['machines']:,} × 1 Hz",
            "value": ("no forecast measured" if p99 is None else f"{p99:.0f} ms")
            + ("" if kept_up else " (the agent did not keep up)"),
            "met": p99 is not None and p99 <= limit and kept_up,
        }
    rss = report.get("rss_mb") or {}
    if "10000" in rss:
        out["rss_10k"] = {
            "target": "<= 400 MB at 10,000 machines",
            "value": f"{rss['10000']} MB",
            "met": rss["10000"] <= 400,
        }
    return out


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def table(report: dict[str, Any]) -> str:
    d = report["details"]
    b = report["backlog"]
    window = next((d[q]["window"] for q in ("qos1", "qos0") if q in d), 20)
    lines = [
        f"end to end: {report['broker']} on loopback, {report['cores']} cores, agent tick "
        f"{report['tick_interval_s']} s, model threads {report['model_threads'] or 'default'}",
    ]
    if "qos0" in d or "qos1" in d:
        lines += [
            f"ingest: backlog drains, queued by {b['publishers']} publishers while the consumer "
            f"was frozen: {b['machines']:,} machines × {window - 1} readings (windows not yet "
            f"full: ingest only), then × {b['steps']} more (each forecast; the bare drain gets "
            "these)",
            f"{'':<34}{'agent/s':>9}{'bare paho/s':>12}{'agent/bare':>11}{'lost':>6}"
            f"{'rejected':>9}{'agent µs':>9}{'bare µs':>8}",
        ]
    for qos in ("qos0", "qos1"):
        if qos not in d:
            continue
        for key, what in (("ingest_only", "ingest only"), ("agent", "every reading forecast")):
            run = d[qos][key]
            if key == "ingest_only" and "ingest_only_rounds" in d[qos]:
                # The median round's own bare drain; the ratio is the median of the rounds'.
                bare = next(r["bare"] for r in d[qos]["ingest_only_rounds"] if r["agent"] == run)
                ratio = report[qos]["ingest_only_ratio"] or 0.0
                what = f"ingest only (median of {len(d[qos]['ingest_only_rounds'])})"
            else:
                bare = d[qos]["bare"]
                ratio = run["per_s"] / bare["per_s"] if run["per_s"] and bare["per_s"] else 0.0
            lines.append(
                f"  {qos.replace('qos', 'QoS ')}, {what:<26}{_rate(run['per_s']):>9}"
                f"{_rate(bare['per_s']):>12}{ratio:>11.2f}{run['lost']:>6}"
                f"{sum(run['rejected'].values()):>9}{run['cpu_us_per_reading']:>9.1f}"
                f"{bare['cpu_us_per_reading']:>8.1f}"
            )
    if "qos0" in d or "qos1" in d:
        lines.append(
            "  (µs: CPU per reading of the consumer process, all threads; bare drain lost: "
            + ", ".join(
                f"{q.replace('qos', 'QoS ')} {d[q]['bare']['lost']}" for q in d if "qos" in q
            )
            + ")"
        )
    batch = report.get("batch")
    if batch is not None:
        single = (report.get("qos1") or {}).get("agent_max_per_s")
        vs = (
            f"  ({batch['per_s'] / single:.2f}x single messages)"
            if batch["per_s"] and single
            else ""
        )
        lines.append(
            f"  gateway batches of {batch['size']} (QoS 1): {_rate(batch['per_s'])} readings/s"
            f"{vs}{'  ' + batch['note'] if batch.get('note') else ''}"
        )
    lat = d.get("latency")
    if lat is not None:
        a, p, t = (
            lat["arrival_to_forecast_ms"],
            lat["publish_to_forecast_ms"],
            lat["arrival_to_tick_end_ms"],
        )
        kept_up = (lat["readings_per_s"] or 0) >= 0.95 * lat["machines"]
        lines += [
            f"latency at {lat['machines']:,} machines × 1 Hz, published at QoS {lat['qos']} "
            f"({lat['span_s']:.0f} s measured; "
            f"{lat['published_per_s']:,} readings/s published, "
            f"{lat['readings_per_s'] or 0:,}/s reached the agent; "
            f"{lat['forecasts_joined']:,} forecasts, mean batch {lat['batch_mean']:,.0f}):",
            f"  reading arrival -> forecast   p50 {a['p50']:>7.1f} ms  p99 {a['p99']:>7.1f} ms  "
            f"max {a['max']:.1f} ms",
            f"  publish -> forecast           p50 {p['p50']:>7.1f} ms  p99 {p['p99']:>7.1f} ms",
            f"  arrival -> tick done (alerts) p50 {t['p50']:>7.1f} ms  p99 {t['p99']:>7.1f} ms",
            f"  forecasting tick p50 {lat['tick_s']['p50']:.3f} s  "
            f"p99 {lat['tick_s']['p99']:.3f} s; "
            f"forward p50 {lat['forecast_s']['p50']:.3f} s; agent CPU "
            f"{lat['cpu_cores_used']:.2f} cores; RSS {lat['rss_mb_live']} MB; "
            f"rejected {lat['rejected'] or 0}",
        ]
        if not kept_up:
            lines.append(
                "  NOTE: readings reached the agent slower than published (the machine is "
                "saturated: see publish -> forecast); arrival-based latency understates"
            )
    mem = d.get("memory")
    if mem is not None:
        lines.append(memory._table(mem))
    prof = d.get("profile")
    if prof is not None:
        lines.append(
            "where time goes (py-spy; shares of each thread's running time; the drain ran at "
            f"{_rate(prof['drain_qos1_per_s_under_profiler'])}/s under the profiler):"
        )
        for key, title in (("drain_qos1", "QoS 1 drain"), ("tick_5000", "ticks at 5,000 × 1 Hz")):
            for label, summary in (prof.get(key) or {}).items():
                lines += profiling.format_summary(f"{title}, {label}", summary)
    elif "profile" in d:
        lines.append("where time goes: py-spy not installed (.venv/bin/pip install py-spy)")
    lines.append("targets:")
    for name, t in report["targets"].items():
        lines.append(
            f"  {'MET    ' if t['met'] else 'NOT MET'} {name}: {t['value']} ({t['target']})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--machines", type=int, default=5000, help="machines in the backlog")
    parser.add_argument("--steps", type=int, default=20, help="readings per machine in it")
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes")
    parser.add_argument("--batch", type=int, default=100, help="gateway batch size; 0: skip")
    parser.add_argument(
        "--drains",
        type=int,
        default=5,
        help="ingest-only drains (each paired with a bare one): the ratio is their median",
    )
    parser.add_argument("--latency-machines", type=int, default=5000)
    parser.add_argument("--latency-seconds", type=float, default=30.0, help="measured span")
    parser.add_argument(
        "--latency-qos",
        type=int,
        choices=(0, 1),
        default=0,
        help="QoS the live fleet publishes at (forewarn simulate's default: 0)",
    )
    parser.add_argument("--memory-sizes", default="1000,10000,100000", help="comma-separated")
    parser.add_argument(
        "--no-profile", dest="profile", action="store_false", help="skip the py-spy profiles"
    )
    parser.add_argument("--save", type=Path, help="also write the report here, after each step")
    parser.add_argument(
        "--skip",
        default="",
        type=lambda text: set(filter(None, text.split(","))),
        help="comma-separated parts to skip: qos1, qos0, latency, memory, profile",
    )
    args = parser.parse_args(argv)
    report = run(args)
    if args.save is not None:
        args.save.write_text(json.dumps(report))
    if args.json:
        print(json.dumps(report))
    else:
        print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
