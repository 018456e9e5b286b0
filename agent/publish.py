"""Everything the agent publishes goes through here: alerts and its own online status."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

import orjson
import paho.mqtt.client as mqtt

from agent.alerts import AlertEvent
from agent.metrics import AgentMetrics
from agent.mqtt import alerts_topic, status_topic

logger = logging.getLogger(__name__)

ALERT_SCHEMA_VERSION = 1


def alert_payload(event: AlertEvent, model_version: str) -> bytes:
    body = asdict(event)
    body["model_version"] = model_version
    body["schema"] = ALERT_SCHEMA_VERSION
    return orjson.dumps(body)


def status_payload(status: str, client_id: str, version: str) -> bytes:
    return orjson.dumps(
        {"status": status, "client_id": client_id, "version": version, "ts": round(time.time(), 3)}
    )


class AlertPublisher:
    """Publishes alert events at QoS 1, retained, so a new subscriber sees each machine's state.

    paho queues QoS 1 messages while the broker is away and sends them on reconnect; a message
    it refuses outright is counted and logged, never dropped silently.
    """

    def __init__(
        self, client: mqtt.Client, prefix: str, model_version: str, metrics: AgentMetrics
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._model_version = model_version
        self._metrics = metrics

    def publish(self, event: AlertEvent) -> None:
        topic = alerts_topic(self._prefix, event.machine_id)
        info = self._client.publish(
            topic, alert_payload(event, self._model_version), qos=1, retain=True
        )
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            self._metrics.alerts_publish_failed.inc()
            logger.error(
                "alert for %s not queued: %s", event.machine_id, mqtt.error_string(info.rc)
            )
        if event.status == "firing":
            if not (event.severity == "warning" and event.previous_state == "critical"):
                # a step down from critical continues the episode; it raises nothing new
                self._metrics.alerts.labels(severity=event.severity).inc()
        else:
            self._metrics.alerts_resolved.labels(severity=event.severity).inc()

    def publish_status(self, client_id: str, status: str, version: str) -> mqtt.MQTTMessageInfo:
        return self._client.publish(
            status_topic(self._prefix, client_id),
            status_payload(status, client_id, version),
            qos=1,
            retain=True,
        )
