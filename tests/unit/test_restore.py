"""Resuming alert states from retained alert messages, and the alert outbox's bound."""

from __future__ import annotations

import numpy as np
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.alerts import CRITICAL, OK, WARNING, AlertEvent, AlertPolicy
from agent.metrics import AgentMetrics
from agent.publish import AlertPublisher
from agent.restore import parse_retained_alert, parse_retained_anomaly
from config.alerts import AlertSettings
from config.topics import TopicTemplate


def retained(**fields: object) -> bytes:
    body: dict[str, object] = {
        "machine_id": "m-7",
        "severity": "critical",
        "status": "firing",
        "alert_id": "m-7-1000",
        "seq": 3,
    }
    body.update(fields)
    return orjson.dumps(body)


@pytest.mark.parametrize(
    ("fields", "state", "stale"),
    [
        ({}, CRITICAL, False),
        ({"severity": "warning"}, WARNING, False),
        ({"status": "resolved"}, OK, False),
        ({"status": "resolved", "severity": "warning"}, OK, False),
        ({"status": "resolved", "severity": "stale"}, OK, False),
        # A machine that had gone silent: its alert state is ok, and it is known to be stale
        # (the flag is all that tells this case from a resolved alert).
        ({"severity": "stale"}, OK, True),
    ],
)
def test_a_retained_alert_gives_the_state(
    fields: dict[str, object], state: int, stale: bool
) -> None:
    alert = parse_retained_alert("factory", "factory/m-7/alerts", retained(**fields))
    assert (alert.machine_id, alert.state, alert.alert_id, alert.seq, alert.stale) == (
        "m-7",
        state,
        "m-7-1000",
        3,
        stale,
    )


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("factory/m-7/alerts", b"not json"),
        ("factory/m-7/alerts", b"[1, 2]"),
        ("factory/m-8/alerts", retained()),
        ("factory/m-7/alerts", retained(seq=True)),
        ("factory/m-7/alerts", retained(seq=-1)),
        ("factory/m-7/alerts", retained(seq="3")),
        ("factory/m-7/alerts", retained(alert_id="")),
        ("factory/m-7/alerts", retained(status="maybe")),
        ("factory/m-7/alerts", retained(severity="info")),
        ("other/m-7/alerts", retained()),
        ("factory/m-7/alerts", b" " * 70_000),
    ],
)
def test_an_unusable_retained_message_is_refused(topic: str, payload: bytes) -> None:
    with pytest.raises(ValueError):
        parse_retained_alert("factory", topic, payload)


def advance(policy: AlertPolicy, temperature: float, now: float) -> list[AlertEvent]:
    recent = np.full((1, 20), temperature, dtype=np.float32)
    forecasts = np.full((1, 10), temperature, dtype=np.float32)
    return policy.update(np.array([0]), ["m-7"], recent, forecasts, np.array([1.0]), now)


def test_a_restored_critical_resolves_in_its_own_episode() -> None:
    policy = AlertPolicy(AlertSettings(keep_firing_for_s=0), capacity=4)
    policy.restore(0, CRITICAL, "m-7-1000", 3)
    events = [e for t in range(6) for e in advance(policy, 70.0, 2000.0 + t)]
    assert [(e.severity, e.status, e.alert_id, e.seq) for e in events] == [
        ("critical", "resolved", "m-7-1000", 4)
    ]


def test_a_restored_incident_is_held_for_the_full_time_from_its_first_reading() -> None:
    """Nothing says when a restored machine was last hot: its hold counts from its first
    reading after the restart, never from before it (which would resolve it at once)."""
    policy = AlertPolicy(AlertSettings(keep_firing_for_s=10), capacity=4)
    policy.restore(0, CRITICAL, "m-7-1000", 3)
    resolved_at = [t for t in range(20) for e in advance(policy, 70.0, 2000.0 + t)]
    assert resolved_at == [10]


def test_a_restored_critical_that_is_still_hot_does_not_fire_again() -> None:
    policy = AlertPolicy(AlertSettings(), capacity=4)
    policy.restore(0, CRITICAL, "m-7-1000", 3)
    assert [e for t in range(6) for e in advance(policy, 100.0, 2000.0 + t)] == []


def test_a_restored_resolution_keeps_the_sequence_going() -> None:
    policy = AlertPolicy(AlertSettings(), capacity=4)
    policy.restore(0, OK, "m-7-1000", 4)
    events = [e for t in range(6) for e in advance(policy, 100.0, 2000.0 + t)]
    assert events and events[0].status == "firing" and events[0].seq == 5
    assert events[0].alert_id != "m-7-1000", "a new episode"


def event(machine_id: str, status: str) -> AlertEvent:
    return AlertEvent(
        machine_id=machine_id,
        severity="critical",
        status=status,
        ts=1.0,
        temperature_c=100.0,
        forecast_c=100.0,
        threshold_c=95.0,
        time_to_threshold_s=None,
        alert_id=f"{machine_id}-1",
        seq=1,
        previous_state="ok",
    )


def test_a_full_outbox_drops_a_superseded_message_first_and_counts_every_drop() -> None:
    metrics = AgentMetrics()
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)  # never connected
    publisher = AlertPublisher(client, "factory", "v1", metrics, max_queued=3)
    for machine_id, status in [("m-1", "firing"), ("m-2", "firing"), ("m-1", "resolved")]:
        publisher.publish(event(machine_id, status))
    assert publisher.pending() == 3
    publisher.publish(event("m-3", "firing"))  # m-1's firing is superseded by its resolution
    waiting = [(o.machine_id, orjson.loads(o.payload)["status"]) for o in publisher._outbox]
    assert waiting == [("m-2", "firing"), ("m-1", "resolved"), ("m-3", "firing")]
    publisher.publish(event("m-4", "firing"))  # nothing superseded: the oldest goes
    waiting = [(o.machine_id, orjson.loads(o.payload)["status"]) for o in publisher._outbox]
    assert waiting == [("m-1", "resolved"), ("m-3", "firing"), ("m-4", "firing")]
    registry = metrics.registry
    assert registry.get_sample_value("forewarn_alerts_dropped_total") == 2
    assert registry.get_sample_value("forewarn_alerts_queued") == 3
    assert publisher.flush(0) == 3, "stopping without a broker: the rest is given up, counted"
    assert registry.get_sample_value("forewarn_alerts_dropped_total") == 5
    assert publisher.pending() == 0 and publisher.flush(0) == 0, "counted once"


@pytest.mark.parametrize(
    ("ts", "expected"),
    [(1764099012.5, 1764099012.5), ("soon", -np.inf), (None, -np.inf), (True, -np.inf)],
)
def test_a_retained_anomaly_message_says_when_it_was_published(ts: object, expected: float) -> None:
    """Its ``ts`` tells a restarted agent which retained re-baselines were applied before it;
    one it cannot read orders nothing, and every retained re-baseline is applied."""
    body = {
        "machine_id": "m-7",
        "severity": "anomaly",
        "status": "firing",
        "alert_id": "m-7-anomaly-1",
        "seq": 2,
        "ts": ts,
    }
    restored = parse_retained_anomaly(
        TopicTemplate.parse("factory/{machine_id}/anomaly"),
        "factory/m-7/anomaly",
        orjson.dumps(body),
    )
    assert (restored.firing, restored.seq, restored.ts) == (True, 2, expected)
