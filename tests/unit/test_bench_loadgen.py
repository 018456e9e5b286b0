"""The end-to-end benchmark's load and arithmetic: fleets in order, batches, rates, metrics."""

from __future__ import annotations

import orjson
import pytest

from bench.loadgen import (
    FleetSlice,
    batch_payload,
    parse_metrics,
    percentile,
    rejected_by_reason,
    slice_messages,
    sustained_rate,
)
from config.readings import ReadingLimits
from wire.reading import ReadingDecoder


def _slice(worker: int, **kwargs: object) -> FleetSlice:
    spec = {"prefix": "bench", "machines": 7, "worker": worker, "workers": 3, "steps": 4}
    spec |= {"t0": 1000.0} | kwargs
    return FleetSlice(**spec)  # type: ignore[arg-type]


def test_workers_share_a_fleet_without_overlap_and_each_machine_in_order():
    seen: dict[str, list[tuple[int, float]]] = {}
    for worker in range(3):
        spec = _slice(worker)
        messages = slice_messages(spec)
        assert len(messages) == spec.readings
        for topic, payload in messages:
            reading = orjson.loads(payload)
            assert topic == f"bench/{reading['machine_id']}/telemetry"
            seen.setdefault(reading["machine_id"], []).append((reading["seq"], reading["ts"]))
    assert len(seen) == 7
    for readings in seen.values():
        assert readings == [(k, 1000.0 + k) for k in range(4)]


def test_a_later_slice_continues_the_same_machines():
    later = slice_messages(_slice(0, first_step=4, steps=2))
    seqs = [orjson.loads(payload)["seq"] for _, payload in later]
    assert sorted(set(seqs)) == [4, 5]


def test_payloads_are_readings_the_agent_accepts():
    decoder = ReadingDecoder(ReadingLimits())
    for topic, payload in slice_messages(_slice(1)):
        reading = decoder.decode(payload, topic.split("/")[1])
        assert reading.values.shape == (4,)


def test_batches_carry_the_same_readings_on_a_gateway_topic():
    singles = slice_messages(_slice(2))
    batches = slice_messages(_slice(2, batch=3))
    assert {topic for topic, _ in batches} == {"bench/_gateway/gw-2/telemetry"}
    elements = [e for _, payload in batches for e in orjson.loads(payload)["readings"]]
    assert elements == [orjson.loads(payload) for _, payload in singles]
    assert orjson.loads(batch_payload([b'{"a":1}', b'{"b":2}'])) == {
        "readings": [{"a": 1}, {"b": 2}]
    }


def test_sustained_rate_is_the_slope_of_the_middle_of_a_staircase():
    # 1,000 per second, counted in steps of 500 every half second, sampled every 0.25 s.
    samples = [(t / 4, 500 * int(t / 2)) for t in range(1, 45)]
    assert sustained_rate(samples, 10_000) == pytest.approx(1000, rel=0.05)


def test_sustained_rate_falls_back_to_the_time_the_total_was_reached():
    assert sustained_rate([(1.0, 50), (2.0, 100)], 100) == pytest.approx(50)
    assert sustained_rate([(1.0, 0), (2.0, 0)], 100) is None


def test_metrics_text_and_rejections_by_reason():
    text = (
        "# HELP forewarn_readings_total x\n"
        "forewarn_readings_total 12.0\n"
        'forewarn_readings_rejected_total{reason="overload"} 3.0\n'
        'forewarn_readings_rejected_total{reason="duplicate"} 0.0\n'
    )
    samples = parse_metrics(text)
    assert samples["forewarn_readings_total"] == 12.0
    assert rejected_by_reason(samples) == {"overload": 3}


def test_percentile_of_nothing_is_none():
    assert percentile([], 99) is None
    assert percentile([1.0, 2.0, 3.0], 50) == 2.0
