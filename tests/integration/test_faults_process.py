"""Faults of the agent process itself, run as the `forewarn agent` command a service runs:
kill -9 and restart, SIGTERM, and a watchdog exit."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import forewarn_command, forewarn_env, free_port
from tests.faultkit import (
    COOL_C,
    HOT_C,
    Broker,
    Probe,
    Readings,
    healthz,
    metric,
    report,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLIENT_ID = "agent-k9"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path / "broker")
    broker.start()
    yield broker
    broker.kill()


def agent_env(broker: Broker, metrics_port: int) -> dict[str, str]:
    return forewarn_env(
        None,
        FOREWARN_MQTT__HOST=broker.host,
        FOREWARN_MQTT__PORT=str(broker.port),
        FOREWARN_MQTT__CLIENT_ID=CLIENT_ID,
        FOREWARN_MQTT__RECONNECT_MAX_S="2",
        FOREWARN_METRICS__HOST="127.0.0.1",
        FOREWARN_METRICS__PORT=str(metrics_port),
        FOREWARN_AGENT__TICK_INTERVAL_S="0.1",
        FOREWARN_MODEL__THREADS="1",
        # A cooled-down machine resolves at once after its clear ticks: the incident hold
        # (300 s by default) is tested in test_incidents.
        FOREWARN_ALERTS__KEEP_FIRING_FOR_S="0",
    )


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, cwd=log.parent, stdout=out, stderr=out)


def alerts_of(probe: Probe, machine_id: str) -> list[dict[str, object]]:
    return [p for p in probe.payloads() if p["machine_id"] == machine_id]


def test_agent_kill9_and_restart_resumes_alerts_and_readings(
    broker: Broker, tmp_path: Path
) -> None:
    """kill -9 leaves the will's retained `offline`; the readings sent meanwhile reach the
    restarted agent (its session); it resumes each alert from the retained alert topics, so
    a machine still hot fires no second time and one that cooled down gets its "resolved";
    SIGTERM then says `offline` itself and exits 0."""
    status = Probe(broker, f"factory/_agents/{CLIENT_ID}/status")
    alerts = Probe(broker, "factory/+/alerts")
    readings = Readings(broker)
    port = free_port()
    env = agent_env(broker, port)
    log = tmp_path / "agent.log"

    first = start(forewarn_command("agent"), env, log)
    try:
        assert wait_until(lambda: healthz(port) == 200, 90) is not None, log.read_text()
        # Phase A: two machines overheat, one stays cool; the first agent fires both.
        phase_a = readings.burst({"m-hot": COOL_C, "m-cool": COOL_C, "m-ok": COOL_C}, 10, 20)
        phase_a += readings.burst({"m-hot": HOT_C, "m-cool": HOT_C, "m-ok": COOL_C}, 15, 20)

        def both_critical(payloads: list[dict[str, object]]) -> bool:
            fired = {
                p["machine_id"]
                for p in payloads
                if (p["severity"], p["status"]) == ("critical", "firing")
            }
            return fired >= {"m-hot", "m-cool"}

        assert alerts.wait_for(both_critical, 20) is not None, log.read_text()
    finally:
        first.kill()  # SIGKILL: no goodbye
        first.wait(timeout=10)
    killed = time.monotonic()
    will = status.wait_for(lambda ps: ps[-1]["status"] == "offline", 10)
    assert will is not None, status.payloads()
    assert status.payloads()[-1]["reason"] == "connection lost", "that is the last will"
    before = {m: alerts_of(alerts, m) for m in ("m-hot", "m-cool")}

    # Phase B, nobody listening: m-cool has cooled down, m-hot is still hot.
    phase_b = readings.burst({"m-hot": HOT_C, "m-cool": COOL_C, "m-ok": COOL_C}, 40)
    second = start(forewarn_command("agent"), env, log)
    restarted = time.monotonic()
    try:
        back = wait_until(lambda: healthz(port) == 200, 90)
        assert back is not None, log.read_text()
        # Phase C: readings go on (10 Hz) until m-cool resolves, then 1 s more, in which a
        # duplicate would show up. The resolution takes clear_confirm_ticks ticks with new
        # readings, so a loaded machine's slow ticks only make it take longer.
        phase_c = 0
        resolved = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            phase_c += readings.burst({"m-hot": HOT_C, "m-cool": COOL_C, "m-ok": COOL_C}, 1)
            if resolved is None and any(
                p["machine_id"] == "m-cool" and p["status"] == "resolved" for p in alerts.payloads()
            ):
                resolved = time.monotonic()
                deadline = resolved + 1.0
            time.sleep(0.1)
        wait_until(lambda: (metric(port, "forewarn_readings_total") or 0) >= phase_b + phase_c, 5)
        taken = metric(port, "forewarn_readings_total") or 0.0
    finally:
        second.send_signal(signal.SIGTERM)
        code = second.wait(timeout=30)
    readings.close()
    after = {m: alerts_of(alerts, m)[len(before[m]) :] for m in ("m-hot", "m-cool")}
    offline = status.wait_for(lambda ps: ps[-1].get("reason") == "stopped", 5)
    report(
        f"agent kill -9: will `offline` retained {will:.2f} s after the kill; restarted agent "
        f"(started {restarted - killed:.1f} s after the kill) healthy {back:.1f} s after its "
        f"start, m-cool resolved {resolved - restarted if resolved else float('nan'):.1f} s "
        "after its start; it took "
        f"{taken:.0f} readings (published while it was dead: {phase_b}, after: {phase_c}; "
        f"lost: {max(0.0, phase_b + phase_c - taken):.0f}); alerts after the restart: m-hot "
        f"{[(p['severity'], p['status']) for p in after['m-hot']]}, m-cool "
        f"{[(p['severity'], p['status']) for p in after['m-cool']]}"
    )
    assert resolved is not None, f"m-cool never resolved: {after}; {log.read_text()[-3000:]}"
    assert after["m-hot"] == [], "a duplicate alert for a machine that stayed hot"
    (resolution,) = after["m-cool"]
    firing = before["m-cool"][-1]
    assert (resolution["severity"], resolution["status"]) == ("critical", "resolved")
    assert resolution["alert_id"] == firing["alert_id"], "the episode continues"
    assert resolution["seq"] == firing["seq"] + 1  # type: ignore[operator]
    assert alerts_of(alerts, "m-ok") == []
    assert phase_b + phase_c <= taken <= phase_a + phase_b + phase_c
    assert code == 0, log.read_text()[-3000:]
    assert offline is not None, status.payloads()
    status.close()
    alerts.close()


WATCHDOG_SCRIPT = textwrap.dedent(
    """
    import sys

    import agent.app as app
    from forewarn.cli import main

    original_start = app.Agent.start

    def start(self):
        original_start(self)

        def boom(client, userdata, message):  # not guarded: paho's thread dies on a reading
            raise RuntimeError("injected into the network thread")

        self.client.on_message = boom

    app.Agent.start = start
    sys.exit(main(["agent"]))
    """
)


def test_watchdog_exits_the_process_non_zero(broker: Broker, tmp_path: Path) -> None:
    """A dead network thread ends `forewarn agent` with status 1 (a service manager restarts
    it) instead of leaving a zombie that looks connected."""
    port = free_port()
    env = agent_env(broker, port)
    log = tmp_path / "agent.log"
    process = start([sys.executable, "-c", WATCHDOG_SCRIPT], env, log)
    try:
        assert wait_until(lambda: healthz(port) == 200, 60) is not None, log.read_text()
        readings = Readings(broker)
        readings.burst({"m-1": COOL_C}, 1)
        readings.close()
        sent = time.monotonic()
        code = process.wait(timeout=30)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
    report(f"dead network thread in `forewarn agent`: exited with status {code} after {took:.2f} s")
    assert code == 1, log.read_text()
    assert "watchdog: the MQTT network thread died" in log.read_text()
