"""Building paho clients the same way for the agent and the simulator, and the agent's
reading subscriptions (topic-sharded filters, an MQTT shared-subscription group)."""

from __future__ import annotations

import logging
import re
import threading
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.gateway import filters_overlap
from agent.tls import configure_tls
from config.settings import MqttSettings

if TYPE_CHECKING:
    from agent.topics import TopicTemplate

logger = logging.getLogger(__name__)

_FIXED_VALUE = re.compile(r"^[^#+{}\s\x00]+$")
"""A fixed level, as in a topic template."""

SHARE_PREFIX = "$share/"
"""Start of an MQTT 5 shared subscription: ``$share/<group>/<filter>``."""

SESSION_NEVER_EXPIRES = 0xFFFFFFFF
"""MQTT 5 session expiry interval meaning "never": the broker's own limit decides, as for a
3.1.1 session (mosquitto: ``persistent_client_expiration``)."""


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


def shared(group: str | None, topic_filter: str) -> str:
    """``topic_filter`` as a subscription of the shared-subscription ``group`` (None: itself)."""
    return topic_filter if group is None else f"{SHARE_PREFIX}{group}/{topic_filter}"


def reading_filters(settings: MqttSettings) -> list[str]:
    """What the agent subscribes to for readings: ``mqtt.subscriptions``, else the telemetry
    template's filter, each in ``mqtt.shared_group`` when one is set.

    Only readings are shared: silences and the other control topics must reach every agent.
    """
    filters = settings.subscriptions or [settings.telemetry_template.filter]
    return [shared(settings.shared_group, topic_filter) for topic_filter in filters]


def narrowing_problem(template: TopicTemplate, topic_filter: str) -> str | None:
    """Why ``topic_filter`` cannot replace ``template``'s filter for readings (None: it can).

    The agent reads a reading's machine id from the template's ``{machine_id}`` level, so a
    filter must only narrow the template: the same levels, each the template's fixed text, or
    ``+`` or a fixed value where the template has a placeholder. A ``#``, a level too many or
    too few, or a ``+`` over fixed text would bring topics the template does not describe.
    """
    levels = topic_filter.split("/")
    if topic_filter.startswith(SHARE_PREFIX):
        return "a shared subscription belongs in FOREWARN_MQTT__SHARED_GROUP, not in the filter"
    if "#" in levels:
        return "# matches any number of levels, so the machine id could not be read: use +"
    if len(levels) != len(template.levels):
        return (
            f"it has {len(levels)} levels, the telemetry template {template.text!r} has "
            f"{len(template.levels)}"
        )
    for position, (level, (is_placeholder, text)) in enumerate(
        zip(levels, template.levels, strict=True), start=1
    ):
        problem = _level_problem(level, is_placeholder, text)
        if problem is not None:
            return f"level {position} {level!r} {problem}"
    return None


def _level_problem(level: str, is_placeholder: bool, text: str) -> str | None:
    """Why one level of a reading filter does not narrow the template's level (None: it does)."""
    if not is_placeholder:
        return None if level == text else f"must be the template's fixed text {text!r}"
    if level == "+" or _FIXED_VALUE.match(level):
        return None
    return (
        f"must be + or a fixed value (no wildcards, braces or spaces) for the template's {{{text}}}"
    )


def reading_filters_problem(template: TopicTemplate, filters: list[str]) -> str | None:
    """Why ``filters`` cannot be the agent's reading subscriptions (None: they can).

    Each must narrow the template (:func:`narrowing_problem`), and no two may overlap: MQTT
    lets a broker deliver a message once per matching subscription, and in a shared group each
    shared filter picks its own agent, so a reading on both could reach two agents.
    """
    for topic_filter in filters:
        problem = narrowing_problem(template, topic_filter)
        if problem is not None:
            return f"{topic_filter!r}: {problem}"
    for index, first in enumerate(filters):
        for second in filters[index + 1 :]:
            if filters_overlap(first, second):
                return f"{first!r} and {second!r} overlap: a reading on both could arrive twice"
    return None


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
