"""Gateway batches: decoding, per-element rejection, limits, and the settings around them."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from agent.window import WindowStore
from config.errors import ConfigError
from config.fields import FEATURES
from config.readings import FieldMap, ReadingLimits
from config.settings import load_settings
from config.topics import filters_overlap, gateway_topic
from wire.mapping import FieldMapping
from wire.payload import batch_element, encode_batch, encode_reading
from wire.reading import REJECT_REASONS, Batch, ReadingDecoder, Rejected

VALUES = np.array([71.25, 35.5, 121.75, 1642.0])
DECODER = ReadingDecoder(ReadingLimits())


def reading(machine_id: Any = "m-001", **changes: Any) -> dict[str, Any]:
    """A valid reading object with fields changed (a value of ... removes the field)."""
    data: dict[str, Any] = orjson.loads(encode_reading("m-001", 1700000000.0, 1, VALUES))
    for key, value in {"machine_id": machine_id, **changes}.items():
        if value is ...:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def batch(*elements: object, **top: object) -> bytes:
    return orjson.dumps({**top, "readings": list(elements)})


def test_a_good_batch_yields_every_reading_in_order() -> None:
    payload = encode_batch(
        [encode_reading(f"m-{i:03d}", 1700000000.0 + i, 10 + i, VALUES) for i in range(50)]
    )
    result = DECODER.decode_batch(payload)
    assert result.rejected == {}
    assert [r.machine_id for r in result.readings] == [f"m-{i:03d}" for i in range(50)]
    assert [r.seq for r in result.readings] == list(range(10, 60))
    first = result.readings[0]
    assert first.ts == 1700000000.0
    assert first.values.dtype == np.float32
    np.testing.assert_array_equal(first.values, VALUES.astype(np.float32))


def test_the_version_is_optional_but_only_1_is_understood() -> None:
    assert len(DECODER.decode_batch(batch(reading())).readings) == 1
    assert len(DECODER.decode_batch(batch(reading(), v=1)).readings) == 1
    for version in (2, "1", True, None):
        result = DECODER.decode_batch(batch(reading(), v=version))
        assert (result.readings, result.rejected) == ([], {"bad_json": 1}), version


def test_an_empty_batch_is_no_reading_and_no_rejection() -> None:
    result = DECODER.decode_batch(b'{"readings": []}')
    assert (result.readings, result.rejected) == ([], {})


def test_each_bad_element_is_rejected_by_its_reason_and_the_good_ones_kept() -> None:
    elements = [
        reading("good-1"),
        reading("no-seq", seq=...),
        reading(machine_id=...),  # a batch's topic names no machine: machine_id is required
        reading("hot", temperature_c="hot"),
        reading("ice", temperature_c=-1e9),
        reading("wide", rpm=1e300),  # beyond float32
        reading("a/b"),
        reading("good-2"),
        "not an object",
        [1, 2],
        None,
        reading("bool-seq", seq=True),
        reading("good-3"),
    ]
    result = DECODER.decode_batch(batch(*elements))
    assert [r.machine_id for r in result.readings] == ["good-1", "good-2", "good-3"]
    assert result.rejected == {
        "missing_field": 2,
        "bad_type": 3,
        "out_of_range": 2,
        "bad_json": 3,
    }
    assert set(result.details) == set(result.rejected)
    assert result.details["missing_field"] == "no 'seq'"  # the first of its reason, for the log
    assert set(result.rejected) <= set(REJECT_REASONS)


SINGLE_PAYLOADS = [
    reading(),
    reading(seq=-1),
    reading(seq=2**63),
    reading(ts="now"),
    reading(ts=...),
    reading(vibration_hz=...),
    reading(pressure_psi=[1]),
    reading(temperature_c=601.0),
    reading(temperature_c=600),
    reading(machine_id=""),
    reading(machine_id="x" * 129),
    reading(machine_id="m\n1"),
    reading(machine_id=7),
    reading(rpm=False),
]


@pytest.mark.parametrize("data", SINGLE_PAYLOADS)
def test_an_element_gets_the_verdict_its_single_message_gets(data: dict[str, Any]) -> None:
    """One set of field rules: what a per-machine message would get, its batch element gets."""
    try:
        single = DECODER.decode(orjson.dumps(data))
        expected: tuple[str | None, int] = (None, single.seq)
    except Rejected as rejected:
        expected = (rejected.reason, -1)
    result = DECODER.decode_batch(batch(data))
    if result.readings:
        assert (None, result.readings[0].seq) == expected
        assert result.readings[0].values.tolist() == single.values.tolist()
    else:
        assert result.rejected == {expected[0]: 1}


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b'{"readings": [',
        b"[]",
        b'"readings"',
        b"{}",
        b'{"readings": {"m-1": {}}}',
        b'{"readings": null}',
        b'{"reading": []}',
        b'{"readings": [{"machine_id": "m", "rpm": NaN}]}',
    ],
)
def test_a_payload_that_is_no_batch_is_one_bad_json(payload: bytes) -> None:
    result = DECODER.decode_batch(payload)
    assert (result.readings, result.rejected) == ([], {"bad_json": 1})


def test_too_many_readings_reject_the_whole_batch_once() -> None:
    decoder = ReadingDecoder(ReadingLimits(max_batch_readings=3))
    three = [reading(f"m-{i}") for i in range(3)]
    assert len(decoder.decode_batch(batch(*three)).readings) == 3
    result = decoder.decode_batch(batch(*three, reading("m-3")))
    assert (result.readings, result.rejected) == ([], {"too_large": 1})
    assert "4 readings > 3" in result.details["too_large"]


def test_too_many_bytes_reject_the_whole_batch_before_it_is_parsed() -> None:
    payload = batch(*[reading(f"m-{i}") for i in range(10)])
    fits = ReadingDecoder(ReadingLimits(max_batch_bytes=len(payload)))
    assert len(fits.decode_batch(payload).readings) == 10
    small = ReadingDecoder(ReadingLimits(max_batch_bytes=len(payload) - 1))
    result = small.decode_batch(payload)
    assert (result.readings, result.rejected) == ([], {"too_large": 1})
    # Not parsed at all: an oversized payload that is not even JSON is too large, not bad JSON.
    assert small.decode_batch(b"x" * len(payload)).rejected == {"too_large": 1}


def test_the_batch_limit_is_separate_from_the_single_payload_limit() -> None:
    limits = ReadingLimits()
    payload = encode_batch([encode_reading(f"m-{i}", 1.0, 1, VALUES) for i in range(200)])
    assert len(payload) > limits.max_payload_bytes
    assert len(DECODER.decode_batch(payload).readings) == 200
    assert DECODER.max_batch_bytes == limits.max_batch_bytes == 2_097_152
    assert DECODER.max_batch_readings == limits.max_batch_readings == 10_000
    # The defaults agree: a batch of the most readings, in the simulator's shape, fits the bytes.
    most = [encode_reading(f"m-{i:05d}", 1764099000.25, 2**40 + i, VALUES) for i in range(10_000)]
    assert len(DECODER.decode_batch(encode_batch(most)).readings) == 10_000


def test_a_full_hand_off_drops_the_rest_as_overload_without_decoding_them() -> None:
    elements = [reading("bad", seq=...), *[reading(f"m-{i}") for i in range(5)], "junk"]
    result = DECODER.decode_batch(batch(*elements), room=3)
    assert [r.machine_id for r in result.readings] == ["m-0", "m-1", "m-2"]
    # The junk after the fill is not judged: it is dropped with the rest, as overload.
    assert result.rejected == {"missing_field": 1, "overload": 3}
    none = DECODER.decode_batch(batch(*elements), room=0)
    assert (none.readings, none.rejected) == ([], {"overload": len(elements)})
    assert DECODER.decode_batch(batch(*elements), room=-5).rejected == {"overload": 7}


def test_duplicates_within_a_batch_follow_the_window_stores_rule() -> None:
    """The decoder passes them on; the window store decides, as for single messages."""
    now = 1700000100.0
    elements = [
        reading("m-1", seq=1, ts=now - 3),
        reading("m-1", seq=2, ts=now - 2),
        reading("m-1", seq=2, ts=now - 2),  # a repeat: duplicate
        reading("m-1", seq=1, ts=now - 3),  # a late one: out_of_order
        reading("m-2", seq=2, ts=now - 2),  # the same seq, another machine: its own
        reading("m-1", seq=3, ts=now - 1),
    ]
    result = DECODER.decode_batch(batch(*elements))
    assert result.rejected == {}
    store = WindowStore(4, len(FEATURES), 10)
    verdicts = [store.append(r, now) for r in result.readings]
    assert verdicts == [None, None, "duplicate", "out_of_order", None, None]


def test_the_field_mapping_applies_to_each_element() -> None:
    mapping = FieldMapping(
        {
            "asset": FieldMap(feature="machine_id"),
            "temp": FieldMap(feature="temperature_c", unit="degF"),
        },
        FEATURES,
    )
    decoder = ReadingDecoder(ReadingLimits(), mapping=mapping)
    plant = reading(machine_id=..., temperature_c=...)
    result = decoder.decode_batch(
        batch({**plant, "asset": "press-1", "temp": 212.0}, {**plant, "temp": 32.0})
    )
    assert [(r.machine_id, float(r.values[0])) for r in result.readings] == [("press-1", 100.0)]
    assert result.rejected == {"missing_field": 1}  # the second names no machine


def test_a_garbled_element_from_the_simulator_costs_only_itself() -> None:
    good = encode_reading("m-1", 1.0, 1, VALUES)
    elements = [good, batch_element(good[:30]), batch_element(good.replace(b"71.25", b"NaN"))]
    elements.append(batch_element(encode_reading("m-2", 1.0, 1, VALUES)))
    result = DECODER.decode_batch(encode_batch(elements))
    assert [r.machine_id for r in result.readings] == ["m-1", "m-2"]
    assert result.rejected == {"bad_json": 2}


def test_batch_counts_add_up() -> None:
    result = Batch()
    result.reject("bad_type", "first")
    result.reject("bad_type", "second", 4)
    assert (result.rejected, result.details) == ({"bad_type": 5}, {"bad_type": "first"})


# --- settings and topics --------------------------------------------------------------------


def test_the_batch_topic_defaults_under_the_prefix_and_can_be_switched_off() -> None:
    settings = load_settings(_env_file=None)
    assert settings.mqtt.batch_topic is None
    assert settings.mqtt.batch_filter == "factory/_gateway/+/telemetry"
    prefixed = load_settings(_env_file=None, mqtt={"topic_prefix": "plant/line-1"})
    assert prefixed.mqtt.batch_filter == "plant/line-1/_gateway/+/telemetry"
    for off in ("off", "OFF", "", " off "):
        assert load_settings(_env_file=None, mqtt={"batch_topic": off}).mqtt.batch_filter is None
    custom = load_settings(_env_file=None, mqtt={"batch_topic": "gateways/+/batch"})
    assert custom.mqtt.batch_filter == "gateways/+/batch"


def test_the_batch_topic_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOREWARN_MQTT__BATCH_TOPIC", "plant/gw/+/readings")
    monkeypatch.setenv("FOREWARN_LIMITS__MAX_BATCH_READINGS", "500")
    settings = load_settings(_env_file=None)
    assert settings.mqtt.batch_filter == "plant/gw/+/readings"
    assert settings.limits.max_batch_readings == 500


def test_a_machine_called_gateway_keeps_its_own_topic() -> None:
    """One level more: the default batch topic never matches a per-machine telemetry topic."""
    settings = load_settings(_env_file=None)
    template = settings.mqtt.telemetry_template
    assert template.machine_id("factory/_gateway/telemetry") == "_gateway"
    assert template.match("factory/_gateway/gw-1/telemetry") is None
    assert not filters_overlap(template.filter, "factory/_gateway/+/telemetry")


@pytest.mark.parametrize(
    ("mqtt", "overlapped"),
    [
        ({"batch_topic": "factory/+/telemetry"}, "the telemetry topic"),
        ({"batch_topic": "factory/#"}, "the telemetry topic"),
        ({"batch_topic": "factory/m-1/alerts"}, "the alerts topic"),
        ({"batch_topic": "factory/+/silence"}, "the silences"),
        ({"batch_topic": "factory/_agents/+/status"}, "the agents' status"),
        ({"batch_topic": "spBv1.0/#", "sparkplug_group": "plant"}, "Sparkplug B"),
        (
            {
                "batch_topic": "factory/_gateway/+/telemetry",
                "telemetry_topic": "factory/{line}/{machine_id}/telemetry",
            },
            "the telemetry topic",
        ),
    ],
)
def test_a_batch_topic_that_overlaps_another_stops_start_up(
    mqtt: dict[str, str], overlapped: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None, mqtt=mqtt)
    message = str(caught.value)
    assert f"FOREWARN_MQTT__BATCH_TOPIC={mqtt['batch_topic']} overlaps {overlapped}" in message
    assert "or to off" in message


@pytest.mark.parametrize("bad", ["a//b", "a/b+/c", "a/#/b", "a b/+", "$SYS/+/x"])
def test_a_malformed_batch_topic_names_the_variable(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"FOREWARN_MQTT__BATCH_TOPIC="):
        load_settings(_env_file=None, mqtt={"batch_topic": bad})


def test_the_default_steps_aside_for_a_deeper_telemetry_template() -> None:
    """A configuration from before batches keeps starting; only an explicit topic must fit."""
    deeper = {"telemetry_topic": "factory/{line}/{machine_id}/telemetry"}
    settings = load_settings(_env_file=None, mqtt=deeper)
    assert settings.mqtt.batch_filter is None
    assert "the telemetry topic" in str(
        settings.mqtt.batch_collision("factory/_gateway/+/telemetry")
    )
    moved = load_settings(_env_file=None, mqtt={**deeper, "batch_topic": "factory/_gateway/+/b"})
    assert moved.mqtt.batch_filter == "factory/_gateway/+/b"


def test_filters_overlap_as_mqtt_matches() -> None:
    assert filters_overlap("a/+/c", "a/b/+")
    assert filters_overlap("a/#", "a")
    assert filters_overlap("#", "x/y")
    assert not filters_overlap("a/+/c", "a/+")
    assert not filters_overlap("a/b/c", "a/b/d")
    assert not filters_overlap("a/+/c/d", "a/+/c")


def test_the_simulator_publishes_as_a_gateway_on_the_batch_topic() -> None:
    assert gateway_topic("factory/_gateway/+/telemetry", "sim") == "factory/_gateway/sim/telemetry"
    with pytest.raises(ValueError, match="one topic level"):
        gateway_topic("factory/_gateway/+/telemetry", "a/b")


def test_gateway_mode_and_sparkplug_exclude_each_other() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None, simulator={"gateway_batch": 100, "format": "sparkplug"})
    assert "FOREWARN_SIMULATOR__GATEWAY_BATCH=100" in str(caught.value)
    assert "FOREWARN_SIMULATOR__FORMAT=sparkplug" in str(caught.value)
    with pytest.raises(ConfigError, match="FOREWARN_SIMULATOR__GATEWAY_BATCH"):
        load_settings(_env_file=None, simulator={"gateway_batch": -1})
    gateway = load_settings(_env_file=None, simulator={"gateway_batch": 100})
    assert gateway.simulator.gateway_batch == 100


def test_simulate_takes_a_gateway_batch_flag() -> None:
    from forewarn.cli import build_parser

    args = build_parser().parse_args(["simulate", "--gateway-batch", "250"])
    assert args.gateway_batch == 250
