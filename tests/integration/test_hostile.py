"""Hostile input through a live agent on a real mosquitto: 100,000 malformed payloads.

A seeded mix of what broken sensors, misconfigured gateways and attackers send — random bytes,
truncated and oversized JSON, wrong types, NaN and infinity, absurd values, forged and unsafe
machine ids, future timestamps, replays, a flood of new machine ids — interleaved with the
readings of honest machines. The agent must not crash, must account for every payload (each is
accepted or counted under one reason), must keep the honest machines' windows exact and
forecast them, must never hand the model a non-finite number, and must keep its log short.

The accounting is exact, reason by reason: every payload is built so that its reason is certain
before it is sent (random bytes never start like a JSON object, so they can only be bad JSON),
and none can be lost on the way although the flood goes at QoS 0, as fast as a publisher can:
TCP on loopback carries it to the broker, the test broker's queues are unbounded (mosquitto
drops QoS 0 messages for a subscriber that falls behind only when ``max_queued_messages``
bounds its queue), and the agent keeps one connection throughout (checked), so each payload
reaches it exactly once.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator

import numpy as np
import orjson
import paho.mqtt.client as mqtt
import pytest
from numpy.typing import NDArray
from paho.mqtt.enums import CallbackAPIVersion

from agent.app import Agent
from config.fields import FEATURES
from config.settings import Settings, load_settings
from models.base import Forecaster
from models.checkpoint import TorchForecaster
from tests.conftest import Mosquitto
from tests.faultkit import holds_within
from wire.reading import REJECT_REASONS

pytestmark = pytest.mark.integration

HOSTILE = 100_000
HONEST_MACHINES = 20
HONEST_READINGS = 60
MAX_MACHINES = 1_000
FLOOD_IDS = 10_000


class CheckedForecaster:
    """The real default forecaster, counting any non-finite window it is handed."""

    def __init__(self, inner: Forecaster) -> None:
        self.inner = inner
        self.kind, self.version = inner.kind, inner.version
        self.features, self.window, self.horizon = inner.features, inner.window, inner.horizon
        self.batches = 0
        self.non_finite_inputs = 0
        self.non_finite_outputs = 0

    def forecast(self, windows: NDArray[np.float32]) -> NDArray[np.float32]:
        self.batches += 1
        self.non_finite_inputs += int(not np.isfinite(windows).all())
        result = self.inner.forecast(windows)
        self.non_finite_outputs += int(not np.isfinite(result).all())
        return result


def good(machine_id: str, seq: int, ts: float, temperature: float = 70.0) -> dict[str, object]:
    return {
        "machine_id": machine_id,
        "ts": ts,
        "seq": seq,
        "temperature_c": temperature,
        "vibration_hz": 35.0,
        "pressure_psi": 120.0,
        "rpm": 1650.0,
    }


def topic(machine_id: str) -> str:
    return f"factory/{machine_id}/telemetry"


class Plan:
    """The messages to publish, with the reason each is certain to get (None: accepted)."""

    def __init__(self, seed: int, now: float) -> None:
        self.rng = random.Random(seed)
        self.now = now
        self.messages: list[tuple[str, bytes]] = []
        self.expected: Counter[str] = Counter()
        self.honest: dict[str, list[float]] = {}

    def add(self, topic_: str, payload: bytes, reason: str | None) -> None:
        self.messages.append((topic_, payload))
        self.expected[reason or "accepted"] += 1

    def hostile(self, index: int) -> None:
        """One hostile payload of a kind drawn at random."""
        rng = self.rng
        victim = f"honest-{rng.randrange(HONEST_MACHINES)}"
        base = good(victim, 10**9 + index, self.now)
        raw = orjson.dumps(base)
        kind = rng.randrange(14)
        if kind == 0:
            self.add(topic(f"x-{index % 97}"), random_bytes(rng), "bad_json")
        elif kind == 1:
            self.add(topic(victim), raw[: rng.randrange(1, len(raw) - 1)], "bad_json")
        elif kind == 2:
            size = rng.randrange(4097, 20_000)
            self.add(topic(victim), b'{"pad":"' + b"x" * size + b'"}', "too_large")
        elif kind == 3:
            payload = rng.choice([b"[1,2,3]", b'"reading"', b"42", b"null", b"true", b"[]"])
            self.add(topic(victim), payload, "bad_json")
        elif kind == 4:
            literal = rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"nan"])
            field = rng.choice(["ts", *FEATURES]).encode()
            payload = raw.replace(b'"' + field + b'":', b'"' + field + b'":' + literal + b',"x":')
            self.add(topic(victim), payload, "bad_json")
        elif kind == 5:
            data = dict(base)
            del data[rng.choice(["ts", "seq", *FEATURES])]
            self.add(topic(victim), orjson.dumps(data), "missing_field")
        elif kind == 6:
            data = dict(base)
            field = rng.choice(["ts", "seq", *FEATURES])
            wrong: list[object] = ["71.5", True, False, [1.0], {"v": 1}]
            if field == "seq":
                wrong += [-1, 1.5, 2**63]  # negative, fractional, beyond MAX_SEQ
            else:
                wrong.append(None)  # a null seq counts as missing
            data[field] = rng.choice(wrong)
            self.add(topic(victim), orjson.dumps(data), "bad_type")
        elif kind == 7:
            data = dict(base)
            data[rng.choice(FEATURES)] = rng.choice([-1e9, 1e9, 1e300, -1e300, 3.5e38])
            self.add(topic(victim), orjson.dumps(data), "out_of_range")
        elif kind == 8:
            data = dict(base, machine_id=f"honest-{(int(victim[7:]) + 1) % HONEST_MACHINES}")
            self.add(topic(victim), orjson.dumps(data), "machine_mismatch")
        elif kind == 9:
            # Ids that cannot be a topic level or a log word, on the empty topic level.
            bad_id = rng.choice(["a/b", "m+", "#", "m\n1", "\x1b[2J", "m\x00", "x" * 129, ""])
            data = dict(base, machine_id=bad_id)
            self.add("factory//telemetry", orjson.dumps(data), "bad_type")
        elif kind == 10:
            data = dict(base, machine_id=f"future-{index}", ts=self.now + 10**6)
            self.add(topic(f"future-{index}"), orjson.dumps(data), "future")
        elif kind == 11:
            # A long topic level and no id in the payload: the topic's id is too long.
            long_id = "L" * rng.randrange(129, 400)
            data = {k: v for k, v in base.items() if k != "machine_id"}
            self.add(topic(long_id), orjson.dumps(data), "bad_type")
        else:
            # A flood of new machine ids with valid readings: accepted, and they evict.
            flood_id = f"flood-{rng.randrange(FLOOD_IDS)}-{index}"
            self.add(topic(flood_id), orjson.dumps(good(flood_id, 0, self.now)), None)

    def honest_reading(self, machine: int, seq: int) -> None:
        machine_id = f"honest-{machine}"
        temperature = 60.0 + machine + 0.1 * seq
        self.honest.setdefault(machine_id, []).append(temperature)
        ts = self.now - 100.0 + seq
        self.add(topic(machine_id), orjson.dumps(good(machine_id, seq, ts, temperature)), None)

    def replay(self, machine: int, seq: int, last: int) -> None:
        """An old reading of an honest machine again: its last one or an earlier one."""
        machine_id = f"honest-{machine}"
        ts = self.now - 100.0 + seq
        reason = "duplicate" if seq == last else "out_of_order"
        self.add(topic(machine_id), orjson.dumps(good(machine_id, seq, ts, 555.0)), reason)


JSON_WHITESPACE = b" \t\n\r"


def random_bytes(rng: random.Random) -> bytes:
    """Up to 300 random bytes that are certainly not a JSON object, so certainly bad JSON.

    An object is the only JSON the decoder reads; any other bytes are bad JSON whatever they
    hold. An object's first byte after JSON whitespace is ``{``: random bytes that would start
    that way get a ``[`` before them (an array, or not JSON at all: bad JSON either way).
    """
    payload = rng.randbytes(rng.randrange(0, 300))
    if payload.lstrip(JSON_WHITESPACE).startswith(b"{"):
        payload = b"[" + payload
    return payload


def build_plan(seed: int, now: float) -> Plan:
    plan = Plan(seed, now)
    honest_every = HOSTILE // (HONEST_MACHINES * HONEST_READINGS)
    next_seq = [0] * HONEST_MACHINES
    step = 0
    for index in range(HOSTILE):
        plan.hostile(index)
        if index % honest_every == 0:
            machine = step % HONEST_MACHINES
            step += 1
            if next_seq[machine] < HONEST_READINGS:
                plan.honest_reading(machine, next_seq[machine])
                next_seq[machine] += 1
                if next_seq[machine] > 2 and plan.rng.random() < 0.3:
                    last = next_seq[machine] - 1
                    plan.replay(machine, plan.rng.choice([last, last - 1, 0]), last)
    for machine in range(HONEST_MACHINES):
        while next_seq[machine] < HONEST_READINGS:
            plan.honest_reading(machine, next_seq[machine])
            next_seq[machine] += 1
    return plan


@pytest.fixture
def hostile_agent(mosquitto: Mosquitto) -> Iterator[Callable[[Settings], Agent]]:
    agents: list[Agent] = []

    def start(settings: Settings) -> Agent:
        agent = Agent(settings, forecaster=CheckedForecaster(TorchForecaster.from_path(None)))
        agent.start()
        agents.append(agent)
        assert agent.wait_connected(10), "agent did not connect to mosquitto"
        return agent

    yield start
    for agent in agents:
        agent.stop()


def agent_settings(mosquitto: Mosquitto, **agent: object) -> Settings:
    settings = load_settings(_env_file=None)
    settings.mqtt = settings.mqtt.model_copy(
        update={
            "host": mosquitto.host,
            "port": mosquitto.port,
            "client_id": "hostile-agent",
            "telemetry_qos": 0,
        }
    )
    settings.metrics = settings.metrics.model_copy(update={"host": "127.0.0.1", "port": 0})
    settings.agent = settings.agent.model_copy(update={"tick_interval_s": 0.1, **agent})
    return settings


def publish_all(mosquitto: Mosquitto, messages: list[tuple[str, bytes]]) -> float:
    """Publish at QoS 0 as fast as paho goes; returns the seconds it took.

    Each message is written to the one connection, in order (paho queues what the socket does
    not take yet, without bound); the connection is never lost, or a message could be.
    """
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="hostile")
    client.max_queued_messages_set(0)
    disconnects: list[object] = []
    client.on_disconnect = lambda c, u, f, reason, p: disconnects.append(reason)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    started = time.perf_counter()
    infos = [client.publish(topic_, payload, qos=0) for topic_, payload in messages]
    infos[-1].wait_for_publish(timeout=120)
    assert all(info.rc == mqtt.MQTT_ERR_SUCCESS for info in infos), "a payload was not sent"
    took = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    assert len(disconnects) == 1, f"the publisher lost the broker: {disconnects}"
    return took


def counts(agent: Agent) -> dict[str, float]:
    registry = agent.metrics.registry
    result = {
        reason: registry.get_sample_value("forewarn_readings_rejected_total", {"reason": reason})
        or 0.0
        for reason in REJECT_REASONS
    }
    result["accepted"] = registry.get_sample_value("forewarn_readings_total") or 0.0
    return result


def test_a_hundred_thousand_hostile_payloads_through_a_live_agent(
    mosquitto: Mosquitto,
    hostile_agent: Callable[[Settings], Agent],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = agent_settings(mosquitto, max_machines=MAX_MACHINES)
    agent = hostile_agent(settings)
    plan = build_plan(seed=8, now=time.time())
    total = len(plan.messages)
    assert total >= HOSTILE + HONEST_MACHINES * HONEST_READINGS

    with caplog.at_level(logging.WARNING, logger="agent"):
        took = publish_all(mosquitto, plan.messages)
        holds_within(lambda: sum(counts(agent).values()) >= total, 180)
        observed = counts(agent)

    print(f"\npublished {total} payloads ({HOSTILE} hostile) in {took:.1f} s")
    print("outcome by reason:", {k: int(v) for k, v in observed.items() if v})
    print("planned (exact):", dict(plan.expected))
    # One connection throughout: what the broker delivered reached the agent exactly once.
    assert agent.metrics.registry.get_sample_value("forewarn_mqtt_disconnects_total") == 0
    assert sum(observed.values()) == total, (
        f"every payload is accepted or counted under one reason: {observed} vs {total}; "
        f"mosquitto log: {mosquitto.log.read_text()[-2000:]}"
    )
    assert observed == {reason: float(plan.expected[reason]) for reason in observed}, (
        "each payload under the reason it was built for"
    )
    assert observed["overload"] == 0

    healthy, detail = agent.health()
    assert healthy, f"the agent must survive the flood: {detail}"
    forecaster = agent.forecaster
    assert isinstance(forecaster, CheckedForecaster)
    assert forecaster.batches > 0
    assert forecaster.non_finite_inputs == 0, "a non-finite number reached the model"
    assert forecaster.non_finite_outputs == 0
    store = agent.store
    assert np.isfinite(store.ring[: len(store)]).all()

    # The honest machines survived the id flood and their windows hold exactly their readings.
    assert len(store) == MAX_MACHINES
    assert agent.metrics.registry.get_sample_value("forewarn_machines_evicted_total") > 0
    for machine_id, temperatures in plan.honest.items():
        slot = store.slot_of.get(machine_id)
        assert slot is not None, f"{machine_id} was evicted by the flood"
        window = store.windows(np.array([slot]))[0, :, 0]
        np.testing.assert_allclose(window, temperatures[-store.window :], rtol=1e-6)
        assert (
            agent.metrics.registry.get_sample_value(
                "forewarn_machine_forecast_celsius", {"machine_id": machine_id}
            )
            is not None
        ), f"{machine_id} was never forecast"

    # The log stayed readable: a line per reason per 10 s, each one line and short.
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("agent")]
    seconds = took + 30
    assert len(lines) <= (len(REJECT_REASONS) + 1) * (seconds / 10 + 1), len(lines)
    assert all("\n" not in line and len(line) < 600 for line in lines)


def test_a_burst_beyond_the_hand_off_is_dropped_and_counted_as_overload(
    mosquitto: Mosquitto, hostile_agent: Callable[[Settings], Agent]
) -> None:
    settings = agent_settings(mosquitto, max_pending_readings=200, tick_interval_s=1.0)
    agent = hostile_agent(settings)
    now = time.time()
    messages = [
        (topic(f"m-{m}"), orjson.dumps(good(f"m-{m}", seq, now - 100 + seq)))
        for seq in range(100)
        for m in range(50)
    ]
    publish_all(mosquitto, messages)
    holds_within(lambda: sum(counts(agent).values()) >= len(messages), 60)
    observed = counts(agent)
    print("\nburst outcome:", {k: int(v) for k, v in observed.items() if v})
    assert observed["overload"] > 0
    assert observed["accepted"] + observed["overload"] == len(messages)
    assert agent.health()[0]
