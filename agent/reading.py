"""Decoding and validating one telemetry payload.

Pure and stateless, so it can run on the network thread and be fuzzed on its own. Every way a
payload can be wrong maps to one reason from :data:`REJECT_REASONS`, the label values of
``forewarn_readings_rejected_total``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import orjson
from numpy.typing import NDArray

from agent.mapping import FieldMapping
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
    "future",
    "overload",
)
"""Every reason a reading is rejected; a fixed set so that metric labels stay bounded.

The first seven are decided here, from the payload alone; ``duplicate``, ``out_of_order`` and
``future`` by the window store's ordering rule (see :mod:`agent.window`); ``overload`` by the
agent when its hand-off is full.
"""

MAX_SEQ = 2**62
_MISSING = object()
FLOAT32_MAX = float(np.finfo(np.float32).max)
"""Readings are stored as float32: a wider value would become inf, so it is out of range even
when the configured limits are wider still."""
_TOPIC_UNSAFE = re.compile("[/+#\x00-\x1f\x7f]")
"""Characters a machine id may not contain: it becomes a topic level of the machine's alerts
topic ('/', '+', '#', NUL) and a word in log lines and dashboards (control characters)."""


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
    value = payload.get(key, _MISSING)
    if type(value) is float and -math.inf < value < math.inf:
        return value  # the common case, checked first: this runs for every field of every reading
    if value is _MISSING:
        raise Rejected("missing_field", f"no {key!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Rejected("bad_type", f"{key!r} is {type(value).__name__}, not a number")
    number = float(value)
    if not math.isfinite(number):
        raise Rejected("non_finite", f"{key!r} is {number}")
    return number


class ReadingDecoder:
    """Turns payload bytes into a :class:`Reading` or raises :class:`Rejected`.

    ``features`` are the served model's (a model trained on a subset of the simulator's reads
    only those, in its order); ``mapping`` renames and converts a plant's fields first (see
    :mod:`agent.mapping`), so limits and rejection reasons apply to forewarn's own fields.
    """

    def __init__(
        self,
        limits: ReadingLimits,
        features: Sequence[str] = FEATURES,
        mapping: FieldMapping | None = None,
    ) -> None:
        self.max_bytes = limits.max_payload_bytes
        self.features = tuple(features)
        self.mapping = mapping if mapping else None
        self.ranges = [getattr(limits, name) for name in self.features]
        # Each feature's bounds, narrowed to what a float32 holds: a wider value would be inf.
        self._fields = [
            (name, max(low, -FLOAT32_MAX), min(high, FLOAT32_MAX), low, high)
            for name, (low, high) in zip(self.features, self.ranges, strict=True)
        ]

    def decode(self, payload: bytes | bytearray, topic_machine_id: str | None = None) -> Reading:
        if len(payload) > self.max_bytes:
            raise Rejected("too_large", f"{len(payload)} bytes > {self.max_bytes}")
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError as error:
            raise Rejected("bad_json", str(error)) from None
        if not isinstance(data, dict):
            raise Rejected("bad_json", f"top level is {type(data).__name__}, not an object")
        if self.mapping is not None:
            data = self.mapping.apply(data)
        return self.decode_fields(data, topic_machine_id)

    def decode_fields(
        self, data: dict[str, object], topic_machine_id: str | None = None
    ) -> Reading:
        """Validate an already parsed payload, in forewarn's field names, into a Reading."""
        machine_id = data.get("machine_id")
        if machine_id is None:
            if topic_machine_id is None:
                raise Rejected("missing_field", "no 'machine_id'")
            machine_id = topic_machine_id
        if not isinstance(machine_id, str) or not machine_id or len(machine_id) > 128:
            raise Rejected("bad_type", "'machine_id' must be a non-empty string of ≤ 128 chars")
        if _TOPIC_UNSAFE.search(machine_id):
            # It becomes a topic level of the machine's alerts topic: '/', '+', '#' or NUL
            # there would make that publish fail (or land elsewhere); a newline or an escape
            # sequence would forge log lines.
            raise Rejected(
                "bad_type", f"'machine_id' {machine_id!r} contains '/', '+', '#' or a control char"
            )
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
        numbers = []
        for name, lowest, highest, low, high in self._fields:
            number = _number(data, name)
            if not lowest <= number <= highest:
                raise Rejected("out_of_range", f"{name}={number} outside [{low}, {high}]")
            numbers.append(number)
        values = np.array(numbers, dtype=np.float32)
        return Reading(machine_id=machine_id, ts=ts, seq=seq_value, values=values)
