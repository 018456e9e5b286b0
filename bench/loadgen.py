"""Load for the end-to-end benchmarks: a mosquitto, fleets of readings, publishers, a drain.

Everything here runs in its own process (``multiprocessing`` with the spawn method, so no
child inherits torch or a half-initialised paho client) so that the process under test, an
agent or the bare drain subscriber, has its CPU to itself apart from the broker and the
publishers that are part of the measurement.

Publishers pre-encode their payloads before they connect: what they publish is exactly the
simulator's payload (:func:`wire.payload.encode_reading`), and a backlog's timing never
includes encoding. Each machine belongs to exactly one publisher, which publishes its
readings in ``seq`` and ``ts`` order, so the agent's ordering rule accepts all of them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from forewarn.broker import free_port, stop_process, wait_for_port
from simulator.fleet import Fleet
from wire.payload import encode_reading

MAX_OUTSTANDING = 10_000
"""Messages a publisher lets paho hold unacknowledged (QoS 1) or unwritten (QoS 0).

paho numbers QoS 1 messages with 16-bit ids and loses messages once more than 65,535 wait
for their acknowledgement; far below that, and enough to keep the socket busy."""

PUBLISHER_INFLIGHT = 100
"""paho's own QoS 1 in-flight window per publisher. paho walks its queued messages on every
acknowledgement, so a large window costs more than it gains: measured here, a QoS 1 publisher
does ~8,000-10,000 messages/s with 20-100 and ~4,600/s with 1,000."""

BROKER_INFLIGHT = 1_000
"""mosquitto's QoS 1 in-flight window per subscriber in the bench's broker.

mosquitto's default, 20, bounds a QoS 1 subscriber by round trips rather than by its own
work (measured here: a bare paho drain runs ~40 % slower with 20); both the agent and the
bare drain get the same window, so their ratio holds either way."""


def mosquitto_path() -> str:
    """mosquitto's executable; ``make test`` (scripts/ensure-system-deps.sh) installs it."""
    path = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(path).exists():
        raise FileNotFoundError("mosquitto not found: run `make system-deps` (or make test)")
    return path


@dataclass
class Broker:
    """A running mosquitto on a loopback port."""

    port: int
    process: subprocess.Popen[bytes]

    def cpu_s(self) -> float:
        return cpu_seconds(self.process.pid)


@contextmanager
def broker(workdir: Path, inflight: int = BROKER_INFLIGHT) -> Iterator[Broker]:
    """A fresh mosquitto for one measurement, so that no session or queue carries over.

    Queues are unbounded (``max_queued_messages 0``): a backlog must wait whole for the
    consumer, and mosquitto's default of 1,000 would drop what a paused consumer falls
    behind by, QoS 0 and QoS 1 alike. Nothing is persisted: a backlog lives in memory.
    """
    port = free_port()
    conf = workdir / f"mosquitto-{port}.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "persistence false\n"
        "max_queued_messages 0\n"
        "max_queued_bytes 0\n"
        f"max_inflight_messages {inflight}\n"
        "log_type error\n"
        "log_type warning\n"
    )
    log = (workdir / f"mosquitto-{port}.log").open("wb")
    process = subprocess.Popen([mosquitto_path(), "-c", str(conf)], stdout=log, stderr=log)
    try:
        wait_for_port(port)
        yield Broker(port, process)
    finally:
        stop_process(process)
        log.close()


# --- process facts -------------------------------------------------------------------------


_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, all its threads (from /proc)."""
    # The command name (field 2) may hold spaces; the fields after its ")" are fixed.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def _status_kib(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_split_mb(pid: int) -> dict[str, float | None]:
    """RSS split into anonymous memory (the process's own heap and arrays) and file-backed
    pages (mapped libraries: torch's alone are ~75-110 MB, depending on how many of their pages
    the page cache maps in, so a fresh install can read 30-40 MB higher than a warm one)."""
    return {
        key: None if (kib := _status_kib(pid, f"{field}:")) is None else round(kib / 1024, 1)
        for key, field in (("anon_mb", "RssAnon"), ("file_mb", "RssFile"))
    }


def rss_mb(pid: int) -> float | None:
    """Resident memory now (VmRSS), in MiB; None once the process is gone."""
    kib = _status_kib(pid, "VmRSS:")
    return None if kib is None else kib / 1024


def peak_rss_mb(pid: int) -> float | None:
    """The process's resident high-water mark (VmHWM), in MiB."""
    kib = _status_kib(pid, "VmHWM:")
    return None if kib is None else kib / 1024


def child_pids(pid: int) -> list[int]:
    """Direct children of a process (a profiler's target, say), from /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def suspend(pid: int) -> None:
    """Freeze a consumer (SIGSTOP): it stays connected while the broker queues for it."""
    os.kill(pid, signal.SIGSTOP)


def resume(pid: int) -> None:
    os.kill(pid, signal.SIGCONT)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), ""
    except OSError:
        return 0, ""


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition to ``{"name{labels}": value}``, comments skipped."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            values[name] = float(value)
        except ValueError:
            continue
    return values


def rejected_by_reason(samples: dict[str, float]) -> dict[str, int]:
    """``forewarn_readings_rejected_total`` by reason, only the reasons that occurred."""
    out: dict[str, int] = {}
    for key, value in samples.items():
        if key.startswith("forewarn_readings_rejected_total{") and value:
            out[key.split('reason="', 1)[1].split('"', 1)[0]] = int(value)
    return out


# --- fleets of readings ----------------------------------------------------------------------


@dataclass(frozen=True)
class FleetSlice:
    """The readings one publisher sends: its share of a fleet, ``steps`` readings each.

    Machine ``i`` of the fleet belongs to worker ``i % workers``. Reading ``k`` of a machine
    (``first_step <= k < first_step + steps``) has ``seq = k`` and ``ts = t0 + k``: one second
    apart, so the agent's interval estimate sees a 1 Hz fleet, and a later slice with a
    later ``first_step`` continues the same machines. With ``batch`` > 0 readings go out as
    gateway batches of that many, ``{"readings": [...]}`` on
    ``<prefix>/_gateway/<gateway>/telemetry``.
    """

    prefix: str
    machines: int
    worker: int
    workers: int
    steps: int
    t0: float
    first_step: int = 0
    machine_prefix: str = "m-"
    batch: int = 0

    @property
    def readings(self) -> int:
        return len(range(self.worker, self.machines, self.workers)) * self.steps


def batch_payload(elements: Sequence[bytes]) -> bytes:
    """A gateway batch: the encoded readings joined into ``{"readings": [...]}``."""
    return b'{"readings":[' + b",".join(elements) + b"]}"


def slice_messages(spec: FleetSlice) -> list[tuple[str, bytes]]:
    """The slice's (topic, payload) pairs in publishing order: round by round, so every
    machine's readings leave in ``seq`` order and the fleet advances together."""
    fleet = Fleet(machines=spec.machines, seed=11, machine_prefix=spec.machine_prefix)
    ids, values = fleet.machine_ids, fleet.history(spec.first_step, spec.steps)
    mine = range(spec.worker, spec.machines, spec.workers)
    readings = [
        (
            f"{spec.prefix}/{ids[i]}/telemetry",
            encode_reading(ids[i], spec.t0 + step, step, values[i, step - spec.first_step]),
        )
        for step in range(spec.first_step, spec.first_step + spec.steps)
        for i in mine
    ]
    if spec.batch <= 0:
        return readings
    topic = f"{spec.prefix}/_gateway/gw-{spec.worker}/telemetry"
    return [
        (topic, batch_payload([payload for _, payload in readings[start : start + spec.batch]]))
        for start in range(0, len(readings), spec.batch)
    ]


def _publisher(port: int, client_id: str) -> tuple[mqtt.Client, list[int]]:
    """A connected publisher whose second value counts the messages paho has finished."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311,
        clean_session=True,
    )
    client.max_inflight_messages_set(PUBLISHER_INFLIGHT)
    done = [0]

    def on_publish(*_: object) -> None:
        done[0] += 1

    client.on_publish = on_publish
    client.connect("127.0.0.1", port, 60)
    client.loop_start()
    return client, done


def _publish_all(
    client: mqtt.Client, done: list[int], messages: Sequence[tuple[str, bytes]], qos: int
) -> None:
    """Publish, never letting more than MAX_OUTSTANDING wait on paho; return when all left."""
    for sent, (topic, payload) in enumerate(messages):
        while sent - done[0] >= MAX_OUTSTANDING:
            time.sleep(0.0005)
        client.publish(topic, payload, qos=qos)
    while done[0] < len(messages):
        time.sleep(0.005)


def publish_slice(port: int, spec: FleetSlice, qos: int, result: Synchronized) -> None:
    """Process target: publish the slice, then store how many readings went out."""
    messages = slice_messages(spec)
    client, done = _publisher(port, f"bench-pub-{spec.worker}-{os.getpid()}")
    _publish_all(client, done, messages, qos)
    client.disconnect()
    client.loop_stop()
    result.value = spec.readings


@dataclass(frozen=True)
class LiveSlice:
    """A paced publisher's share of a live fleet: each machine ``rate_hz`` readings a second,
    machines spread evenly over each second (real machines are not synchronised)."""

    prefix: str
    machines: int
    worker: int
    workers: int
    rate_hz: float
    machine_prefix: str = "m-"


def publish_live(
    port: int, spec: LiveSlice, qos: int, start_at: float, sent: Synchronized, stop: Any
) -> None:
    """Process target: publish the slice live from wall time ``start_at`` until ``stop`` is set,
    keeping ``sent`` up to date; ``ts`` is the wall time at publishing, so the agent can tell
    how old a reading is when it is forecast."""
    fleet = Fleet(machines=spec.machines, seed=11, machine_prefix=spec.machine_prefix)
    mine = list(range(spec.worker, spec.machines, spec.workers))
    period = 1.0 / spec.rate_hz
    offsets = [period * i / spec.machines for i in mine]
    topics = [f"{spec.prefix}/{fleet.machine_ids[i]}/telemetry" for i in mine]
    client, done = _publisher(port, f"bench-live-{spec.worker}-{os.getpid()}")
    count = 0
    step = 0
    while not stop.is_set():
        values = fleet.readings(step)
        base = start_at + step * period
        for index, machine in enumerate(mine):
            delay = base + offsets[index] - time.time()
            if delay > 0.002:
                time.sleep(delay)
            while count - done[0] >= MAX_OUTSTANDING:
                time.sleep(0.0005)
            payload = encode_reading(fleet.machine_ids[machine], time.time(), step, values[machine])
            client.publish(topics[index], payload, qos=qos)
            count += 1
        sent.value = count
        step += 1
    while done[0] < count:
        time.sleep(0.005)
    client.disconnect()
    client.loop_stop()


# --- the bare drain --------------------------------------------------------------------------


def drain(
    port: int, topic_filter: str, qos: int, counter: Synchronized, ready: Any, stop: Any
) -> None:
    """Process target: a bare paho subscriber that only counts what it receives.

    It runs paho's network loop in a background thread (``loop_start``), as the agent does,
    so that the agent's ratio to it is the cost of the agent's own work per reading.
    """
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"bench-drain-{os.getpid()}",
        protocol=mqtt.MQTTv311,
        clean_session=True,
    )

    def on_connect(client: mqtt.Client, *_: object) -> None:
        client.subscribe(topic_filter, qos=qos)

    def on_subscribe(*_: object) -> None:
        ready.set()

    def on_message(*_: object) -> None:
        counter.value += 1

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", port, 600)
    client.loop_start()
    stop.wait()
    client.disconnect()
    client.loop_stop()


# --- rates --------------------------------------------------------------------------------


def sustained_rate(
    samples: Sequence[tuple[float, float]], total: int, low: float = 0.1, high: float = 0.9
) -> float | None:
    """Items per second while a backlog of ``total`` drained, from (seconds, count) samples.

    A least-squares slope over the samples between ``low`` and ``high`` of the total: the
    first part drains what already sat in socket buffers and the agent's count only moves at
    its ticks, so a slope over the middle is steadier than total / elapsed. Falls back to the
    time the total was reached, or None when there is nothing to go on.
    """
    middle = [(t, c) for t, c in samples if low * total <= c <= high * total]
    if len(middle) >= 4 and middle[-1][0] > middle[0][0]:
        times = np.array([t for t, _ in middle])
        counts = np.array([c for _, c in middle])
        slope = float(np.polyfit(times, counts, 1)[0])
        if slope > 0:
            return slope
    done = next((t for t, c in samples if c >= total), None)
    if done is not None and done > 0:
        return total / done
    return None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), or None without values."""
    if not len(values):
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))
