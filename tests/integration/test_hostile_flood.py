"""Floods of machine ids: memory, slots and Prometheus series stay bounded.

These drive a real agent (the default forecaster, real metrics) through its MQTT message
callback and its tick, without a broker: a million messages through mosquitto would take
minutes on a small machine, and the path under test — callback, decoder, hand-off, drain,
eviction — is the same one a broker feeds. The broker side of floods is covered by
test_hostile.py. No server is started, so these tests are not marked integration.

The million-id flood runs in a process of its own (this module run as a script: see
:func:`flood`), so that the memory it reads is the flooded agent's alone, not that of a pytest
process that has run other tests before; the memory figures a deployment plans by are
``python -m bench.memory``'s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import paho.mqtt.client as mqtt
import pytest

from agent.alerts import CRITICAL, OK
from agent.app import Agent
from config.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
FLOOD = 1_000_000
CHUNK = 20_000
HONEST = 100


def rss_mb() -> float:
    """Resident set size of this process, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def make_settings(**agent: object) -> Settings:
    settings = load_settings(_env_file=None)
    settings.metrics = settings.metrics.model_copy(update={"host": "127.0.0.1", "port": 0})
    settings.agent = settings.agent.model_copy(update=agent)
    return settings


def deliver(agent: Agent, machine_id: str, seq: int, ts: float, temperature: float = 70.0) -> None:
    """One reading through the agent's MQTT callback, as paho's network thread delivers it."""
    message = mqtt.MQTTMessage(topic=f"factory/{machine_id}/telemetry".encode())
    message.payload = orjson.dumps(
        {
            "machine_id": machine_id,
            "ts": ts,
            "seq": seq,
            "temperature_c": temperature,
            "vibration_hz": 35.0,
            "pressure_psi": 120.0,
            "rpm": 1650.0,
        }
    )
    agent.ingest._on_message(agent.client, None, message)


def series(agent: Agent) -> set[str]:
    """Machines with a per-machine temperature series in the exposition."""
    return {
        sample.labels["machine_id"]
        for metric in agent.metrics.registry.collect()
        if metric.name == "forewarn_machine_temperature_celsius"
        for sample in metric.samples
    }


def rejected(agent: Agent, reason: str) -> float:
    value = agent.metrics.registry.get_sample_value(
        "forewarn_readings_rejected_total", {"reason": reason}
    )
    return value or 0.0


def flood() -> dict[str, object]:
    """A million new ids in chunks, the real machines reporting between: what is left after.

    Run in a process of its own by the test below (``python -m`` this module).
    """
    settings = make_settings()  # the default cap: 100,000 machines
    cap = settings.agent.max_machines
    agent = Agent(settings)
    now = time.time()
    honest = [f"line-{m}" for m in range(HONEST)]
    seq = 0
    for seq in range(agent.store.window):
        for machine_id in honest:
            deliver(agent, machine_id, seq, now - 1000 + seq)
    agent.tick()
    series_before = sorted(series(agent))
    rss_before = rss_mb()

    started = time.perf_counter()
    rss_at_cap = 0.0
    most_series = 0
    for chunk_start in range(0, FLOOD, CHUNK):
        for i in range(chunk_start, chunk_start + CHUNK):
            deliver(agent, f"flood-{i}", 0, now)
        seq += 1
        for machine_id in honest:  # the real machines keep talking through the flood
            deliver(agent, machine_id, seq, now - 1000 + seq)
        agent.tick()
        if chunk_start + CHUNK == 2 * cap:
            rss_at_cap = rss_mb()
        most_series = max(most_series, len(series(agent)))
    registry = agent.metrics.registry
    return {
        "cap": cap,
        "capacity": agent.store.capacity,
        "max_machine_series": settings.metrics.max_machine_series,
        "series_before": series_before,
        "most_series": most_series,
        "series_after": sorted(series(agent)),
        "machines": len(agent.store),
        "machines_gauge": registry.get_sample_value("forewarn_machines"),
        "evicted": registry.get_sample_value("forewarn_machines_evicted_total"),
        "overload": rejected(agent, "overload"),
        "honest_tracked": sorted(m for m in honest if m in agent.store.slot_of),
        "seconds": time.perf_counter() - started,
        "rss_before_mb": rss_before,
        "rss_at_cap_mb": rss_at_cap,
        "rss_after_mb": rss_mb(),
    }


@pytest.mark.slow
def test_a_million_machine_ids_keep_memory_and_series_bounded() -> None:
    """Slots, series and memory stay bounded through a million new ids, and the real machines
    survive. Memory is bounded loosely (flat within 64 MiB once the cap is reached, under
    600 MiB of growth in all) to catch a leak, not to measure one."""
    completed = subprocess.run(
        [sys.executable, "-m", "tests.integration.test_hostile_flood"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    cap = result["cap"]
    honest = {f"line-{m}" for m in range(HONEST)}
    rss_before, rss_at_cap, rss_after = (
        result["rss_before_mb"],
        result["rss_at_cap_mb"],
        result["rss_after_mb"],
    )
    print(
        f"\n{FLOOD:,} machine ids in {result['seconds']:.1f} s; RSS {rss_before:.0f} MiB "
        f"before, {rss_at_cap:.0f} MiB at the cap ({2 * cap:,} ids), {rss_after:.0f} MiB after; "
        f"{result['machines']:,} machines tracked, {result['evicted']:,.0f} evicted"
    )
    assert set(result["series_before"]) == honest
    assert result["most_series"] <= result["max_machine_series"]
    assert result["machines"] == result["capacity"] == cap
    assert result["evicted"] == FLOOD + HONEST - cap
    assert result["overload"] == 0
    assert result["machines_gauge"] == cap
    # Every real machine survived and is still forecast; the series are theirs alone.
    assert set(result["honest_tracked"]) == honest
    assert set(result["series_after"]) == honest
    # Memory: flat once the cap is reached, and modest in all (generous bounds).
    assert rss_after - rss_at_cap < 64, (rss_at_cap, rss_after)
    assert rss_after - rss_before < 600, (rss_before, rss_after)


def test_an_evicted_slot_is_reused_with_its_alert_anomaly_and_series_reset() -> None:
    settings = make_settings(max_machines=4)
    agent = Agent(settings)
    now = time.time()
    window = agent.store.window
    threshold = settings.alerts.threshold_c
    for seq in range(window):
        for m in range(4):
            # m-0 is over the threshold throughout: critical.
            temperature = threshold + 5 if m == 0 else 60.0
            deliver(agent, f"m-{m}", seq, now - 100 + seq, temperature)
    agent.tick()
    hot = agent.store.slot_of["m-0"]
    assert agent.policy.state[hot] == CRITICAL
    assert series(agent) == {"m-0", "m-1", "m-2", "m-3"}
    agent.anomaly.count[hot] = 50  # as if m-0 had learned its normal
    for m in (1, 2, 3):
        deliver(agent, f"m-{m}", window, now - 100 + window)

    # A new machine takes the least recently seen slot: m-0's.
    deliver(agent, "newcomer", 0, now)
    agent.tick()
    assert "m-0" not in agent.store.slot_of
    assert agent.store.slot_of["newcomer"] == hot
    assert agent.policy.state[hot] == OK, "the newcomer must not inherit m-0's alert"
    assert agent.policy.firing_counts(len(agent.store))["critical"] == 0
    assert agent.anomaly.count[hot] == 0
    assert np.isnan(agent.anomaly.forecast[hot]).all()
    assert "m-0" not in series(agent), "an evicted machine's series go with it"
    assert agent.metrics.registry.get_sample_value("forewarn_machines_evicted_total") == 1


def test_stale_machines_lose_their_series() -> None:
    settings = make_settings(stale_after_s=30.0)
    agent = Agent(settings)
    now = time.time()
    for seq in range(agent.store.window):
        deliver(agent, "quiet", seq, now - 100 + seq)
        deliver(agent, "chatty", seq, now - 100 + seq)
    agent.tick()
    assert series(agent) == {"quiet", "chatty"}
    slot = agent.store.slot_of["chatty"]
    agent.store.last_seen[slot] = now + 25  # chatty spoke 25 s later; quiet did not
    agent.ticker._next_stale_check = 0.0
    agent.ticker._drop_stale(now + 31)
    assert series(agent) == {"chatty"}
    assert agent.store.stale(now + 31).tolist() == [agent.store.slot_of["quiet"]]


if __name__ == "__main__":
    print(json.dumps(flood()))
