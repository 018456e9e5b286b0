"""The agent: wires ingest, windows, the batched forecast tick, alerts, metrics and health.

Threads, each with one job:

* paho's network thread runs :meth:`Agent._on_message`, which only decodes, validates and
  appends to a bounded hand-off (a deque; a full one drops and counts ``overload``);
* the tick thread drains the hand-off into the window store, runs one batched forecast over
  every machine with a full window and a new reading, advances the alert policy and publishes
  the changes;
* the HTTP thread serves /metrics and /healthz.

One stop event ends them all; SIGINT/SIGTERM set it (see ``agent.cli``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import paho.mqtt.client as mqtt
from numpy.typing import NDArray

from agent import __version__
from agent.alerts import STATE_NAMES, AlertEvent, AlertPolicy
from agent.anomaly import AnomalyScorer
from agent.health import MetricsServer
from agent.metrics import AgentMetrics
from agent.mqtt import describe_connect_failure, make_client, status_topic, telemetry_filter
from agent.publish import AlertPublisher, status_payload
from agent.reading import Reading, ReadingDecoder, Rejected
from agent.throttle import LogThrottle
from agent.window import WindowStore
from config.settings import Settings
from models.base import Forecaster
from models.checkpoint import TorchForecaster

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 1.0
"""Assumed reading interval of a machine until two of its readings show the real one."""


@dataclass(frozen=True)
class MachineView:
    """One machine's row in a tick snapshot (for the demo's live view)."""

    machine_id: str
    temperature_c: float
    forecast_c: float
    state: str


TickListener = Callable[[list[MachineView]], None]
AlertListener = Callable[[AlertEvent], None]


class Agent:
    """The forewarn daemon. ``start`` returns once its threads run; ``stop`` ends them."""

    def __init__(
        self,
        settings: Settings,
        forecaster: Forecaster | None = None,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.forecaster: Forecaster = forecaster or TorchForecaster.from_path(
            settings.model.checkpoint,
            device=settings.model.device,
            threads=settings.model.threads,
            chunk_size=settings.model.chunk_size,
        )
        self.metrics = metrics or AgentMetrics(
            max_machine_series=settings.metrics.max_machine_series
        )
        features = len(self.forecaster.features)
        self.store = WindowStore(self.forecaster.window, features, settings.agent.max_machines)
        self.policy = AlertPolicy(settings.alerts, self.store.capacity)
        self.anomaly = AnomalyScorer(self.forecaster.horizon, self.store.capacity)
        self.decoder = ReadingDecoder(settings.limits)
        self.stop_event = threading.Event()
        self.alert_listeners: list[AlertListener] = []
        self.tick_listeners: list[TickListener] = []
        self._pending: deque[Reading] = deque()
        self._max_pending = settings.agent.max_pending_readings
        self._connected = threading.Event()
        self._last_tick = 0.0
        self._tick_thread: threading.Thread | None = None
        self._throttle = LogThrottle(logger)
        self._prefix = settings.mqtt.topic_prefix
        self._topic_head = len(self._prefix) + 1
        self._next_stale_check = 0.0

        mqtt_settings = settings.mqtt
        self.client = make_client(mqtt_settings, mqtt_settings.client_id)
        self.client.will_set(
            status_topic(self._prefix, mqtt_settings.client_id),
            status_payload("offline", mqtt_settings.client_id, __version__),
            qos=1,
            retain=True,
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.publisher = AlertPublisher(
            self.client, self._prefix, self.forecaster.version, self.metrics
        )
        self.http = MetricsServer(
            settings.metrics.host, settings.metrics.port, self.metrics.registry, self.health
        )
        self.metrics.build_info.info({"version": __version__})
        self.metrics.threshold.set(settings.alerts.threshold_c)
        self.metrics.model_info.info(
            {
                "kind": self.forecaster.kind,
                "version": self.forecaster.version,
                "window": str(self.forecaster.window),
                "horizon": str(self.forecaster.horizon),
                "device": str(getattr(self.forecaster, "device", "cpu")),
            }
        )

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        warm_up = getattr(self.forecaster, "warm_up", None)
        if callable(warm_up):
            warm_up()
        self.http.start()
        m = self.settings.mqtt
        logger.info(
            "agent %s serving %s (window %d, horizon %d); metrics on http://%s:%d/metrics",
            m.client_id,
            self.forecaster.version,
            self.forecaster.window,
            self.forecaster.horizon,
            self.settings.metrics.host,
            self.http.port,
        )
        self.client.connect_async(m.host, m.port, m.keepalive_s)
        self.client.loop_start()
        self._last_tick = time.monotonic()
        self._tick_thread = threading.Thread(target=self._tick_loop, name="forewarn-tick")
        self._tick_thread.start()

    def run(self) -> None:
        """Start, block until the stop event is set, then stop cleanly."""
        self.start()
        try:
            self.stop_event.wait()
        finally:
            self.stop()

    def stop(self, flush_timeout_s: float = 5.0) -> None:
        """Finish the running tick, say offline, flush QoS 1 publishes, disconnect."""
        self.stop_event.set()
        if self._tick_thread is not None:
            self._tick_thread.join(timeout=30)
        m = self.settings.mqtt
        if self._connected.is_set():
            info = self.publisher.publish_status(m.client_id, "offline", __version__)
            try:
                info.wait_for_publish(timeout=flush_timeout_s)
            except (RuntimeError, ValueError):
                logger.warning("could not confirm the offline status before disconnecting")
        self.client.disconnect()
        self.client.loop_stop()
        self.http.stop()
        logger.info("agent stopped")

    # --- health ------------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, object]]:
        """Healthy while connected to the broker and the tick loop keeps ticking."""
        tick_age = time.monotonic() - self._last_tick
        tick_alive = (
            self._tick_thread is not None
            and self._tick_thread.is_alive()
            and tick_age < max(5.0, 5 * self.settings.agent.tick_interval_s)
        )
        connected = self._connected.is_set()
        return connected and tick_alive, {
            "mqtt_connected": connected,
            "tick_alive": tick_alive,
            "last_tick_age_s": round(tick_age, 3),
            "machines": len(self.store),
        }

    # --- MQTT callbacks (network thread: keep them thin and never let them raise) ---------

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        try:
            if getattr(reason, "is_failure", False):
                logger.error("broker refused the agent: %s", describe_connect_failure(reason))
                return
            topic = telemetry_filter(self._prefix)
            client.subscribe(topic, qos=self.settings.mqtt.telemetry_qos)
            self.publisher.publish_status(self.settings.mqtt.client_id, "online", __version__)
            self._connected.set()
            self.metrics.mqtt_connected.set(1)
            logger.info(
                "connected to %s:%d, subscribed to %s",
                self.settings.mqtt.host,
                self.settings.mqtt.port,
                topic,
            )
        except Exception:
            logger.exception("error in the connect callback")

    def _on_disconnect(
        self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        self._connected.clear()
        self.metrics.mqtt_connected.set(0)
        if not self.stop_event.is_set():
            logger.warning("lost the broker (%s); reconnecting with back-off", reason)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        try:
            topic = message.topic
            machine_id = topic[self._topic_head : -len("/telemetry")] or None
            reading = self.decoder.decode(message.payload, machine_id)
        except Rejected as rejected:
            self.reject(rejected.reason, rejected.detail)
            return
        except Exception:
            logger.exception("unexpected error decoding a reading on %s", message.topic)
            self.reject("bad_json", "undecodable")
            return
        self.hand_off(reading)

    def hand_off(self, reading: Reading) -> None:
        """Queue a valid reading for the next tick, or drop and count it when overloaded."""
        if len(self._pending) >= self._max_pending:
            self.reject("overload", f"{self._max_pending} readings already waiting")
            return
        self._pending.append(reading)

    def reject(self, reason: str, detail: str) -> None:
        self.metrics.rejected.labels(reason=reason).inc()
        self._throttle.warning(reason, "rejected a reading (%s): %s", reason, detail)

    # --- the tick ----------------------------------------------------------------------------

    def _tick_loop(self) -> None:
        interval = self.settings.agent.tick_interval_s
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            try:
                self.tick()
            except Exception:
                logger.exception("tick failed; the next tick starts afresh")
            self._last_tick = time.monotonic()
            next_at += interval
            delay = next_at - time.monotonic()
            if delay < 0:
                next_at = time.monotonic()  # behind: skip the missed ticks instead of bursting
                delay = 0.0
            if self.stop_event.wait(delay):
                break
        self.tick()  # a last tick, so readings that arrived before the stop are forecast

    def tick(self) -> list[AlertEvent]:
        """Drain, forecast every ready machine in one batch, alert; returns the events."""
        started = time.perf_counter()
        now = time.time()
        self._drain(now)
        self.policy.ensure_capacity(self.store.capacity)
        self.anomaly.ensure_capacity(self.store.capacity)
        batch = self.store.take_ready()
        events: list[AlertEvent] = []
        if len(batch):
            forecast_started = time.perf_counter()
            forecasts = self.forecaster.forecast(batch.windows)
            self.metrics.forecast_duration.observe(time.perf_counter() - forecast_started)
            latest = batch.windows[:, -1, 0]
            scores = self.anomaly.update(
                batch.slots, latest, self.store.last_seq[batch.slots], forecasts
            )
            interval = self.store.interval_s[batch.slots]
            interval = np.where(np.isnan(interval), DEFAULT_INTERVAL_S, interval)
            events = self.policy.update(
                batch.slots,
                self.store.machine_ids,
                batch.windows[:, :, 0],
                forecasts,
                interval,
                now,
                scores,
            )
            for event in events:
                self.publisher.publish(event)
                for listener in self.alert_listeners:
                    listener(event)
            self.metrics.forecasts.inc(len(batch))
            self._export_machines(batch.slots, latest, forecasts, scores)
        self.metrics.batch_size.set(len(batch))
        self.metrics.machines.set(len(self.store))
        self.metrics.pending.set(len(self._pending))
        for severity, count in self.policy.firing_counts(len(self.store)).items():
            self.metrics.alerts_firing.labels(severity=severity).set(count)
        self._drop_stale(now)
        self.metrics.ticks.inc()
        self.metrics.last_tick.set(now)
        self.metrics.tick_duration.observe(time.perf_counter() - started)
        if self.tick_listeners and len(batch):
            self._notify_tick(batch.slots, batch.windows[:, -1, 0], forecasts)
        return events

    def _drain(self, now: float) -> None:
        accepted = 0
        for _ in range(len(self._pending)):
            reading = self._pending.popleft()
            reason = self.store.append(reading, now)
            if reason is None:
                accepted += 1
            else:
                self.reject(reason, f"{reading.machine_id} seq {reading.seq}")
        self.metrics.readings.inc(accepted)

    def _export_machines(
        self,
        slots: NDArray[np.int64],
        latest: NDArray[np.float32],
        forecasts: NDArray[np.float32],
        scores: NDArray[np.float64],
    ) -> None:
        peaks = forecasts.max(axis=1)
        ids = self.store.machine_ids
        states = self.policy.state[slots]
        for slot, temperature, peak, score, state in zip(
            slots.tolist(),
            latest.tolist(),
            peaks.tolist(),
            scores.tolist(),
            states.tolist(),
            strict=True,
        ):
            self.metrics.set_machine(ids[slot], temperature, peak, score, state)

    def _drop_stale(self, now: float) -> None:
        if now < self._next_stale_check:
            return
        self._next_stale_check = now + 5.0
        used = len(self.store)
        cutoff = now - self.settings.agent.stale_after_s
        for slot in np.flatnonzero(self.store.last_seen[:used] < cutoff).tolist():
            self.metrics.drop_machine(self.store.machine_ids[slot])

    def _notify_tick(
        self, slots: NDArray[np.int64], latest: NDArray[np.float32], forecasts: NDArray[np.float32]
    ) -> None:
        ids = self.store.machine_ids
        peaks = forecasts.max(axis=1)
        rows = [
            MachineView(
                machine_id=ids[slot],
                temperature_c=float(latest[i]),
                forecast_c=float(peaks[i]),
                state=STATE_NAMES[int(self.policy.state[slot])],
            )
            for i, slot in enumerate(slots.tolist())
        ]
        for listener in self.tick_listeners:
            listener(rows)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)
