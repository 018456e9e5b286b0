"""Decoding and validating one telemetry payload.

Pure and stateless, so it can run on the network thread and be fuzzed on its own. Every way a
payload can be wrong maps to one reason from :data:`REJECT_REASONS`, the label values of
``forewarn_readings_rejected_total``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import orjson
from numpy.typing import NDArray

from config.settings import ReadingLimits
from simulator.signal import FEATURES

REJECT_REASONS: tuple[str, ...] = (
    "too_large",
    "bad_json",
    "missing_field",
    "bad_type",
    "non_finite",
    "out_of_range",
    "machine_mismatch",
    "duplicate",
    "out_of_order",
    "too_many_machines",
    "overload",
)
"""Every reason a reading is rejected; a fixed set so that metric labels stay bounded."""

MAX_SEQ = 2**62
_TOPIC_UNSAFE = re.compile("[/+#\x00]")


class Rejected(Exception):
    """A reading that cannot be used; ``reason`` is one of REJECT_REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Reading:
    machine_id: str
    ts: float
    seq: int
    values: NDArray[np.float32]


def _number(payload: dict[str, object], key: str) -> float:
    if key not in payload:
        raise Rejected("missing_field", f"no {key!r}")
    value = payload[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Rejected("bad_type", f"{key!r} is {type(value).__name__}, not a number")
    number = float(value)
    if not math.isfinite(number):
        raise Rejected("non_finite", f"{key!r} is {number}")
    return number


class ReadingDecoder:
    """Turns payload bytes into a :class:`Reading` or raises :class:`Rejected`."""

    def __init__(self, limits: ReadingLimits) -> None:
        self.max_bytes = limits.max_payload_bytes
        self.ranges = [getattr(limits, name) for name in FEATURES]

    def decode(self, payload: bytes | bytearray, topic_machine_id: str | None = None) -> Reading:
        if len(payload) > self.max_bytes:
            raise Rejected("too_large", f"{len(payload)} bytes > {self.max_bytes}")
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError as error:
            raise Rejected("bad_json", str(error)) from None
        if not isinstance(data, dict):
            raise Rejected("bad_json", f"top level is {type(data).__name__}, not an object")
        machine_id = data.get("machine_id")
        if machine_id is None:
            if topic_machine_id is None:
                raise Rejected("missing_field", "no 'machine_id'")
            machine_id = topic_machine_id
        if not isinstance(machine_id, str) or not machine_id or len(machine_id) > 128:
            raise Rejected("bad_type", "'machine_id' must be a non-empty string of ≤ 128 chars")
        if _TOPIC_UNSAFE.search(machine_id):
            # It becomes a topic level of the machine's alerts topic: '/', '+', '#' or NUL
            # there would make that publish fail (or land elsewhere).
            raise Rejected("bad_type", f"'machine_id' {machine_id!r} contains '/', '+', '#' or NUL")
        if topic_machine_id is not None and machine_id != topic_machine_id:
            raise Rejected("machine_mismatch", f"{machine_id!r} on {topic_machine_id!r}'s topic")
        ts = _number(data, "ts")
        seq_value = data.get("seq")
        if seq_value is None:
            raise Rejected("missing_field", "no 'seq'")
        if (
            isinstance(seq_value, bool)
            or not isinstance(seq_value, int)
            or not 0 <= seq_value <= MAX_SEQ
        ):
            raise Rejected("bad_type", f"'seq' must be an integer in [0, {MAX_SEQ}]")
        values = np.empty(len(FEATURES), dtype=np.float32)
        for index, (name, (low, high)) in enumerate(zip(FEATURES, self.ranges, strict=True)):
            number = _number(data, name)
            if not low <= number <= high:
                raise Rejected("out_of_range", f"{name}={number} outside [{low}, {high}]")
            values[index] = number
        return Reading(machine_id=machine_id, ts=ts, seq=seq_value, values=values)
