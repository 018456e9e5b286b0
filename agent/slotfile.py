"""Per-machine arrays kept across restarts: one ``.npz`` file in ``agent.state_dir``.

What the agent learns per machine (the anomaly scorer's normal, the slow path's long trends)
lives in arrays indexed by the window store's slots. Slots are not stable across runs, so the
file keys each row by machine id, and a run maps the ids back to whatever slots it gives them.

The file is written to a temporary name, synced and renamed, so a power loss leaves the old
file or the new one, never half of one. Reading checks the format version, the names and
shapes of the arrays and anything else the caller pins (``meta``); every problem, from an
empty file to a foreign one, raises :class:`StateFileError` naming it, so that the caller can
log it once and start afresh instead of failing the agent.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

ROW_PREFIX = "r_"
"""Default prefix of the per-machine arrays' names in the file, beside ``version``,
``machine_ids`` and the caller's other arrays."""


class StateFileError(ValueError):
    """A state file that cannot be used: unreadable, of another version, or another shape."""


def save_rows(
    path: Path,
    version: int,
    machine_ids: list[str],
    rows: Mapping[str, NDArray],
    meta: Mapping[str, NDArray] | None = None,
    prefix: str = ROW_PREFIX,
) -> None:
    """Write ``rows`` (each ``(len(machine_ids), ...)``) and ``meta`` to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, NDArray] = {f"{prefix}{name}": array for name, array in rows.items()}
    arrays.update(meta or {})
    arrays["version"] = np.array(version)
    arrays["machine_ids"] = np.array(machine_ids, dtype=np.str_)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as file:
            np.savez(file, **arrays)  # type: ignore[arg-type]
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not fill up with half-written copies
        raise


@dataclass(frozen=True)
class Snapshot:
    """Copies of per-machine arrays taken on the tick thread, to be written on another: the
    file is then one consistent moment, and the tick does not wait for the disk."""

    path: Path
    version: int
    machine_ids: list[str]
    rows: Mapping[str, NDArray]
    meta: Mapping[str, NDArray] = field(default_factory=dict)
    prefix: str = ROW_PREFIX

    def write(self) -> Path:
        save_rows(self.path, self.version, self.machine_ids, self.rows, self.meta, self.prefix)
        return self.path


def load_rows(
    path: Path,
    version: int,
    shapes: Mapping[str, tuple[int, ...]],
    prefix: str = ROW_PREFIX,
    optional: Collection[str] = (),
) -> tuple[list[str], dict[str, NDArray], dict[str, NDArray]]:
    """Read what :func:`save_rows` wrote: (machine ids, per-machine arrays, other arrays).

    ``shapes`` gives each per-machine array the caller needs and its shape past the machine
    axis; an array missing (unless named in ``optional``: one added since files were first
    written, left out of the result), or of another shape, raises :class:`StateFileError`, as
    does another ``version``. Arrays the file holds beyond ``shapes`` are left out.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            found = int(data["version"])
            if found != version:
                raise StateFileError(f"format version {found}, this agent reads {version}")
            ids = [str(m) for m in data["machine_ids"]]
            rows = {
                name: data[f"{prefix}{name}"]
                for name in shapes
                if name not in optional or f"{prefix}{name}" in data.files
            }
            meta = {
                k: data[k]
                for k in data.files
                if not k.startswith(prefix) and k not in ("version", "machine_ids")
            }
    except StateFileError:
        raise
    except Exception as error:  # an empty file (EOFError), one cut short (BadZipFile), ...
        raise StateFileError(f"{type(error).__name__}: {error}") from error
    for name, array in rows.items():
        if array.dtype.kind not in "biuf":
            raise StateFileError(f"{name} holds {array.dtype} values, not numbers")
    for name, shape in shapes.items():
        if name in rows and rows[name].shape != (len(ids), *shape):
            raise StateFileError(
                f"{name} has shape {rows[name].shape}, expected {(len(ids), *shape)}"
            )
    return ids, rows, meta


def saved_ids(path: Path) -> list[str]:
    """The machine ids a file written by :func:`save_rows` holds, without reading its rows;
    none when there is no file or it cannot be read (reading it in full says why)."""
    if not path.exists():
        return []
    try:
        with np.load(path, allow_pickle=False) as data:
            return [str(m) for m in data["machine_ids"]]
    except Exception:  # an empty, cut short or foreign file: load_rows logs it
        return []


def place(
    machine_ids: list[str], slot_for: Callable[[str], int | None]
) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:
    """Slots for a file's machines: which rows found one (``slot_for`` gives None where the
    store has no room), and those slots, in the rows' order."""
    found = [slot_for(m) for m in machine_ids]
    keep = np.array([slot is not None for slot in found], dtype=np.bool_)
    return keep, np.array([slot for slot in found if slot is not None], dtype=np.int64)
