"""Publishing a simulated fleet's readings over MQTT, paced at a fixed rate."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import orjson
import paho.mqtt.client as mqtt

from config.mqtt import MqttSettings
from config.simulator import SimulatorSettings
from config.topics import MACHINE_ID, gateway_topic
from simulator.badpayload import bad_payloads
from simulator.faults import BAD_PAYLOAD_PROBABILITY
from simulator.fleet import Fleet
from simulator.groundtruth import GroundTruthLog
from simulator.replay import ReplayRow, load_replay, replay
from simulator.sparkplug import SparkplugEdge
from wire.mapping import FieldMapping
from wire.mqtt import describe_connect_failure, make_client
from wire.payload import batch_element, encode_batch, encode_reading
from wire.tls import check_broker

logger = logging.getLogger(__name__)

DEFAULT_OVERHEAT_WITHIN_S = 50.0
"""Without a duration, overheats cross within this many seconds (the demo's first minute)."""


def overheat_within_ticks(settings: SimulatorSettings) -> int:
    """Ticks by which overheats must have crossed: the first two thirds of the run."""
    seconds = (
        settings.duration_s * 2.0 / 3.0
        if settings.duration_s is not None
        else DEFAULT_OVERHEAT_WITHIN_S
    )
    return max(40, int(seconds * settings.rate_hz))


DEFAULT_SCENARIO_TICKS = 2000
"""Run length that fault scenarios are planned over when no duration is given."""


def build_fleet(settings: SimulatorSettings, threshold_c: float) -> Fleet:
    run_ticks = (
        round(settings.duration_s * settings.rate_hz)
        if settings.duration_s is not None
        else DEFAULT_SCENARIO_TICKS
    )
    return Fleet(
        machines=settings.machines,
        seed=settings.seed,
        overheat=settings.overheat,
        overheat_within_ticks=overheat_within_ticks(settings),
        threshold_c=threshold_c,
        machine_prefix=settings.machine_prefix,
        faults=dict(settings.faults),
        run_ticks=run_ticks,
        slow_drifts=settings.slow_drifts,
        steady_overheats=settings.overheat_shape == "steady",
    )


def simulated_topic(settings: MqttSettings, machine_id: str, index: int) -> str:
    """Machine ``index``'s topic under mqtt.telemetry_topic.

    Placeholders other than {machine_id} get a value like ``line-2`` (three of each), so a
    plant-shaped template yields a small tree of branches.
    """
    template = settings.telemetry_template
    values = {name: f"{name}-{index % 3 + 1}" for name in template.names}
    values[MACHINE_ID] = machine_id
    return template.fill(values)


def simulated_gateway_topic(mqtt_settings: MqttSettings, settings: SimulatorSettings) -> str:
    """Where the simulator, as one gateway (its client id), publishes its batches."""
    batch_filter = mqtt_settings.batch_filter
    if batch_filter is None:
        raise ValueError(
            f"FOREWARN_SIMULATOR__GATEWAY_BATCH={settings.gateway_batch} needs a batch topic, "
            "but FOREWARN_MQTT__BATCH_TOPIC is off: unset it, or set gateway batch to 0"
        )
    try:
        return gateway_topic(batch_filter, settings.client_id)
    except ValueError as error:
        raise ValueError(f"FOREWARN_SIMULATOR__CLIENT_ID: {error}") from None


@dataclass
class PublishStats:
    ticks: int = 0
    readings: int = 0
    late_ticks: int = 0
    messages: int = 0


class SimulatorPublisher:
    """Publishes one reading per machine per tick until the duration ends or it is stopped.

    Each reading goes in its own message, or (``simulator.gateway_batch``) the tick's readings
    go in gateway batches of up to that many, as a plant gateway forwarding a line would.
    """

    def __init__(
        self,
        mqtt_settings: MqttSettings,
        settings: SimulatorSettings,
        threshold_c: float,
        stop: threading.Event | None = None,
        mapping: FieldMapping | None = None,
    ) -> None:
        self.mqtt_settings = mqtt_settings
        # Publishes in a plant's field names and units (the inverse of the agent's mapping).
        self.mapping = mapping if mapping else None
        self.settings = settings
        self.fleet = build_fleet(settings, threshold_c)
        self.stop = stop or threading.Event()
        self.stats = PublishStats()
        self._connected = threading.Event()
        self.ground_truth = GroundTruthLog(self.fleet, settings.ground_truth)
        self._replay_rows = (
            load_replay(settings.replay, settings.machine_column, settings.machine_prefix + "0")
            if settings.replay is not None
            else None
        )
        self._bad_rng = np.random.default_rng(settings.seed + 1)
        self._finished = False
        self._client = make_client(mqtt_settings, settings.client_id)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.max_queued_messages_set(100_000)
        self.edge = (
            SparkplugEdge(mqtt_settings.sparkplug_group, settings.client_id, self.mapping)
            if settings.format == "sparkplug"
            else None
        )
        if self.edge is not None:  # a crashed edge node's NDEATH, sent by the broker
            self._client.will_set(*self.edge.death(time.time()), qos=1)
        self.gateway_topic = (
            simulated_gateway_topic(mqtt_settings, settings) if settings.gateway_batch else None
        )

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
        check_broker(self.mqtt_settings)  # a wrong CA or password stops here, loudly
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
            if self._replay_rows is not None:
                self._replay_loop(self._replay_rows)
            else:
                self._publish_loop()
        finally:
            self._finished = True
            self._client.disconnect()
            self._client.loop_stop()
        return self.stats

    def _replay_loop(self, rows: list[ReplayRow]) -> None:
        ids = sorted({row.machine_id for row in rows})
        topics = {m: simulated_topic(self.mqtt_settings, m, i) for i, m in enumerate(ids)}
        logger.info(
            "replaying %d rows of %d machine(s) from %s at speed %g",
            len(rows),
            len(topics),
            self.settings.replay,
            self.settings.speed,
        )
        self.stats.readings = replay(
            self._client,
            rows,
            topics,
            self.settings.speed,
            self.settings.rate_hz,
            self.settings.qos,
            self.stop,
        )

    def _fleet_payloads(
        self, tick: int, readings: np.ndarray, now: float, seq: int
    ) -> Iterator[tuple[int, list[bytes], bool]]:
        """Each reporting machine's index, payloads and whether they are a broken gateway's.

        A broken machine sends bad payloads instead of (or besides) its reading; the callers
        count either as one reading sent.
        """
        silent = set(self.fleet.silent(tick))
        broken = set(self.fleet.bad_payload_machines(tick))
        for index, machine_id in enumerate(self.fleet.machine_ids):
            if index in silent:
                continue
            if index in broken and self._bad_rng.random() < BAD_PAYLOAD_PROBABILITY:
                bad = bad_payloads(machine_id, now, seq, readings[index], self._bad_rng)
                yield index, bad, True
                continue
            payload = encode_reading(machine_id, now, seq, readings[index])
            if self.mapping is not None:
                payload = orjson.dumps(self.mapping.unapply(orjson.loads(payload)))
            yield index, [payload], False

    def _publish_singles(
        self, topics: list[str], tick: int, readings: np.ndarray, now: float, seq_base: int
    ) -> mqtt.MQTTMessageInfo | None:
        """One message per payload, on its machine's telemetry topic."""
        last = None
        for index, payloads, _ in self._fleet_payloads(tick, readings, now, seq_base + tick):
            for payload in payloads:
                last = self._client.publish(topics[index], payload, qos=self.settings.qos)
                self.stats.messages += 1
            self.stats.readings += 1
        return last

    def _publish_batches(
        self, topic: str, tick: int, readings: np.ndarray, now: float, seq_base: int
    ) -> mqtt.MQTTMessageInfo | None:
        """The tick's payloads as gateway batches of up to ``gateway_batch`` readings."""
        elements: list[bytes] = []
        for _, payloads, broken in self._fleet_payloads(tick, readings, now, seq_base + tick):
            elements += [batch_element(p) for p in payloads] if broken else payloads
            self.stats.readings += 1
        size = self.settings.gateway_batch
        last = None
        for start in range(0, len(elements), size):
            batch = encode_batch(elements[start : start + size])
            last = self._client.publish(topic, batch, qos=self.settings.qos)
            self.stats.messages += 1
        return last

    def _publish_sparkplug(
        self, edge: SparkplugEdge, tick: int, readings: np.ndarray, now: float
    ) -> mqtt.MQTTMessageInfo | None:
        """One DDATA per reporting machine."""
        last = None
        silent = set(self.fleet.silent(tick))
        for index, machine_id in enumerate(self.fleet.machine_ids):
            if index not in silent:
                topic, payload = edge.data(machine_id, readings[index], now)
                last = self._client.publish(topic, payload, qos=self.settings.qos)
                self.stats.readings += 1
                self.stats.messages += 1
        return last

    def _publish_loop(self) -> None:
        interval = 1.0 / self.settings.rate_hz
        ticks_total = (
            None
            if self.settings.duration_s is None
            else max(1, round(self.settings.duration_s * self.settings.rate_hz))
        )
        start = time.monotonic()
        # Sequence numbers continue across restarts of the simulator: they count ticks since the
        # Unix epoch at this rate, so a restarted simulator is never taken for a replay.
        seq_base = int(time.time() * self.settings.rate_hz)
        topics = [
            simulated_topic(self.mqtt_settings, m, i) for i, m in enumerate(self.fleet.machine_ids)
        ]
        tick = 0
        last: mqtt.MQTTMessageInfo | None = None
        edge = self.edge
        if edge is not None:
            for topic, payload in edge.births(
                self.fleet.machine_ids, self.fleet.readings(0), time.time()
            ):
                self._client.publish(topic, payload, qos=1)
        while not self.stop.is_set() and (ticks_total is None or tick < ticks_total):
            readings = self.fleet.readings(tick)
            now = time.time()
            if edge is not None:
                sent = self._publish_sparkplug(edge, tick, readings, now)
            elif self.gateway_topic is not None:
                sent = self._publish_batches(self.gateway_topic, tick, readings, now, seq_base)
            else:
                sent = self._publish_singles(topics, tick, readings, now, seq_base)
            last = sent or last
            self.ground_truth.observe(tick, readings[:, 0] - self.fleet.last_spikes_c[:, -1])
            self.stats.ticks += 1
            tick += 1
            delay = start + tick * interval - time.monotonic()
            if delay < 0:
                self.stats.late_ticks += 1
            elif self.stop.wait(delay):
                break
        if edge is not None:  # a clean shutdown: the node and its devices go stale now
            last = self._client.publish(*edge.death(time.time()), qos=1)
        if last is not None:
            try:  # flush what paho still holds before the caller disconnects
                last.wait_for_publish(timeout=5.0)
            except (RuntimeError, ValueError) as error:
                logger.warning("last readings may not have reached the broker: %s", error)
        self.ground_truth.close(tick - 1)
        logger.info(
            "simulator published %d readings in %d ticks (%d late)",
            self.stats.readings,
            self.stats.ticks,
            self.stats.late_ticks,
        )
