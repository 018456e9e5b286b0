"""Building paho clients the same way for the agent and the simulator, and the agent's
reading subscriptions (topic-sharded filters, an MQTT shared-subscription group).

The topic rules themselves are text and live in :mod:`config.topics`, where the settings check
them at start-up.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from config.mqtt import MqttSettings
from config.topics import shared
from wire.tls import configure_tls

logger = logging.getLogger(__name__)

SESSION_NEVER_EXPIRES = 0xFFFFFFFF
"""MQTT 5 session expiry interval meaning "never": the broker's own limit decides, as for a
3.1.1 session (mosquitto: ``persistent_client_expiration``)."""


def make_client(settings: MqttSettings, client_id: str, persistent: bool = False) -> mqtt.Client:
    """A paho 2.x client with VERSION2 callbacks, credentials and reconnect back-off set.

    ``persistent`` turns clean session off: the broker keeps the client's subscriptions and
    queues its QoS 1 messages while it is away, until the broker's own session expiry
    (mosquitto: ``persistent_client_expiration``). MQTT 3.1.1 (the default, which every broker
    forewarn meets speaks, the demo's embedded one included) says so in the client; MQTT 5
    says it in each CONNECT instead, so connect with :func:`connect_options` as well.
    """
    if settings.protocol == "5":
        # paho refuses clean_session for MQTT 5: clean start and expiry go with the CONNECT.
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
    else:
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


def connect_options(settings: MqttSettings, persistent: bool) -> dict[str, Any]:
    """Keyword arguments for ``connect_async`` that make an MQTT 5 session persistent.

    An MQTT 5 session ends when the connection does unless the CONNECT asks for an expiry
    interval, and paho's default clean start on the first connect would wipe the session the
    broker kept across an agent restart; so a persistent client never starts clean and asks
    for a session that does not expire. paho re-sends both on every reconnect. Nothing for
    MQTT 3.1.1, whose clean session flag :func:`make_client` sets.
    """
    if settings.protocol != "5":
        return {}
    if not persistent:
        return {"clean_start": True}
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = SESSION_NEVER_EXPIRES
    return {"clean_start": False, "properties": properties}


def reading_filters(settings: MqttSettings) -> list[str]:
    """What the agent subscribes to for readings: ``mqtt.subscriptions``, else the telemetry
    template's filter, each in ``mqtt.shared_group`` when one is set.

    Only readings are shared: silences and the other control topics must reach every agent.
    """
    filters = settings.subscriptions or [settings.telemetry_template.filter]
    return [shared(settings.shared_group, topic_filter) for topic_filter in filters]


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
