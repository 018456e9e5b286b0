"""Loading a model to swap in while the agent runs: its files, its content hash, its version.

The agent serves one model for months; a replacement is loaded beside it, checked, and only
then swapped in (:mod:`agent.modelswap`). This module is the part that knows model files:
which files make up a model (a ``.pt`` checkpoint, or a serving file's ``.json``, ``.npz`` and
``.onnx``), a cheap signature of them for noticing a change on disk, a content hash of them,
and building a forecaster of any kind from one, on the runtime the settings ask for.

A served model's version carries the first 12 hex digits of the SHA-256 of its files
(``lstm-h15-s0+1a2b3c4d5e6f``): two files trained with the same recipe and seed but different
data, or a file edited in place, never share a version, so an alert's ``model_version`` names
exactly the model that raised it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.model import CheckpointModelSettings
from models.base import Forecaster
from models.serving import (
    CheckpointError,
    ServingPaths,
    choose_runtime,
    forecaster_from_settings,
    torch_installed,
)

HASH_DIGITS = 12
"""Hex digits of the content hash a version carries (48 bits: no collision in practice)."""

Signature = tuple[tuple[str, int, int], ...]
"""(file, size, mtime_ns) of each of a model's files: what the file watch compares."""


def model_files(path: Path) -> list[Path]:
    """The files that make up the model named by ``path`` (those that exist), in a fixed order.

    A ``.pt`` is one file; a serving file is its ``.json`` and the ``.npz`` and ``.onnx``
    beside it. A missing ``path`` is still listed, so that its absence is noticed and hashed.
    """
    if path.suffix == ".pt":
        return [path]
    paths = ServingPaths.beside(path)
    return [paths.json] + [p for p in (paths.npz, paths.onnx) if p.exists()]


def signature(path: Path) -> Signature:
    """Size and modification time of each of the model's files: a few ``stat`` calls."""
    rows = []
    for file in model_files(path):
        try:
            stat = file.stat()
        except OSError:
            rows.append((file.name, -1, -1))
            continue
        rows.append((file.name, stat.st_size, stat.st_mtime_ns))
    return tuple(rows)


def content_hash(path: Path) -> str:
    """SHA-256 over the model's files (name and bytes of each), as hex."""
    digest = hashlib.sha256()
    for file in model_files(path):
        digest.update(file.name.encode() + b"\0")
        try:
            with file.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        except OSError as error:
            raise CheckpointError(f"model file {file} cannot be read: {error}") from error
    return digest.hexdigest()


def versioned(version: str, digest: str) -> str:
    """``version`` with the content hash appended: ``lstm-h15-s0+1a2b3c4d5e6f``."""
    return f"{version.split('+', 1)[0]}+{digest[:HASH_DIGITS]}"


def file_kind(path: Path) -> str:
    """The model kind a file holds, read without building the model.

    A serving file says it in its JSON; a ``.pt`` is read by torch (a serving file exported
    beside it says the same thing and is read instead when torch is not installed).
    """
    json_path = ServingPaths.beside(path).json
    source = json_path if path.suffix != ".pt" or not torch_installed() else None
    if source is not None:
        try:
            document = json.loads(source.read_text(encoding="utf-8"))
            return str(document["kind"])
        except FileNotFoundError as error:
            raise CheckpointError(f"model file {source} does not exist") from error
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
            raise CheckpointError(
                f"model file {source} cannot be read as a serving file: {error!r}"
            ) from error
    from models.checkpoint import Checkpoint

    return Checkpoint.load(path).kind


@dataclass
class LoadedModel:
    """A forecaster built from a file, with where it came from and what its files hashed to."""

    forecaster: Forecaster
    path: Path | None
    """The file named (None: a baseline that needs none)."""
    digest: str
    signature: Signature

    @property
    def version(self) -> str:
        return self.forecaster.version


def configured_path(model: Any) -> Path | None:
    """The file ``settings.model`` serves (the shipped default when unset; None: a baseline)."""
    if model.kind in ("persistence", "linear_extrapolation"):
        return None
    return choose_runtime(model).path


def load_model(model: Any, path: Path | None) -> LoadedModel:
    """Build the forecaster of the file at ``path`` (None: what ``model`` itself names) with
    ``model``'s runtime, device, threads and chunks, of whatever kind the file holds, and stamp
    its version with the content hash. Raises :class:`CheckpointError` (or any error the
    runtime raises on a broken file) when it cannot be served."""
    if path is None:
        forecaster = forecaster_from_settings(model)
        path = configured_path(model)
        if path is None:  # a baseline: no file, its version is its recipe
            return LoadedModel(forecaster, None, "", ())
    else:
        fields = {
            name: getattr(model, name)
            for name in ("device", "threads", "chunk_size", "cuda_chunk_size", "runtime")
        }
        settings = CheckpointModelSettings(**fields, kind=file_kind(path), checkpoint=path)
        forecaster = forecaster_from_settings(settings)
    before = signature(path)
    digest = content_hash(path)
    forecaster.version = versioned(forecaster.version, digest)
    return LoadedModel(forecaster, path, digest, before)
