"""A live model swap under load, through a real mosquitto: nothing lost, no slow tick.

    python -m bench.swap                       # 5,000 machines at 1 Hz, a table
    python -m bench.swap --machines 2000 --json

A fresh mosquitto on a loopback port; publisher processes (spawned, QoS 1) send a simulated
fleet live at 1 Hz per machine, some machines overheating so that alert states are firing
when the model changes. The agent is the real :class:`agent.app.Agent`, in this process, so
that each tick can be timed and its alert states looked at as the swap installs the model.

Once every window is full the bench runs ``--baseline-s`` of normal ticks, then asks the
agent, one after the other, over its real paths:

* three refused models on the command topic (``<prefix>/_agents/<id>/model``): a truncated
  file, a model of the features in another order, a model with a NaN weight; each must be
  refused (``forewarn_model_reload_failures_total``) while the served model goes on;
* a good model on the command topic (the default LSTM retrained: same cost per tick);
* a good model by a file change (the served file rewritten in place, picked up by the watch);
* a change of kind on the command topic (the shipped GRU), whose own ticks are reported too:
  its forward is slower than the LSTM's, which is the new model's cost, not the swap's.

It prints readings lost (published and acknowledged by mosquitto, minus the readings the agent
counted: accepted or rejected with a reason; target 0), alert states lost or duplicated at the
swaps (each machine's state in the alert policy just before and just after a model is
installed must be the same; a firing event for a machine already firing at that severity is a
duplicate; target 0), and the slowest tick while each model was loaded, checked and installed
against 2x the p99 of the baseline's ticks, all measured in this one run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from agent.alerts import AlertEvent
from agent.app import Agent
from bench.loadgen import (
    MAX_OUTSTANDING,
    _publisher,
    broker,
    percentile,
    rejected_by_reason,
)
from config.settings import load_settings
from models.serving import ServingModel
from simulator.fleet import Fleet
from wire.payload import encode_reading

SPAWN = multiprocessing.get_context("spawn")
PREFIX = "factory"
SHIPPED = Path(__file__).resolve().parents[1] / "models"


def log(message: str) -> None:
    print(f"[swap] {message}", file=sys.stderr, flush=True)


def publish(port: int, machines: int, overheat: int, worker: int, workers: int,
            start_at: float, sent: Any, stop: Any) -> None:  # fmt: skip
    """Process target: this worker's machines live at 1 Hz, QoS 1, spread over each second."""
    fleet = Fleet(machines=machines, seed=7, overheat=overheat, overheat_within_ticks=60)
    mine = list(range(worker, machines, workers))
    offsets = [i / machines for i in mine]
    topics = [f"{PREFIX}/{fleet.machine_ids[i]}/telemetry" for i in mine]
    client, done = _publisher(port, f"bench-swap-{worker}")
    count = 0
    step = 0
    while not stop.is_set():
        values = fleet.readings(step)
        base = start_at + step
        for index, machine in enumerate(mine):
            delay = base + offsets[index] - time.time()
            if delay > 0.002:
                time.sleep(delay)
            while count - done[0] >= MAX_OUTSTANDING:
                time.sleep(0.0005)
            payload = encode_reading(fleet.machine_ids[machine], time.time(), step, values[machine])
            client.publish(topics[index], payload, qos=1)
            count += 1
        step += 1
        sent.value = done[0]
    while done[0] < count:
        time.sleep(0.005)
    sent.value = done[0]
    client.disconnect()
    client.loop_stop()


def copy_serving(source: Path, folder: Path, name: str) -> Path:
    for suffix in (".json", ".npz", ".onnx"):
        if source.with_suffix(suffix).exists():
            shutil.copy(source.with_suffix(suffix), folder / f"{name}{suffix}")
    document = orjson.loads((folder / f"{name}.json").read_bytes())
    document["weights"]["file"] = f"{name}.npz"
    if document.get("onnx"):
        document["onnx"]["file"] = f"{name}.onnx"
    (folder / f"{name}.json").write_bytes(orjson.dumps(document))
    return folder / f"{name}.json"


def candidates(folder: Path) -> None:
    """The model directory: the served LSTM, the GRU, and three models to refuse."""
    copy_serving(SHIPPED / "default.json", folder, "served")
    copy_serving(SHIPPED / "shipped" / "gru.json", folder, "gru")
    truncated = copy_serving(SHIPPED / "shipped" / "gru.json", folder, "truncated")
    npz = truncated.with_suffix(".npz")
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    order = copy_serving(SHIPPED / "shipped" / "gru.json", folder, "order")
    document = orjson.loads(order.read_bytes())
    first, *rest = document["features"]
    document["features"] = [first, *reversed(rest)]
    order.write_bytes(orjson.dumps(document))
    nan = ServingModel.load(SHIPPED / "shipped" / "gru.json")
    weight = next(iter(nan.weights))
    broken = np.array(nan.weights[weight], dtype=np.float32)
    broken.flat[0] = np.nan
    nan.weights = {**nan.weights, weight: broken}
    nan.path = None
    nan.save(folder / "nan.json", onnx_graph=False)
    retrained = ServingModel.load(SHIPPED / "default.json")
    retrained.weights = {k: np.asarray(w) * np.float32(0.999) for k, w in retrained.weights.items()}
    retrained.path = None
    retrained.save(folder / "retrained.json", onnx_graph=False)


class Watch:
    """Times every tick and checks alert states across every install."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.ticks: list[tuple[float, float]] = []  # (started, seconds)
        self.states_changed = 0
        self.firing: dict[str, str] = {}
        self.duplicates = 0
        self.events = 0
        ticker = agent.ticker
        tick, install = ticker.tick, ticker.install

        def timed_tick() -> list[AlertEvent]:
            started = time.monotonic()
            events = tick()
            self.ticks.append((started, time.monotonic() - started))
            return events

        def checked_install(apply: Any) -> None:
            def around() -> None:
                used = len(agent.store)
                before = agent.policy.state[:used].copy()
                apply()
                self.states_changed += int((agent.policy.state[:used] != before).sum())

            install(around)

        ticker.tick = timed_tick  # type: ignore[method-assign]
        ticker.install = checked_install  # type: ignore[method-assign]
        agent.alert_listeners.append(self.on_event)

    def on_event(self, event: AlertEvent) -> None:
        self.events += 1
        if event.status == "firing":
            if self.firing.get(event.machine_id) == event.severity:
                self.duplicates += 1
            self.firing[event.machine_id] = event.severity
        else:
            self.firing.pop(event.machine_id, None)

    def slowest(self, start: float, end: float) -> float:
        """The slowest tick that ran while a model was loaded, checked and installed
        (``start`` to ``end``: the model thread's own timing), and the first tick after it
        (the new model's first)."""
        after = [at for at, _ in self.ticks if at >= end]
        last = min(after, default=end)
        during = [seconds for at, seconds in self.ticks if at + seconds >= start and at <= last]
        return max(during, default=0.0)

    def p99(self, start: float, end: float) -> float:
        during = [seconds for at, seconds in self.ticks if start <= at <= end]
        return percentile(during, 99) or 0.0


def sample(agent: Agent, name: str, **labels: str) -> float:
    return agent.metrics.registry.get_sample_value(name, labels) or 0.0


def counted(agent: Agent) -> int:
    from prometheus_client import generate_latest

    from bench.loadgen import parse_metrics

    samples = parse_metrics(generate_latest(agent.metrics.registry).decode())
    rejected = sum(rejected_by_reason(samples).values())
    return int(sample(agent, "forewarn_readings_total")) + rejected


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="forewarn-swap-"))
    folder = workdir / "models"
    folder.mkdir()
    candidates(folder)
    with broker(workdir) as bench_broker:
        settings = load_settings(
            _env_file=None,
            mqtt={"host": "127.0.0.1", "port": bench_broker.port, "client_id": "bench-swap"},
            metrics={"host": "127.0.0.1", "port": 0},
            model={
                "checkpoint": folder / "served.json",
                "directory": folder,
                "watch_interval_s": 1.0,
            },
            agent={"state_dir": workdir / "state", "max_machines": args.machines * 2},
        )
        agent = Agent(settings)
        watch = Watch(agent)
        agent.start()
        assert agent.wait_connected(30), "the agent did not connect"
        log(f"agent serving {agent.forecaster.version}; {args.machines:,} machines at 1 Hz")
        sent = [SPAWN.Value("q", 0) for _ in range(args.publishers)]
        stop = SPAWN.Event()
        start_at = time.time() + 1.0
        publishers = [
            SPAWN.Process(
                target=publish,
                args=(
                    bench_broker.port,
                    args.machines,
                    args.overheat,
                    worker,
                    args.publishers,
                    start_at,
                    sent[worker],
                    stop,
                ),
            )
            for worker in range(args.publishers)
        ]
        swaps: list[dict[str, Any]] = []
        try:
            for process in publishers:
                process.start()
            deadline = time.monotonic() + 300
            while sample(agent, "forewarn_forecasts_total") < args.machines:
                if time.monotonic() > deadline:
                    raise RuntimeError("the windows did not fill within 5 minutes")
                time.sleep(0.5)
            log(f"windows full; {args.baseline_s:.0f} s of normal ticks")
            base_start = time.monotonic()
            time.sleep(args.baseline_s)
            base_end = time.monotonic()
            steps = [
                ("refused: truncated", b'{"live": "truncated.json"}'),
                ("refused: feature order", b'{"live": "order.json"}'),
                ("refused: NaN weight", b'{"live": "nan.json"}'),
                ("command: lstm -> lstm'", b'{"live": "retrained.json"}'),
            ]
            for name, payload in steps:
                swaps.append(swap_step(agent, watch, name, payload))
                time.sleep(args.gap_s)
            swaps.append(file_step(agent, watch, folder, args.gap_s))
            time.sleep(args.gap_s)
            # Last, a change of kind: the GRU's own forward is slower than the LSTM's here, so
            # its ticks are reported beside the swap's, not taken for the swap's cost.
            swaps.append(swap_step(agent, watch, "command: lstm' -> gru", b'{"live": "gru.json"}'))
            gru_start = time.monotonic()
            time.sleep(max(args.gap_s, 10.0))
            gru_end = time.monotonic()
        finally:
            stop.set()
            for process in publishers:
                process.join(60)
        published = sum(int(v.value) for v in sent)
        # An agent behind its readings still holds some in the broker or its hand-off: wait
        # until it has counted them all, or its count stops moving (what is missing then is
        # lost), at most --settle-s.
        settle = time.monotonic() + args.settle_s
        last = -1
        while time.monotonic() < settle:
            now = counted(agent)
            if now >= published or now == last:
                break
            last = now
            time.sleep(5.0)
        received = counted(agent)
        settled_s = round(args.settle_s - (settle - time.monotonic()), 1)
        p99 = watch.p99(base_start, base_end)
        report = {
            "machines": args.machines,
            "published": published,
            "counted_by_agent": received,
            "readings_lost": published - received,
            "settled_after_s": settled_s,
            "overload_dropped": int(
                sample(agent, "forewarn_readings_rejected_total", reason="overload")
            ),
            "rejected": int(received - sample(agent, "forewarn_readings_total")),
            "alert_events": watch.events,
            "machines_firing_at_end": len(watch.firing),
            "alert_states_changed_by_swaps": watch.states_changed,
            "alert_events_duplicated": watch.duplicates,
            "baseline_ticks": len([1 for at, _ in watch.ticks if base_start <= at <= base_end]),
            "tick_p99_s": round(p99, 4),
            "tick_max_s": round(watch.slowest(base_start, base_end), 4),
            "gru_tick_p99_s": round(watch.p99(gru_start, gru_end), 4),
            "tick_limit_s": round(2 * p99, 4),
            "ticks_skipped": int(sample(agent, "forewarn_ticks_skipped_total")),
            "swaps": swaps,
            "served_at_end": agent.forecaster.version,
        }
        agent.stop()
    for step in report["swaps"]:
        step["slowest_tick_s"] = round(watch.slowest(*step.pop("window")), 4)
        step["within_limit"] = step["slowest_tick_s"] <= report["tick_limit_s"]
    return report


def swap_step(agent: Agent, watch: Watch, name: str, payload: bytes) -> dict[str, Any]:
    before = agent.forecaster.version
    refusals = agent.models.refusals
    start = time.monotonic()
    agent.models.handle_command("bench", payload)
    agent.models.wait_idle(120)
    loaded, end = agent.models.last_load
    step = {
        "step": name,
        "seconds": round(end - loaded, 2),
        "window": (max(start, loaded), end),
        "refused": agent.models.refusals > refusals,
        "served": agent.forecaster.version,
        "changed": agent.forecaster.version != before,
    }
    log(f"{step['step']}: refused {step['refused']}, serving {step['served']}")
    return step


def file_step(agent: Agent, watch: Watch, folder: Path, gap_s: float) -> dict[str, Any]:
    """Replace the served file in place (a retrained copy of what it holds), as a deploy
    would: written aside first, then copied over the served files."""
    before = agent.forecaster.version
    served = agent.models.live.path if agent.models.live is not None else None
    assert served is not None
    model = ServingModel.load(served)
    model.weights = {name: np.asarray(w) * np.float32(0.999) for name, w in model.weights.items()}
    model.path = None
    staging = folder / "staging"
    staging.mkdir(exist_ok=True)
    written = model.save(staging / served.name, onnx_graph=False)
    start = time.monotonic()
    for path in (written.npz, written.json):
        shutil.copy(path, served.with_name(path.name))
    served.with_suffix(".onnx").unlink(missing_ok=True)
    deadline = time.monotonic() + 60
    while agent.forecaster.version == before and time.monotonic() < deadline:
        time.sleep(0.05)
    agent.models.wait_idle(120)  # the version changes inside the install: let the load end
    loaded, end = agent.models.last_load
    step = {
        "step": "file change: lstm' rewritten",
        "seconds": round(end - loaded, 2),
        "window": (max(start, loaded), end),
        "refused": False,
        "served": agent.forecaster.version,
        "changed": agent.forecaster.version != before,
    }
    log(f"{step['step']}: refused {step['refused']}, serving {step['served']}")
    return step


def table(report: dict[str, Any]) -> str:
    lines = [
        f"machines {report['machines']:,} at 1 Hz, QoS 1 through mosquitto",
        f"readings published {report['published']:,}, counted by the agent "
        f"{report['counted_by_agent']:,} ({report['settled_after_s']} s after the publishers "
        f"stopped): lost {report['readings_lost']} (target 0); "
        f"rejected {report['rejected']} (overload {report['overload_dropped']})",
        f"alert events {report['alert_events']:,}, machines firing at the end "
        f"{report['machines_firing_at_end']}; states changed by swaps "
        f"{report['alert_states_changed_by_swaps']}, duplicated firing events "
        f"{report['alert_events_duplicated']} (target 0 and 0)",
        f"normal tick p99 {report['tick_p99_s'] * 1000:.1f} ms over "
        f"{report['baseline_ticks']} ticks (max {report['tick_max_s'] * 1000:.1f} ms); "
        f"limit 2x p99 = {report['tick_limit_s'] * 1000:.1f} ms; "
        f"ticks skipped in the run {report['ticks_skipped']}",
        f"the GRU's own ticks after the last swap: p99 {report['gru_tick_p99_s'] * 1000:.1f} ms",
        "",
        f"{'step':<28} {'load s':>7} {'slowest tick ms':>16} {'<= 2x p99':>9} "
        f"{'refused':>8}  served after",
    ]
    for step in report["swaps"]:
        lines.append(
            f"{step['step']:<28} {step['seconds']:>7.2f} {step['slowest_tick_s'] * 1000:>16.1f} "
            f"{'yes' if step['within_limit'] else 'NO':>9} {step['refused']!s:>8}  "
            f"{step['served']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.swap", description=__doc__)
    parser.add_argument("--machines", type=int, default=5_000)
    parser.add_argument("--overheat", type=int, default=250, help="machines that overheat")
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--baseline-s", type=float, default=20.0)
    parser.add_argument("--gap-s", type=float, default=3.0, help="normal ticks between steps")
    parser.add_argument(
        "--settle-s", type=float, default=300.0, help="longest wait for the agent to catch up"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = run(args)
    print(json.dumps(report) if args.json else table(report))
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
