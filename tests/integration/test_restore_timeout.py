"""The start-up read-back of retained alert states when its end marker never comes back.

The agent knows it has every retained alert when a marker it publishes to
``<prefix>/_agents/<client_id>/restore`` returns (agent/restore.py). A broker whose ACL does
not grant that topic drops the marker silently; the agent must then give up after
``mqtt.restore_timeout_s``, resume from the alerts that did arrive, start, and say why it
waited (docs/operating.md, "Restoring alert states"). Here a real mosquitto runs such an ACL.
"""

from __future__ import annotations

import getpass
import logging
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.alerts import CRITICAL
from agent.app import Agent
from agent.restore import RestoredAlert, read_retained_alerts
from config.settings import Settings
from config.topics import alerts_topic, restore_marker_topic
from forewarn.broker import stop_process
from tests.conftest import Mosquitto, find_tool, free_port, wait_for_port
from tests.faultkit import agent_settings, holds_within

pytestmark = pytest.mark.integration

CLIENT_ID = "agent-restore"
RESTORE_TIMEOUT_S = 1.0
ACL_WITHOUT_THE_MARKER = """\
# Anonymous clients (no user line above): everything the agent needs but its restore marker.
topic readwrite factory/+/telemetry
topic readwrite factory/+/alerts
topic readwrite factory/+/silence
topic readwrite factory/_agents/+/status
"""


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real mosquitto whose ACL denies the restore marker topic, with one retained
    critical alert (m-1) for the agent to read back."""
    acl = tmp_path / "acl"
    acl.write_text(ACL_WITHOUT_THE_MARKER)
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        f"acl_file {acl}\n"
        "persistence false\n"
        "log_type error\nlog_type warning\n"
        # As root, mosquitto would drop to user `mosquitto`, who cannot read tmp.
        f"user {getpass.getuser()}\n"
    )
    log = tmp_path / "mosquitto.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [find_tool("mosquitto"), "-c", str(conf)], stdout=out, stderr=out
        )
    try:
        wait_for_port(port)
        broker = Mosquitto(port=port, process=process, log=log)
        retain_critical(broker, "m-1")
        yield broker
    finally:
        stop_process(process)


def retain_critical(broker: Mosquitto, machine_id: str) -> None:
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    payload = {
        "machine_id": machine_id,
        "severity": "critical",
        "status": "firing",
        "alert_id": f"{machine_id}-1000",
        "seq": 3,
    }
    info = client.publish(
        alerts_topic("factory", machine_id), orjson.dumps(payload), qos=1, retain=True
    )
    info.wait_for_publish(5)
    assert info.is_published(), "the ACL must let alerts through"
    client.disconnect()
    client.loop_stop()


def timeout_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "agent.restore" and "end of the retained alerts was not seen" in r.getMessage()
    ]


def test_read_retained_alerts_gives_up_after_its_timeout_with_what_arrived(
    acl_broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """The read returns after restore_timeout_s (not never, not at once) with the alerts that
    arrived, and its warning names the setting and the topic to allow."""
    settings = agent_settings(acl_broker.port, client_id=CLIENT_ID)
    result: list[list[RestoredAlert] | Exception] = []

    def read() -> None:
        try:
            result.append(read_retained_alerts(settings.mqtt, RESTORE_TIMEOUT_S, limit=100))
        except Exception as error:  # the test names it below
            result.append(error)

    # In a thread of its own, so that a read that never ends fails the test, not hangs it.
    reader = threading.Thread(target=read, daemon=True)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="agent.restore"):
        reader.start()
        reader.join(RESTORE_TIMEOUT_S + 5)
    took = time.monotonic() - started
    assert result, f"no result {took:.1f} s into a read with a {RESTORE_TIMEOUT_S} s timeout"
    (restored,) = result
    assert not isinstance(restored, Exception), f"the read raised {restored!r}"
    assert took >= RESTORE_TIMEOUT_S - 0.05, f"returned after {took:.2f} s: no marker to end it"
    assert [(a.machine_id, a.state, a.alert_id, a.seq) for a in restored] == [
        ("m-1", CRITICAL, "m-1-1000", 3)
    ]
    warnings = timeout_warnings(caplog)
    assert len(warnings) == 1, f"no warning says why the read waited: {caplog.text}"
    warning = warnings[0]
    assert "FOREWARN_MQTT__RESTORE_TIMEOUT_S" in warning
    assert restore_marker_topic("factory", CLIENT_ID) in warning
    assert "from the 1 received" in warning


def test_an_agent_whose_restore_marker_never_returns_still_starts_and_says_why(
    acl_broker: Mosquitto,
    running_agent: Callable[[Settings], Agent],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Ticks wait for the restore, so a restore that waited forever (or retried forever)
    would leave the agent connected but never ready: /healthz 503 and no alert ever."""
    settings = agent_settings(
        acl_broker.port, client_id=CLIENT_ID, restore_timeout_s=RESTORE_TIMEOUT_S
    )
    with caplog.at_level(logging.WARNING, logger="agent.restore"):
        agent = running_agent(settings)  # asserts it is connected and ready within 15 s
    assert len(timeout_warnings(caplog)) == 1, caplog.text
    assert holds_within(lambda: agent.health()[0], 5), agent.health()
    # It resumed from the alert that did arrive: m-1 counts as critical before any reading.
    assert holds_within(
        lambda: (
            agent.metrics.registry.get_sample_value(
                "forewarn_alerts_firing", {"severity": "critical"}
            )
            == 1
        ),
        5,
    )
