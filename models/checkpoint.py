"""Checkpoints that carry everything needed to serve, and the batched serving wrapper.

A checkpoint is a plain dict of tensors, numbers, strings and lists, so it loads with
``torch.load(weights_only=True)``: loading a model never runs code from the file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from models.scaling import FeatureScaler
from models.zoo import RecurrentForecaster
from simulator.signal import FEATURES

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_CHECKPOINT_NAME = "default.pt"


class CheckpointError(Exception):
    """A checkpoint that cannot be served; the message says which file and why."""


@dataclass
class Checkpoint:
    """A trained model and the facts needed to serve it."""

    kind: str
    version: str
    features: tuple[str, ...]
    window: int
    horizon: int
    hidden: int
    layers: int
    dropout: float
    scaler: FeatureScaler
    state_dict: dict[str, torch.Tensor]
    target_index: int = 0
    report: dict[str, Any] = field(default_factory=dict)

    def build_module(self) -> RecurrentForecaster:
        module = RecurrentForecaster(
            n_features=len(self.features),
            hidden=self.hidden,
            layers=self.layers,
            dropout=self.dropout,
            horizon=self.horizon,
            cell=self.kind,
            target_index=self.target_index,
        )
        module.load_state_dict(self.state_dict)
        return module.eval()

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": FORMAT_VERSION,
            "kind": self.kind,
            "version": self.version,
            "features": list(self.features),
            "window": self.window,
            "horizon": self.horizon,
            "hidden": self.hidden,
            "layers": self.layers,
            "dropout": self.dropout,
            "target_index": self.target_index,
            "scaler": self.scaler.to_lists(),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict.items()},
            "report": self.report,
        }
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError as error:
            raise CheckpointError(f"checkpoint {path} does not exist") from error
        except Exception as error:
            raise CheckpointError(f"checkpoint {path} cannot be read: {error}") from error
        if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint {path} is not a forewarn checkpoint of format {FORMAT_VERSION}"
            )
        try:
            checkpoint = cls(
                kind=str(payload["kind"]),
                version=str(payload["version"]),
                features=tuple(payload["features"]),
                window=int(payload["window"]),
                horizon=int(payload["horizon"]),
                hidden=int(payload["hidden"]),
                layers=int(payload["layers"]),
                dropout=float(payload["dropout"]),
                target_index=int(payload["target_index"]),
                scaler=FeatureScaler.from_lists(payload["scaler"]),
                state_dict=payload["state_dict"],
                report=dict(payload.get("report", {})),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"checkpoint {path} is missing {error}") from error
        checkpoint.check_servable(path)
        return checkpoint

    def check_servable(self, path: Path) -> None:
        """Raise :class:`CheckpointError` unless the agent can serve this checkpoint as is."""
        if self.features != FEATURES:
            raise CheckpointError(
                f"checkpoint {path} expects features {list(self.features)}, but readings carry "
                f"{list(FEATURES)} in that order"
            )
        if self.target_index != FEATURES.index("temperature_c"):
            raise CheckpointError(
                f"checkpoint {path} forecasts {self.features[self.target_index]!r}, "
                "not the temperature"
                if 0 <= self.target_index < len(self.features)
                else f"checkpoint {path} has target_index {self.target_index} out of range"
            )
        if self.window < 1 or self.horizon < 1:
            raise CheckpointError(
                f"checkpoint {path} has window {self.window} and horizon {self.horizon}; "
                "both must be at least 1"
            )
        shape = (len(self.features),)
        if (
            self.scaler.minimum.shape != shape
            or self.scaler.span.shape != shape
            or not np.all(np.isfinite(self.scaler.minimum))
            or not np.all(np.isfinite(self.scaler.span) & (self.scaler.span > 0))
        ):
            raise CheckpointError(f"checkpoint {path} has an invalid scaler")
        try:
            self.build_module()
        except (RuntimeError, ValueError, TypeError, AttributeError) as error:
            raise CheckpointError(
                f"checkpoint {path} does not describe a servable model: {error}"
            ) from error


def default_checkpoint_path() -> Path:
    """The checkpoint shipped inside the ``models`` package."""
    return Path(str(resources.files("models") / DEFAULT_CHECKPOINT_NAME))


def resolve_device(requested: str) -> torch.device:
    """auto: CUDA when present, else CPU; asking for CUDA without one is a clear error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(
            "FOREWARN_MODEL__DEVICE=cuda but no CUDA device is available; use auto or cpu"
        )
    return torch.device(requested)


def default_threads() -> int:
    """One thread per core, at most two: measured here, more threads collapse under load."""
    return max(1, min(2, os.cpu_count() or 1))


class TorchForecaster:
    """Serves a checkpoint: one batched, chunked forward per call, on CPU or CUDA."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        device: str = "auto",
        threads: int = 0,
        chunk_size: int = 1000,
    ) -> None:
        self.checkpoint = checkpoint
        self.kind = checkpoint.kind
        self.version = checkpoint.version
        self.features = checkpoint.features
        self.window = checkpoint.window
        self.horizon = checkpoint.horizon
        self.device = resolve_device(device)
        self.chunk_size = chunk_size
        self.threads = threads or default_threads()
        if self.device.type == "cpu":
            torch.set_num_threads(self.threads)
        self.module = checkpoint.build_module().to(self.device)
        self._scaler = checkpoint.scaler
        self._pin = self.device.type == "cuda"

    @classmethod
    def from_path(
        cls, path: Path | None, device: str = "auto", threads: int = 0, chunk_size: int = 1000
    ) -> TorchForecaster:
        return cls(
            Checkpoint.load(path or default_checkpoint_path()),
            device=device,
            threads=threads,
            chunk_size=chunk_size,
        )

    def warm_up(self) -> None:
        """One forecast before serving, so the first real tick pays no one-time costs."""
        self.forecast(np.zeros((2, self.window, len(self.features)), dtype=np.float32))

    @torch.inference_mode()
    def forecast(self, windows: NDArray[np.float32]) -> NDArray[np.float32]:
        if windows.ndim != 3 or windows.shape[1:] != (self.window, len(self.features)):
            raise ValueError(
                f"windows must have shape (batch, {self.window}, {len(self.features)}), "
                f"got {windows.shape}"
            )
        scaled = self._scaler.transform(windows)
        out = np.empty((windows.shape[0], self.horizon), dtype=np.float32)
        for start in range(0, scaled.shape[0], self.chunk_size):
            chunk = torch.from_numpy(np.ascontiguousarray(scaled[start : start + self.chunk_size]))
            if self._pin:
                chunk = chunk.pin_memory().to(self.device, non_blocking=True)
            out[start : start + chunk.shape[0]] = self.module(chunk).float().cpu().numpy()
        return self._scaler.inverse_column(out, self.checkpoint.target_index)
