"""Reading back the agent's retained alert states at start-up.

Each machine's alerts topic holds its latest alert message, retained. A restarted agent that
ignored them would start every machine at ok: a machine still critical would fire again (a
duplicate "firing") and one that cooled down while the agent was away would never get its
"resolved". So before its first tick the agent reads them back with a short-lived
clean-session client and resumes each machine's state, alert id and sequence number
(:meth:`agent.alerts.AlertPolicy.restore`).

The end of the retained messages is found with a marker: the client subscribes to the alerts
and to a topic of its own, then publishes a random token there. A broker handles one client's
packets in order and queues a subscription's retained messages before anything that client
publishes later, so when the token comes back every retained alert has arrived. Should the
token never come back (an ACL that forbids the topic, say), the read ends after
``restore_timeout_s`` with what arrived.

:class:`AlertRestore` runs the read in its own thread at start-up, retrying until the broker
answers, and hands the states to the tick thread (the alert policy's only writer), which
resumes them before its first tick; ticks wait for it.

With ``anomaly.enabled`` the same pass reads each machine's retained anomaly alert
(``mqtt.anomaly_topic``) too (:func:`parse_retained_anomaly`), and the tick resumes those
(:meth:`agent.anomaly_events.AnomalyAlerts.restore`) after loading the learned normal saved in
``agent.state_dir``.

Resuming never evicts a machine: the machines of the agent's own saved state take their slots
first (:meth:`agent.learned.LearnedState.reserve`), and a retained state then attaches to its
machine's slot or takes a free one; one that finds none is not resumed (logged).
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from agent.alerts import CRITICAL, OK, WARNING, AlertPolicy
from agent.anomaly import AnomalyScorer
from agent.anomaly_events import RestoredAnomaly
from agent.throttle import LogThrottle
from agent.window import WindowStore
from config.mqtt import MqttSettings
from config.settings import Settings
from config.topics import TopicTemplate, restore_marker_topic
from wire.mqtt import describe_connect_failure, make_client

logger = logging.getLogger(__name__)

MAX_ALERT_BYTES = 65_536
_STATES = {("firing", "warning"): WARNING, ("firing", "critical"): CRITICAL}


@dataclass(frozen=True, slots=True)
class RestoredAlert:
    """One machine's alert state as its retained alert message says."""

    machine_id: str
    state: int
    alert_id: str
    seq: int
    stale: bool = False
    """A "stale firing": the machine had stopped reporting (``state`` is then ok)."""


def parse_retained_alert(
    prefix: str, topic: str, payload: bytes, template: TopicTemplate | None = None
) -> RestoredAlert:
    """The state in one retained alert message; ValueError says why it cannot be used.

    ``template`` is mqtt.alerts_topic's; None: ``<prefix>/<machine_id>/alerts``.
    """
    suffix = "/alerts"
    if template is not None:
        machine_id = template.machine_id(topic) or ""
        if not machine_id:
            raise ValueError(f"not an alerts topic: {topic!r}")
    elif not topic.startswith(prefix + "/") or not topic.endswith(suffix):
        raise ValueError(f"not an alerts topic: {topic!r}")
    else:
        machine_id = topic[len(prefix) + 1 : -len(suffix)]
    data, alert_id, seq = _retained_body(machine_id, payload)
    status, severity = data.get("status"), data.get("severity")
    if status == "resolved" and severity in ("warning", "critical", "stale"):
        state = OK
    elif status == "firing" and severity in ("warning", "critical"):
        state = _STATES[(status, severity)]
    elif status == "firing" and severity == "stale":
        return RestoredAlert(machine_id, OK, alert_id, seq, stale=True)
    else:
        raise ValueError(f"status {status!r} / severity {severity!r}")
    return RestoredAlert(machine_id, state, alert_id, seq)


def _retained_body(machine_id: str, payload: bytes) -> tuple[dict[str, Any], str, int]:
    """What every retained alert message must be, overheat or anomaly: a JSON object of a
    bounded size, for the machine whose topic it is on, with an ``alert_id`` and a ``seq``;
    ValueError says which it is not."""
    if len(payload) > MAX_ALERT_BYTES:
        raise ValueError(f"{len(payload)} bytes")
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"not JSON: {error}") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if data.get("machine_id") != machine_id:
        raise ValueError(f"machine_id {data.get('machine_id')!r} on {machine_id!r}'s topic")
    alert_id, seq = data.get("alert_id"), data.get("seq")
    if not isinstance(alert_id, str) or not alert_id:
        raise ValueError("no alert_id")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise ValueError(f"bad seq {seq!r}")
    return data, alert_id, seq


def parse_retained_anomaly(template: TopicTemplate, topic: str, payload: bytes) -> RestoredAnomaly:
    """The state in one retained anomaly message; ValueError says why it cannot be used."""
    machine_id = template.machine_id(topic) or ""
    if not machine_id:
        raise ValueError(f"not an anomaly topic: {topic!r}")
    data, alert_id, seq = _retained_body(machine_id, payload)
    status = data.get("status")
    if status not in ("firing", "resolved") or data.get("severity") != "anomaly":
        raise ValueError(f"status {status!r} / severity {data.get('severity')!r}")
    ts = data.get("ts")
    published = float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else None
    if published is None or not math.isfinite(published):
        published = float("-inf")  # when unknown, every retained re-baseline is applied
    return RestoredAnomaly(machine_id, status == "firing", alert_id, seq, published)


def read_retained_alerts(
    settings: MqttSettings,
    timeout_s: float,
    limit: int,
    anomalies: list[RestoredAnomaly] | None = None,
) -> list[RestoredAlert]:
    """Every machine's retained alert state under ``settings.topic_prefix`` (at most ``limit``).

    With ``anomalies`` given, the retained anomaly alerts (``mqtt.anomaly_topic``) are read in
    the same pass and appended to it. Raises ConnectionError when the broker does not accept a
    connection within ``timeout_s``.
    """
    prefix = settings.topic_prefix
    template = settings.alerts_template
    anomaly_template = settings.anomaly_template
    found_anomalies: dict[str, RestoredAnomaly] = {}
    marker = restore_marker_topic(prefix, settings.client_id)
    token = secrets.token_hex(8).encode()
    connected = threading.Event()
    done = threading.Event()
    refused: list[str] = []
    found: dict[str, RestoredAlert] = {}
    skipped = 0

    def on_connect(
        c: mqtt.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        try:
            if getattr(reason, "is_failure", False):
                refused.append(describe_connect_failure(reason))
            else:
                topics = [(template.filter, 0), (marker, 0)]
                if anomalies is not None:
                    topics.insert(1, (anomaly_template.filter, 0))
                c.subscribe(topics)
        except Exception:  # a raise here would end paho's thread silently
            logger.exception("restore: error in the connect callback")
        finally:
            connected.set()

    def on_subscribe(
        c: mqtt.Client, userdata: object, mid: int, codes: object, props: object
    ) -> None:
        try:
            c.publish(marker, token, qos=0)
        except Exception:
            logger.exception("restore: could not publish the end marker")

    def on_message(c: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        nonlocal skipped
        try:
            if message.topic == marker:
                if message.payload == token:
                    done.set()
                return
            if not message.retain:
                return  # a live alert, not a stored state
            if anomalies is not None and anomaly_template.match(message.topic) is not None:
                anomaly = parse_retained_anomaly(
                    anomaly_template, message.topic, bytes(message.payload)
                )
                if anomaly.machine_id in found_anomalies or len(found_anomalies) < limit:
                    found_anomalies[anomaly.machine_id] = anomaly
                return
            alert = parse_retained_alert(prefix, message.topic, bytes(message.payload), template)
            if alert.machine_id in found or len(found) < limit:
                found[alert.machine_id] = alert
        except ValueError as error:
            skipped += 1
            logger.debug("restore: ignored the retained message on %s: %s", message.topic, error)
        except Exception:
            logger.exception("restore: error reading %s", message.topic)

    client = make_client(settings, f"{settings.client_id}-restore")
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    started = time.monotonic()
    client.connect_async(settings.host, settings.port, settings.keepalive_s)
    client.loop_start()
    try:
        if not connected.wait(timeout_s):
            raise ConnectionError(f"no connection to {settings.host}:{settings.port}")
        if refused:
            raise ConnectionError(refused[0])
        if not done.wait(max(0.0, timeout_s - (time.monotonic() - started))):
            logger.warning(
                "restore: the end of the retained alerts was not seen within %.1f s "
                "(FOREWARN_MQTT__RESTORE_TIMEOUT_S; may the agent publish to %s?); resuming "
                "from the %d received",
                timeout_s,
                marker,
                len(found),
            )
    finally:
        client.disconnect()
        client.loop_stop()
    if skipped:
        logger.warning("restore: ignored %d retained alert message(s) that were not valid", skipped)
    if anomalies is not None:
        anomalies.extend(found_anomalies.values())
    return list(found.values())


class AlertRestore:
    """The retained alert states, read once at start-up and resumed by the tick thread.

    ``start`` reads them in a thread of their own (none when ``mqtt.restore_timeout_s`` is 0:
    every machine starts ok); ``result`` holds them once read, and ``resume`` applies them and
    sets ``done``, which ticks and readiness wait for.
    """

    def __init__(self, settings: Settings, stop_event: threading.Event) -> None:
        self._settings = settings
        self._stop_event = stop_event
        self._throttle = LogThrottle(logger)
        self.result: list[RestoredAlert] | None = None
        """The states read back; None until the read is over."""
        self.done = threading.Event()
        """Set once the tick thread has resumed the states."""
        self.anomalies: list[RestoredAnomaly] = []
        """The retained anomaly alert states (read with ``anomaly.enabled``), set before
        ``result``."""

    def start(self) -> None:
        if self._settings.mqtt.restore_timeout_s > 0:
            threading.Thread(target=self._read, name="forewarn-restore", daemon=True).start()
        else:
            self.result = []

    def _read(self) -> None:
        """Read the retained alert states, retrying until the broker answers or the agent stops."""
        m = self._settings.mqtt
        delay = m.reconnect_min_s
        while not self._stop_event.is_set():
            try:
                anomalies: list[RestoredAnomaly] | None = (
                    [] if self._settings.anomaly.enabled else None
                )
                result = read_retained_alerts(
                    m, m.restore_timeout_s, self._settings.agent.max_machines, anomalies
                )
                self.anomalies = anomalies or []
            except ConnectionError as error:
                self._throttle.warning(
                    "restore", "cannot read the retained alert states yet (%s); retrying", error
                )
                self._stop_event.wait(delay)
                delay = min(2 * delay, m.reconnect_max_s)
                continue
            except Exception:
                logger.exception("cannot read the retained alert states; every machine starts ok")
                result = []
            self.result = result
            return

    def resume(
        self,
        restored: list[RestoredAlert],
        store: WindowStore,
        policy: AlertPolicy,
        anomaly: AnomalyScorer,
        then: Callable[[], None] | None = None,
    ) -> None:
        """Resume each machine's alert (tick thread: the policy's only writer), run ``then``
        (what else start-up restores, after the alert states), and let ticks begin."""
        counts = {WARNING: 0, CRITICAL: 0}
        stale = 0
        no_room = 0
        for alert in restored:
            # Never evicting: the machines of the saved state took their slots first, and
            # under sharding most retained alerts are other agents' machines.
            slot = store.slot_if_room(alert.machine_id)
            if slot is None:
                no_room += 1
                continue
            policy.ensure_capacity(store.capacity)
            anomaly.ensure_capacity(store.capacity)
            # A stale machine resumes as ok, its seq continuing: "stale" is decided afresh
            # from the readings that arrive (or do not) after the restart.
            alert_id = None if alert.stale else alert.alert_id
            policy.restore(slot, alert.state, alert_id, alert.seq)
            stale += alert.stale
            if alert.state in counts:
                counts[alert.state] += 1
        logger.info(
            "resumed the alert state of %d machine(s) from the retained alerts: %d warning, "
            "%d critical, %d stale (resumed as ok)",
            len(restored) - no_room,
            counts[WARNING],
            counts[CRITICAL],
            stale,
        )
        warn_no_room("alert", no_room, store.max_machines)
        if then is not None:
            then()
        self.done.set()


def warn_no_room(kind: str, count: int, max_machines: int) -> None:
    """Say how many retained states of ``kind`` found no free slot at start-up (nothing is
    evicted then: the agent's own saved machines come first) and so were not resumed."""
    if count:
        logger.warning(
            "%d retained %s state(s) found no free slot (agent.max_machines %d) and were not "
            "resumed: their machines start afresh when they report",
            count,
            kind,
            max_machines,
        )
