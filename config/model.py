"""Which forecaster the agent serves and how it runs (device, threads, chunks)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator

from config.base import Section

DEFAULT_CUDA_CHUNK_SIZE = 16_384
"""Most windows in one forward pass on a GPU (``model.cuda_chunk_size``). A GPU wants far
larger chunks than a CPU's cache does; ``python -m bench.inference`` times several on a device."""


class _ModelCommon(Section):
    """How any forecaster runs, whatever its kind."""

    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA when available, else CPU."
    )
    threads: int = Field(
        0,
        ge=0,
        le=256,
        description="CPU threads for inference; 0: one per core, at most 2 (leaves the "
        "network thread a core on small machines).",
    )
    chunk_size: int = Field(
        1000,
        ge=1,
        description="Most windows in one forward pass on the CPU; larger batches are chunked.",
    )
    cuda_chunk_size: int = Field(
        DEFAULT_CUDA_CHUNK_SIZE,
        ge=1,
        description="Most windows in one forward pass on a GPU, rounded up to a multiple of 128 "
        "(the whole batch crosses to the device in one copy either way).",
    )
    runtime: Literal["auto", "torch", "onnx", "numpy"] = Field(
        "auto",
        description="What runs a network (rnn, lstm, gru, bilstm): torch, onnx (ONNX Runtime on "
        "the serving file's graph), numpy, or auto: torch where it is installed, else onnx when "
        "onnxruntime is, else numpy (see docs/runtimes.md). onnx and numpy never import torch; the "
        "baselines are numpy code whatever this says.",
    )
    directory: Path | None = Field(
        None,
        description="Folder of models that the model command topic "
        "(<prefix>/_agents/<client_id>/model) may name, by a path relative to it; unset: the "
        "command topic is refused (docs/operating.md, Keeping the model right).",
    )
    watch_interval_s: float = Field(
        2.0,
        ge=0,
        le=3600,
        description="Seconds between checks (size and modification time) of the served and "
        "shadow model files; a changed file that stays unchanged for one more check is loaded "
        "and swapped in. 0: no watch (SIGHUP and the command topic still swap).",
    )
    shadow: Path | None = Field(
        None,
        description="A candidate model (checkpoint or serving file) forecast beside the served "
        "one on the same windows, without alerting, compared in forewarn_shadow_* metrics.",
    )


MODEL_KINDS = ("rnn", "lstm", "gru", "bilstm", "ridge", "persistence", "linear_extrapolation")


class CheckpointModelSettings(_ModelCommon):
    """A trained forecaster read from a checkpoint: a recurrent network or Ridge regression."""

    kind: Literal["rnn", "lstm", "gru", "bilstm", "ridge"] = Field(
        "lstm",
        description="Forecaster: rnn, lstm, gru, bilstm or ridge (served from a checkpoint of "
        "that kind, see `forewarn train --kind`); persistence or linear_extrapolation "
        "(baselines, no checkpoint).",
    )
    checkpoint: Path | None = Field(
        None,
        description="Checkpoint to serve: a torch checkpoint (.pt) or its serving file (.json, "
        "written beside it by `forewarn train` and `forewarn export`); unset: the default "
        "shipped with forewarn (an lstm). Not for the baselines.",
    )

    @field_validator("kind", mode="before")
    @classmethod
    def _known_kind(cls, value: Any) -> Any:
        # Unknown kinds land here; name every kind, not only this member's.
        if value not in MODEL_KINDS:
            raise ValueError(f"kind must be one of {', '.join(MODEL_KINDS)}, not {value!r}")
        return value


class PersistenceModelSettings(_ModelCommon):
    """The last reading, repeated over the horizon: the simplest baseline."""

    kind: Literal["persistence"]
    horizon: int = Field(
        15,
        ge=1,
        le=10_000,
        description="Steps forecast ahead; baselines only (a checkpoint carries its own).",
    )


class LinearExtrapolationModelSettings(_ModelCommon):
    """A straight line through the window, carried on over the horizon."""

    kind: Literal["linear_extrapolation"]
    horizon: int = Field(
        15,
        ge=1,
        le=10_000,
        description="Steps forecast ahead; baselines only (a checkpoint carries its own).",
    )


MODEL_TAG_PREFIX = "kind:"
"""Tags of the model union: they appear in validation error locations, never in env vars."""


def _model_tag(value: Any) -> str:
    """The union member for a raw or built model section; without a kind, the default lstm."""
    kind = value.get("kind", "lstm") if isinstance(value, dict) else getattr(value, "kind", "lstm")
    if kind in ("persistence", "linear_extrapolation"):
        return MODEL_TAG_PREFIX + str(kind)
    return MODEL_TAG_PREFIX + "checkpoint"


ModelSettings = Annotated[
    Annotated[CheckpointModelSettings, Tag(MODEL_TAG_PREFIX + "checkpoint")]
    | Annotated[PersistenceModelSettings, Tag(MODEL_TAG_PREFIX + "persistence")]
    | Annotated[LinearExtrapolationModelSettings, Tag(MODEL_TAG_PREFIX + "linear_extrapolation")],
    Discriminator(_model_tag),
]
"""Which forecaster to serve and how to run it: one of the kinds above, chosen by ``kind``."""
