"""Decoding and validating telemetry payloads: every rejection reason, and fuzzing."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.fields import FEATURES
from config.readings import ReadingLimits
from tests.payloads import FUZZ, WIDE_DECODER, json_values
from wire.payload import encode_reading
from wire.reading import MAX_SEQ, REJECT_REASONS, Reading, ReadingDecoder, Rejected

LIMITS = ReadingLimits()
DECODER = ReadingDecoder(LIMITS)
VALUES = np.array([71.25, 35.5, 121.75, 1642.0])


def payload(**changes: Any) -> bytes:
    """A valid simulator payload with fields changed (a value of ... removes the field)."""
    data = orjson.loads(encode_reading("m-007", 1700000000.5, 42, VALUES))
    for key, value in changes.items():
        if value is ...:
            data.pop(key, None)
        else:
            data[key] = value
    return orjson.dumps(data)


def reason_of(raw: bytes | bytearray, topic_machine_id: str | None = None) -> str:
    with pytest.raises(Rejected) as caught:
        DECODER.decode(raw, topic_machine_id)
    assert caught.value.reason in REJECT_REASONS
    assert caught.value.reason in str(caught.value)
    return caught.value.reason


def test_valid_simulator_payload_decodes() -> None:
    reading = DECODER.decode(encode_reading("m-007", 1700000000.5, 42, VALUES), "m-007")
    assert isinstance(reading, Reading)
    assert reading.machine_id == "m-007"
    assert reading.ts == 1700000000.5
    assert reading.seq == 42
    assert reading.values.dtype == np.float32
    assert reading.values.shape == (len(FEATURES),)
    np.testing.assert_array_equal(reading.values, VALUES.astype(np.float32))


def test_fields_are_read_by_name_not_position() -> None:
    raw = (
        b'{"rpm": 1642.0, "pressure_psi": 121.75, "seq": 3, "ts": 1.0,'
        b' "vibration_hz": 35.5, "temperature_c": 71.25, "machine_id": "a"}'
    )
    np.testing.assert_array_equal(DECODER.decode(raw).values, VALUES.astype(np.float32))


def test_integers_accepted_as_numbers_and_extra_fields_ignored() -> None:
    reading = DECODER.decode(payload(temperature_c=80, ts=5, note="hello", schema=1))
    assert reading.values[0] == 80.0
    assert reading.ts == 5.0


def test_bytearray_payload() -> None:
    assert DECODER.decode(bytearray(payload())).seq == 42


def test_machine_id_from_topic_when_missing() -> None:
    reading = DECODER.decode(payload(machine_id=...), topic_machine_id="m-123")
    assert reading.machine_id == "m-123"
    reading = DECODER.decode(payload(machine_id=None), topic_machine_id="m-124")
    assert reading.machine_id == "m-124"


def test_too_large() -> None:
    big = payload(padding="x" * LIMITS.max_payload_bytes)
    assert reason_of(big) == "too_large"
    # The size check comes before parsing: even garbage that large is too_large.
    assert reason_of(b"{" * (LIMITS.max_payload_bytes + 1)) == "too_large"
    small = ReadingDecoder(ReadingLimits(max_payload_bytes=64))
    with pytest.raises(Rejected) as caught:
        small.decode(payload())
    assert caught.value.reason == "too_large"


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"",
        b"\xff\xfe\x00",
        b'{"machine_id": "m-1",',
        b"[1, 2, 3]",
        b'"a string"',
        b"42",
        b"null",
        b'{"machine_id": "m-1", "ts": NaN, "seq": 1}',
        b'{"machine_id": "m-1", "ts": Infinity, "seq": 1}',
    ],
)
def test_bad_json(raw: bytes) -> None:
    assert reason_of(raw) == "bad_json"


def test_overflowing_number_literal_is_bad_json() -> None:
    # orjson refuses 1e999 (it would parse to inf) at parse time, so such a payload is
    # bad_json; it never reaches the decoder's own finiteness check.
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(b"1e999")
    raw = payload().replace(b'"temperature_c":71.25', b'"temperature_c":1e999')
    assert b"1e999" in raw
    assert reason_of(raw) == "bad_json"


@pytest.mark.parametrize("field", ["machine_id", "ts", "seq", *FEATURES])
def test_missing_field(field: str) -> None:
    assert reason_of(payload(**{field: ...})) == "missing_field"


def test_missing_machine_id_without_topic_is_missing_field() -> None:
    assert reason_of(payload(machine_id=...), topic_machine_id=None) == "missing_field"


@pytest.mark.parametrize(
    "changes",
    [
        {"temperature_c": "71.2"},
        {"rpm": True},
        {"vibration_hz": None},
        {"pressure_psi": [1.0]},
        {"ts": "yesterday"},
        {"ts": False},
        {"seq": -1},
        {"seq": 1.0},
        {"seq": "1"},
        {"seq": True},
        {"seq": MAX_SEQ + 1},
        {"seq": 2**64 - 1},
        {"machine_id": 7},
        {"machine_id": ""},
        {"machine_id": ["m-1"]},
        {"machine_id": "m" * 129},
    ],
)
def test_bad_type(changes: dict[str, Any]) -> None:
    assert reason_of(payload(**changes)) == "bad_type"


UNSAFE_ID_CHARS = {"/", "+", "#", *map(chr, range(0x20)), "\x7f"}


@pytest.mark.parametrize(
    "machine_id", ["a/b", "m-#", "m+1", "#", "m\x00", "m\n1", "m\r", "\x1b[31mred", "m\x7f"]
)
def test_machine_id_that_cannot_be_a_topic_level_is_bad_type(machine_id: str) -> None:
    # The id becomes a level of <prefix>/<id>/alerts; paho refuses to publish to a topic with
    # wildcards, and '/' would put the alert under another topic. Such an id can only arrive
    # in the payload of a message on an empty topic level ("factory//telemetry"). Control
    # characters (a newline, an escape sequence) would forge log lines and dashboard rows.
    assert reason_of(payload(machine_id=machine_id)) == "bad_type"
    assert reason_of(payload(machine_id=machine_id), topic_machine_id=None) == "bad_type"


def test_seq_bounds_are_inclusive() -> None:
    assert DECODER.decode(payload(seq=0)).seq == 0
    assert DECODER.decode(payload(seq=MAX_SEQ)).seq == MAX_SEQ
    assert DECODER.decode(payload(machine_id="m" * 128)).machine_id == "m" * 128


def test_non_finite_is_unreachable_through_json_but_checked() -> None:
    # orjson cannot produce inf or nan, so the decoder's non_finite check guards only against a
    # parser change; exercise the helper directly to show it is wired to that reason.
    from wire.reading import _number

    for value in (math.inf, -math.inf, math.nan):
        with pytest.raises(Rejected) as caught:
            _number({"x": value}, "x")
        assert caught.value.reason == "non_finite"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature_c", 600.001),
        ("temperature_c", -60.5),
        ("vibration_hz", 10_000.5),
        ("pressure_psi", -101.0),
        ("rpm", 100_001.0),
        ("rpm", -1e300),
    ],
)
def test_out_of_range(field: str, value: float) -> None:
    assert reason_of(payload(**{field: value})) == "out_of_range"


@pytest.mark.parametrize("field", FEATURES)
def test_limits_are_inclusive(field: str) -> None:
    low, high = getattr(LIMITS, field)
    index = FEATURES.index(field)
    assert DECODER.decode(payload(**{field: low})).values[index] == np.float32(low)
    assert DECODER.decode(payload(**{field: high})).values[index] == np.float32(high)


def test_custom_limits_apply() -> None:
    strict = ReadingDecoder(ReadingLimits(temperature_c=(0.0, 50.0)))
    with pytest.raises(Rejected) as caught:
        strict.decode(payload())
    assert caught.value.reason == "out_of_range"
    assert "temperature_c" in caught.value.detail


def test_machine_mismatch() -> None:
    assert reason_of(payload(machine_id="m-007"), topic_machine_id="m-008") == "machine_mismatch"


def test_values_beyond_float32_are_out_of_range_even_within_wider_limits() -> None:
    # Readings are stored as float32; 1e300 there is inf, which must never reach the model.
    wide = ReadingDecoder(ReadingLimits(temperature_c=(-1e308, 1e308)))
    with pytest.raises(Rejected) as caught:
        wide.decode(payload(temperature_c=1e300))
    assert caught.value.reason == "out_of_range"
    assert wide.decode(payload(temperature_c=3e38)).values[0] == np.float32(3e38)


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 2000 + b"]" * 2000,  # deeper than the parser's limit, within the size cap
        b"[" * 4000,
        b"\xef\xbb\xbf" + b'{"machine_id": "m-1"}',  # a byte order mark
        b'{"machine_id": "\\ud800", "ts": 1, "seq": 1}',  # a lone surrogate
        b'{"machine_id": "m-\xff"}',  # not UTF-8
        b"\x00" * 100,
    ],
)
def test_hostile_json_is_bad_json(raw: bytes) -> None:
    assert len(raw) <= LIMITS.max_payload_bytes
    assert reason_of(raw) == "bad_json"


def test_big_integers_are_floats_and_so_bad_seqs() -> None:
    # orjson turns integers beyond 64 bits into floats: never an overflow inside the decoder.
    assert reason_of(payload(seq=...).replace(b"}", b',"seq":18446744073709551616}')) == "bad_type"
    raw = payload(temperature_c=...).replace(b"}", b',"temperature_c":' + b"9" * 30 + b"}")
    assert reason_of(raw) == "out_of_range"


def test_reasons_are_a_small_fixed_set() -> None:
    assert len(REJECT_REASONS) == len(set(REJECT_REASONS)) <= 12
    assert {"overload", "duplicate", "out_of_order", "future", "too_large"} <= set(REJECT_REASONS)
    assert all(reason.isidentifier() for reason in REJECT_REASONS)


# ---------------------------------------------------------------- fuzzing


def check_outcome(raw: bytes, topic: str | None = None) -> None:
    """decode() returns a sane Reading or raises Rejected with a known reason; nothing else."""
    try:
        reading = DECODER.decode(raw, topic)
    except Rejected as rejected:
        assert rejected.reason in REJECT_REASONS
        return
    assert isinstance(reading.machine_id, str)
    assert 1 <= len(reading.machine_id) <= 128
    assert not set(reading.machine_id) & UNSAFE_ID_CHARS
    if topic is not None:
        assert reading.machine_id == topic
    assert isinstance(reading.seq, int)
    assert not isinstance(reading.seq, bool)
    assert 0 <= reading.seq <= MAX_SEQ
    assert math.isfinite(reading.ts)
    assert reading.values.shape == (len(FEATURES),)
    assert np.all(np.isfinite(reading.values))
    for value, name in zip(reading.values.tolist(), FEATURES, strict=True):
        low, high = getattr(LIMITS, name)
        assert low <= value <= high


FUZZ_MORE = settings(FUZZ, max_examples=1000)

field_names = st.sampled_from(["machine_id", "ts", "seq", *FEATURES]) | st.text(max_size=12)
plausible = {
    "machine_id": st.one_of(st.text(min_size=0, max_size=140), json_values),
    "ts": st.one_of(st.floats(allow_nan=False, allow_infinity=False), json_values),
    "seq": st.one_of(st.integers(min_value=-5, max_value=2**64 - 1), json_values),
    **{name: st.one_of(st.floats(-2e5, 2e5), json_values) for name in FEATURES},
}


@FUZZ
@given(raw=st.binary(max_size=600), topic=st.none() | st.sampled_from(["m-1", "m-007"]))
def test_fuzz_arbitrary_bytes(raw: bytes, topic: str | None) -> None:
    check_outcome(raw, topic)


@FUZZ
@given(data=st.dictionaries(field_names, json_values, max_size=10))
def test_fuzz_arbitrary_json_objects(data: dict[str, Any]) -> None:
    check_outcome(orjson.dumps(data))


@FUZZ
@given(
    data=st.fixed_dictionaries({}, optional=plausible),
    topic=st.none() | st.sampled_from(["m-1", "m-007"]),
)
def test_fuzz_nearly_valid_objects(data: dict[str, Any], topic: str | None) -> None:
    check_outcome(orjson.dumps(data), topic)


VALID = payload()


@FUZZ_MORE
@given(
    cuts=st.lists(st.integers(0, len(VALID)), max_size=4),
    flips=st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=6),
    insert=st.binary(max_size=40),
    at=st.integers(0, len(VALID)),
    topic=st.none() | st.just("m-007"),
)
def test_fuzz_mutated_valid_payloads(
    cuts: list[int],
    flips: list[tuple[int, int]],
    insert: bytes,
    at: int,
    topic: str | None,
) -> None:
    """A valid payload with bytes overwritten, a chunk inserted and pieces cut out: what a
    flaky serial link or a buggy gateway makes of a reading."""
    raw = bytearray(VALID)
    for position, byte in flips:
        raw[position] = byte
    raw[at:at] = insert
    for cut in sorted(cuts, reverse=True):
        del raw[cut : cut + 3]
    check_outcome(bytes(raw), topic)


numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -0.0, 1e308, -1e308, 3.5e38, -3.5e38, 5e-324, 2**62, 2**63, 2**64]),
)


@FUZZ_MORE
@given(
    ts=numbers,
    seq=numbers,
    values=st.lists(numbers, min_size=len(FEATURES), max_size=len(FEATURES)),
    wide=st.booleans(),
)
def test_fuzz_extreme_numbers(ts: float, seq: float, values: list[float], wide: bool) -> None:
    """Extreme numbers in every numeric field, against the default and the widest limits:
    no overflow escapes, nothing non-finite is returned."""
    data = {"machine_id": "m-1", "ts": ts, "seq": seq, **dict(zip(FEATURES, values, strict=True))}
    decoder = WIDE_DECODER if wide else DECODER
    try:
        # The standard library writes integers of any size; orjson refuses beyond 64 bits.
        reading = decoder.decode(json.dumps(data).encode())
    except Rejected as rejected:
        assert rejected.reason in REJECT_REASONS
        return
    assert np.all(np.isfinite(reading.values))
    assert math.isfinite(reading.ts)
    assert 0 <= reading.seq <= MAX_SEQ


@FUZZ
@given(
    machine_id=st.text(min_size=1, max_size=128),
    ts=st.floats(0, 4e9),
    seq=st.integers(0, MAX_SEQ),
    temperature=st.floats(-60, 600),
    vibration=st.floats(-1000, 10_000),
    pressure=st.floats(-100, 20_000),
    rpm=st.floats(-100_000, 100_000),
)
def test_fuzz_valid_readings_round_trip(
    machine_id: str,
    ts: float,
    seq: int,
    temperature: float,
    vibration: float,
    pressure: float,
    rpm: float,
) -> None:
    values = np.array([temperature, vibration, pressure, rpm])
    raw = encode_reading(machine_id, ts, seq, values)
    if len(raw) > LIMITS.max_payload_bytes:  # a long multi-byte machine id
        assert reason_of(raw) == "too_large"
        return
    if set(machine_id) & UNSAFE_ID_CHARS:
        assert reason_of(raw) == "bad_type"
        return
    reading = DECODER.decode(raw, machine_id)
    assert reading.machine_id == machine_id
    assert reading.seq == seq
    assert reading.ts == pytest.approx(ts, abs=1e-3)
    np.testing.assert_allclose(reading.values, values, rtol=1e-6, atol=1e-3)
