"""Replaying a historical CSV as a live stream of readings.

The CSV has a header naming at least forewarn's features (temperature_c, vibration_hz,
pressure_psi, rpm). With a machine column, each distinct id is a machine; without one, the file
is one machine. Rows are published in file order, stamped with the time they are sent. With a
``ts`` (or ``timestamp``) column of epoch seconds the original spacing is kept, divided by
``speed``; without one, rows are paced at ``rate_hz × speed`` rows per second.
"""

from __future__ import annotations

import csv
import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

from config.fields import FEATURES
from wire.payload import encode_reading

logger = logging.getLogger(__name__)

TIMESTAMP_COLUMNS = ("ts", "timestamp")


class ReplayError(ValueError):
    """A CSV that cannot be replayed; the message says what is missing."""


@dataclass(frozen=True)
class ReplayRow:
    machine_id: str
    values: np.ndarray
    source_ts: float | None


def load_replay(path: Path, machine_column: str | None, default_machine: str) -> list[ReplayRow]:
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as error:
        raise ReplayError(f"cannot read {path}: {error.strerror}") from error
    with handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [f for f in FEATURES if f not in header]
        if missing:
            raise ReplayError(f"{path} lacks the columns {missing}; its header is {header}")
        if machine_column is not None and machine_column not in header:
            raise ReplayError(f"no machine column {machine_column!r} in {path}: {header}")
        ts_column = next((c for c in TIMESTAMP_COLUMNS if c in header), None)
        rows = []
        for number, record in enumerate(reader, start=2):
            try:
                values = np.array([float(record[f]) for f in FEATURES])
            except (TypeError, ValueError):
                logger.warning("skipping line %d of %s: a feature is not a number", number, path)
                continue
            machine = record[machine_column] if machine_column else default_machine
            source_ts = _float_or_none(record.get(ts_column, "")) if ts_column else None
            rows.append(ReplayRow(machine, values, source_ts))
    if not rows:
        raise ReplayError(f"{path} has no usable rows")
    return rows


def _float_or_none(text: str | None) -> float | None:
    try:
        value = float(text or "")
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def replay(
    client: mqtt.Client,
    rows: list[ReplayRow],
    topic_for: dict[str, str],
    speed: float,
    rate_hz: float,
    qos: int,
    stop: threading.Event,
) -> int:
    """Publish ``rows`` paced as described above; returns how many were published."""
    seq_base = int(time.time() * 1000)
    seq: dict[str, int] = {}
    started = time.monotonic()
    first_ts = next((r.source_ts for r in rows if r.source_ts is not None), None)
    published = 0
    for index, row in enumerate(rows):
        if row.source_ts is not None and first_ts is not None:
            due = (row.source_ts - first_ts) / speed
        else:
            due = index / (rate_hz * speed)
        delay = started + due - time.monotonic()
        if delay > 0 and stop.wait(delay):
            break
        number = seq.get(row.machine_id, -1) + 1
        seq[row.machine_id] = number
        payload = encode_reading(row.machine_id, time.time(), seq_base + number, row.values)
        client.publish(topic_for[row.machine_id], payload, qos=qos)
        published += 1
    return published
