"""Ingest: what the agent does with the broker's messages, up to the tick's hand-off.

The callbacks here run on paho's network thread, which is the agent's first limit (paho's own
work per message comes first) and which paho ends, silently, when a callback raises. So every
callback is guarded (errors logged and counted, never raised; the time it started kept for
the watchdog), and the per-reading share is kept small.

* on connect the agent subscribes to readings, silences, re-baseline commands (with
  ``anomaly.enabled``), gateway batches and Sparkplug B,
  and says it is online; a refused subscription and a lost connection are logged;
* one message callback routes each message by topic, with the route and the machine id
  cached per topic;
* a single reading's message is appended, undecoded, to a bounded hand-off (a deque; a full
  one drops and counts ``overload``); a gateway batch or a Sparkplug B message is decoded
  here and its readings appended; Sparkplug B DEATH certificates queue the machines they end;
* the tick thread takes the hand-off (:meth:`Ingest.take`), decoding its single messages
  together, in slices bounded in readings and bytes, and the queued DEATHs.

Rejected readings are counted here by reason, for both threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

import paho.mqtt.client as mqtt

from agent import __version__
from agent.metrics import AgentMetrics
from agent.publish import AlertPublisher
from agent.rebaseline import RebaselineQueue
from agent.silence import SilenceBook
from agent.throttle import LogThrottle
from config.mqtt import MqttSettings
from config.settings import Settings
from config.topics import (
    SHARE_PREFIX,
    SPARKPLUG_NAMESPACE,
    default_batch_topic,
    rebaseline_filter,
    shared,
    silence_filter,
)
from wire.mqtt import describe_connect_failure, reading_filters
from wire.reading import Arrival, Batch, Reading, ReadingDecoder, Rejected

if TYPE_CHECKING:
    from wire.sparkplug import SparkplugIngest

logger = logging.getLogger(__name__)

V = TypeVar("V")

MAX_CACHED_TOPIC = 256
"""Longer topics (legal up to 65,535 bytes) are routed afresh each time, never cached."""


DECODE_SLICE_READINGS = 4096
DECODE_SLICE_BYTES = 1 << 20
"""A tick decodes its single messages in slices of at most this many, and this many payload
bytes: a parsed payload takes several times its bytes (a simulator reading's 141 bytes become
about 480), so a full hand-off decoded at once would briefly need several times its own size."""


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


class Ingest:
    """The agent's MQTT callbacks and the hand-off they fill for the tick.

    Constructing it installs the callbacks on ``client``. ``batch_filter`` is the gateway
    batch filter (:func:`batch_subscription`), or None for no batches.
    """

    def __init__(
        self,
        settings: Settings,
        client: mqtt.Client,
        decoder: ReadingDecoder,
        publisher: AlertPublisher,
        silences: SilenceBook,
        metrics: AgentMetrics,
        stop_event: threading.Event,
        batch_filter: str | None,
        rebaselines: RebaselineQueue | None = None,
    ) -> None:
        self._settings = settings
        self._decoder = decoder
        self._publisher = publisher
        self._silences = silences
        # Re-baseline commands (anomaly.enabled): every agent hears them, as silences.
        self._rebaselines = rebaselines
        self._metrics = metrics
        self._stop_event = stop_event
        self.connected = threading.Event()
        """Set while the broker has the agent connected (cleared by the watchdog too)."""
        self.session_resumed = False
        """Whether the broker still had the agent's session at the last connect."""
        self.callback_since = 0.0
        """When the callback running now started (monotonic; 0.0: none), for the watchdog."""
        # Readings waiting for the next tick: single messages as they arrived (decoded by the
        # tick, together), and readings a gateway batch or Sparkplug message already yielded.
        self._pending: deque[Reading | Arrival] = deque()
        self._max_pending = settings.agent.max_pending_readings
        # Payload bytes in the hand-off: added by the network thread, taken off by the tick
        # thread, each counting up its own total (no lock, no lost update).
        self._max_pending_bytes = settings.agent.max_pending_bytes
        self._queued_bytes = 0
        self._decoded_bytes = 0
        self._has_connected = False
        self._lost_at: float | None = None
        self._subscribing: dict[int, list[str]] = {}
        """The filters of each SUBSCRIBE awaiting the broker's answer, by message id."""
        self._callback_logged: dict[str, float] = {}
        self._throttle = LogThrottle(logger)
        self._prefix = settings.mqtt.topic_prefix
        self._telemetry = settings.mqtt.telemetry_template
        # Sparkplug B (mqtt.sparkplug_group): its own callback; DEATH certificates queue the
        # machines they end for the tick thread, the alert policy's only writer.
        # Imported only then: protobuf is among the largest imports of a plain agent.
        self._deaths: deque[str] = deque()
        group = settings.mqtt.sparkplug_group
        self.sparkplug: SparkplugIngest | None = None
        if group is not None:
            from wire.sparkplug import SparkplugIngest

            self.sparkplug = SparkplugIngest()
        self._sparkplug_filter = None if group is None else f"{SPARKPLUG_NAMESPACE}/{group}/#"
        self._batch_filter = batch_filter

        client.on_connect = self._guard("connect", self._on_connect)
        client.on_subscribe = self._guard("subscribe", self._on_subscribe)
        client.on_disconnect = self._guard("disconnect", self._on_disconnect)
        # Every message comes to one callback that routes it by topic, as paho's
        # message_callback_add would (each matching filter's handler; none: telemetry), with
        # the route and the machine id cached per topic: paho's own matching and the template
        # parse cost ~5 µs a message, a cached route one dict lookup.
        special = [(silence_filter(self._prefix), self._guard("silence", self._on_silence))]
        if rebaselines is not None:
            special.append(
                (rebaseline_filter(self._prefix), self._guard("rebaseline", self._on_rebaseline))
            )
        if self._sparkplug_filter is not None:
            special.append((self._sparkplug_filter, self._guard("sparkplug", self._on_sparkplug)))
        if self._batch_filter is not None:
            # Guarded as "message": a batch is readings, like the telemetry topic's messages.
            special.append((self._batch_filter, self._guard("message", self._on_batch)))
        self._special_routes = special
        self._command_subscriptions: list[tuple[str, int]] = []
        self._telemetry_route = self._guard("message", self._on_message)
        self._routes: dict[str, tuple[Callable[..., None], ...]] = {}
        self._topic_machine_ids: dict[str, str] = {}
        self._max_routes = 2 * settings.agent.max_machines + 1024
        client.on_message = self._dispatch  # each handler is guarded on its own

    # --- the tick's side of the hand-off -----------------------------------------------------

    def take(self) -> list[Reading]:
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
            readings, rejected = self._decoder.decode_many(arrivals[start:stop])
            decoded += readings
            tally.merge(rejected)
        self.reject_tally(tally)
        if len(arrivals) < len(taken):  # batch readings too: each decoded one to its place
            each = iter(decoded)
            decoded = [next(each) if isinstance(item, tuple) else item for item in taken]
        return [reading for reading in decoded if reading is not None]

    def waiting(self) -> int:
        """How many readings (decoded or not) the hand-off holds."""
        return len(self._pending)

    def take_deaths(self) -> Iterator[str]:
        """The machines Sparkplug B DEATH certificates ended since the last take, in order."""
        while self._deaths:
            yield self._deaths.popleft()

    # --- the MQTT callbacks (network thread: keep them thin and never let them raise) -------

    def _guard(self, name: str, callback: Callable[..., None]) -> Callable[..., None]:
        """``callback`` for paho: exceptions are logged and counted, never raised into paho.

        paho ends its network thread when a callback raises, silently. The time a callback
        started is kept for the watchdog, which catches one that never returns.
        """

        def guarded(*args: object) -> None:
            self.callback_since = time.monotonic()
            try:
                callback(*args)
            except Exception:
                self._metrics.callback_errors.labels(callback=name).inc()
                now = time.monotonic()
                if now - self._callback_logged.get(name, -60.0) >= 10.0:
                    self._callback_logged[name] = now
                    logger.exception("error in the MQTT %s callback; the loop goes on", name)
            finally:
                self.callback_since = 0.0

        return guarded

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        m = self._settings.mqtt
        if getattr(reason, "is_failure", False):
            logger.error("broker refused the agent: %s", describe_connect_failure(reason))
            return
        subscriptions = self._subscriptions()
        filters = [topic_filter for topic_filter, _ in subscriptions]
        _, mid = client.subscribe(subscriptions)
        if mid is not None:  # None: the connection is already gone; the next connect retries
            self._subscribing[mid] = filters
        self._publisher.publish_status(m.client_id, "online", __version__, "connected")
        self.connected.set()
        self._metrics.mqtt_connected.set(1)
        self._publisher.connected()
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
            self._metrics.mqtt_sessions_lost.inc()
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
        m = self._settings.mqtt
        qos: int = m.telemetry_qos
        subscriptions = [(topic_filter, qos) for topic_filter in reading_filters(m)]
        if self._batch_filter is not None:
            subscriptions.append((shared(m.shared_group, self._batch_filter), qos))
        subscriptions.append((silence_filter(self._prefix), 1))
        subscriptions += self._command_subscriptions
        if self._rebaselines is not None:
            subscriptions.append((rebaseline_filter(self._prefix), 1))
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
                    self._settings.mqtt.client_id,
                    ", and that it offers shared subscriptions"
                    if topic_filter.startswith(SHARE_PREFIX)
                    else "",
                )

    def _on_disconnect(
        self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        if self.connected.is_set():
            self._metrics.mqtt_disconnects.inc()
            self._lost_at = time.monotonic()
        self.connected.clear()
        self._metrics.mqtt_connected.set(0)
        self._publisher.disconnected()
        if not self._stop_event.is_set():
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
        if size > self._decoder.max_bytes:  # refused before it takes room in the hand-off
            self.reject("too_large", f"{size} bytes > {self._decoder.max_bytes}")
        elif not self._full(size):
            self._pending.append((machine_id, payload, time.monotonic()))
            self._queued_bytes += size

    def _on_batch(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        """A gateway batch: its good readings are handed off, its bad ones counted by reason."""
        try:
            room = self._max_pending - len(self._pending)
            batch = self._decoder.decode_batch(message.payload, room)
        except Exception:
            logger.exception("unexpected error decoding a gateway batch on %s", message.topic)
            self.reject("bad_json", "undecodable batch")
            return
        self.hand_off_batch(batch, message.topic)

    def _on_sparkplug(
        self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage
    ) -> None:
        """A Sparkplug B message: DATA becomes a reading, BIRTH teaches aliases, DEATH stales."""
        from wire import sparkplug  # loaded with SparkplugIngest in __init__: a dict lookup

        assert self.sparkplug is not None  # subscribed only with mqtt.sparkplug_group set
        topic = sparkplug.parse_topic(message.topic)
        if topic is None:
            return  # STATE, NCMD/DCMD: not about readings
        if topic.kind in sparkplug.DEATH_TYPES:
            machines = self.sparkplug.death(topic)
            self._deaths.extend(machines)
            logger.info("%s on %s: %s go stale", topic.kind, message.topic, ", ".join(machines))
            return
        try:
            if len(message.payload) > self._decoder.max_bytes:
                raise Rejected(
                    "too_large", f"{len(message.payload)} bytes > {self._decoder.max_bytes}"
                )
            if topic.kind in sparkplug.BIRTH_TYPES:
                self.sparkplug.birth(topic, message.payload)
                return
            data = self.sparkplug.reading(topic, message.payload)
            if self._decoder.mapping is not None:
                data = self._decoder.mapping.apply(data)
            reading = self._decoder.decode_fields(data, topic.machine_id)
        except Rejected as rejected:
            self.reject(rejected.reason, rejected.detail)
            return
        except sparkplug.DecodeError:
            self.reject("bad_json", f"not a Sparkplug B payload on {message.topic}")
            return
        self.hand_off(reading)

    def _on_silence(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        try:
            self._silences.handle(message.topic, message.payload)
        except Exception:
            logger.exception("error handling a silence message on %s", message.topic)

    def add_command(self, topic: str, name: str, handler: Callable[[str, bytes], None]) -> None:
        """Subscribe (QoS 1, never shared: every agent hears its own) to a command ``topic``
        and hand its messages to ``handler(topic, payload)``, guarded as callback ``name``.

        Called before the agent connects. The handler runs on the network thread, so it only
        queues the command for the thread that acts on it."""

        def on_command(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
            handler(message.topic, bytes(message.payload))

        self._special_routes.insert(0, (topic, self._guard(name, on_command)))
        self._command_subscriptions.append((topic, 1))
        self._routes.clear()

    def _on_rebaseline(
        self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage
    ) -> None:
        if self._rebaselines is not None:
            self._rebaselines.handle(message.topic, message.payload)

    # --- the hand-off ------------------------------------------------------------------------

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

    # --- rejected readings -------------------------------------------------------------------

    def reject_tally(self, tally: Batch, where: str = "") -> None:
        """Count a tally's rejections, one counter update and one log line per reason."""
        for reason, count in tally.rejected.items():
            self.reject(reason, tally.details[reason] + where, count)

    def reject(self, reason: str, detail: str, count: int = 1) -> None:
        self._metrics.rejected.labels(reason=reason).inc(count)
        what = "a reading" if count == 1 else f"{count} readings"
        self._throttle.warning(reason, "rejected %s (%s): %s", what, reason, detail)
