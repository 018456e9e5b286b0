"""A tick's readings decoded together give exactly the verdicts of decoding them one by one.

``ReadingDecoder.decode_many`` checks payloads column by column in numpy and sends whatever
those checks do not pass cleanly through ``decode``. These tests hold it to ``decode``: the same
readings (id, ts, seq, float32 values, arrival time), the same rejections by reason and the
same first detail per reason, for mixtures of good payloads and every kind of bad one.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.fields import FEATURES
from config.readings import MappingSettings, ReadingLimits
from config.settings import load_settings
from tests.payloads import FUZZ, WIDE_DECODER, json_values
from wire.mapping import FieldMapping
from wire.reading import Arrival, Batch, Reading, ReadingDecoder, Rejected

if TYPE_CHECKING:
    from agent.app import Agent as AgentType

DECODER = ReadingDecoder(ReadingLimits())
GOOD = {
    "machine_id": "m-007",
    "ts": 1_700_000_000.5,
    "seq": 42,
    "temperature_c": 71.25,
    "vibration_hz": 35.5,
    "pressure_psi": 121.75,
    "rpm": 1642.0,
}


def one_by_one(decoder: ReadingDecoder, arrivals: list[Arrival]) -> tuple[list[Any], Batch]:
    """The reference: ``decode`` on each arrival, rejections tallied in arrival order."""
    tally = Batch()
    out: list[Reading | None] = []
    for topic_id, payload, received in arrivals:
        try:
            out.append(decoder.decode(payload, topic_id or None, received))
        except Rejected as rejected:
            tally.reject(rejected.reason, rejected.detail)
            out.append(None)
    return out, tally


def assert_same(decoder: ReadingDecoder, arrivals: list[Arrival]) -> list[Reading | None]:
    readings, tally = decoder.decode_many(arrivals)
    expected, expected_tally = one_by_one(decoder, arrivals)
    assert len(readings) == len(arrivals)
    for got, want in zip(readings, expected, strict=True):
        if want is None:
            assert got is None
            continue
        assert got is not None
        assert (got.machine_id, got.ts, got.seq, got.received) == (
            want.machine_id,
            want.ts,
            want.seq,
            want.received,
        )
        assert type(got.ts) is float and type(got.seq) is int
        assert got.values.dtype == np.float32
        assert got.values.tobytes() == want.values.tobytes()
    assert tally.rejected == expected_tally.rejected
    assert tally.details == expected_tally.details
    return readings


def arrival(data: object, topic_id: str = "", received: float = 5.0) -> Arrival:
    raw = data if isinstance(data, bytes) else orjson.dumps(data)
    return (topic_id, raw, received)


def test_good_readings_never_take_the_one_by_one_path(monkeypatch: pytest.MonkeyPatch) -> None:
    decoder = ReadingDecoder(ReadingLimits())
    arrivals = [
        arrival({**GOOD, "machine_id": f"m-{i}", "seq": i, "ts": 1e9 + i}, f"m-{i}" * (i % 2), i)
        for i in range(50)
    ]

    def refuse(*args: object) -> Reading:
        raise AssertionError("a good reading went one by one")

    monkeypatch.setattr(decoder, "decode", refuse)
    readings, tally = decoder.decode_many(arrivals)
    assert not tally.rejected
    assert [r.seq for r in readings if r is not None] == list(range(50))
    assert [r.received for r in readings if r is not None] == list(range(50))
    assert readings[3] is not None
    assert readings[3].values.tolist() == [71.25, 35.5, 121.75, 1642.0]


def test_simulator_payloads_never_take_the_one_by_one_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """As the simulator sends them (``schema`` included), also to a model that reads fewer
    features than the payload carries."""
    from wire.payload import encode_reading

    values = np.array([70.0, 35.0, 120.0, 1650.0])
    arrivals = [
        (f"m-{i}", encode_reading(f"m-{i}", 1e9 + i, i, values), float(i)) for i in range(20)
    ]
    for features in (FEATURES, ("temperature_c", "rpm")):
        decoder = ReadingDecoder(ReadingLimits(), features=features)

        def refuse(*args: object) -> Reading:
            raise AssertionError("a good reading went one by one")

        monkeypatch.setattr(decoder, "decode", refuse)
        readings, tally = decoder.decode_many(arrivals)
        assert not tally.rejected
        assert [r.seq for r in readings if r is not None] == list(range(20))
        assert readings[0] is not None and len(readings[0].values) == len(features)


def test_one_bad_reading_costs_only_itself() -> None:
    arrivals = [arrival({**GOOD, "seq": i}) for i in range(10)]
    arrivals[4] = arrival({**GOOD, "temperature_c": 9e9})
    arrivals[7] = arrival(b"{not json")
    readings = assert_same(DECODER, arrivals)
    assert [r is None for r in readings].count(True) == 2


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"[1, 2]",
        b'"text"',
        {**GOOD, "seq": True},
        {**GOOD, "seq": -1},
        {**GOOD, "seq": 2**62 + 1},
        {**GOOD, "seq": 1.0},
        {**GOOD, "ts": "now"},
        {**GOOD, "ts": None},
        {**GOOD, "rpm": False},
        {**GOOD, "rpm": [1650.0]},
        {**GOOD, "pressure_psi": 1e39},
        {**GOOD, "machine_id": ""},
        {**GOOD, "machine_id": "a/b"},
        {**GOOD, "machine_id": "x" * 129},
        {**GOOD, "machine_id": 7},
        {key: value for key, value in GOOD.items() if key != "vibration_hz"},
        {key: value for key, value in GOOD.items() if key != "machine_id"},
        json.dumps({**GOOD, "seq": 2**64}).encode(),
        json.dumps({**GOOD, "ts": 10**400}).encode(),
        {**GOOD, "padding": "x" * 5000},
        # What the fast path's parser (msgspec) would take but orjson refuses, or reads
        # otherwise: every one must get decode()'s verdict.
        orjson.dumps(GOOD)[:-1] + b',"schema":1e400}',
        orjson.dumps(GOOD)[:-1] + b',"extra":1e400}',
        orjson.dumps(GOOD)[:-1] + b',"schema":' + b"9" * 400 + b"}",
        orjson.dumps(GOOD)[:-1] + b',"schema":' + b"[" * 1100 + b"]" * 1100 + b"}",
        orjson.dumps(GOOD)[:-1] + b',"schema":"\xff"}',
        orjson.dumps(GOOD)[:-1] + b',"schema":"\\ud800"}',
        orjson.dumps(GOOD)[:-1] + b',"seq":7}',  # a repeated key: the last one counts
        orjson.dumps(GOOD)[:-1] + b',"ts":null}',
        {**GOOD, "schema": {"nested": [1, None]}},
        {**GOOD, "ts": 2**53 + 1},
        json.dumps({**GOOD, "ts": 2**64 + 5}).encode(),
        json.dumps({**GOOD, "ts": 10**30}).encode(),
        {**GOOD, "rpm": 1650},
    ],
)
@pytest.mark.parametrize("topic_id", ["", "m-007", "m-other", "a+b", "x" * 129, "a\x01"])
def test_each_kind_of_bad_reading_as_one_by_one(bad: object, topic_id: str) -> None:
    arrivals = [arrival(GOOD, topic_id), arrival(bad, topic_id), arrival(GOOD, topic_id)]
    assert_same(DECODER, arrivals)


def test_a_mapping_is_applied_as_one_by_one() -> None:
    mapping = FieldMapping(
        MappingSettings.model_validate(
            {"fields": {"temp_f": {"feature": "temperature_c", "unit": "degF"}}}
        ).field_maps(),
        FEATURES,
    )
    decoder = ReadingDecoder(ReadingLimits(), mapping=mapping)
    plant = {**GOOD, "temp_f": 160.25}
    del plant["temperature_c"]
    readings = assert_same(decoder, [arrival(plant), arrival(GOOD)])
    assert readings[0] is not None


def test_a_failure_of_the_column_path_costs_speed_not_readings(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    decoder = ReadingDecoder(ReadingLimits())

    def broken(arrivals: object) -> object:
        raise IndexError("a bug")

    monkeypatch.setattr(decoder, "_decode_columns", broken)
    arrivals = [arrival({**GOOD, "seq": i}) for i in range(5)] + [arrival(b"nope")]
    with caplog.at_level(logging.ERROR, logger="wire.reading"):
        readings, tally = decoder.decode_many(arrivals)
    assert [r.seq for r in readings if r is not None] == [0, 1, 2, 3, 4]
    assert tally.rejected == {"bad_json": 1}
    assert "one by one instead" in caplog.text


def test_an_unexpected_error_in_one_payload_costs_only_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An error decode() does not expect (a bug, say in a field mapping) is that payload's
    bad_json, logged once with its traceback; the rest of the tick is decoded."""
    mapping = FieldMapping(
        MappingSettings.model_validate({"fields": {"asset": "machine_id"}}).field_maps(),
        FEATURES,
    )
    decoder = ReadingDecoder(ReadingLimits(), mapping=mapping)
    apply = mapping.apply

    def flaky(data: dict[str, Any]) -> dict[str, Any]:
        if data.get("seq") in (1, 3):
            raise KeyError("a bug")
        return apply(data)

    monkeypatch.setattr(mapping, "apply", flaky)
    arrivals = [arrival({**GOOD, "seq": i}) for i in range(5)]
    with caplog.at_level(logging.ERROR, logger="wire.reading"):
        readings, tally = decoder.decode_many(arrivals)
    assert [r.seq for r in readings if r is not None] == [0, 2, 4]
    assert tally.rejected == {"bad_json": 2}
    assert "KeyError" in tally.details["bad_json"]
    assert caplog.text.count("unexpected error decoding a reading") == 1
    assert "Traceback" in caplog.text


def test_nothing_to_decode() -> None:
    assert DECODER.decode_many([]) == ([], Batch())


# ---------------------------------------------------------------- property

FUZZ_TICKS = settings(FUZZ, max_examples=300)

numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -0.0, 1e308, 3.4028235e38, 3.5e38, 5e-324, 2**62, 2**62 + 1, 2**63]),
    st.floats(-200.0, 2000.0),
    st.sampled_from([-40.0, 250.0, 0.0, 5000.0, 15000.0, 10_000.0, 20_000.0]),
)
machine_ids = st.one_of(
    st.sampled_from(["m-1", "m-007", "line-3/press", "", "x" * 128, "x" * 129, "a\nb", "é"]),
    st.text(max_size=10),
)
fields = {
    "machine_id": st.one_of(machine_ids, json_values),
    "ts": st.one_of(numbers, json_values),
    "seq": st.one_of(st.integers(-3, 2**64), numbers, json_values),
    **{name: st.one_of(numbers, json_values) for name in FEATURES},
}
good_payload = st.builds(
    lambda mid, ts, seq, values: {
        "machine_id": mid,
        "ts": ts,
        "seq": seq,
        **dict(zip(FEATURES, values, strict=True)),
    },
    st.sampled_from(["m-1", "m-007", "m-2"]),
    st.floats(1e9, 2e9),
    st.integers(0, 2**62),
    st.tuples(st.floats(-40, 250), st.floats(0, 5000), st.floats(0, 15000), st.floats(0, 20_000)),
)
payloads = st.one_of(
    good_payload.map(orjson.dumps),
    st.builds(  # around the 4,096-byte limit, on both sides
        lambda data, pad: orjson.dumps({**data, "pad": "x" * pad}),
        good_payload,
        st.integers(3850, 4050),
    ),
    good_payload.map(lambda data: json.dumps(data).encode()),
    st.fixed_dictionaries({}, optional=fields).map(lambda data: json.dumps(data).encode()),
    st.binary(max_size=40),
)
arrivals = st.lists(
    st.tuples(
        st.sampled_from(["", "m-1", "m-007", "m-2", "a#b", "x" * 129, "tab\t"]),
        payloads,
        st.floats(0, 1e6),
    ),
    max_size=40,
)


@FUZZ_TICKS
@given(batch=arrivals)
def test_decoding_together_is_decoding_one_by_one(batch: list[Arrival]) -> None:
    assert_same(DECODER, batch)


@FUZZ_TICKS
@given(batch=arrivals)
def test_decoding_together_is_decoding_one_by_one_with_the_widest_limits(
    batch: list[Arrival],
) -> None:
    assert_same(WIDE_DECODER, batch)


# ---------------------------------------------------------------- through the agent


def make_agent(**agent: object) -> AgentType:
    from agent.app import Agent

    config = load_settings(_env_file=None)
    config.metrics = config.metrics.model_copy(update={"host": "127.0.0.1", "port": 0})
    config.agent = config.agent.model_copy(update=agent)
    return Agent(config)


def deliver(agent: AgentType, topic: str, payload: object) -> None:
    """One message through the agent's paho callback, as its network thread delivers it."""
    message = mqtt.MQTTMessage(topic=topic.encode())
    message.payload = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    agent.ingest._dispatch(agent.client, None, message)


def sample(agent: AgentType, name: str, **labels: str) -> float:
    return agent.metrics.registry.get_sample_value(name, labels or None) or 0.0


def test_single_messages_and_gateway_batches_keep_their_order() -> None:
    """A machine's readings reach the window store in arrival order, whichever way each
    came: single messages decoded at the tick, batch readings decoded on arrival."""
    agent = make_agent()
    t0 = time.time() - 100
    reading = lambda seq: {**GOOD, "machine_id": "m-1", "seq": seq, "ts": t0 + seq}  # noqa: E731
    deliver(agent, "factory/m-1/telemetry", reading(0))
    deliver(agent, "factory/_gateway/gw-1/telemetry", {"readings": [reading(1), reading(2)]})
    deliver(agent, "factory/m-1/telemetry", reading(3))
    deliver(agent, "factory/m-1/telemetry", b"{oops")
    deliver(agent, "factory/_gateway/gw-1/telemetry", {"readings": [reading(4)]})
    deliver(agent, "factory/m-1/telemetry", reading(5))
    assert sample(agent, "forewarn_readings_total") == 0  # single messages wait for the tick
    agent.tick()
    assert sample(agent, "forewarn_readings_total") == 6
    assert sample(agent, "forewarn_readings_rejected_total", reason="out_of_order") == 0
    assert sample(agent, "forewarn_readings_rejected_total", reason="bad_json") == 1
    slot = agent.store.slot_of["m-1"]
    assert int(agent.store.last_seq[slot]) == 5
    assert agent.store.count[slot] == 6


def test_the_callback_refuses_oversized_payloads_and_a_full_hand_off_at_once() -> None:
    agent = make_agent(max_pending_readings=2)
    deliver(agent, "factory/m-1/telemetry", b"{" + b" " * 5000 + b"}")
    assert sample(agent, "forewarn_readings_rejected_total", reason="too_large") == 1
    for seq in range(3):
        deliver(agent, "factory/m-1/telemetry", {**GOOD, "machine_id": "m-1", "seq": seq})
    assert sample(agent, "forewarn_readings_rejected_total", reason="overload") == 1
    agent.tick()
    assert sample(agent, "forewarn_readings_total") == 2


def test_the_hand_off_is_bounded_in_payload_bytes_too() -> None:
    """Undecoded payloads wait in the hand-off: their bytes are bounded as well as their
    count, and what a tick decodes makes room again."""
    agent = make_agent(max_pending_bytes=4096)
    big = {**GOOD, "machine_id": "m-1", "pad": "x" * 1800}  # about 2,000 bytes
    for seq in range(3):
        deliver(agent, "factory/m-1/telemetry", {**big, "seq": seq})
    assert sample(agent, "forewarn_readings_rejected_total", reason="overload") == 1
    agent.tick()
    assert sample(agent, "forewarn_readings_total") == 2
    for seq in range(3, 5):
        deliver(agent, "factory/m-1/telemetry", {**big, "seq": seq})
    assert sample(agent, "forewarn_readings_rejected_total", reason="overload") == 1
    agent.tick()
    assert sample(agent, "forewarn_readings_total") == 4


def test_a_reading_is_timed_from_its_arrival_not_its_decoding() -> None:
    agent = make_agent()
    t0 = time.time() - 100
    began = time.monotonic()
    for seq in range(agent.store.window):
        deliver(
            agent,
            "factory/m-1/telemetry",
            {**GOOD, "machine_id": "m-1", "seq": seq, "ts": t0 + seq},
        )
    time.sleep(0.2)
    agent.tick()
    span = time.monotonic() - began
    window = agent.store.window  # every reading of the window was in the forecast
    assert sample(agent, "forewarn_reading_to_forecast_seconds_count") == window
    waited = sample(agent, "forewarn_reading_to_forecast_seconds_sum") / window
    # At least the 0.2 s between the arrivals and the tick; at most the span timed here, which
    # holds them all (no bound from a machine's speed).
    assert 0.2 <= waited <= span


def test_a_tick_decodes_in_slices_bounded_by_count_and_bytes() -> None:
    from agent.ingest import _slices

    sizes = [100] * 10 + [3000] + [10] * 7
    arrivals: list[Arrival] = [("", b"x" * size, 0.0) for size in sizes]
    slices = list(_slices(arrivals, 4, 1000))
    assert slices[0][0] == 0 and slices[-1][1] == len(arrivals)
    for (_, stop, _), (start, _, _) in itertools.pairwise(slices):
        assert stop == start  # contiguous, in order
    for start, stop, size in slices:
        assert size == sum(sizes[start:stop])
        assert stop - start <= 4
        assert size <= 1000 or stop - start == 1  # a payload over the bound is a slice alone
    assert (10, 11, 3000) in slices


def test_a_large_tick_is_decoded_whole_across_slices() -> None:
    agent = make_agent()
    t0 = time.time() - 100
    count = 9000  # more than two slices of 4,096
    for i in range(count):
        payload = {**GOOD, "machine_id": f"m-{i}", "seq": 0, "ts": t0}
        deliver(agent, f"factory/m-{i}/telemetry", b"nope" if i == 8500 else payload)
    agent.tick()
    assert sample(agent, "forewarn_readings_total") == count - 1
    assert sample(agent, "forewarn_readings_rejected_total", reason="bad_json") == 1
    ingest = agent.ingest
    assert ingest._queued_bytes == ingest._decoded_bytes  # the hand-off is empty in bytes too
