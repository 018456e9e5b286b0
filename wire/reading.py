"""Decoding and validating telemetry payloads: one reading, a tick's worth, or a gateway batch.

Pure but for logging each kind of unexpected error once, so it can be fuzzed on its own. Every
way a payload can be wrong maps to one reason from :data:`REJECT_REASONS`, the label values of
``forewarn_readings_rejected_total``. A batch's elements are judged one by one, by the same
rules as single readings: one bad element costs only itself. A tick's single-reading payloads
are judged together (:meth:`ReadingDecoder.decode_many`), column by column in numpy, with the
same verdicts as one by one.
"""

from __future__ import annotations

import logging
import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import monotonic
from typing import Any

import msgspec
import numpy as np
import orjson
from numpy.typing import NDArray

from config.fields import FEATURES
from config.readings import ReadingLimits
from wire.mapping import FieldMapping

logger = logging.getLogger(__name__)

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
MAX_MACHINE_ID = 128
"""The most characters a machine id may have: it is a metric label and a topic level."""
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
    received: float = field(default=0.0, compare=False)
    """When this process received it (``time.monotonic()``; 0: not received from a broker).
    The agent times a reading's way from here to the forecast that uses it."""


Arrival = tuple[str, bytes | bytearray, float]
"""A single reading's message as the network thread hands it off, not yet decoded: the machine
id its topic names (``""`` when none), the payload, and when it arrived (``time.monotonic()``).
A plain tuple: the network thread's whole share of a reading is to make one and queue it."""

_NUMBER_TYPES = frozenset((float, int))
EXACT_LIMIT = 2.0**53
"""Beyond this magnitude the fast path leaves a number to :meth:`ReadingDecoder.decode`: below
it an integer literal is the same float whichever parser read it."""
_Scalar = float | str | bool | None
"""What the fast path takes for a field the model does not read (``schema``, another feature):
any JSON scalar. An array or an object there, or any other field, sends the payload to
:meth:`ReadingDecoder.decode`, whose parser alone decides what is JSON."""


BATCH_VERSION = 1
"""The gateway batch format's version, ``"v"`` in a batch (optional; another value is refused)."""


@dataclass(slots=True)
class Batch:
    """What one gateway batch payload yielded: the readings to hand off, and the rejections.

    Rejections are counted by reason, with one detail each for the log, so that the agent
    updates each reason's counter and logs once per batch, not once per bad reading.
    """

    readings: list[Reading] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)

    def reject(self, reason: str, detail: str, count: int = 1) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + count
        self.details.setdefault(reason, detail)

    def merge(self, other: Batch) -> None:
        """Add another tally's rejections (its readings are not taken)."""
        for reason, count in other.rejected.items():
            self.reject(reason, other.details[reason], count)


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
    :mod:`wire.mapping`), so limits and rejection reasons apply to forewarn's own fields.
    """

    def __init__(
        self,
        limits: ReadingLimits,
        features: Sequence[str] = FEATURES,
        mapping: FieldMapping | None = None,
    ) -> None:
        self.max_bytes = limits.max_payload_bytes
        self.max_batch_bytes = limits.max_batch_bytes
        self.max_batch_readings = limits.max_batch_readings
        self.features = tuple(features)
        self.mapping = mapping if mapping else None
        self.ranges = [getattr(limits, name) for name in self.features]
        # Each feature's bounds, narrowed to what a float32 holds: a wider value would be inf.
        self._fields = [
            (name, max(low, -FLOAT32_MAX), min(high, FLOAT32_MAX), low, high)
            for name, (low, high) in zip(self.features, self.ranges, strict=True)
        ]
        self._logged: set[tuple[str, str]] = set()
        self._struct, self._columns = _fast_struct(self.features)
        self._struct_decoder = msgspec.json.Decoder(self._struct)
        self._unparsed = self._struct(**dict.fromkeys(self.features, math.nan), ts=math.nan, seq=-1)

    def decode(
        self,
        payload: bytes | bytearray,
        topic_machine_id: str | None = None,
        received: float | None = None,
    ) -> Reading:
        """One payload; ``received`` (monotonic) defaults to now."""
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
        return self.decode_fields(data, topic_machine_id, received)

    def decode_many(self, arrivals: Sequence[Arrival]) -> tuple[list[Reading | None], Batch]:
        """A tick's single-reading messages, judged together: the verdicts :meth:`decode` gives.

        Returns one entry per arrival, its :class:`Reading` or ``None`` when rejected, and the
        rejections tallied by reason. Decoding on the tick thread, a tick at a time, leaves the
        network thread one append per message, and a dozen Python checks per reading become a
        few numpy operations per field over all of them. Only what those column checks pass
        cleanly is taken from them; every other payload (too large, not JSON, not an object,
        a field missing, of another type or out of range, a bad id) goes through
        :meth:`decode` on its own, so each rejection keeps its exact reason and detail.
        """
        count = len(arrivals)
        tally = Batch()
        readings: list[Reading | None] = [None] * count
        slow: Sequence[int] = range(count)
        if self.mapping is None and count:  # a mapping renames fields first: one by one
            try:
                readings, slow = self._decode_columns(arrivals)
            except Exception as error:  # a bug here must cost speed, never readings
                self._log_once(
                    "decoding a tick's readings together failed; one by one instead", error
                )
        decode = self.decode
        for index in slow:
            topic_id, payload, received = arrivals[index]
            try:
                readings[index] = decode(payload, topic_id or None, received)
            except Rejected as rejected:
                tally.reject(rejected.reason, rejected.detail)
            except Exception as error:  # never lose the rest of the tick to one payload
                self._log_once("unexpected error decoding a reading", error)
                tally.reject("bad_json", f"undecodable: {type(error).__name__}: {error}")
        return readings, tally

    def _log_once(self, what: str, error: Exception) -> None:
        """Log an unexpected error with its traceback, once per kind: a lasting bug would
        otherwise log every tick. Each reading it costs is still counted, as ``bad_json``."""
        kind = (what, type(error).__name__)
        if kind not in self._logged:
            self._logged.add(kind)
            logger.error("%s (%s; logged once)", what, kind[1], exc_info=error)

    def _decode_columns(
        self, arrivals: Sequence[Arrival]
    ) -> tuple[list[Reading | None], list[int]]:
        """The fast half of :meth:`decode_many`: the readings of the arrivals that pass every
        check (``None`` for the others), and the indices of the others.

        msgspec parses each payload straight into a struct of the reading's fields, typed as
        :meth:`decode_fields` wants them (a float field takes an int, as ``_number`` does; not
        a bool or a null), in C and without a dict per payload. It takes only the fields a
        reading has, the served features as numbers and anything else a reading may carry as
        a scalar; whatever it refuses, or cannot take exactly, goes to :meth:`decode`."""
        count = len(arrivals)
        payloads = [arrival[1] for arrival in arrivals]
        limit = self.max_bytes
        sizes = np.fromiter(map(len, payloads), np.int64, count)
        clean = sizes <= limit
        if not clean.all():  # not even parsed: decode() refuses it as too_large
            payloads = [payload if len(payload) <= limit else b"" for payload in payloads]
        parsed: list[Any] = []
        remaining = iter(payloads)
        decode = self._struct_decoder.decode
        unparsed = self._unparsed
        while True:  # map() in C; a payload it refuses costs only itself
            try:
                parsed.extend(map(decode, remaining))
                break
            except Exception:  # msgspec's errors, a RecursionError: decode() says why
                clean[len(parsed)] = False
                parsed.append(unparsed)
        if len(parsed) != count:  # extend() keeps what it took before a raise; if it did not
            raise RuntimeError(f"parsed {len(parsed)} payloads of {count}")
        machine_ids = self._machine_ids(list(map(_MACHINE_ID, parsed)), arrivals, clean)
        seq = _seq_column(list(map(_SEQ, parsed)), clean)
        # ts and the features, a row per payload: every one a float (the struct made them so).
        numbers = np.array(list(map(self._columns, parsed)), dtype=np.float64).reshape(count, -1)
        clean &= np.isfinite(numbers).all(axis=1) & (np.abs(numbers) < EXACT_LIMIT).all(axis=1)
        values = numbers[:, 1:]
        for column, (_, lowest, highest, _, _) in enumerate(self._fields):
            clean &= (values[:, column] >= lowest) & (values[:, column] <= highest)
        values[~clean] = 0.0  # rejected rows may hold what float32 cannot
        # Each reading's values are a row of this one array: the window store copies them in
        # the same tick, and the tick's readings go with it.
        stored = values.astype(np.float32)
        ts_list, seq_list = numbers[:, 0].tolist(), seq.tolist()
        readings: list[Reading | None] = [None] * count
        for index in np.flatnonzero(clean).tolist():
            readings[index] = Reading(
                machine_ids[index],
                ts_list[index],
                seq_list[index],
                stored[index],
                arrivals[index][2],
            )
        return readings, np.flatnonzero(~clean).tolist()

    def _machine_ids(
        self,
        named: list[str | None],
        arrivals: Sequence[Arrival],
        clean: NDArray[np.bool_],
    ) -> list[str]:
        """Each payload's machine id (``named``: its ``machine_id``, None when absent),
        resolved against its topic's as :meth:`decode_fields` does; ``clean`` is cleared where
        that would reject. The usual tick, every id the same as its topic's, is one list
        comparison; the id rule is about length and characters, so the lengths are checked as
        one array and the characters by one search over all the ids joined; only a tick with
        a forbidden character is searched id by id."""
        topic_ids = [arrival[0] for arrival in arrivals]
        resolved: list[str]
        if named == topic_ids:
            resolved = topic_ids
        else:
            resolved = []
            keep = resolved.append
            for name, topic_id in zip(named, topic_ids, strict=True):
                if name is None:
                    keep(topic_id)
                elif not topic_id or name == topic_id:
                    keep(name)
                else:
                    keep("")  # not a good id: decode() says why
        lengths = np.fromiter(map(len, resolved), np.int64, len(resolved))
        clean &= (lengths > 0) & (lengths <= MAX_MACHINE_ID)
        if _TOPIC_UNSAFE.search("".join(resolved)):
            clean &= np.fromiter(map(_safe_id, resolved), np.bool_, len(resolved))
        return resolved

    def decode_batch(self, payload: bytes | bytearray, room: int | None = None) -> Batch:
        """Decode a gateway batch, ``{"readings": [reading, ...]}``, element by element.

        One parse for the whole payload; each element then goes through the same checks as a
        single reading, with ``machine_id`` required (a batch's topic names the gateway, not a
        machine). A payload that is too large, not JSON or without a ``readings`` list is one
        rejection: how many readings it held is unknown or not worth trusting. Once ``room``
        readings are kept (the free space in the agent's hand-off), the rest are dropped as
        ``overload`` without being decoded, as single readings are when the hand-off is full.
        """
        batch = Batch()
        try:
            elements = self._batch_elements(payload)
        except Rejected as rejected:
            batch.reject(rejected.reason, rejected.detail)
            return batch
        readings = batch.readings
        keep, decode = readings.append, self.decode_element
        limit = len(elements) if room is None else max(0, room)
        for index, element in enumerate(elements):
            if len(readings) >= limit:
                left = len(elements) - index
                batch.reject("overload", f"hand-off full: dropped a batch's last {left}", left)
                break
            try:
                keep(decode(element))
            except Rejected as rejected:
                batch.reject(rejected.reason, rejected.detail)
        return batch

    def _batch_elements(self, payload: bytes | bytearray) -> list[object]:
        """The ``readings`` list of a batch payload, or :class:`Rejected` for the whole of it."""
        if len(payload) > self.max_batch_bytes:
            raise Rejected("too_large", f"batch of {len(payload)} bytes > {self.max_batch_bytes}")
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError as error:
            raise Rejected("bad_json", f"batch: {error}") from None
        if not isinstance(data, dict):
            raise Rejected("bad_json", f"batch top level is {type(data).__name__}, not an object")
        version = data.get("v", BATCH_VERSION)
        if type(version) is not int or version != BATCH_VERSION:
            raise Rejected("bad_json", f"batch version {version!r}, not {BATCH_VERSION}")
        elements = data.get("readings")
        if not isinstance(elements, list):
            raise Rejected("bad_json", "batch without a 'readings' list")
        if len(elements) > self.max_batch_readings:
            raise Rejected(
                "too_large", f"batch of {len(elements)} readings > {self.max_batch_readings}"
            )
        return elements

    def decode_element(self, element: object) -> Reading:
        """One element of a batch: an object like a single reading's payload, with machine_id."""
        if type(element) is not dict:
            raise Rejected("bad_json", f"batch element is {type(element).__name__}, not an object")
        if self.mapping is not None:
            element = self.mapping.apply(element)
        return self.decode_fields(element)

    def decode_fields(
        self,
        data: dict[str, object],
        topic_machine_id: str | None = None,
        received: float | None = None,
    ) -> Reading:
        """Validate an already parsed payload, in forewarn's field names, into a Reading."""
        machine_id = data.get("machine_id")
        if machine_id is None:
            if topic_machine_id is None:
                raise Rejected("missing_field", "no 'machine_id'")
            machine_id = topic_machine_id
        if not isinstance(machine_id, str) or not machine_id or len(machine_id) > MAX_MACHINE_ID:
            raise Rejected(
                "bad_type", f"'machine_id' must be a non-empty string of ≤ {MAX_MACHINE_ID} chars"
            )
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
        return Reading(
            machine_id=machine_id,
            ts=ts,
            seq=seq_value,
            values=values,
            received=monotonic() if received is None else received,
        )


_MACHINE_ID = operator.attrgetter("machine_id")
_SEQ = operator.attrgetter("seq")


def _fast_struct(features: Sequence[str]) -> tuple[type[Any], Callable[[Any], tuple[float, ...]]]:
    """The struct the fast path parses a single reading into, and a getter of its ``ts`` and
    ``features`` in order. The served features are floats; the simulator's other features and
    ``schema`` are any scalar (:meth:`ReadingDecoder.decode_fields` reads neither); any other
    field makes msgspec refuse the payload, so that it goes to the one-by-one path."""
    extras = [name for name in (*FEATURES, "schema") if name not in features]
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = [
        ("ts", float),
        ("seq", int),
        *((name, float) for name in features),
        ("machine_id", str | None, None),
        *((name, _Scalar, None) for name in extras),
    ]
    struct = msgspec.defstruct(
        "FastReading", fields, forbid_unknown_fields=True, gc=False, omit_defaults=False
    )
    return struct, operator.attrgetter("ts", *features)


def _safe_id(machine_id: str) -> bool:
    """The character half of the machine-id rule of :meth:`ReadingDecoder.decode_fields`."""
    return _TOPIC_UNSAFE.search(machine_id) is None


def _seq_column(column: list[object], clean: NDArray[np.bool_]) -> NDArray[np.int64]:
    """``seq`` as int64; ``clean`` is cleared where :meth:`ReadingDecoder.decode_fields` would
    reject it (missing, not an int, a bool, outside [0, MAX_SEQ])."""
    if set(map(type, column)) != {int}:
        column = [value if type(value) is int else -1 for value in column]
    try:
        seqs = np.array(column, dtype=np.int64)
    except OverflowError:  # an int beyond int64
        seqs = np.array([_seq_or_minus_one(value) for value in column], dtype=np.int64)
    clean &= (seqs >= 0) & (seqs <= MAX_SEQ)
    return seqs


def _seq_or_minus_one(value: object) -> int:
    return value if type(value) is int and 0 <= value <= MAX_SEQ else -1
