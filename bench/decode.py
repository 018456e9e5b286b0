"""Decoding a tick's readings: together (the tick's way) against one by one, per reading.

The agent's network thread queues single-reading messages undecoded; each tick decodes what
it takes with ``ReadingDecoder.decode_many``: orjson per payload, then the fields checked
column by column in numpy, with any payload those checks do not pass cleanly decoded on its own
by ``ReadingDecoder.decode``. This times both on the same 5,000 simulator payloads (one per
machine), clean and with 1 % of them malformed, checks that both ways give the same verdicts,
and repeats them interleaved so that a noisy neighbour slows both alike; figures are medians.

    python -m bench.decode            # a table
    python -m bench.decode --json     # one JSON object on stdout
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from config.readings import ReadingLimits
from wire.payload import encode_reading
from wire.reading import Arrival, ReadingDecoder, Rejected

MALFORMED = (b"{not json", b'{"machine_id": "m-1"}', b"[]")


def tick_of(machines: int, malformed_every: int = 0) -> list[Arrival]:
    """One reading per machine as the simulator encodes it; every ``malformed_every``-th
    replaced by a payload the decoder rejects (not JSON, fields missing, not an object)."""
    rng = np.random.default_rng(5)
    values = rng.uniform([60, 30, 110, 1600], [80, 40, 130, 1700], size=(machines, 4))
    arrivals: list[Arrival] = []
    for i in range(machines):
        machine_id = f"m-{i:05d}"
        payload = encode_reading(machine_id, 1.7e9 + i, i, values[i])
        if malformed_every and i % malformed_every == malformed_every - 1:
            payload = MALFORMED[(i // malformed_every) % len(MALFORMED)]
        arrivals.append((machine_id, payload, 1.0))
    return arrivals


Verdicts = tuple[list[bool], dict[str, int]]
"""Which arrivals became readings, and the rejections counted by reason."""


def one_by_one(decoder: ReadingDecoder, arrivals: list[Arrival]) -> Verdicts:
    """What the network thread used to do per message: decode, or count the rejection."""
    kept: list[bool] = []
    reasons: dict[str, int] = {}
    for topic_id, payload, received in arrivals:
        try:
            decoder.decode(payload, topic_id or None, received)
            kept.append(True)
        except Rejected as rejected:
            kept.append(False)
            reasons[rejected.reason] = reasons.get(rejected.reason, 0) + 1
    return kept, reasons


def together(decoder: ReadingDecoder, arrivals: list[Arrival]) -> Verdicts:
    readings, tally = decoder.decode_many(arrivals)
    return [reading is not None for reading in readings], tally.rejected


def measure(machines: int, repeats: int, malformed_every: int) -> dict[str, Any]:
    decoder = ReadingDecoder(ReadingLimits())
    arrivals = tick_of(machines, malformed_every)
    ways: dict[str, Callable[[ReadingDecoder, list[Arrival]], Verdicts]] = {
        "together": together,
        "one_by_one": one_by_one,
    }
    verdicts = {name: way(decoder, arrivals) for name, way in ways.items()}  # and warm up
    if verdicts["together"] != verdicts["one_by_one"]:
        raise AssertionError("the two ways gave different verdicts")
    kept, rejected = verdicts["together"]
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(repeats):
        for name, way in ways.items():
            started = time.perf_counter()
            way(decoder, arrivals)
            times[name].append(time.perf_counter() - started)
    per_reading = {name: statistics.median(t) / machines * 1e6 for name, t in times.items()}
    return {
        "readings": machines,
        "kept": sum(kept),
        "rejected": rejected,
        "together_us": round(per_reading["together"], 2),
        "one_by_one_us": round(per_reading["one_by_one"], 2),
        "speedup": round(per_reading["one_by_one"] / per_reading["together"], 2),
    }


def run(machines: int, repeats: int) -> dict[str, Any]:
    return {
        "clean": measure(machines, repeats, 0),
        "one_percent_malformed": measure(machines, repeats, 100),
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        "decoding a tick's single readings (µs per reading, medians of interleaved repeats)",
        f"{'payloads':<24} {'together':>9} {'one by one':>11} {'speed-up':>9}",
    ]
    for name, row in report.items():
        lines.append(
            f"{name.replace('_', ' '):<24} {row['together_us']:>9.2f} "
            f"{row['one_by_one_us']:>11.2f} {row['speedup']:>8.2f}×"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--machines", type=int, default=5000, help="readings in the tick")
    parser.add_argument("--repeats", type=int, default=40, help="timed repeats of each way")
    args = parser.parse_args(argv)
    report = run(args.machines, args.repeats)
    print(json.dumps(report) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
