"""The agent: wires ingest, windows, the batched forecast tick, alerts, metrics and health.

Threads, each with one job:

* paho's network thread runs :meth:`Agent._on_message`, which appends each single reading's
  message, undecoded, to a bounded hand-off (a deque; a full one drops and counts
  ``overload``), and :meth:`Agent._on_batch`, which decodes a gateway's batch and appends its
  readings;
* the tick thread decodes the single messages of the hand-off together (rejections counted by
  reason), stores every reading in the window store, runs one batched forecast over every
  machine with a full window and a new reading, advances the alert policy and publishes the
  changes;
* the HTTP thread serves /metrics and /healthz;
* a restore thread reads the retained alert states back once at start-up (ticks wait for it);
* the watchdog thread ends the agent (``failure`` set, exit status 1) when the network thread
  or the tick thread dies or stalls, so the agent is never a zombie that looks connected.

One stop event ends them all; SIGINT/SIGTERM set it (see ``forewarn.cli``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import paho.mqtt.client as mqtt
from numpy.typing import NDArray

from agent import __version__
from agent.alerts import CRITICAL, STATE_NAMES, WARNING, AlertEvent, AlertPolicy
from agent.anomaly import AnomalyScorer
from agent.health import MetricsServer
from agent.metrics import AgentMetrics
from agent.publish import AlertPublisher, status_payload
from agent.restore import RestoredAlert, read_retained_alerts
from agent.silence import SilenceBook
from agent.throttle import LogThrottle
from agent.window import WindowStore
from config.mqtt import MqttSettings
from config.settings import Settings
from config.topics import (
    SHARE_PREFIX,
    SPARKPLUG_NAMESPACE,
    default_batch_topic,
    shared,
    silence_filter,
    status_topic,
)
from models.base import Forecaster
from models.checkpoint import forecaster_from_settings
from wire.mapping import FieldMapping
from wire.mqtt import (
    connect_options,
    describe_connect_failure,
    make_client,
    network_thread,
    reading_filters,
)
from wire.reading import Arrival, Batch, Reading, ReadingDecoder, Rejected
from wire.sparkplug import BIRTH_TYPES, DEATH_TYPES, DecodeError, SparkplugIngest
from wire.sparkplug import parse_topic as parse_sparkplug_topic
from wire.tls import check_broker

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


def batch_subscription(settings: MqttSettings) -> str | None:
    """The gateway batch filter to subscribe to, saying why there is none by default.

    An explicit batch topic that overlaps another stops start-up (see the settings); the
    default merely steps aside, so this is where an operator learns that it did.
    """
    batch_filter = settings.batch_filter
    if batch_filter is None and settings.batch_topic is None:
        default = default_batch_topic(settings.topic_prefix)
        logger.warning(
            "gateway batches are off: the default batch topic %s overlaps %s; set "
            "FOREWARN_MQTT__BATCH_TOPIC to a free filter to take them (or to off to say so)",
            default,
            settings.batch_collision(default),
        )
    return batch_filter


Heard = TypeVar("Heard", bool, np.bool_, NDArray[np.bool_])
V = TypeVar("V")


def _where(forecaster: object) -> str:
    """Where the model runs, for the start-up log: the device, and the CPU's thread count."""
    device = str(getattr(forecaster, "device", "cpu"))
    threads = getattr(forecaster, "threads", None)
    return f"{device} ({threads} thread(s))" if device == "cpu" and threads else device


MAX_CACHED_TOPIC = 256
"""Longer topics (legal up to 65,535 bytes) are routed afresh each time, never cached."""


DECODE_SLICE_READINGS = 4096
DECODE_SLICE_BYTES = 1 << 20
"""A tick decodes its single messages in slices of at most this many, and this many payload
bytes: a parsed payload takes several times its bytes (a simulator reading's 141 bytes become
about 480), so a full hand-off decoded at once would briefly need several times its own size."""


def _slices(arrivals: list[Arrival], most: int, most_bytes: int) -> Iterator[tuple[int, int, int]]:
    """``(start, stop, payload bytes)`` of consecutive slices within both bounds (a payload
    larger than ``most_bytes`` alone is a slice)."""
    start, size = 0, 0
    for index, arrival in enumerate(arrivals):
        length = len(arrival[1])
        if index > start and (index - start >= most or size + length > most_bytes):
            yield start, index, size
            start, size = index, 0
        size += length
    if start < len(arrivals):
        yield start, len(arrivals), size


def _remember(cache: dict[str, V], key: str, value: V, limit: int) -> None:
    """Cache ``value`` for the topic ``key``; a cache at ``limit`` entries starts over, and
    long topics stay out, so a flood of made-up topics can neither grow it nor fill memory."""
    if len(key) > MAX_CACHED_TOPIC:
        return
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value


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
        self.forecaster: Forecaster = forecaster or forecaster_from_settings(settings.model)
        self.metrics = metrics or AgentMetrics(
            max_machine_series=settings.metrics.max_machine_series
        )
        features = len(self.forecaster.features)
        self.store = WindowStore(
            self.forecaster.window,
            features,
            settings.agent.max_machines,
            max_missing_readings=settings.agent.max_missing_readings,
            stale_after_s=settings.agent.stale_after_s,
            max_future_s=settings.agent.max_future_s,
        )
        self.policy = AlertPolicy(settings.alerts, self.store.capacity)
        self.anomaly = AnomalyScorer(self.forecaster.horizon, self.store.capacity)
        # A mapping naming a feature this model lacks raises ConfigError: start-up stops.
        self.decoder = ReadingDecoder(
            settings.limits,
            self.forecaster.features,
            FieldMapping(settings.mapping.field_maps(), self.forecaster.features),
        )
        self.stop_event = threading.Event()
        self.alert_listeners: list[AlertListener] = []
        self.tick_listeners: list[TickListener] = []
        # Readings waiting for the next tick: single messages as they arrived (decoded by the
        # tick, together), and readings a gateway batch or Sparkplug message already yielded.
        self._pending: deque[Reading | Arrival] = deque()
        # The readings the current tick took in, for forewarn_reading_to_forecast_seconds.
        self._received_slots: NDArray[np.int64] = np.empty(0, dtype=np.int64)
        self._received_at: NDArray[np.float64] = np.empty(0, dtype=np.float64)
        self._max_pending = settings.agent.max_pending_readings
        # Payload bytes in the hand-off: added by the network thread, taken off by the tick
        # thread, each counting up its own total (no lock, no lost update).
        self._max_pending_bytes = settings.agent.max_pending_bytes
        self._queued_bytes = 0
        self._decoded_bytes = 0
        self._tick_lock = threading.Lock()
        self._connected = threading.Event()
        self._last_tick = 0.0
        self._tick_thread: threading.Thread | None = None
        # Fault handling: see start(), the watchdog and the restore.
        self.failure: str | None = None
        self._stall_s = settings.agent.stall_after_s + settings.agent.tick_interval_s
        self._network: threading.Thread | None = None
        self._callback_since = 0.0
        self._restored = threading.Event()
        self._restore_result: list[RestoredAlert] | None = None
        self._has_connected = False
        self._lost_at: float | None = None
        self.session_resumed = False
        """Whether the broker still had the agent's session at the last connect."""
        self._subscribing: dict[int, list[str]] = {}
        """The filters of each SUBSCRIBE awaiting the broker's answer, by message id."""
        self._callback_logged: dict[str, float] = {}
        self._throttle = LogThrottle(logger)
        self._prefix = settings.mqtt.topic_prefix
        # With narrowed or shared subscriptions, other agents own some of the machines whose
        # retained alerts this one restores: it publishes and counts only the ones it hears.
        self._shares_fleet = bool(settings.mqtt.subscriptions) or bool(settings.mqtt.shared_group)
        self._telemetry = settings.mqtt.telemetry_template
        self._next_stale_check = 0.0
        # Sparkplug B (mqtt.sparkplug_group): its own callback; DEATH certificates queue the
        # machines they end for the tick thread, the alert policy's only writer.
        self.sparkplug = SparkplugIngest()
        self._deaths: deque[str] = deque()
        group = settings.mqtt.sparkplug_group
        self._sparkplug_filter = None if group is None else f"{SPARKPLUG_NAMESPACE}/{group}/#"
        # Gateway batches (mqtt.batch_topic): many machines' readings per message, own callback.
        self._batch_filter = batch_subscription(settings.mqtt)

        mqtt_settings = settings.mqtt
        self.client = make_client(
            mqtt_settings, mqtt_settings.client_id, persistent=mqtt_settings.persistent_session
        )
        self.client.will_set(
            status_topic(self._prefix, mqtt_settings.client_id),
            status_payload("offline", mqtt_settings.client_id, __version__, "connection lost"),
            qos=1,
            retain=True,
        )
        self.client.on_connect = self._guard("connect", self._on_connect)
        self.client.on_subscribe = self._guard("subscribe", self._on_subscribe)
        self.client.on_disconnect = self._guard("disconnect", self._on_disconnect)
        self.silences = SilenceBook(self._prefix)
        # Every message comes to one callback that routes it by topic, as paho's
        # message_callback_add would (each matching filter's handler; none: telemetry), with
        # the route and the machine id cached per topic: paho's own matching and the template
        # parse cost ~5 µs a message, a cached route one dict lookup.
        special = [(silence_filter(self._prefix), self._guard("silence", self._on_silence))]
        if self._sparkplug_filter is not None:
            special.append((self._sparkplug_filter, self._guard("sparkplug", self._on_sparkplug)))
        if self._batch_filter is not None:
            # Guarded as "message": a batch is readings, like the telemetry topic's messages.
            special.append((self._batch_filter, self._guard("message", self._on_batch)))
        self._special_routes = special
        self._telemetry_route = self._guard("message", self._on_message)
        self._routes: dict[str, tuple[Callable[..., None], ...]] = {}
        self._topic_machine_ids: dict[str, str] = {}
        self._max_routes = 2 * settings.agent.max_machines + 1024
        self.client.on_message = self._dispatch  # each handler is guarded on its own
        self.publisher = AlertPublisher(
            self.client,
            self._prefix,
            self.forecaster.version,
            self.metrics,
            max_queued=mqtt_settings.max_queued_alerts,
            alerts=mqtt_settings.alerts_template,
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
        check_broker(self.settings.mqtt)  # a wrong CA or password stops start-up, loudly
        warm_up = getattr(self.forecaster, "warm_up", None)
        if callable(warm_up):
            warm_up()
        self.http.start()
        m = self.settings.mqtt
        logger.info(
            "agent %s serving %s (window %d, horizon %d) on %s; metrics on http://%s:%d/metrics",
            m.client_id,
            self.forecaster.version,
            self.forecaster.window,
            self.forecaster.horizon,
            _where(self.forecaster),
            self.settings.metrics.host,
            self.http.port,
        )
        if m.restore_timeout_s > 0:
            threading.Thread(target=self._restore, name="forewarn-restore", daemon=True).start()
        else:
            self._restore_result = []
        self.client.connect_async(
            m.host, m.port, m.keepalive_s, **connect_options(m, m.persistent_session)
        )
        self.client.loop_start()
        self._network = network_thread(self.client)
        self._last_tick = time.monotonic()
        # Daemon threads: a tick stuck in the forecaster must not keep a failed agent alive.
        self._tick_thread = threading.Thread(
            target=self._tick_loop, name="forewarn-tick", daemon=True
        )
        self._tick_thread.start()
        threading.Thread(target=self._watchdog, name="forewarn-watchdog", daemon=True).start()

    def run(self) -> int:
        """Start, block until the stop event is set, then stop; returns the exit status.

        1 when the watchdog stopped the agent (a service manager should restart it), else 0.
        """
        self.start()
        try:
            self.stop_event.wait()
        finally:
            self.stop()
        return 0 if self.failure is None else 1

    def stop(self, flush_timeout_s: float | None = None) -> None:
        """Finish the running tick, flush QoS 1 alerts, say offline, disconnect.

        The flush waits at most ``mqtt.flush_timeout_s`` (or ``flush_timeout_s``) for the
        broker's acknowledgements; what it did not get is logged and counted as dropped.
        """
        m = self.settings.mqtt
        timeout = m.flush_timeout_s if flush_timeout_s is None else flush_timeout_s
        self.stop_event.set()
        if self._tick_thread is not None:
            self._tick_thread.join(timeout=30 if self.failure is None else 1)
        deadline = time.monotonic() + timeout
        if self._network_alive(time.monotonic()):
            self.publisher.flush(timeout)
            if self._connected.is_set():
                info = self.publisher.publish_status(m.client_id, "offline", __version__, "stopped")
                try:
                    info.wait_for_publish(timeout=max(0.1, deadline - time.monotonic()))
                    confirmed = info.is_published()
                except (RuntimeError, ValueError):
                    confirmed = False
                if not confirmed:
                    logger.warning("could not confirm the offline status before disconnecting")
            self.client.disconnect()
            self.client.loop_stop()
        else:
            # A dead or stuck network thread sends nothing more; joining it could hang.
            self.publisher.flush(0)
        self.http.stop()
        logger.info("agent stopped%s", "" if self.failure is None else f" ({self.failure})")

    # --- health ------------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, object]]:
        """Healthy while connected, both threads alive and not stalled, alert states restored."""
        now = time.monotonic()
        tick_age = now - self._last_tick
        tick_alive = (
            self._tick_thread is not None
            and self._tick_thread.is_alive()
            and tick_age < self._stall_s
        )
        network_alive = self._network_alive(now)
        connected = self._connected.is_set()
        restored = self._restored.is_set()
        healthy = connected and tick_alive and network_alive and restored and not self.failure
        return healthy, {
            "mqtt_connected": connected,
            "tick_alive": tick_alive,
            "network_alive": network_alive,
            "alerts_restored": restored,
            "last_tick_age_s": round(tick_age, 3),
            "machines": len(self.store),
            "alerts_queued": self.publisher.pending(),
            "failure": self.failure,
        }

    def _network_alive(self, now: float) -> bool:
        """paho's network thread runs and is not stuck in one of our callbacks."""
        since = self._callback_since
        return (
            self._network is not None
            and self._network.is_alive()
            and (since == 0.0 or now - since < self._stall_s)
        )

    def _watchdog(self) -> None:
        """Ends the agent when a thread it depends on died or stalled (see ``health``)."""
        period = min(0.5, self._stall_s / 4)
        while not self.stop_event.wait(period):
            now = time.monotonic()
            problem = None
            if self._network is None or not self._network.is_alive():
                problem = "the MQTT network thread died"
            elif self._callback_since and now - self._callback_since >= self._stall_s:
                problem = f"an MQTT callback has run for {now - self._callback_since:.0f} s"
            elif self._tick_thread is None or not self._tick_thread.is_alive():
                problem = "the tick thread died"
            elif now - self._last_tick >= self._stall_s:
                problem = f"no tick for {now - self._last_tick:.0f} s (stuck in a tick?)"
            if problem is not None and not self.stop_event.is_set():
                self.failure = problem
                self._connected.clear()
                self.metrics.mqtt_connected.set(0)
                logger.critical(
                    "watchdog: %s; stopping with exit status 1 (FOREWARN_AGENT__STALL_AFTER_S=%g)",
                    problem,
                    self.settings.agent.stall_after_s,
                )
                self.stop_event.set()
                return

    # --- restoring the alert states ----------------------------------------------------------

    def _restore(self) -> None:
        """Read the retained alert states, retrying until the broker answers or the agent stops."""
        m = self.settings.mqtt
        delay = m.reconnect_min_s
        while not self.stop_event.is_set():
            try:
                result = read_retained_alerts(
                    m, m.restore_timeout_s, self.settings.agent.max_machines
                )
            except ConnectionError as error:
                self._throttle.warning(
                    "restore", "cannot read the retained alert states yet (%s); retrying", error
                )
                self.stop_event.wait(delay)
                delay = min(2 * delay, m.reconnect_max_s)
                continue
            except Exception:
                logger.exception("cannot read the retained alert states; every machine starts ok")
                result = []
            self._restore_result = result
            return

    def _apply_restore(self, restored: list[RestoredAlert]) -> None:
        """Resume each machine's alert (tick thread: the policy's only writer)."""
        counts = {WARNING: 0, CRITICAL: 0}
        stale = 0
        for alert in restored:
            slot = self.store.slot_for(alert.machine_id)
            if slot is None:
                continue
            self.policy.ensure_capacity(self.store.capacity)
            self.anomaly.ensure_capacity(self.store.capacity)
            # A stale machine resumes as ok, its seq continuing: "stale" is decided afresh
            # from the readings that arrive (or do not) after the restart.
            alert_id = None if alert.stale else alert.alert_id
            self.policy.restore(slot, alert.state, alert_id, alert.seq)
            stale += alert.stale
            if alert.state in counts:
                counts[alert.state] += 1
        logger.info(
            "resumed the alert state of %d machine(s) from the retained alerts: %d warning, "
            "%d critical, %d stale (resumed as ok)",
            len(restored),
            counts[WARNING],
            counts[CRITICAL],
            stale,
        )
        self._restored.set()

    # --- MQTT callbacks (network thread: keep them thin and never let them raise) ---------

    def _guard(self, name: str, callback: Callable[..., None]) -> Callable[..., None]:
        """``callback`` for paho: exceptions are logged and counted, never raised into paho.

        paho ends its network thread when a callback raises, silently. The time a callback
        started is kept for the watchdog, which catches one that never returns.
        """

        def guarded(*args: object) -> None:
            self._callback_since = time.monotonic()
            try:
                callback(*args)
            except Exception:
                self.metrics.callback_errors.labels(callback=name).inc()
                now = time.monotonic()
                if now - self._callback_logged.get(name, -60.0) >= 10.0:
                    self._callback_logged[name] = now
                    logger.exception("error in the MQTT %s callback; the loop goes on", name)
            finally:
                self._callback_since = 0.0

        return guarded

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        m = self.settings.mqtt
        if getattr(reason, "is_failure", False):
            logger.error("broker refused the agent: %s", describe_connect_failure(reason))
            return
        subscriptions = self._subscriptions()
        filters = [topic_filter for topic_filter, _ in subscriptions]
        _, mid = client.subscribe(subscriptions)
        if mid is not None:  # None: the connection is already gone; the next connect retries
            self._subscribing[mid] = filters
        self.publisher.publish_status(m.client_id, "online", __version__, "connected")
        self._connected.set()
        self.metrics.mqtt_connected.set(1)
        self.publisher.connected()
        session = self.session_resumed = bool(getattr(flags, "session_present", False))
        away = "" if self._lost_at is None else f" after {time.monotonic() - self._lost_at:.1f} s"
        logger.info(
            "connected to %s:%d%s as %s (MQTT %s), subscribed to %s (session %s)",
            m.host,
            m.port,
            away,
            m.client_id,
            m.protocol,
            ", ".join(filters),
            "resumed" if session else "new",
        )
        if self._has_connected and m.persistent_session and not session:
            self.metrics.mqtt_sessions_lost.inc()
            logger.warning(
                "the broker kept no session for %s (restarted without its persistence, or the "
                "session expired): readings published while the agent was away are lost",
                m.client_id,
            )
        self._has_connected = True
        self._lost_at = None

    def _subscriptions(self) -> list[tuple[str, int]]:
        """Every filter the agent subscribes to, with its QoS.

        Readings (single and gateway batches) go to ``mqtt.shared_group`` when one is set, so
        that the broker gives each to one agent of the group; silences and Sparkplug B stay
        the agent's own: every agent must hear every silence, and a Sparkplug device's BIRTH
        must reach the agent that reads its DATA (settings refuse a group with Sparkplug).
        """
        m = self.settings.mqtt
        qos: int = m.telemetry_qos
        subscriptions = [(topic_filter, qos) for topic_filter in reading_filters(m)]
        if self._batch_filter is not None:
            subscriptions.append((shared(m.shared_group, self._batch_filter), qos))
        subscriptions.append((silence_filter(self._prefix), 1))
        if self._sparkplug_filter is not None:
            subscriptions.append((self._sparkplug_filter, qos))
        return subscriptions

    def _on_subscribe(
        self, client: mqtt.Client, userdata: object, mid: int, reasons: list[object], props: object
    ) -> None:
        """Log a subscription the broker refused: the agent would otherwise wait for readings
        that never come, connected and healthy (an ACL, or a broker without $share)."""
        filters = self._subscribing.pop(mid, [])
        for topic_filter, reason in zip(filters, reasons, strict=False):
            if getattr(reason, "is_failure", False):
                logger.error(
                    "the broker refused the subscription to %s (%s): nothing arrives from it; "
                    "check the broker's ACL for %s%s",
                    topic_filter,
                    reason,
                    self.settings.mqtt.client_id,
                    ", and that it offers shared subscriptions"
                    if topic_filter.startswith(SHARE_PREFIX)
                    else "",
                )

    def _on_disconnect(
        self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        if self._connected.is_set():
            self.metrics.mqtt_disconnects.inc()
            self._lost_at = time.monotonic()
        self._connected.clear()
        self.metrics.mqtt_connected.set(0)
        self.publisher.disconnected()
        if not self.stop_event.is_set():
            logger.warning("lost the broker (%s); reconnecting with back-off", reason)

    def _dispatch(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        """Route a message to its handlers by topic (see ``__init__``)."""
        try:
            topic = message.topic
        except UnicodeDecodeError:  # nothing else here can raise into paho's thread
            self.reject("bad_json", "a topic that is not UTF-8")
            return
        handlers = self._routes.get(topic)
        if handlers is None:
            handlers = tuple(
                handler
                for pattern, handler in self._special_routes
                if mqtt.topic_matches_sub(pattern, topic)
            ) or (self._telemetry_route,)
            _remember(self._routes, topic, handlers, self._max_routes)
        for handler in handlers:
            handler(client, userdata, message)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        """A single reading: queued as it came, for the next tick to decode with the rest.

        The network thread is the agent's first limit (paho's own work per message comes
        first), so its share here is a cached topic lookup, three bounds checks and one append.
        """
        topic = message.topic
        machine_id = self._topic_machine_ids.get(topic)
        if machine_id is None:  # "": the topic names no machine
            machine_id = self._telemetry.machine_id(topic) or ""
            _remember(self._topic_machine_ids, topic, machine_id, self._max_routes)
        payload = message.payload
        size = len(payload)
        if size > self.decoder.max_bytes:  # refused before it takes room in the hand-off
            self.reject("too_large", f"{size} bytes > {self.decoder.max_bytes}")
        elif not self._full(size):
            self._pending.append((machine_id, payload, time.monotonic()))
            self._queued_bytes += size

    def _on_batch(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        """A gateway batch: its good readings are handed off, its bad ones counted by reason."""
        try:
            room = self._max_pending - len(self._pending)
            batch = self.decoder.decode_batch(message.payload, room)
        except Exception:
            logger.exception("unexpected error decoding a gateway batch on %s", message.topic)
            self.reject("bad_json", "undecodable batch")
            return
        self.hand_off_batch(batch, message.topic)

    def _on_sparkplug(
        self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage
    ) -> None:
        """A Sparkplug B message: DATA becomes a reading, BIRTH teaches aliases, DEATH stales."""
        topic = parse_sparkplug_topic(message.topic)
        if topic is None:
            return  # STATE, NCMD/DCMD: not about readings
        if topic.kind in DEATH_TYPES:
            machines = self.sparkplug.death(topic)
            self._deaths.extend(machines)
            logger.info("%s on %s: %s go stale", topic.kind, message.topic, ", ".join(machines))
            return
        try:
            if len(message.payload) > self.decoder.max_bytes:
                raise Rejected(
                    "too_large", f"{len(message.payload)} bytes > {self.decoder.max_bytes}"
                )
            if topic.kind in BIRTH_TYPES:
                self.sparkplug.birth(topic, message.payload)
                return
            data = self.sparkplug.reading(topic, message.payload)
            if self.decoder.mapping is not None:
                data = self.decoder.mapping.apply(data)
            reading = self.decoder.decode_fields(data, topic.machine_id)
        except Rejected as rejected:
            self.reject(rejected.reason, rejected.detail)
            return
        except DecodeError:
            self.reject("bad_json", f"not a Sparkplug B payload on {message.topic}")
            return
        self.hand_off(reading)

    def hand_off(self, reading: Reading) -> None:
        """Queue a valid reading for the next tick, or drop and count it when overloaded."""
        if not self._full():
            self._pending.append(reading)

    def _full(self, payload_bytes: int = 0) -> bool:
        """Whether the hand-off has no room for one more reading (one of ``payload_bytes``
        still to decode); when so, the reading is counted as ``overload``."""
        if len(self._pending) >= self._max_pending:
            self.reject("overload", f"{self._max_pending} readings already waiting")
            return True
        waiting = self._queued_bytes - self._decoded_bytes
        if waiting + payload_bytes > self._max_pending_bytes:
            self.reject("overload", f"{self._max_pending_bytes} payload bytes already waiting")
            return True
        return False

    def hand_off_batch(self, batch: Batch, topic: str) -> None:
        """Queue a batch's valid readings and count its rejections, one update per reason.

        The decoder kept no more readings than the hand-off had room for when the batch
        arrived (the rest are its ``overload``), and only this thread adds to the hand-off, so
        a batch never takes it past ``agent.max_pending_readings``.
        """
        self._pending.extend(batch.readings)
        self.reject_tally(batch, f" (gateway batch on {topic})")

    def reject_tally(self, tally: Batch, where: str = "") -> None:
        """Count a tally's rejections, one counter update and one log line per reason."""
        for reason, count in tally.rejected.items():
            self.reject(reason, tally.details[reason] + where, count)

    def reject(self, reason: str, detail: str, count: int = 1) -> None:
        self.metrics.rejected.labels(reason=reason).inc(count)
        what = "a reading" if count == 1 else f"{count} readings"
        self._throttle.warning(reason, "rejected %s (%s): %s", what, reason, detail)

    # --- the tick ----------------------------------------------------------------------------

    def _tick_loop(self) -> None:
        """Tick every ``tick_interval_s``; a tick that overruns makes the loop skip, not burst.

        A model slower than the readings thus costs skipped ticks (counted, logged) and, once
        the bounded hand-off is full, readings dropped as ``overload``; the network thread
        keeps reading and the keepalive keeps going. Ticks wait for the restored alert states.
        """
        interval = self.settings.agent.tick_interval_s
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            self._last_tick = time.monotonic()
            try:
                if self._restored.is_set():
                    self.tick()
                elif self._restore_result is not None:
                    self._apply_restore(self._restore_result)
                self.publisher.pump()
            except Exception:
                logger.exception("tick failed; the next tick starts afresh")
            now = self._last_tick = time.monotonic()
            next_at += interval
            delay = next_at - now
            if delay < 0:
                skipped = int(-delay // interval)
                if skipped:
                    self.metrics.ticks_skipped.inc(skipped)
                    self._throttle.warning(
                        "slow-tick",
                        "a tick took %.2f s, over the %.2f s tick interval: skipped %d tick(s) "
                        "(the model is slower than the readings; see forewarn_ticks_skipped_total)",
                        interval - delay,
                        interval,
                        skipped,
                    )
                next_at = now  # behind: skip the missed ticks instead of bursting
                delay = 0.0
            if self.stop_event.wait(delay):
                break
        if self._restored.is_set():
            self.tick()  # a last tick, so readings that arrived before the stop are forecast

    def tick(self) -> list[AlertEvent]:
        """Drain, forecast every ready machine in one batch, alert; returns the events.

        One tick at a time: the tick thread runs them, and a tool or test may run one too."""
        with self._tick_lock:
            return self._tick()

    def _tick(self) -> list[AlertEvent]:
        started = time.perf_counter()
        now = time.time()
        self._drain(now)
        while self._deaths:  # a DEATH certificate: stale now, not after stale_after_s
            slot = self.store.slot_of.get(self._deaths.popleft())
            if slot is not None:
                self.store.last_seen[slot] = 0.0
        self.policy.ensure_capacity(self.store.capacity)
        self.anomaly.ensure_capacity(self.store.capacity)
        batch = self.store.take_ready()
        events: list[AlertEvent] = []
        if len(batch):
            forecast_started = time.perf_counter()
            forecasts = self.forecaster.forecast(batch.windows)
            self.metrics.forecast_duration.observe(time.perf_counter() - forecast_started)
            self._time_forecasts(batch.slots)
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
                self.anomaly.spread(batch.slots),
                self.anomaly.noise_ratio(batch.slots),
                reading_ts=self.store.last_ts[batch.slots],
                appended=self.store.count[batch.slots],
            )
            self._emit(events, now)
            self.metrics.forecasts.inc(len(batch))
            self._export_machines(batch.slots, latest, forecasts, scores)
            p = self.policy
            self.metrics.set_times_to_threshold(
                self.store.machine_ids, batch.slots, p.eta_low_s, p.eta_s, p.eta_high_s
            )
        self.metrics.batch_size.set(len(batch))
        self.metrics.machines.set(len(self.store))
        self.metrics.pending.set(len(self._pending))
        used = len(self.store)
        ours = self._ours(self.store.last_seq[:used] >= 0)
        for severity, count in self.policy.firing_counts(used, ours).items():
            self.metrics.alerts_firing.labels(severity=severity).set(count)
        events += self._track_staleness(now)
        events += self._end_silences(now)
        self._drop_stale(now)
        self.metrics.ticks.inc()
        self.metrics.last_tick.set(now)
        self.metrics.tick_duration.observe(time.perf_counter() - started)
        if self.tick_listeners and len(batch):
            self._notify_tick(batch.slots, batch.windows[:, -1, 0], forecasts)
        return events

    def _drain(self, now: float) -> None:
        """Move the hand-off into the window store, then clean up after evictions.

        A slot reused for a new machine starts with the policy's and the scorer's state reset,
        and the evicted machine's metric series go, so neither memory nor Prometheus
        cardinality grows with the number of machine ids ever seen.
        """
        store = self.store
        readings = self._decode_pending()
        appended = store.append_many(readings, now)
        accepted = appended.accepted
        self.metrics.readings.inc(int(accepted.sum()))
        self._report_refused(readings, appended.rejected)
        received = np.fromiter((r.received for r in readings), np.float64, len(readings))
        # Timed: readings a forecast this tick can use (made here, by tests or tools: no time).
        timed = appended.in_window & (received > 0)
        self._received_slots = appended.slots[timed]
        self._received_at = received[timed]
        stamped = received[received > 0]
        oldest = time.monotonic() - float(stamped.min()) if len(stamped) else 0.0
        self.metrics.pending_oldest_age.set(oldest)
        evicted_ids, evicted_slots, evicted_heard = store.take_evicted()
        if evicted_ids:
            self.policy.ensure_capacity(store.capacity)
            self.anomaly.ensure_capacity(store.capacity)
            # An evicted machine that was alerting would otherwise stay "firing" in its
            # retained alert forever: say it is stale before its slot is handed over. Not for a
            # machine this agent never heard (known only from a restored alert): under topic
            # sharding its alerts are another agent's to publish.
            self._emit(
                [
                    event
                    for machine_id, slot, heard in zip(
                        evicted_ids, evicted_slots.tolist(), evicted_heard, strict=True
                    )
                    if self._ours(heard)
                    and (event := self.policy.retire(slot, machine_id, now)) is not None
                ],
                now,
            )
            self.policy.reset(evicted_slots)
            self.anomaly.reset(evicted_slots)
            for machine_id in evicted_ids:
                self.metrics.drop_machine(machine_id)
            self.metrics.machines_evicted.inc(len(evicted_ids))
            self._throttle.warning(
                "evicted",
                "evicted %d least recently seen machines (max_machines %d reached), e.g. %r",
                len(evicted_ids),
                store.max_machines,
                evicted_ids[0],
            )

    def _decode_pending(self) -> list[Reading]:
        """Take the hand-off, in arrival order, with its single messages decoded together."""
        take = self._pending.popleft
        taken = [take() for _ in range(len(self._pending))]
        arrivals = [item for item in taken if isinstance(item, tuple)]
        if not arrivals:
            return [item for item in taken if isinstance(item, Reading)]
        decoded: list[Reading | None] = []
        tally = Batch()
        for start, stop, size in _slices(arrivals, DECODE_SLICE_READINGS, DECODE_SLICE_BYTES):
            self._decoded_bytes += size
            readings, rejected = self.decoder.decode_many(arrivals[start:stop])
            decoded += readings
            tally.merge(rejected)
        self.reject_tally(tally)
        if len(arrivals) < len(taken):  # batch readings too: each decoded one to its place
            each = iter(decoded)
            decoded = [next(each) if isinstance(item, tuple) else item for item in taken]
        return [reading for reading in decoded if reading is not None]

    def _report_refused(self, readings: list[Reading], refused: list[tuple[int, str]]) -> None:
        """Count refused readings by reason, one counter update and one log line per reason."""
        tally = Batch()
        for index, reason in refused:
            r = readings[index]
            tally.reject(
                reason, "" if reason in tally.details else f"{r.machine_id} seq {r.seq} ts {r.ts}"
            )
        self.reject_tally(tally)

    def _time_forecasts(self, slots: NDArray[np.int64]) -> None:
        """Observe, for each reading this tick took in whose machine was forecast, the time
        from its arrival to now (the forecast's end)."""
        if not len(self._received_slots):
            return
        forecast = np.zeros(self.store.capacity, dtype=np.bool_)
        forecast[slots] = True
        used = forecast[self._received_slots]
        self.metrics.reading_to_forecast.observe_many(time.monotonic() - self._received_at[used])

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

    def _track_staleness(self, now: float) -> list[AlertEvent]:
        """Publish "stale" for machines that stopped reporting, and its end when they resume."""
        used = len(self.store)
        silent = self.store.stale(now)
        was_stale = self.policy.stale[:used]
        newly = silent[~was_stale[silent]]
        quiet = np.zeros(used, dtype=np.bool_)
        quiet[silent] = True
        # A slot that has not reported since it was restored as stale is still stale.
        reported = self.store.last_seq[:used] >= 0
        resumed = np.flatnonzero(was_stale & ~quiet & reported)
        ids = self.store.machine_ids
        events = self.policy.mark_stale(newly, ids, self.store.latest(newly)[:, 0], now)
        events += self.policy.mark_resumed(resumed, ids, self.store.latest(resumed)[:, 0], now)
        self._emit(events, now)
        return events

    def _emit(self, events: list[AlertEvent], now: float) -> None:
        """Publish alert changes, except for silenced machines, whose changes are only counted."""
        for event in events:
            if self.silences.silenced(event.machine_id, now):
                self.metrics.alerts_silenced.labels(severity=event.severity).inc()
                logger.info("silenced: %s", event.line())
            else:
                self.publisher.publish(event)
            for listener in self.alert_listeners:
                listener(event)

    def _ours(self, heard: Heard) -> Heard:
        """Whether machines are this agent's to publish and count, from whether it has heard
        them (a bool or a boolean array): all of them for an agent that takes the whole fleet;
        with narrowed or shared subscriptions only the ones it hears, since a machine known
        only from a restored retained alert may report to another agent."""
        return heard | (not self._shares_fleet)

    def _end_silences(self, now: float) -> list[AlertEvent]:
        """When a silence ends on an alerting machine, publish where the machine stands now."""
        events = []
        for machine_id in self.silences.ended(now):
            slot = self.store.slot_of.get(machine_id)
            # With a shared fleet, only machines this agent hears: a restored alert of a
            # machine that reports to another agent is that agent's to republish.
            if slot is not None and self._ours(self.store.last_seq[slot] >= 0):
                temperature = float(self.store.latest(np.array([slot]))[0, 0])
                event = self.policy.current_event(slot, machine_id, temperature, now)
                if event is not None:
                    events.append(event)
        self._emit(events, now)
        self.metrics.machines_silenced.set(self.silences.active_count(now))
        return events

    def _on_silence(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        try:
            self.silences.handle(message.topic, message.payload)
        except Exception:
            logger.exception("error handling a silence message on %s", message.topic)

    def _drop_stale(self, now: float) -> None:
        """Drop the series of machines that went stale (the window store's stale rule).

        Only machines that have series are looked at (at most ``max_machine_series``), so the
        check costs the same with a hundred thousand silent machines in the store.
        """
        if now < self._next_stale_check:
            return
        self._next_stale_check = now + min(5.0, self.settings.agent.stale_after_s / 2)
        store = self.store
        cutoff = now - store.stale_after_s
        for machine_id in self.metrics.series_machines():
            slot = store.slot_of.get(machine_id)
            if slot is None or store.last_seen[slot] < cutoff:
                self.metrics.drop_machine(machine_id)

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
        """Wait until the agent is connected and has resumed its alert states (ready)."""
        deadline = time.monotonic() + timeout_s
        return self._restored.wait(timeout_s) and self._connected.wait(
            max(0.0, deadline - time.monotonic())
        )
