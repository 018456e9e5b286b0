"""Building paho clients the same way for the agent and the simulator."""

from __future__ import annotations

import logging
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.tls import configure_tls
from config.settings import MqttSettings

logger = logging.getLogger(__name__)


def telemetry_topic(prefix: str, machine_id: str) -> str:
    return f"{prefix}/{machine_id}/telemetry"


def alerts_topic(prefix: str, machine_id: str) -> str:
    return f"{prefix}/{machine_id}/alerts"


def telemetry_filter(prefix: str) -> str:
    """The subscription that matches every machine's readings under ``prefix``."""
    return f"{prefix}/+/telemetry"


def status_topic(prefix: str, client_id: str) -> str:
    """Where an agent keeps its retained online/offline status (and its last will)."""
    return f"{prefix}/_agents/{client_id}/status"


def alerts_filter(prefix: str) -> str:
    """The subscription that matches every machine's alerts topic under ``prefix``."""
    return f"{prefix}/+/alerts"


def restore_marker_topic(prefix: str, client_id: str) -> str:
    """Where the agent's start-up restore client sends itself the end-of-retained marker."""
    return f"{prefix}/_agents/{client_id}/restore"


def make_client(settings: MqttSettings, client_id: str, persistent: bool = False) -> mqtt.Client:
    """A paho 2.x client with VERSION2 callbacks, credentials and reconnect back-off set.

    ``persistent`` turns clean session off (MQTT 3.1.1, which every broker forewarn meets
    speaks, the demo's embedded one included): the broker keeps the client's subscriptions and
    queues its QoS 1 messages while it is away, until the broker's own session expiry
    (mosquitto: ``persistent_client_expiration``).
    """
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311,
        clean_session=not persistent,
    )
    if settings.username is not None:
        password = settings.password.get_secret_value() if settings.password else None
        client.username_pw_set(settings.username, password)
    configure_tls(client, settings)
    client.reconnect_delay_set(
        min_delay=max(1, int(settings.reconnect_min_s)),
        max_delay=max(1, int(settings.reconnect_max_s)),
    )
    return client


def network_thread(client: mqtt.Client) -> threading.Thread | None:
    """The thread ``loop_start`` runs paho's network loop in, for the agent's watchdog.

    paho ends that thread silently when a callback raises and keeps no public handle to it, so
    this reads the attribute ``loop_stop`` itself joins; paho is pinned below 3, and the fault
    tests fail if the attribute goes away.
    """
    thread = getattr(client, "_thread", None)
    return thread if isinstance(thread, threading.Thread) else None


def describe_connect_failure(reason_code: object) -> str:
    """A sentence for a refused CONNACK, pointing at the setting to fix."""
    text = str(reason_code)
    if "not authorized" in text.lower() or "bad user" in text.lower():
        return f"{text}: check FOREWARN_MQTT__USERNAME / FOREWARN_MQTT__PASSWORD"
    if "identifier" in text.lower():
        return f"{text}: check FOREWARN_MQTT__CLIENT_ID"
    return text
