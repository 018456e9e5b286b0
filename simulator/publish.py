"""Publishing a simulated fleet's readings over MQTT, paced at a fixed rate."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
import orjson
import paho.mqtt.client as mqtt

from agent.mqtt import describe_connect_failure, make_client, telemetry_topic
from config.settings import MqttSettings, SimulatorSettings
from simulator.fleet import Fleet
from simulator.signal import FEATURES

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_OVERHEAT_WITHIN_S = 50.0
"""Without a duration, overheats cross within this many seconds (the demo's first minute)."""


def encode_reading(machine_id: str, ts: float, seq: int, values: np.ndarray) -> bytes:
    """One reading as the documented single-line JSON payload."""
    reading: dict[str, object] = {"machine_id": machine_id, "ts": round(ts, 3), "seq": seq}
    for name, value in zip(FEATURES, values.tolist(), strict=True):
        reading[name] = round(value, 3)
    reading["schema"] = SCHEMA_VERSION
    return orjson.dumps(reading)


def overheat_within_ticks(settings: SimulatorSettings) -> int:
    """Ticks by which overheats must have crossed: the first two thirds of the run."""
    seconds = (
        settings.duration_s * 2.0 / 3.0
        if settings.duration_s is not None
        else DEFAULT_OVERHEAT_WITHIN_S
    )
    return max(40, int(seconds * settings.rate_hz))


def build_fleet(settings: SimulatorSettings, threshold_c: float) -> Fleet:
    return Fleet(
        machines=settings.machines,
        seed=settings.seed,
        overheat=settings.overheat,
        overheat_within_ticks=overheat_within_ticks(settings),
        threshold_c=threshold_c,
        machine_prefix=settings.machine_prefix,
    )


@dataclass
class PublishStats:
    ticks: int = 0
    readings: int = 0
    late_ticks: int = 0


class SimulatorPublisher:
    """Publishes one reading per machine per tick until the duration ends or it is stopped."""

    def __init__(
        self,
        mqtt_settings: MqttSettings,
        settings: SimulatorSettings,
        threshold_c: float,
        stop: threading.Event | None = None,
    ) -> None:
        self.mqtt_settings = mqtt_settings
        self.settings = settings
        self.fleet = build_fleet(settings, threshold_c)
        self.stop = stop or threading.Event()
        self.stats = PublishStats()
        self._connected = threading.Event()
        self._crossed: set[int] = set()
        self._finished = False
        self._client = make_client(mqtt_settings, settings.client_id)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.max_queued_messages_set(100_000)

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            logger.error("broker refused the simulator: %s", describe_connect_failure(reason))
            return
        logger.info(
            "simulator connected to %s:%s", self.mqtt_settings.host, self.mqtt_settings.port
        )
        self._connected.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        self._connected.clear()
        if not self.stop.is_set() and not self._finished:
            logger.warning("simulator lost the broker (%s); reconnecting", reason)

    def run(self, connect_timeout_s: float = 30.0) -> PublishStats:
        """Publish until done; raises ConnectionError if the broker never accepts us."""
        self._client.connect_async(
            self.mqtt_settings.host, self.mqtt_settings.port, self.mqtt_settings.keepalive_s
        )
        self._client.loop_start()
        try:
            if not self._connected.wait(connect_timeout_s):
                raise ConnectionError(
                    f"no connection to the broker at {self.mqtt_settings.host}:"
                    f"{self.mqtt_settings.port} within {connect_timeout_s:.0f} s "
                    "(check FOREWARN_MQTT__HOST / FOREWARN_MQTT__PORT)"
                )
            self._publish_loop()
        finally:
            self._finished = True
            self._client.disconnect()
            self._client.loop_stop()
        return self.stats

    def _publish_loop(self) -> None:
        interval = 1.0 / self.settings.rate_hz
        ticks_total = (
            None
            if self.settings.duration_s is None
            else max(1, round(self.settings.duration_s * self.settings.rate_hz))
        )
        start = time.monotonic()
        prefix = self.mqtt_settings.topic_prefix
        topics = [telemetry_topic(prefix, m) for m in self.fleet.machine_ids]
        tick = 0
        last: mqtt.MQTTMessageInfo | None = None
        while not self.stop.is_set() and (ticks_total is None or tick < ticks_total):
            readings = self.fleet.readings(tick)
            now = time.time()
            for index, machine_id in enumerate(self.fleet.machine_ids):
                payload = encode_reading(machine_id, now, tick, readings[index])
                last = self._client.publish(topics[index], payload, qos=self.settings.qos)
            self._note_crossings(tick, readings[:, 0])
            self.stats.ticks += 1
            self.stats.readings += len(topics)
            tick += 1
            delay = start + tick * interval - time.monotonic()
            if delay < 0:
                self.stats.late_ticks += 1
            elif self.stop.wait(delay):
                break
        if last is not None:
            try:  # flush what paho still holds before the caller disconnects
                last.wait_for_publish(timeout=5.0)
            except (RuntimeError, ValueError) as error:
                logger.warning("last readings may not have reached the broker: %s", error)
        logger.info(
            "simulator published %d readings in %d ticks (%d late)",
            self.stats.readings,
            self.stats.ticks,
            self.stats.late_ticks,
        )

    def _note_crossings(self, tick: int, temperatures: np.ndarray) -> None:
        """Log the ground truth: the tick where an overheating machine first crosses."""
        for plan in self.fleet.overheats:
            index = plan.machine_index
            if index not in self._crossed and temperatures[index] >= self.fleet.threshold_c:
                self._crossed.add(index)
                logger.info(
                    "ground truth: %s crossed %.1f °C at tick %d (%.1f °C)",
                    self.fleet.machine_ids[index],
                    self.fleet.threshold_c,
                    tick,
                    temperatures[index],
                )
