"""What the fault tests share: a mosquitto that can be stopped, killed and started again on the
same port with its persistence kept, an MQTT probe, readings, simple forecasters and timers."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import paho.mqtt.client as mqtt
from numpy.typing import NDArray
from paho.mqtt.enums import CallbackAPIVersion

from config.fields import FEATURES
from config.settings import Settings, load_settings
from tests.conftest import find_tool, free_port, wait_for_port

HOT_C = 100.0
COOL_C = 70.0


class Broker:
    """mosquitto in ``directory``: persistence on (there), restartable on one port."""

    def __init__(self, directory: Path, autosave_interval_s: int | None = None) -> None:
        self.binary = find_tool("mosquitto")
        self.port = free_port()
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.conf = directory / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {directory}/",
            "max_queued_messages 100000",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if autosave_interval_s is not None:
            lines.append(f"autosave_interval {autosave_interval_s}")
        if os.geteuid() == 0:
            lines.append("user root")  # else mosquitto drops to its own user: no saving here
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = directory / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.host = "127.0.0.1"

    def start(self) -> float:
        """Start; returns the monotonic time it began to accept connections."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [self.binary, "-c", str(self.conf)], stdout=out, stderr=out
            )
        wait_for_port(self.port)
        return time.monotonic()

    def stop(self) -> None:
        """SIGTERM: mosquitto closes every connection and saves its state."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: no goodbye, no save."""
        self._end(signal.SIGKILL)

    def _end(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=15)
        self.process = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Probe:
    """A test client recording every JSON message on a topic filter (QoS 1).

    With ``client_id`` it keeps a persistent session, so the broker queues for it while the
    broker itself restarts (persistence on) and nothing is missed.
    """

    broker: Broker
    topic_filter: str
    client_id: str = ""
    messages: list[tuple[str, dict[str, object], bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=not self.client_id,
        )
        self.client.reconnect_delay_set(1, 1)

        def on_connect(c: mqtt.Client, u: object, f: object, rc: object, p: object) -> None:
            c.subscribe(self.topic_filter, qos=1)

        def on_subscribe(c: mqtt.Client, u: object, mid: int, rcs: object, p: object) -> None:
            subscribed.set()

        def on_message(c: mqtt.Client, u: object, message: mqtt.MQTTMessage) -> None:
            with self.lock:
                self.messages.append(
                    (message.topic, orjson.loads(message.payload), bool(message.retain))
                )

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect(self.broker.host, self.broker.port, keepalive=5)
        self.client.loop_start()
        assert subscribed.wait(10), "the test probe could not subscribe"

    def snapshot(self) -> list[tuple[str, dict[str, object], bool]]:
        with self.lock:
            return list(self.messages)

    def payloads(self) -> list[dict[str, object]]:
        return [payload for _, payload, _ in self.snapshot()]

    def wait_for(
        self, predicate: Callable[[list[dict[str, object]]], bool], timeout_s: float
    ) -> float | None:
        return wait_until(lambda: predicate(self.payloads()), timeout_s)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Readings:
    """A test publisher of readings with per-machine sequence numbers (QoS 1, acknowledged)."""

    def __init__(self, broker: Broker, prefix: str = "factory") -> None:
        self.prefix = prefix
        self.seq: dict[str, int] = {}
        self.acked = 0
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()

    def publish(self, machine_id: str, temperature_c: float, qos: int = 1) -> mqtt.MQTTMessageInfo:
        seq = self.seq.get(machine_id, 0) + 1
        self.seq[machine_id] = seq
        payload = orjson.dumps(
            {
                "machine_id": machine_id,
                "ts": time.time(),
                "seq": seq,
                "temperature_c": temperature_c,
                "vibration_hz": 40.0,
                "pressure_psi": 120.0,
                "rpm": 1650.0,
            }
        )
        return self.client.publish(f"{self.prefix}/{machine_id}/telemetry", payload, qos=qos)

    def burst(
        self, temperatures: dict[str, float], count: int, rate_hz: float | None = None
    ) -> int:
        """``count`` readings of each machine (paced at ``rate_hz`` per machine); all acked."""
        infos = []
        for _ in range(count):
            for machine_id, temperature in temperatures.items():
                infos.append(self.publish(machine_id, temperature))
            if rate_hz:
                time.sleep(1.0 / rate_hz)
        for info in infos:
            info.wait_for_publish(timeout=30)
        self.acked += len(infos)
        return len(infos)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Stream:
    """Publishes readings of ``machines`` at ``rate_hz`` each from a thread until stopped."""

    def __init__(self, readings: Readings, machines: Sequence[str], rate_hz: float) -> None:
        self.readings = readings
        self.machines = list(machines)
        self.rate_hz = rate_hz
        self.published = 0
        self._infos: list[mqtt.MQTTMessageInfo] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Stream:
        self._thread.start()
        return self

    def _run(self) -> None:
        interval = 1.0 / self.rate_hz
        next_at = time.monotonic()
        while not self._stop.is_set():
            for machine_id in self.machines:
                self._infos.append(self.readings.publish(machine_id, COOL_C))
                self.published += 1
            next_at += interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> int:
        """Stop and wait until the broker acknowledged every reading; returns how many."""
        self._stop.set()
        self._thread.join(timeout=10)
        for info in self._infos:
            info.wait_for_publish(timeout=30)
        return self.published


class LastValue:
    """Forecasts that the temperature stays where it is: fast and predictable in tests."""

    kind = "last_value"
    version = "last-value"
    features: tuple[str, ...] = tuple(FEATURES)
    window = 20
    horizon = 10

    def forecast(self, windows: NDArray[np.float32]) -> NDArray[np.float32]:
        return np.repeat(windows[:, -1:, 0], self.horizon, axis=1)


class SlowForecaster(LastValue):
    """LastValue that takes ``seconds`` per forecast (a model slower than the readings)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0
        self.running = threading.Event()

    def forecast(self, windows: NDArray[np.float32]) -> NDArray[np.float32]:
        self.calls += 1
        self.running.set()
        time.sleep(self.seconds)
        return super().forecast(windows)


class StuckForecaster(LastValue):
    """Never returns until released: a hung model."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def forecast(self, windows: NDArray[np.float32]) -> NDArray[np.float32]:
        self.entered.set()
        self.release.wait(60)
        return super().forecast(windows)


def agent_settings(port: int, **mqtt_overrides: object) -> Settings:
    """Agent settings for a test: our broker, fast ticks, quick reconnects, any metrics port."""
    settings = load_settings(_env_file=None)
    settings.mqtt = settings.mqtt.model_copy(
        update={
            "host": "127.0.0.1",
            "port": port,
            "client_id": "agent-under-fault",
            "keepalive_s": 5,
            "reconnect_min_s": 1.0,
            "reconnect_max_s": 2.0,
            **mqtt_overrides,
        }
    )
    settings.metrics = settings.metrics.model_copy(update={"host": "127.0.0.1", "port": 0})
    settings.agent = settings.agent.model_copy(update={"tick_interval_s": 0.05})
    return settings


def wait_until(
    predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.05
) -> float | None:
    """Seconds until ``predicate`` held, or None when it did not within ``timeout_s``."""
    started = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            return None
        time.sleep(step_s)


def holds_within(predicate: Callable[[], bool], timeout_s: float = 15.0) -> bool:
    """Whether ``predicate`` held within ``timeout_s`` (for a plain ``assert``)."""
    return wait_until(predicate, timeout_s) is not None


def healthz(port: int, timeout_s: float = 2.0) -> int:
    """/healthz's status; 0 when it does not answer within ``timeout_s``."""
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


def metric(port: int, name: str) -> float | None:
    """One sample of the agent's /metrics, by its full name with labels as exposed."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def report(text: str) -> None:
    """A measured figure: printed (pytest -s, or -rP) and kept in the test's output."""
    print(f"\nFAULT FIGURE: {text}", flush=True)
