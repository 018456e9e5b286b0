"""Serving without torch: the serving file, the runtimes, and the forecaster the agent builds.

A gateway on a factory floor has 1-2 GB of memory; torch alone takes ~190 MB of it once
imported and ~750 MB of disk. Everything the agent needs to serve a model is therefore also
written, by ``forewarn train`` and ``forewarn export``, as a *serving file*:

* ``NAME.json``: the facts (kind, version, features, window, horizon, normalisation, the global
  scaler, layer sizes) and the names and SHA-256 digests of the two files below;
* ``NAME.npz``: the weights, one array per parameter, under the torch state dict's names;
* ``NAME.onnx``: for the networks, the whole forward pass (normalisation included) as an ONNX
  graph, for the ``onnx`` runtime.

None of them holds code: the JSON is parsed, the arrays are read with ``allow_pickle=False``.

``model.runtime`` picks what runs a network: ``torch`` (the training library, the only one on a
GPU), ``onnx`` (ONNX Runtime on the exported graph), ``numpy`` (the forward pass written out in
numpy) or ``auto``. This module imports neither torch nor the torch-side checkpoint code unless
the runtime is torch; see :func:`forecaster_from_settings` for the rule ``auto`` follows.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from config.fields import FEATURES
from models.base import NETWORK_KINDS, Forecaster
from models.normalise import NORMALISATIONS
from models.scaling import FeatureScaler

logger = logging.getLogger(__name__)

Runtime = Literal["auto", "torch", "onnx", "numpy"]
RUNTIMES: tuple[Runtime, ...] = ("auto", "torch", "onnx", "numpy")
SERVING_FORMAT = "forewarn-serving"
SERVING_FORMAT_VERSION = 1
DEFAULT_CHECKPOINT_NAME = "default.pt"
DEFAULT_SERVING_NAME = "default.json"
BASELINE_KINDS: tuple[str, ...] = ("persistence", "linear_extrapolation", "ridge")
CHECKPOINT_KINDS: tuple[str, ...] = (*NETWORK_KINDS, "ridge")
GATES = {"rnn": 1, "gru": 3, "lstm": 4, "bilstm": 4}
"""Gate blocks stacked in each recurrent weight matrix (torch's layout)."""


class CheckpointError(Exception):
    """A checkpoint or serving file that cannot be served; the message says which file, why,
    and what to do about it."""


def check_windows(windows: NDArray[np.floating], window: int, features: int) -> None:
    if windows.ndim != 3 or windows.shape[1:] != (window, features):
        raise ValueError(
            f"windows must have shape (batch, {window}, {features}), got {windows.shape}"
        )


def servable_features(features: tuple[str, ...]) -> bool:
    """Whether the agent can serve a model of these input features: forewarn's names, each
    once, temperature first (the agent reads the temperature from the first column, and the
    decoder reads exactly the model's features)."""
    return (
        bool(features)
        and features[0] == "temperature_c"
        and len(set(features)) == len(features)
        and set(features) <= set(FEATURES)
    )


def default_threads() -> int:
    """One thread per core, at most two: measured here, more threads collapse under load."""
    return max(1, min(2, os.cpu_count() or 1))


def default_checkpoint_path() -> Path:
    """The torch checkpoint shipped inside the ``models`` package."""
    return Path(str(resources.files("models") / DEFAULT_CHECKPOINT_NAME))


def default_serving_path() -> Path:
    """The shipped checkpoint's serving file, shipped beside it."""
    return Path(str(resources.files("models") / DEFAULT_SERVING_NAME))


def torch_installed() -> bool:
    """Whether torch can be imported, without importing it (and its ~190 MB)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def onnxruntime_installed() -> bool:
    try:
        return importlib.util.find_spec("onnxruntime") is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class ServingPaths:
    """The three files of one serving file; ``json`` is the one to name."""

    json: Path
    npz: Path
    onnx: Path

    @classmethod
    def beside(cls, path: Path) -> ServingPaths:
        """The serving files for a checkpoint or serving file path: same folder and stem."""
        base = path.with_suffix("") if path.suffix in (".pt", ".json") else path
        return cls(
            json=base.with_name(base.name + ".json"),
            npz=base.with_name(base.name + ".npz"),
            onnx=base.with_name(base.name + ".onnx"),
        )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def network_shapes(
    kind: str, features: int, hidden: int, layers: int, window: int, horizon: int, skip: bool
) -> dict[str, tuple[int, ...]]:
    """Every weight of a network under its torch state dict name, with its shape.

    Both the serving file's validation and the runtimes read the weights by these names, so a
    file that lacks one, or holds one of another size, is refused when it is opened.
    """
    gates = GATES[kind] * hidden
    directions = 2 if kind == "bilstm" else 1
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in range(layers):
        inputs = features if layer == 0 else hidden * directions
        for suffix in ("", "_reverse")[:directions]:
            shapes[f"rnn.weight_ih_l{layer}{suffix}"] = (gates, inputs)
            shapes[f"rnn.weight_hh_l{layer}{suffix}"] = (gates, hidden)
            shapes[f"rnn.bias_ih_l{layer}{suffix}"] = (gates,)
            shapes[f"rnn.bias_hh_l{layer}{suffix}"] = (gates,)
    shapes["head.weight"] = (horizon, hidden * directions)
    shapes["head.bias"] = (horizon,)
    if skip:
        shapes["skip.weight"] = (horizon, window)
        shapes["skip.bias"] = (horizon,)
    return shapes


@dataclass
class ServingModel:
    """A trained model and every fact needed to serve it, in plain numpy arrays.

    ``weights`` are named as in the torch checkpoint's state dict (networks: ``rnn.*``,
    ``head.*``, ``skip.*``; Ridge: ``coef``, ``intercept``, ``alpha``). ``source`` names the
    torch checkpoint this was exported from and its SHA-256, so that a serving file left
    beside a retrained checkpoint is never served in its place.
    """

    kind: str
    version: str
    features: tuple[str, ...]
    window: int
    horizon: int
    target_index: int = 0
    normalisation: str = "window"
    despike: bool = False
    hidden: int = 0
    layers: int = 0
    scaler: FeatureScaler | None = None
    weights: dict[str, NDArray[Any]] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    source: dict[str, str] | None = None
    onnx_graph: bytes | None = None
    """The network as an ONNX graph, when one was built or read (networks only)."""
    path: Path | None = None
    """The JSON file this was read from, for messages."""
    onnx_file: Path | None = None
    onnx_sha256: str | None = None
    """The graph file a read serving file names, and its digest, checked when it is read."""

    @property
    def bidirectional(self) -> bool:
        return self.kind == "bilstm"

    def array(self, name: str) -> NDArray[np.float64]:
        return np.asarray(self.weights[name], dtype=np.float64)

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        if self.kind in NETWORK_KINDS:
            return network_shapes(
                self.kind,
                len(self.features),
                self.hidden,
                self.layers,
                self.window,
                self.horizon,
                self.normalisation == "window",
            )
        if self.kind == "ridge":
            inputs = self.window * len(self.features)
            return {"coef": (self.horizon, inputs), "intercept": (self.horizon,), "alpha": ()}
        return {}

    def check_valid(self, where: str, servable: bool = True) -> None:
        """Raise :class:`CheckpointError` (naming ``where``) unless this can forecast, and
        with ``servable`` unless the agent's readings fit it."""
        if self.kind not in CHECKPOINT_KINDS:
            raise CheckpointError(
                f"{where} has an unknown model kind {self.kind!r} "
                f"(one of {', '.join(CHECKPOINT_KINDS)})"
            )
        if self.normalisation not in NORMALISATIONS:
            raise CheckpointError(
                f"{where} has an unknown normalisation {self.normalisation!r} "
                f"(one of {', '.join(NORMALISATIONS)})"
            )
        if not 0 <= self.target_index < len(self.features):
            raise CheckpointError(f"{where} has target_index {self.target_index} out of range")
        if self.window < 1 or self.horizon < 1:
            raise CheckpointError(
                f"{where} has window {self.window} and horizon {self.horizon}; "
                "both must be at least 1"
            )
        if self.kind in NETWORK_KINDS and (self.hidden < 1 or self.layers < 1):
            raise CheckpointError(
                f"{where} has hidden {self.hidden} and layers {self.layers}; a {self.kind} "
                "needs at least 1 of each"
            )
        if servable:
            check_servable(self.features, self.target_index, where)
        if self.normalisation == "global" and not _valid_scaler(self.scaler, len(self.features)):
            raise CheckpointError(
                f"{where} has an invalid scaler: a globally normalised model needs a finite "
                f"minimum and a positive span for each of its {len(self.features)} features"
            )
        expected = self.expected_shapes()
        for name, shape in expected.items():
            value = self.weights.get(name)
            if value is None:
                raise CheckpointError(
                    f"{where} has no weight {name!r}; a {self.kind} of this size needs "
                    f"{sorted(expected)}"
                )
            if tuple(value.shape) != shape:
                raise CheckpointError(
                    f"{where} has weight {name!r} of shape {tuple(value.shape)}, but a "
                    f"{self.kind} of {len(self.features)} features, hidden {self.hidden}, "
                    f"layers {self.layers}, window {self.window} and horizon {self.horizon} "
                    f"needs {shape}"
                )
            if not np.all(np.isfinite(value)):
                raise CheckpointError(f"{where} has non-finite values in weight {name!r}")

    def facts(self) -> dict[str, Any]:
        """The JSON-able description of the model, without its arrays."""
        return {
            "kind": self.kind,
            "version": self.version,
            "features": list(self.features),
            "window": self.window,
            "horizon": self.horizon,
            "target_index": self.target_index,
            "normalisation": self.normalisation,
            "despike": self.despike,
            "hidden": self.hidden,
            "layers": self.layers,
            "scaler": None if self.scaler is None else self.scaler.to_lists(),
        }

    def save(self, path: Path, onnx_graph: bool = True) -> ServingPaths:
        """Write NAME.json, NAME.npz and, for a network with ``onnx_graph``, NAME.onnx.

        Building the graph needs the ``onnx`` package (forewarn's ``train`` extra installs
        it); without it the serving file still serves with the numpy
        runtime, and a warning says how to add the graph.
        """
        paths = ServingPaths.beside(path)
        paths.json.parent.mkdir(parents=True, exist_ok=True)
        savez: Any = np.savez  # numpy's stub types the keyword arrays as its own options
        _atomic_write(paths.npz, lambda handle: savez(handle, **self.weights))
        document: dict[str, Any] = {
            "format": SERVING_FORMAT,
            "format_version": SERVING_FORMAT_VERSION,
            **self.facts(),
            "weights": {"file": paths.npz.name, "sha256": sha256_of(paths.npz)},
            "onnx": None,
            "source": self.source,
            "report": self.report,
        }
        if self.kind in NETWORK_KINDS and onnx_graph:
            graph = self.onnx_graph
            if graph is None and importlib.util.find_spec("onnx") is not None:
                from models.onnx_graph import build_graph

                graph = build_graph(self)
            if graph is None:
                logger.warning(
                    "the onnx package is not installed: %s has no ONNX graph and serves with "
                    "the numpy or torch runtime; `pip install 'forewarn[train]'` and run "
                    "`forewarn export` again to add it",
                    paths.json,
                )
            else:
                self.onnx_graph = graph
                _atomic_write(paths.onnx, lambda handle: handle.write(graph))
                document["onnx"] = {"file": paths.onnx.name, "sha256": sha256_of(paths.onnx)}
        if document["onnx"] is None and paths.onnx.exists():
            paths.onnx.unlink()  # a graph of an earlier model must not look like this one's
        text = json.dumps(document, indent=1, default=_json_default)
        _atomic_write(paths.json, lambda handle: handle.write(text.encode()))
        self.path = paths.json
        return paths

    @classmethod
    def load(cls, path: Path, servable: bool = True, with_graph: bool = False) -> ServingModel:
        """Read and check a serving file (NAME.json and the files it names)."""
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as error:
            raise CheckpointError(f"serving file {path} does not exist") from error
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise CheckpointError(f"serving file {path} cannot be read as JSON: {error}") from error
        if not isinstance(document, dict) or document.get("format") != SERVING_FORMAT:
            raise CheckpointError(
                f'{path} is not a forewarn serving file (no "format": "{SERVING_FORMAT}"); '
                "write one with `forewarn export CHECKPOINT.pt`"
            )
        if document.get("format_version") != SERVING_FORMAT_VERSION:
            raise CheckpointError(
                f"serving file {path} has format_version {document.get('format_version')!r}; "
                f"this forewarn reads {SERVING_FORMAT_VERSION}: export it again with this "
                "forewarn's `forewarn export`"
            )
        try:
            weights_file = path.with_name(str(document["weights"]["file"]))
            scaler = document.get("scaler")
            model = cls(
                kind=str(document["kind"]),
                version=str(document["version"]),
                features=tuple(str(name) for name in document["features"]),
                window=int(document["window"]),
                horizon=int(document["horizon"]),
                target_index=int(document["target_index"]),
                normalisation=str(document["normalisation"]),
                despike=bool(document["despike"]),
                hidden=int(document["hidden"]),
                layers=int(document["layers"]),
                scaler=None if scaler is None else FeatureScaler.from_lists(scaler),
                report=dict(document.get("report") or {}),
                source=document.get("source"),
                path=path,
            )
            weights_sha = str(document["weights"]["sha256"])
            onnx_entry = document.get("onnx")
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(
                f"serving file {path} is missing or has a bad field: {error!r}; write it again "
                "with `forewarn export CHECKPOINT.pt`"
            ) from error
        _check_digest(weights_file, weights_sha, path)
        try:
            with np.load(weights_file, allow_pickle=False) as arrays:
                model.weights = {name: arrays[name] for name in arrays.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise CheckpointError(
                f"weights {weights_file} of serving file {path} cannot be read: {error}"
            ) from error
        model.check_valid(f"serving file {path}", servable)
        if onnx_entry is not None:
            try:
                graph_file = path.with_name(str(onnx_entry["file"]))
                graph_sha = str(onnx_entry["sha256"])
            except (KeyError, TypeError) as error:
                raise CheckpointError(
                    f'serving file {path} has a bad "onnx" entry: {error!r}'
                ) from error
            model.onnx_file, model.onnx_sha256 = graph_file, graph_sha
            if with_graph:
                model.graph()
        return model

    def graph(self) -> bytes:
        """The ONNX graph's bytes (read and checked against its digest on first use)."""
        if self.onnx_graph is None:
            if self.onnx_file is None or self.onnx_sha256 is None:
                raise CheckpointError(
                    f"serving file {self.path} has no ONNX graph, which the onnx runtime "
                    "serves: run `forewarn export` on its checkpoint with the onnx package "
                    "installed, or set FOREWARN_MODEL__RUNTIME=numpy"
                )
            _check_digest(self.onnx_file, self.onnx_sha256, self.path or self.onnx_file)
            self.onnx_graph = self.onnx_file.read_bytes()
        return self.onnx_graph


def check_servable(features: tuple[str, ...], target_index: int, where: str) -> None:
    """Raise :class:`CheckpointError` unless the agent's readings fit a model.

    A model of fewer features (a machine that reports only some) is servable when they are
    forewarn's names, each once, temperature first.
    """
    if not servable_features(features):
        raise CheckpointError(
            f"{where} expects features {list(features)}, but readings carry "
            f"some of {list(FEATURES)}, each once, temperature_c first (map your fields to "
            "these names with FOREWARN_MAPPING__FIELDS)"
        )
    if target_index != FEATURES.index("temperature_c"):
        raise CheckpointError(f"{where} forecasts {features[target_index]!r}, not the temperature")


def _valid_scaler(scaler: FeatureScaler | None, features: int) -> bool:
    return (
        scaler is not None
        and scaler.minimum.shape == (features,)
        and scaler.span.shape == (features,)
        and bool(np.all(np.isfinite(scaler.minimum)))
        and bool(np.all(np.isfinite(scaler.span) & (scaler.span > 0)))
    )


def _check_digest(path: Path, expected: str, serving: Path) -> None:
    try:
        actual = sha256_of(path)
    except OSError as error:
        raise CheckpointError(
            f"serving file {serving} names {path.name}, which cannot be read "
            f"({error.strerror or error}); keep the .json, .npz and .onnx files together"
        ) from error
    if actual != expected:
        raise CheckpointError(
            f"{path} is not the file serving file {serving} was written with (SHA-256 "
            f"{actual[:12]}…, expected {expected[:12]}…); export the checkpoint again with "
            "`forewarn export`"
        )


def _atomic_write(path: Path, write: Any) -> None:
    """Write through a temporary file and rename it, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        write(handle)
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# ---------------------------------------------------------------- choosing a runtime


def cuda_possible() -> bool:
    """Whether a CUDA device may be usable, decided without importing torch when it cannot.

    Only where torch is installed and an NVIDIA driver is loaded (``/proc/driver/nvidia``) is
    torch imported to ask; elsewhere the answer is no, and a CPU gateway never loads torch to
    learn it has no GPU.
    """
    if not torch_installed() or not Path("/proc/driver/nvidia/version").exists():
        return False
    import torch

    return bool(torch.cuda.is_available())


class LeanForecaster:
    """What the torch-free runtimes share: the served model's facts, on the CPU.

    The agent reads kind, version, features, window and horizon off any forecaster; the lean
    runtimes take them from the serving file rather than from a checkpoint.
    """

    def __init__(self, model: ServingModel, threads: int = 0, chunk_size: int = 1000) -> None:
        self.model = model
        self.kind = model.kind
        self.version = model.version
        self.features = model.features
        self.window = model.window
        self.horizon = model.horizon
        self.device = "cpu"
        self.threads = threads or default_threads()
        self.chunk_size = max(1, chunk_size)
        self.report = dict(model.report)


AUTO_CPU_ORDER: tuple[Runtime, ...] = ("torch", "onnx", "numpy")
"""``auto`` on a CPU takes the first of these it can use (docs/runtimes.md): torch where it is
installed (the fastest measured on one thread, and the path the alert tests and benchmarks
were built on), else onnx (onnxruntime and a graph in the serving file), else numpy (any
serving file). A gateway installed without torch therefore serves on onnx."""


@dataclass(frozen=True)
class Choice:
    """The runtime chosen for a model, the file to read, and why (for the log)."""

    runtime: Runtime
    path: Path
    reason: str


def choose_runtime(model: Any) -> Choice:
    """The runtime and file that ``settings.model`` leads to (see docs/runtimes.md).

    * ``torch``: a ``.pt`` checkpoint (unset: the shipped one) or a serving file, on
      ``model.device``;
    * ``onnx`` / ``numpy``: a serving file, or a ``.pt`` whose serving file was written beside
      it from that very checkpoint (its SHA-256 recorded); always on the CPU;
    * ``auto``: torch when CUDA is usable (``device`` auto or cuda); on a CPU the first of
      :data:`AUTO_CPU_ORDER` that can serve the file: torch where installed, else onnx, else
      numpy.
    """
    requested: Runtime = model.runtime
    given: Path | None = model.checkpoint
    device: str = model.device
    if requested in ("onnx", "numpy") and device == "cuda":
        raise CheckpointError(
            f"FOREWARN_MODEL__DEVICE=cuda but FOREWARN_MODEL__RUNTIME={requested}, which runs "
            "on the CPU only; set FOREWARN_MODEL__RUNTIME=torch (or auto) for a GPU"
        )
    if requested == "torch" or (
        requested == "auto" and device in ("auto", "cuda") and cuda_possible()
    ):
        _need_torch(requested, given)
        return Choice("torch", given or default_checkpoint_path(), "torch asked for or on CUDA")
    if device == "cuda":  # auto runtime, cuda asked for, none here: torch says so clearly
        _need_torch("auto", given)
        return Choice("torch", given or default_checkpoint_path(), "device cuda asked for")
    if requested == "auto" and torch_installed():
        return Choice("torch", given or default_checkpoint_path(), "auto: torch is installed")
    serving = _serving_file(given)
    if requested in ("onnx", "numpy"):
        if serving is None:
            assert given is not None
            raise CheckpointError(_export_hint(given, requested))
        if requested == "onnx" and not onnxruntime_installed():
            raise CheckpointError(
                "FOREWARN_MODEL__RUNTIME=onnx but onnxruntime is not installed; "
                "`pip install onnxruntime`, or set FOREWARN_MODEL__RUNTIME=numpy"
            )
        return Choice(requested, serving, f"FOREWARN_MODEL__RUNTIME={requested}")
    if serving is None:
        assert given is not None
        if torch_installed():
            return Choice(
                "torch",
                given,
                f"auto: {given} has no serving file beside it (`forewarn export {given}` "
                "writes one for the lean runtimes)",
            )
        raise CheckpointError(_export_hint(given, "auto"))
    if onnxruntime_installed() and _has_graph(serving):
        return Choice("onnx", serving, "auto: torch is not installed")
    return Choice("numpy", serving, "auto: onnxruntime or the file's ONNX graph is missing")


def _need_torch(requested: str, given: Path | None) -> None:
    if not torch_installed():
        raise CheckpointError(
            f"FOREWARN_MODEL__RUNTIME={requested} needs torch, which is not installed: install "
            "forewarn with its train extra (`pip install 'forewarn[train]'`), or serve on the "
            "CPU with FOREWARN_MODEL__RUNTIME=onnx or numpy"
            + (
                ""
                if given is None or given.suffix == ".json"
                else f" after `forewarn export {given}`"
            )
        )


def _export_hint(given: Path, runtime: str) -> str:
    why = "" if torch_installed() else " (torch is not installed here)"
    if runtime == "auto":
        runtime = "onnx or numpy"
    return (
        f"checkpoint {given} is a torch checkpoint with no serving file beside it written from "
        f"it{why}; the {runtime} runtime serves a serving file: run `forewarn export {given}` "
        f"(where torch is installed) and set FOREWARN_MODEL__CHECKPOINT="
        f"{ServingPaths.beside(given).json}"
    )


def _serving_file(given: Path | None) -> Path | None:
    """The serving file to read for ``model.checkpoint``, or None when there is none.

    A ``.pt``'s serving file counts only if it was exported from that very checkpoint: one
    left beside a retrained checkpoint is stale and must not be served in its place.
    """
    if given is None:
        return default_serving_path()
    if given.suffix != ".pt":
        return given  # a serving file (or something to be refused as one, with a message)
    beside = ServingPaths.beside(given).json
    if not beside.exists():
        return None
    try:
        source = json.loads(beside.read_text(encoding="utf-8")).get("source") or {}
        fresh = given.exists() and source.get("sha256") == sha256_of(given)
    except (OSError, ValueError, AttributeError):
        fresh = False
    if not fresh:
        logger.warning(
            "%s was not exported from %s as it is now; ignoring it (run `forewarn export %s`)",
            beside,
            given,
            given,
        )
        return None
    return beside


def _has_graph(serving: Path) -> bool:
    try:
        return bool(json.loads(serving.read_text(encoding="utf-8")).get("onnx"))
    except (OSError, ValueError, AttributeError):
        return False  # the numpy runtime's loader reports what is wrong with the file


def forecaster_from_settings(model: Any) -> Forecaster:
    """The forecaster that ``settings.model`` (any kind of ``config.model.ModelSettings``)
    asks for, on the runtime :func:`choose_runtime` picks. A checkpoint kind must match the
    file's, so that a configuration never silently serves another model than it names.

    The baselines are numpy code: persistence and linear extrapolation need no file, Ridge
    reads its two arrays; none of them imports torch unless handed a ``.pt`` without a serving
    file beside it (torch then reads the checkpoint).
    """
    from models.baselines import LinearExtrapolationForecaster, PersistenceForecaster

    if model.kind == "persistence":
        return PersistenceForecaster(horizon=model.horizon, chunk_size=model.chunk_size)
    if model.kind == "linear_extrapolation":
        return LinearExtrapolationForecaster(horizon=model.horizon, chunk_size=model.chunk_size)
    choice = choose_runtime(model)
    forecaster: Forecaster
    if choice.runtime == "torch":
        from models.checkpoint import torch_forecaster_from_settings

        forecaster = torch_forecaster_from_settings(model, choice.path)
    else:
        served = ServingModel.load(choice.path)
        _check_kind(model, served.kind, choice.path)
        forecaster = serving_forecaster(served, choice.runtime, model.threads, model.chunk_size)
    if forecaster.kind in NETWORK_KINDS:
        logger.info(
            "serving %s with the %s runtime (%s)", forecaster.version, choice.runtime, choice.reason
        )
    return forecaster


def _check_kind(model: Any, kind: str, path: Path) -> None:
    if kind != model.kind:
        where = "the shipped checkpoint" if model.checkpoint is None else f"checkpoint {path}"
        raise CheckpointError(
            f"FOREWARN_MODEL__KIND={model.kind} but {where} holds a {kind}; train one "
            f"with `forewarn train --kind {model.kind} --output PATH` and set "
            "FOREWARN_MODEL__CHECKPOINT=PATH"
        )


def serving_forecaster(
    model: ServingModel, runtime: Runtime, threads: int = 0, chunk_size: int = 1000
) -> Forecaster:
    """A torch-free forecaster of a serving file: a baseline, or a network on ``runtime``
    (``numpy`` or ``onnx``)."""
    if model.kind == "ridge":
        from models.baselines import ridge_from_serving

        return ridge_from_serving(model, chunk_size=chunk_size)
    if runtime == "onnx":
        from models.onnx_runtime import OnnxForecaster

        return OnnxForecaster(model, threads=threads, chunk_size=chunk_size)
    if runtime == "numpy":
        from models.numpy_runtime import NumpyForecaster

        return NumpyForecaster(model, threads=threads, chunk_size=chunk_size)
    raise ValueError(f"runtime must be onnx or numpy here, not {runtime!r}")
