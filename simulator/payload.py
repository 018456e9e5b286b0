"""The reading payload: one single-line JSON object per reading, units in the field names."""

from __future__ import annotations

import numpy as np
import orjson

from simulator.signal import FEATURES

SCHEMA_VERSION = 1


def encode_reading(machine_id: str, ts: float, seq: int, values: np.ndarray) -> bytes:
    """One reading as the documented single-line JSON payload."""
    reading: dict[str, object] = {"machine_id": machine_id, "ts": round(ts, 3), "seq": seq}
    for name, value in zip(FEATURES, values.tolist(), strict=True):
        reading[name] = round(value, 3)
    reading["schema"] = SCHEMA_VERSION
    return orjson.dumps(reading)
