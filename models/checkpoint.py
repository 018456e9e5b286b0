"""Checkpoints that carry everything needed to serve, and the torch serving wrapper.

A checkpoint is a plain dict of tensors, numbers, strings and lists, so it loads with
``torch.load(weights_only=True)``: loading a model never runs code from the file. Every kind of
forecaster, network or baseline, saves to and loads from the same format. Its torch-free twin,
the serving file (:mod:`models.serving`), holds the same facts and arrays;
:meth:`Checkpoint.to_serving` and :meth:`Checkpoint.from_serving` convert between the two.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from config.fields import FEATURES
from config.model import DEFAULT_CUDA_CHUNK_SIZE
from models.base import NETWORK_KINDS, TrainableForecaster
from models.fitting import FitOptions, FitResult, ProgressFn, fit_network
from models.normalise import NORMALISATIONS
from models.scaling import FeatureScaler
from models.serving import (
    DEFAULT_CHECKPOINT_NAME,
    CheckpointError,
    ServingModel,
    ServingPaths,
    check_servable,
    check_windows,
    default_checkpoint_path,
    default_threads,
    forecaster_from_settings,
    servable_features,
    sha256_of,
)
from models.zoo import RecurrentForecaster

__all__ = [
    "DEFAULT_CHECKPOINT_NAME",
    "Checkpoint",
    "CheckpointError",
    "TorchForecaster",
    "check_windows",
    "default_checkpoint_path",
    "default_threads",
    "export",
    "forecaster_from_checkpoint",
    "forecaster_from_settings",
    "load_forecaster",
    "resolve_device",
    "servable_features",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
"""Format 1 (global scaling only) predates per-window normalisation; it still loads."""


@dataclass
class Checkpoint:
    """A trained model and the facts needed to serve it.

    ``hidden``, ``layers`` and ``dropout`` describe networks and are 0 for baselines;
    ``scaler`` is set when the model reads globally scaled inputs.
    """

    kind: str
    version: str
    features: tuple[str, ...]
    window: int
    horizon: int
    hidden: int = 0
    layers: int = 0
    dropout: float = 0.0
    scaler: FeatureScaler | None = None
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)
    target_index: int = 0
    normalisation: str = "window"
    report: dict[str, Any] = field(default_factory=dict)
    despike: bool = False
    """Spikes are taken out of each window before it is normalised (see models.normalise);
    checkpoints written before this option existed load with it off, as they were trained."""

    def build_module(self) -> RecurrentForecaster:
        if self.kind not in NETWORK_KINDS:
            raise ValueError(f"a {self.kind} checkpoint holds no network")
        module = RecurrentForecaster(
            n_features=len(self.features),
            hidden=self.hidden,
            layers=self.layers,
            dropout=self.dropout,
            horizon=self.horizon,
            cell=self.kind,
            target_index=self.target_index,
            normalisation=self.normalisation,
            window=self.window,
            despike=self.despike,
            minimum=None if self.scaler is None else self.scaler.minimum,
            span=None if self.scaler is None else self.scaler.span,
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
            "normalisation": self.normalisation,
            "despike": self.despike,
            "scaler": None if self.scaler is None else self.scaler.to_lists(),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict.items()},
            "report": self.report,
        }
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, servable: bool = True) -> Checkpoint:
        """Read a checkpoint (or a serving file, NAME.json); with ``servable`` also check that
        the agent can serve it."""
        if path.suffix == ".json":
            return cls.from_serving(ServingModel.load(path, servable=servable))
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError as error:
            raise CheckpointError(f"checkpoint {path} does not exist") from error
        except Exception as error:
            raise CheckpointError(f"checkpoint {path} cannot be read: {error}") from error
        if not isinstance(payload, dict) or payload.get("format") not in READABLE_FORMATS:
            raise CheckpointError(
                f"checkpoint {path} is not a forewarn checkpoint of format "
                f"{' or '.join(map(str, READABLE_FORMATS))}"
            )
        try:
            scaler = payload.get("scaler")
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
                normalisation=str(payload.get("normalisation", "global")),
                despike=bool(payload.get("despike", False)),
                scaler=None if scaler is None else FeatureScaler.from_lists(scaler),
                state_dict=payload["state_dict"],
                report=dict(payload.get("report", {})),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"checkpoint {path} is missing {error}") from error
        checkpoint.check_valid(path, servable)
        return checkpoint

    def check_valid(self, path: Path, servable: bool = True) -> None:
        """Raise :class:`CheckpointError` unless this describes a model that can forecast; with
        ``servable``, also unless it reads the agent's readings and forecasts temperature."""
        from models.baselines import BASELINE_KINDS, baseline_from_checkpoint

        if self.kind not in (*NETWORK_KINDS, *BASELINE_KINDS):
            raise CheckpointError(f"checkpoint {path} has an unknown model kind {self.kind!r}")
        if self.normalisation not in NORMALISATIONS:
            raise CheckpointError(
                f"checkpoint {path} has an unknown normalisation {self.normalisation!r}"
            )
        if not 0 <= self.target_index < len(self.features):
            raise CheckpointError(
                f"checkpoint {path} has target_index {self.target_index} out of range"
            )
        if self.window < 1 or self.horizon < 1:
            raise CheckpointError(
                f"checkpoint {path} has window {self.window} and horizon {self.horizon}; "
                "both must be at least 1"
            )
        if servable:
            self.check_servable(path)
        if self.normalisation == "global":
            shape = (len(self.features),)
            if (
                self.scaler is None
                or self.scaler.minimum.shape != shape
                or self.scaler.span.shape != shape
                or not np.all(np.isfinite(self.scaler.minimum))
                or not np.all(np.isfinite(self.scaler.span) & (self.scaler.span > 0))
            ):
                raise CheckpointError(f"checkpoint {path} has an invalid scaler")
        try:
            if self.kind in NETWORK_KINDS:
                self.build_module()
            else:
                baseline_from_checkpoint(self)
        except (RuntimeError, ValueError, TypeError, AttributeError, KeyError) as error:
            raise CheckpointError(
                f"checkpoint {path} does not describe a servable model: {error}"
            ) from error

    def check_servable(self, path: Path) -> None:
        """Raise :class:`CheckpointError` unless the agent's readings fit this checkpoint
        (see :func:`models.serving.check_servable`)."""
        check_servable(self.features, self.target_index, f"checkpoint {path}")

    def to_serving(self, source: Path | None = None) -> ServingModel:
        """The same model as a serving file's contents; ``source`` is the ``.pt`` it came
        from, recorded with its SHA-256 so a stale export is never served in its place."""
        return ServingModel(
            kind=self.kind,
            version=self.version,
            features=self.features,
            window=self.window,
            horizon=self.horizon,
            target_index=self.target_index,
            normalisation=self.normalisation,
            despike=self.despike,
            hidden=self.hidden,
            layers=self.layers,
            scaler=self.scaler,
            weights={
                name: tensor.detach().cpu().numpy().copy()
                for name, tensor in self.state_dict.items()
            },
            report=dict(self.report),
            source=None if source is None else {"file": source.name, "sha256": sha256_of(source)},
        )

    @classmethod
    def from_serving(cls, model: ServingModel) -> Checkpoint:
        """The torch checkpoint of a serving file's model (dropout is a training setting:
        it is 0 here and changes nothing in a forward pass)."""
        return cls(
            kind=model.kind,
            version=model.version,
            features=model.features,
            window=model.window,
            horizon=model.horizon,
            hidden=model.hidden,
            layers=model.layers,
            scaler=model.scaler,
            state_dict={name: torch.from_numpy(np.array(a)) for name, a in model.weights.items()},
            target_index=model.target_index,
            normalisation=model.normalisation,
            report=dict(model.report),
            despike=model.despike,
        )


def export(
    checkpoint_path: Path, output: Path | None = None, onnx_graph: bool = True
) -> ServingPaths:
    """Write the serving file of the checkpoint at ``checkpoint_path`` (default: beside it,
    NAME.json / NAME.npz / NAME.onnx); what ``forewarn export`` and ``forewarn train`` do."""
    checkpoint = Checkpoint.load(checkpoint_path, servable=False)
    serving = checkpoint.to_serving(source=checkpoint_path)
    return serving.save(output or checkpoint_path, onnx_graph=onnx_graph)


def resolve_device(requested: str) -> torch.device:
    """auto: CUDA when present, else CPU; asking for CUDA without one is a clear error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(
            "device cuda asked for (FOREWARN_MODEL__DEVICE or --device) but no CUDA device is "
            "available; use auto or cpu"
        )
    return torch.device(requested)


class TorchForecaster:
    """Serves (and fits) a network: one batched, chunked forward per call, on CPU or CUDA."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        device: str = "auto",
        threads: int = 0,
        chunk_size: int = 1000,
        cuda_chunk_size: int = DEFAULT_CUDA_CHUNK_SIZE,
    ) -> None:
        self.checkpoint = checkpoint
        self.kind = checkpoint.kind
        self.version = checkpoint.version
        self.features = checkpoint.features
        self.window = checkpoint.window
        self.horizon = checkpoint.horizon
        self.device = resolve_device(device)
        # Whole quanta on a GPU: the padded batch is cut into equal chunks, so the device
        # sees as few shapes as the CPU does (see BATCH_QUANTUM).
        on_gpu = self.device.type == "cuda"
        self.chunk_size = _quanta(cuda_chunk_size) if on_gpu else chunk_size
        self.threads = threads or default_threads()
        if self.device.type == "cpu":
            torch.set_num_threads(self.threads)
        self.module = checkpoint.build_module().to(self.device)
        self._staging: torch.Tensor | None = None  # pinned host memory, CUDA only
        self._fit_scaler = False

    @classmethod
    def from_path(
        cls,
        path: Path | None,
        device: str = "auto",
        threads: int = 0,
        chunk_size: int = 1000,
        cuda_chunk_size: int = DEFAULT_CUDA_CHUNK_SIZE,
    ) -> TorchForecaster:
        return cls(
            Checkpoint.load(path or default_checkpoint_path()),
            device=device,
            threads=threads,
            chunk_size=chunk_size,
            cuda_chunk_size=cuda_chunk_size,
        )

    @classmethod
    def new(
        cls,
        kind: str = "lstm",
        horizon: int = 30,
        window: int = 20,
        features: tuple[str, ...] = FEATURES,
        target_index: int = 0,
        hidden: int = 64,
        layers: int = 2,
        dropout: float = 0.2,
        normalisation: str = "window",
        scaler: FeatureScaler | None = None,
        seed: int = 0,
        despike: bool = False,
        version: str | None = None,
        device: str = "auto",
        threads: int = 0,
        chunk_size: int = 1000,
    ) -> TorchForecaster:
        """An untrained network (weights initialised from ``seed``), ready for :meth:`fit`.

        A globally normalised network needs ``scaler``; :meth:`fit` fits one when it is unset.
        """
        if kind not in NETWORK_KINDS:
            raise ValueError(f"kind must be one of {NETWORK_KINDS}, not {kind!r}")
        torch.manual_seed(seed)
        module = RecurrentForecaster(
            n_features=len(features),
            hidden=hidden,
            layers=layers,
            dropout=dropout,
            horizon=horizon,
            cell=kind,
            target_index=target_index,
            normalisation=normalisation,
            window=window,
            despike=despike,
        )
        checkpoint = Checkpoint(
            kind=kind,
            version=version or f"{kind}-h{horizon}-s{seed}",
            features=features,
            window=window,
            horizon=horizon,
            hidden=hidden,
            layers=layers,
            dropout=dropout,
            scaler=scaler,
            state_dict={k: v.detach().clone() for k, v in module.state_dict().items()},
            target_index=target_index,
            normalisation=normalisation,
            despike=despike,
        )
        fit_scaler = normalisation == "global" and scaler is None
        if fit_scaler:  # an identity placeholder until fit() fits the real one
            checkpoint.scaler = FeatureScaler(
                minimum=np.zeros(len(features), dtype=np.float32),
                span=np.ones(len(features), dtype=np.float32),
            )
        forecaster = cls(checkpoint, device=device, threads=threads, chunk_size=chunk_size)
        forecaster._fit_scaler = fit_scaler
        return forecaster

    def fit(
        self,
        windows: NDArray[np.float32],
        targets: NDArray[np.float32],
        validation: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None,
        options: FitOptions | None = None,
        progress: ProgressFn | None = None,
    ) -> TorchForecaster:
        """Train on (windows, next ``horizon`` targets); keep the best validation epoch.

        A globally normalised network whose scaler was not given fits it here, on ``windows``
        only: validation and test data never shape the scaling.
        """
        check_windows(windows, self.window, len(self.features))
        if targets.shape != (len(windows), self.horizon):
            raise ValueError(f"targets must have shape ({len(windows)}, {self.horizon})")
        checkpoint = self.checkpoint
        if self._fit_scaler:
            checkpoint.scaler = FeatureScaler.fit(windows)
            self._fit_scaler = False
            self.module = checkpoint.build_module()
        result: FitResult = fit_network(
            self.module,
            windows,
            targets,
            validation,
            options or FitOptions(),
            self.device,
            progress or (lambda message: None),
        )
        checkpoint.state_dict = result.state_dict
        checkpoint.report["best_epoch"] = result.best_epoch
        checkpoint.report["history"] = result.history
        self.module = checkpoint.build_module().to(self.device)
        return self

    def save(self, path: Path) -> None:
        self.checkpoint.save(path)

    def warm_up(self) -> None:
        """One forecast before serving, so the first real tick pays no one-time costs."""
        self.forecast(np.zeros((2, self.window, len(self.features)), dtype=np.float32))

    @torch.inference_mode()
    def forecast(self, windows: NDArray[np.float32]) -> NDArray[np.float32]:
        check_windows(windows, self.window, len(self.features))
        if self.device.type == "cuda":
            return self._forecast_on_device(windows)
        out = np.empty((windows.shape[0], self.horizon), dtype=np.float32)
        for start in range(0, windows.shape[0], self.chunk_size):
            rows = windows[start : start + self.chunk_size]
            chunk = torch.from_numpy(_padded(rows))
            out[start : start + len(rows)] = self.module(chunk)[: len(rows)].float().numpy()
        return out

    def _forecast_on_device(self, windows: NDArray[np.float32]) -> NDArray[np.float32]:
        """The whole batch crosses to the GPU in one copy and comes back in one.

        The padded batch is written into a pinned host buffer kept between ticks (pinning
        fresh memory every tick costs more than the copy it speeds up), copied without
        blocking, forecast in chunks on the device, and read back once: one synchronisation
        per tick instead of one per chunk.
        """
        rows = windows.shape[0]
        if rows == 0:
            return np.empty((0, self.horizon), dtype=np.float32)
        size = _quanta(rows)
        if self._staging is None or self._staging.shape[0] < size:
            self._staging = torch.empty(
                (size, self.window, len(self.features)), dtype=torch.float32, pin_memory=True
            )
        staged = self._staging[:size]
        staged_np = staged.numpy()
        staged_np[:rows] = windows
        staged_np[rows:] = windows[-1]  # a real window, so normalisation sees nothing odd
        batch = staged.to(self.device, non_blocking=True)
        chunks = [
            self.module(batch[start : start + self.chunk_size])
            for start in range(0, size, self.chunk_size)
        ]
        forecasts = chunks[0] if len(chunks) == 1 else torch.cat(chunks)
        return forecasts[:rows].float().cpu().numpy()


BATCH_QUANTUM = 128
"""Batches are padded up to a multiple of this many windows.

torch's CPU kernels (oneDNN) cache a plan per batch shape; a fleet whose batch size varies from
tick to tick would otherwise add plans, and memory, for hours. Padding bounds the shapes to
chunk_size / 128 of them, for at most 127 extra windows of work per chunk.
"""


def _quanta(rows: int) -> int:
    """``rows`` rounded up to a whole number of batch quanta."""
    return -(-rows // BATCH_QUANTUM) * BATCH_QUANTUM


def _padded(rows: NDArray[np.floating]) -> NDArray[np.float32]:
    size = _quanta(len(rows))
    padded = np.zeros((size, *rows.shape[1:]), dtype=np.float32)
    padded[: len(rows)] = rows
    if len(rows) < size:
        padded[len(rows) :] = rows[-1]  # a real window, so normalisation sees nothing odd
    return padded


def forecaster_from_checkpoint(
    checkpoint: Checkpoint,
    device: str = "auto",
    threads: int = 0,
    chunk_size: int = 1000,
    cuda_chunk_size: int = DEFAULT_CUDA_CHUNK_SIZE,
) -> TrainableForecaster:
    """The forecaster a checkpoint describes, whatever its kind."""
    from models.baselines import baseline_from_checkpoint

    if checkpoint.kind in NETWORK_KINDS:
        return TorchForecaster(
            checkpoint,
            device=device,
            threads=threads,
            chunk_size=chunk_size,
            cuda_chunk_size=cuda_chunk_size,
        )
    return baseline_from_checkpoint(checkpoint, chunk_size=chunk_size)


def load_forecaster(
    path: Path | None,
    device: str = "auto",
    threads: int = 0,
    chunk_size: int = 1000,
    servable: bool = True,
    cuda_chunk_size: int = DEFAULT_CUDA_CHUNK_SIZE,
) -> TrainableForecaster:
    """Load any kind's checkpoint (unset: the shipped default) as a ready forecaster."""
    checkpoint = Checkpoint.load(path or default_checkpoint_path(), servable=servable)
    return forecaster_from_checkpoint(checkpoint, device, threads, chunk_size, cuda_chunk_size)


def torch_forecaster_from_settings(model: Any, path: Path) -> TrainableForecaster:
    """The torch runtime's forecaster of ``settings.model`` for the file at ``path`` (a
    ``.pt`` checkpoint or a serving file); its kind must be the one the settings name."""
    checkpoint = Checkpoint.load(path)
    if checkpoint.kind != model.kind:
        where = "the shipped checkpoint" if model.checkpoint is None else f"checkpoint {path}"
        raise CheckpointError(
            f"FOREWARN_MODEL__KIND={model.kind} but {where} holds a {checkpoint.kind}; train one "
            f"with `forewarn train --kind {model.kind} --output PATH` and set "
            "FOREWARN_MODEL__CHECKPOINT=PATH"
        )
    return forecaster_from_checkpoint(
        checkpoint, model.device, model.threads, model.chunk_size, model.cuda_chunk_size
    )
