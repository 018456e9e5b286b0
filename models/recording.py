"""The recording file format, and reading a recording back into per-machine segments.

The agent (agent.recording) writes the readings it accepts to ``*.fwrec`` files; ``forewarn
train --from-recording`` reads them here. Both sides live on this floor so that the writer and
the reader share one definition.

A file is a header and blocks, each block one agent tick's recorded readings::

    b"FWREC1\\n"  then one JSON line: {"features": [...], "created": unix seconds}
    block: u32 length (little-endian), then that many bytes of zlib (level 1) holding
        u32 n, u32 new names, u32 names' bytes, the new machine ids ("\\n"-joined UTF-8),
        then columns, each byte-shuffled (the k-th bytes of every value together):
        id index u32[n] (into the file's names, in order of first appearance),
        ts f64[n], seq i64[n], values f32[n * features] (row-major).

Byte-shuffling puts the slowly changing high bytes of timestamps, sequence numbers and
readings side by side, which zlib then compresses well. A file cut short (the agent stopped
mid-write) is read up to its last whole block.
"""

from __future__ import annotations

import itertools
import json
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from models.data import DataError

MAGIC = b"FWREC1\n"
SUFFIX = ".fwrec"
_LENGTH = struct.Struct("<I")
_BLOCK_HEAD = struct.Struct("<III")
COMPRESS_LEVEL = 1
GAP_INTERVALS = 2.5
"""A time step over this many times a machine's median reading interval is a gap."""


def file_header(features: Sequence[str], created: float) -> bytes:
    meta = json.dumps({"features": list(features), "created": created}).encode()
    return MAGIC + meta + b"\n"


def _shuffle(array: NDArray) -> bytes:
    raw = np.ascontiguousarray(array).view(np.uint8).reshape(-1, array.dtype.itemsize)
    return np.ascontiguousarray(raw.T).tobytes()


def _unshuffle(data: bytes, dtype: np.dtype, count: int) -> NDArray:
    raw = np.frombuffer(data, dtype=np.uint8).reshape(dtype.itemsize, count)
    return np.ascontiguousarray(raw.T).view(dtype).reshape(count)


def encode_block(
    new_names: Sequence[str],
    ids: NDArray[np.uint32],
    ts: NDArray[np.float64],
    seq: NDArray[np.int64],
    values: NDArray[np.float32],
) -> bytes:
    """One block (length prefix included) of ``len(ids)`` readings."""
    names = "\n".join(new_names).encode()
    body = b"".join(
        (
            _BLOCK_HEAD.pack(len(ids), len(new_names), len(names)),
            names,
            _shuffle(ids.astype("<u4", copy=False)),
            _shuffle(ts.astype("<f8", copy=False)),
            _shuffle(seq.astype("<i8", copy=False)),
            _shuffle(values.astype("<f4", copy=False).reshape(-1)),
        )
    )
    packed = zlib.compress(body, COMPRESS_LEVEL)
    return _LENGTH.pack(len(packed)) + packed


@dataclass
class MachineHistory:
    """One machine's recorded readings in the order they were accepted."""

    ts: list[NDArray[np.float64]]
    seq: list[NDArray[np.int64]]
    values: list[NDArray[np.float32]]


@dataclass(frozen=True)
class Recording:
    """A recording read back: its features, and each machine's readings in time order."""

    features: tuple[str, ...]
    machines: dict[str, tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.float32]]]
    readings: int
    files: int
    truncated_files: int


def recording_files(directory: Path) -> list[Path]:
    """The recording's files, oldest first (their names sort in the order they were opened)."""
    return sorted(directory.glob(f"*{SUFFIX}"))


def _read_file(
    path: Path, histories: dict[str, MachineHistory]
) -> tuple[tuple[str, ...], int, bool]:
    """Add one file's readings to ``histories``; its features, readings, and whether cut short."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from error
    if not data.startswith(MAGIC):
        raise DataError(f"{path} is not a forewarn recording (it does not start with {MAGIC!r})")
    end = data.find(b"\n", len(MAGIC))
    try:
        features = tuple(json.loads(data[len(MAGIC) : end])["features"])
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(f"{path}: unreadable header ({error})") from error
    names: list[str] = []
    at, count, width = end + 1, 0, len(features)
    while at < len(data):
        if at + _LENGTH.size > len(data):
            return features, count, True
        (length,) = _LENGTH.unpack_from(data, at)
        if at + _LENGTH.size + length > len(data):
            return features, count, True
        try:
            body = zlib.decompress(data[at + _LENGTH.size : at + _LENGTH.size + length])
        except zlib.error as error:
            raise DataError(f"{path}: block at byte {at} is corrupt ({error})") from error
        block_at, at = at, at + _LENGTH.size + length
        n, new, names_len = _BLOCK_HEAD.unpack_from(body)
        cursor = _BLOCK_HEAD.size
        if new:
            names.extend(body[cursor : cursor + names_len].decode().split("\n"))
        cursor += names_len
        columns = []
        for dtype, size in (("<u4", n), ("<f8", n), ("<i8", n), ("<f4", n * width)):
            kind = np.dtype(dtype)
            columns.append(_unshuffle(body[cursor : cursor + kind.itemsize * size], kind, size))
            cursor += kind.itemsize * size
        ids, ts, seq, values = columns
        values = values.reshape(n, width)
        if n and int(ids.max()) >= len(names):
            raise DataError(
                f"{path}: block at byte {block_at} names machine {int(ids.max())} of "
                f"{len(names)} named so far: the file is damaged; move it out of the folder"
            )
        order = np.argsort(ids, kind="stable")
        bounds = np.flatnonzero(np.r_[True, np.diff(ids[order]) != 0, True])
        for start, stop in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            pick = order[start:stop]
            history = histories.setdefault(names[int(ids[pick[0]])], MachineHistory([], [], []))
            history.ts.append(ts[pick])
            history.seq.append(seq[pick])
            history.values.append(values[pick])
        count += n
    return features, count, False


def read_recording(directory: Path) -> Recording:
    """Every file of the recording in ``directory``, oldest first."""
    if not directory.is_dir():
        raise DataError(f"{directory} is not a directory (give the agent's recording.directory)")
    files = recording_files(directory)
    if not files:
        raise DataError(f"{directory} holds no {SUFFIX} files")
    histories: dict[str, MachineHistory] = {}
    features: tuple[str, ...] | None = None
    readings = truncated = 0
    for path in files:
        found, count, cut = _read_file(path, histories)
        if features is None:
            features = found
        elif found != features:
            raise DataError(
                f"{path} records features {list(found)}, the files before it {list(features)}: "
                "train on one model's recording at a time (move the other files out)"
            )
        readings += count
        truncated += cut
    assert features is not None
    machines = {
        machine_id: (
            np.concatenate(h.ts),
            np.concatenate(h.seq),
            np.concatenate(h.values),
        )
        for machine_id, h in histories.items()
    }
    return Recording(features, machines, readings, len(files), truncated)


def segments(
    ts: NDArray[np.float64], seq: NDArray[np.int64], gap_intervals: float = GAP_INTERVALS
) -> list[tuple[int, int]]:
    """(start, stop) of each run of one machine's readings with no reading missing: a new
    segment starts where ``seq`` does not go up by exactly 1 (a missing reading, a restarted
    sender) or where time does not move forward or jumps by more than ``gap_intervals`` times
    the machine's median interval."""
    n = len(ts)
    if n == 0:
        return []
    steps = np.diff(ts)
    usual = float(np.median(steps[steps > 0])) if (steps > 0).any() else 0.0
    broken = (np.diff(seq) != 1) | (steps <= 0)
    if usual > 0:
        broken |= steps > gap_intervals * usual
    cuts = np.flatnonzero(broken) + 1
    bounds = [0, *cuts.tolist(), n]
    return list(itertools.pairwise(bounds))


def machine_runs(
    recording: Recording,
) -> list[tuple[NDArray[np.float64], list[tuple[int, int]]]]:
    """Each machine's readings (n, features) with its unbroken runs (see :func:`segments`)."""
    return [
        (values.astype(np.float64), segments(ts, seq))
        for ts, seq, values in recording.machines.values()
    ]
