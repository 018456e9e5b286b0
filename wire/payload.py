"""The reading payload: one single-line JSON object per reading, units in the field names.

A gateway batch carries many of them: ``{"v": 1, "readings": [reading, ...]}``, each element
exactly a single reading's object (see docs/plant.md, "Gateway batches").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import orjson

from config.fields import FEATURES
from wire.reading import BATCH_VERSION

SCHEMA_VERSION = 1
_BATCH_HEAD = b'{"v":%d,"readings":[' % BATCH_VERSION


def encode_reading(machine_id: str, ts: float, seq: int, values: np.ndarray) -> bytes:
    """One reading as the documented single-line JSON payload."""
    reading: dict[str, object] = {"machine_id": machine_id, "ts": round(ts, 3), "seq": seq}
    for name, value in zip(FEATURES, values.tolist(), strict=True):
        reading[name] = round(value, 3)
    reading["schema"] = SCHEMA_VERSION
    return orjson.dumps(reading)


def encode_batch(elements: Sequence[bytes]) -> bytes:
    """Encoded readings (as :func:`encode_reading` makes them) as one gateway batch payload.

    The elements are joined, not parsed and serialised again: a batch element is byte for byte
    what the machine's own message would have carried.
    """
    return _BATCH_HEAD + b",".join(elements) + b"]}"


def batch_element(payload: bytes) -> bytes:
    """A payload as a batch element, even a broken one (a garbled frame a gateway forwards).

    A payload that is JSON goes in as it is, so the agent judges it as it would on its own
    topic; one that is not (cut short, NaN) would break the whole batch, so it goes in as a
    JSON string: one element the agent rejects as ``bad_json``, as a gateway would pass it on.
    """
    try:
        orjson.loads(payload)
    except orjson.JSONDecodeError:
        return orjson.dumps(payload.decode("utf-8", "replace"))
    return payload
