"""Everything the agent publishes goes through here: alerts and its own online status.

Alerts are the one output that must not get lost, so they pass through a bounded outbox:

* while the broker is unreachable, alert messages wait in the outbox (``mqtt.max_queued_alerts``,
  gauge ``forewarn_alerts_queued``); when it is full, the oldest message of a machine that has
  a newer one waiting goes first (the retained topic keeps its latest state), else the oldest,
  and each drop is logged and counted in ``forewarn_alerts_dropped_total``;
* once connected they go to paho at QoS 1, retained; paho keeps each one until the broker's
  PUBACK and sends it again after a reconnect.

Order matters because the retained message on a machine's topic is whichever arrived last.
After a reconnect, paho first resends what it still holds from before; the outbox waits until
those are acknowledged, so an older state can never overtake a newer one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass

import orjson
import paho.mqtt.client as mqtt

from agent.alerts import AlertEvent
from agent.anomaly_events import AnomalyEvent, anomaly_payload
from agent.metrics import AgentMetrics
from agent.throttle import LogThrottle
from config.topics import TopicTemplate, alerts_topic, default_anomaly_topic, status_topic

logger = logging.getLogger(__name__)

ALERT_SCHEMA_VERSION = 1
RESEND_WAIT_S = 10.0
"""After a reconnect, the longest the outbox waits for paho's resends to be acknowledged."""


def alert_payload(event: AlertEvent, model_version: str) -> bytes:
    body = asdict(event)
    body["model_version"] = model_version
    body["schema"] = ALERT_SCHEMA_VERSION
    return orjson.dumps(body)


def status_payload(status: str, client_id: str, version: str, reason: str | None = None) -> bytes:
    """The agent's status message; ``reason`` tells a clean stop from a lost connection."""
    body: dict[str, object] = {
        "status": status,
        "client_id": client_id,
        "version": version,
        "ts": round(time.time(), 3),
    }
    if reason is not None:
        body["reason"] = reason
    return orjson.dumps(body)


@dataclass(frozen=True, slots=True)
class _Outgoing:
    machine_id: str
    topic: str
    payload: bytes


class AlertPublisher:
    """Publishes alert events at QoS 1, retained, so a new subscriber sees each machine's state.

    ``publish`` may be called from any thread; ``connected``/``disconnected`` are called from
    the MQTT callbacks and ``pump`` from the tick, which retries what could not go out yet.
    """

    def __init__(
        self,
        client: mqtt.Client,
        prefix: str,
        model_version: str,
        metrics: AgentMetrics,
        max_queued: int = 10_000,
        alerts: TopicTemplate | None = None,
        anomaly: TopicTemplate | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        # mqtt.alerts_topic; None: <prefix>/<machine_id>/alerts.
        self._alerts = alerts
        # mqtt.anomaly_topic; None: <prefix>/<machine_id>/anomaly.
        self._anomaly = anomaly or TopicTemplate.parse(default_anomaly_topic(prefix))
        self._model_version = model_version
        self._metrics = metrics
        self._max_queued = max_queued
        self._lock = threading.Lock()
        self._outbox: deque[_Outgoing] = deque()
        self._in_flight: list[tuple[int, mqtt.MQTTMessageInfo]] = []
        self._generation = 0
        self._connected = False
        self._connected_at = 0.0
        self._throttle = LogThrottle(logger)

    def set_model_version(self, version: str) -> None:
        """The model version the next alerts carry (a swap; alerts already queued keep the
        version of the model that raised them)."""
        with self._lock:
            self._model_version = version

    # --- alerts ------------------------------------------------------------------------------

    def publish(self, event: AlertEvent) -> None:
        if event.status == "firing":
            if not (event.severity == "warning" and event.previous_state == "critical"):
                # a step down from critical continues the episode; it raises nothing new
                self._metrics.alerts.labels(severity=event.severity).inc()
        else:
            self._metrics.alerts_resolved.labels(severity=event.severity).inc()
        outgoing = _Outgoing(
            event.machine_id,
            (
                self._alerts.render(event.machine_id)
                if self._alerts is not None
                else alerts_topic(self._prefix, event.machine_id)
            ),
            alert_payload(event, self._model_version),
        )
        self._queue(outgoing)

    def publish_anomaly(self, event: AnomalyEvent) -> None:
        """An anomaly alert change, on the machine's anomaly topic (never its alerts topic)."""
        if event.status == "firing":
            self._metrics.anomaly_alerts.inc()
        else:
            self._metrics.anomaly_alerts_resolved.inc()
        self._queue(
            _Outgoing(
                event.machine_id,
                self._anomaly.render(event.machine_id),
                anomaly_payload(event, self._model_version),
            )
        )

    def _queue(self, outgoing: _Outgoing) -> None:
        with self._lock:
            self._outbox.append(outgoing)
            if len(self._outbox) > self._max_queued:
                self._drop_one()
            self._pump()

    def connected(self) -> None:
        """The broker accepted a (re)connection: send what waited, after paho's resends."""
        with self._lock:
            self._generation += 1
            self._connected = True
            self._connected_at = time.monotonic()
            self._pump()

    def disconnected(self) -> None:
        with self._lock:
            self._connected = False
            self._update_gauge()

    def pump(self) -> int:
        """Hand waiting alerts to paho when it is their turn; returns the unacknowledged count."""
        with self._lock:
            return self._pump()

    def pending(self) -> int:
        with self._lock:
            self._prune()
            return len(self._outbox) + len(self._in_flight)

    def flush(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for every alert to be acknowledged; returns those that were not.

        The ones left are counted as dropped and logged: the agent is stopping and they would
        die with it. (The next start-up resumes from the retained states the broker does have.)
        """
        deadline = time.monotonic() + timeout_s
        left = self.pump()
        while left and time.monotonic() < deadline:
            time.sleep(0.02)
            left = self.pump()
        if left:
            with self._lock:
                self._outbox.clear()
                self._in_flight.clear()
                self._update_gauge()
            self._metrics.alerts_dropped.inc(left)
            logger.error(
                "stopping with %d alert message(s) the broker has not acknowledged; they are lost",
                left,
            )
        return left

    # --- status ------------------------------------------------------------------------------

    def publish_status(
        self, client_id: str, status: str, version: str, reason: str | None = None
    ) -> mqtt.MQTTMessageInfo:
        info = self._client.publish(
            status_topic(self._prefix, client_id),
            status_payload(status, client_id, version, reason),
            qos=1,
            retain=True,
        )
        _keep_queued(info)
        return info

    # --- internals (called with the lock held) --------------------------------------------

    def _pump(self) -> int:
        self._prune()
        if self._outbox and self._connected and self._its_turn():
            while self._outbox:
                outgoing = self._outbox[0]
                info = self._client.publish(outgoing.topic, outgoing.payload, qos=1, retain=True)
                if not _keep_queued(info):
                    self._metrics.alerts_publish_failed.inc()
                    self._throttle.warning(
                        "publish",
                        "alert for %s not accepted by the MQTT client (%s); retrying",
                        outgoing.machine_id,
                        mqtt.error_string(info.rc),
                    )
                    break
                self._outbox.popleft()
                self._in_flight.append((self._generation, info))
        self._update_gauge()
        return len(self._outbox) + len(self._in_flight)

    def _its_turn(self) -> bool:
        """False while paho still resends messages from before the last reconnect."""
        if time.monotonic() - self._connected_at > RESEND_WAIT_S:
            return True
        return all(generation == self._generation for generation, _ in self._in_flight)

    def _prune(self) -> None:
        if self._in_flight:
            self._in_flight = [item for item in self._in_flight if not item[1].is_published()]

    def _drop_one(self) -> None:
        # Superseded per topic: a machine's anomaly message never stands in for its alert.
        newest: set[str] = set()
        victim = 0
        for index in range(len(self._outbox) - 1, -1, -1):
            topic = self._outbox[index].topic
            if topic in newest:
                victim = index  # keep scanning: the oldest superseded message goes first
            newest.add(topic)
        dropped = self._outbox[victim]
        del self._outbox[victim]
        self._metrics.alerts_dropped.inc()
        self._throttle.warning(
            "dropped",
            "alert queue full (%d, FOREWARN_MQTT__MAX_QUEUED_ALERTS): dropped an alert message "
            "for %s",
            self._max_queued,
            dropped.machine_id,
        )

    def _update_gauge(self) -> None:
        self._metrics.alerts_queued.set(len(self._outbox) + len(self._in_flight))


def _keep_queued(info: mqtt.MQTTMessageInfo) -> bool:
    """True when paho holds the message until the broker acknowledges it.

    A QoS 1 publish while the connection is down returns MQTT_ERR_NO_CONN although paho keeps
    the message and sends it after the reconnect; left at that code, ``is_published`` and
    ``wait_for_publish`` would raise for a message that does arrive. It is queued, so say so.
    """
    if info.rc == mqtt.MQTT_ERR_NO_CONN:
        info.rc = mqtt.MQTT_ERR_SUCCESS
    return info.rc == mqtt.MQTT_ERR_SUCCESS
