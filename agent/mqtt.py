"""Building paho clients the same way for the agent and the simulator."""

from __future__ import annotations

import logging

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

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


def make_client(settings: MqttSettings, client_id: str) -> mqtt.Client:
    """A paho 2.x client with VERSION2 callbacks, credentials and reconnect back-off set."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311,
        clean_session=True,
    )
    if settings.username is not None:
        password = settings.password.get_secret_value() if settings.password else None
        client.username_pw_set(settings.username, password)
    client.reconnect_delay_set(
        min_delay=max(1, int(settings.reconnect_min_s)),
        max_delay=max(1, int(settings.reconnect_max_s)),
    )
    return client


def describe_connect_failure(reason_code: object) -> str:
    """A sentence for a refused CONNACK, pointing at the setting to fix."""
    text = str(reason_code)
    if "not authorized" in text.lower() or "bad user" in text.lower():
        return f"{text}: check FOREWARN_MQTT__USERNAME / FOREWARN_MQTT__PASSWORD"
    if "identifier" in text.lower():
        return f"{text}: check FOREWARN_MQTT__CLIENT_ID"
    return text
