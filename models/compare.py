"""The seed's comparison table, measured: every network kind beside the baselines.

The seed notebook closes with a qualitative table (parameters / speed / long-term memory / use:
"simple RNN low / fast / poor", "LSTM high / slow / excellent", ...). This module measures each
column on forewarn's own models, so the table in docs/model.md is a measurement, not a guess:

* parameters: the trained weights' count;
* windows per second at batch 1,000 with each runtime that can serve the kind (torch, onnx,
  numpy for a network; a baseline is numpy only), on the machine it runs on;
* seed-split RMSE (next step) and held-out-fleet RMSE over the whole horizon
  (:mod:`models.evaluate`);
* alert quality, from a function the caller passes in: the alert bench streams a fleet through
  the agent, which this layer may not import (``forewarn evaluate --compare`` passes it);
* long-term memory as the seed demonstrates it (:func:`gradient_ratio`).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from models.base import NETWORK_KINDS, Forecaster
from models.baselines import (
    LinearExtrapolationForecaster,
    PersistenceForecaster,
    RidgeForecaster,
)
from models.checkpoint import TorchForecaster, load_forecaster
from models.data import make_windows
from models.evaluate import FleetSpec, fleet_series, horizon_errors, seed_split_data
from models.serving import DEFAULT_CHECKPOINT_NAME, CheckpointError
from models.train import errors_c
from models.zoo import RecurrentForecaster

BASELINE_ROWS: tuple[str, ...] = ("persistence", "linear_extrapolation", "ridge")
ROWS: tuple[str, ...] = (*NETWORK_KINDS, *BASELINE_ROWS)
SHIPPED_DIR = "shipped"
MEMORY_LENGTHS: tuple[int, ...] = (20, 50, 100)
MEMORY_WINDOWS = 256
"""Simulated windows per length the gradient ratio is averaged over."""
BATCH = 1000

AlertFn = Callable[[Forecaster], Mapping[str, Any]]
"""Alert quality of a forecaster: at least ``recall``, ``median_lead_ticks`` and
``false_warnings_per_10k``."""


def shipped_path(kind: str) -> Path:
    """Where ``make train`` puts the shipped model of ``kind``: the default checkpoint for the
    LSTM (the one the agent serves), ``models/shipped/KIND.pt`` for every other kind."""
    if kind not in (*NETWORK_KINDS, "ridge"):
        raise ValueError(f"no model of kind {kind!r} ships; kinds: {', '.join(ROWS)}")
    name = DEFAULT_CHECKPOINT_NAME if kind == "lstm" else f"{SHIPPED_DIR}/{kind}.pt"
    return Path(str(resources.files("models") / name))


def parse_checkpoint_overrides(values: list[str]) -> dict[str, Path]:
    """``KIND=PATH`` arguments as a mapping, refusing an unknown kind or a missing ``=``."""
    out: dict[str, Path] = {}
    for value in values:
        kind, sep, path = value.partition("=")
        if not sep or not path:
            raise ValueError(
                f"--checkpoint {value!r} must be KIND=PATH with --compare (e.g. gru=models/gru.pt)"
            )
        if kind not in (*NETWORK_KINDS, "ridge"):
            raise ValueError(
                f"--checkpoint {value!r}: kind {kind!r} is not one of "
                f"{', '.join((*NETWORK_KINDS, 'ridge'))}"
            )
        out[kind] = Path(path)
    return out


def load_rows(
    overrides: Mapping[str, Path] | None = None,
    threads: int = 1,
    kinds: list[str] | None = None,
) -> dict[str, Forecaster]:
    """Each row's forecaster, in the table's order: the shipped model of each kind unless
    ``overrides`` names another file, and the baselines (the fixed two at the shipped LSTM's
    window and horizon). ``kinds`` picks rows (default: all)."""
    overrides = overrides or {}
    chosen = list(ROWS) if kinds is None else kinds
    for kind in chosen:
        if kind not in ROWS:
            raise ValueError(f"no row {kind!r}; rows: {', '.join(ROWS)}")
    loaded: dict[str, Forecaster] = {}
    for kind in (*NETWORK_KINDS, "ridge"):
        if kind not in chosen:
            continue
        path = overrides.get(kind, shipped_path(kind))
        if not path.exists():
            raise CheckpointError(
                f"no {kind} model at {path}: run `make train` to train every shipped kind, or "
                f"pass --checkpoint {kind}=PATH"
            )
        forecaster = load_forecaster(path, device="cpu", threads=threads)
        if forecaster.kind != kind:
            raise CheckpointError(
                f"{path} holds a {forecaster.kind}, not a {kind}: pass --checkpoint "
                f"{forecaster.kind}={path}"
            )
        loaded[kind] = forecaster
    shape = load_forecaster(
        overrides.get("lstm", shipped_path("lstm")), device="cpu", threads=threads
    )
    fixed: dict[str, Forecaster] = {
        "persistence": PersistenceForecaster(shape.horizon, shape.window, shape.features),
        "linear_extrapolation": LinearExtrapolationForecaster(
            shape.horizon, shape.window, shape.features
        ),
    }
    return {
        kind: loaded[kind] if kind in loaded else fixed[kind] for kind in ROWS if kind in chosen
    }


def parameters(forecaster: Forecaster) -> int:
    """Trained numbers in the model: a network's weights, Ridge's coefficients and intercepts,
    none for the fixed baselines."""
    if isinstance(forecaster, TorchForecaster):
        return sum(p.numel() for p in forecaster.module.parameters())
    if isinstance(forecaster, RidgeForecaster) and forecaster.coef is not None:
        intercepts = 0 if forecaster.intercept is None else forecaster.intercept.size
        return int(forecaster.coef.size + intercepts)
    return 0


def runtimes(forecaster: Forecaster) -> dict[str, Forecaster]:
    """Each runtime that can serve ``forecaster``, built from the same weights: torch, then
    ONNX Runtime on the exported graph and the numpy forward pass (the serving file made in
    memory); a baseline computes in numpy whatever ``model.runtime`` says."""
    if not isinstance(forecaster, TorchForecaster):
        return {"numpy": forecaster}
    import importlib.util

    from models.numpy_runtime import NumpyForecaster

    serving = forecaster.checkpoint.to_serving()
    out: dict[str, Forecaster] = {"torch": forecaster}
    if importlib.util.find_spec("onnx") and importlib.util.find_spec("onnxruntime"):
        from models.onnx_graph import build_graph
        from models.onnx_runtime import OnnxForecaster

        serving.onnx_graph = build_graph(serving)
        out["onnx"] = OnnxForecaster(serving, threads=forecaster.threads)
    out["numpy"] = NumpyForecaster(serving, threads=forecaster.threads)
    return out


def simulated_windows(length: int, count: int, spec: FleetSpec | None = None) -> NDArray[Any]:
    """``count`` windows of ``length`` readings from the held-out simulated fleet, drawn
    evenly over its machines and time (healthy and overheating machines alike)."""
    spec = spec or FleetSpec()
    _, series = fleet_series(spec)
    if length >= series.shape[1]:
        raise ValueError(f"a window of {length} does not fit the fleet's {series.shape[1]} ticks")
    windows, _ = make_windows(series, length, 1, stride=1)
    picks = np.linspace(0, len(windows) - 1, count).round().astype(int)
    return np.asarray(windows[picks], dtype=np.float32)


def throughput(
    forecaster: Forecaster, windows: NDArray[np.float32], seconds: float
) -> dict[str, float]:
    """Windows per second of each runtime (the median repeat), the runtimes timed in turns so
    that a neighbour's burst of load slows them alike."""
    served = runtimes(forecaster)
    for runtime in served.values():
        runtime.forecast(windows)  # warm-up: first-call allocations, graph optimisation
    times: dict[str, list[float]] = {name: [] for name in served}
    deadline = time.perf_counter() + seconds * len(served)
    while time.perf_counter() < deadline or min(len(t) for t in times.values()) < 3:
        for name, runtime in served.items():
            started = time.perf_counter()
            runtime.forecast(windows)
            times[name].append(time.perf_counter() - started)
    return {name: round(len(windows) / statistics.median(t), 1) for name, t in times.items()}


def gradient_ratios(
    readout: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor
) -> NDArray[np.float64]:
    """Per window, |∂y/∂x₁| / |∂y/∂x_T|: how much the output ``readout`` makes of each window
    still depends on its first step, relative to its last one (norms over the features).

    This is the seed's vanishing-gradient demonstration made on a real network: a plain tanh
    recurrence multiplies the gradient by its recurrent weight at every step back, so the ratio
    shrinks geometrically with the window's length; a gated cell can carry it. ``readout`` maps
    (batch, steps, features) to one output per window; windows must not interact in it.
    """
    x = inputs.detach().clone().requires_grad_(True)
    output = readout(x)
    if output.shape != (x.shape[0],):
        raise ValueError(f"readout must give one output per window, got shape {output.shape}")
    (grad,) = torch.autograd.grad(output.sum(), x)
    norms = grad.norm(dim=2).double()
    return (norms[:, 0] / norms[:, -1]).cpu().numpy()


def recurrent_readout(module: RecurrentForecaster) -> Callable[[torch.Tensor], torch.Tensor]:
    """The network's next-step output from its recurrent state alone, in model space.

    The forecaster also adds the window's last reading and, with window normalisation, a
    linear map of the window (fixed at 20 readings): paths that do not pass through the
    recurrence, so they say nothing of its memory and are left out. What remains is the head
    reading the state that has seen the whole window, which accepts any window length.
    """

    def readout(inputs: torch.Tensor) -> torch.Tensor:
        outputs, _ = module.rnn(inputs)
        if module.bidirectional:
            hidden = module.hidden
            read = torch.cat([outputs[:, -1, :hidden], outputs[:, 0, hidden:]], dim=1)
        else:
            read = outputs[:, -1, :]
        return module.head(read)[:, 0]

    return readout


def memory(
    forecaster: Forecaster,
    lengths: tuple[int, ...] = MEMORY_LENGTHS,
    count: int = MEMORY_WINDOWS,
    spec: FleetSpec | None = None,
) -> dict[str, dict[str, float] | None]:
    """The gradient ratio's mean and median over ``count`` simulated windows of each length,
    through the trained weights (in float64, so that a ratio far below float32's range is
    still told apart from zero). None for a baseline: it has no recurrent state, and its
    window is fixed."""
    if not isinstance(forecaster, TorchForecaster):
        return dict.fromkeys(map(str, lengths))
    module = copy.deepcopy(forecaster.module).cpu().double()
    readout = recurrent_readout(module)
    out: dict[str, dict[str, float] | None] = {}
    for length in lengths:
        windows = torch.from_numpy(simulated_windows(length, count, spec)).double()
        with torch.no_grad():
            inputs, _, _ = module.normalise(windows)
        ratios = gradient_ratios(readout, inputs)
        out[str(length)] = {
            "mean": float(np.mean(ratios)),
            "median": float(np.median(ratios)),
        }
    return out


def compare(
    rows: Mapping[str, Forecaster],
    alerts: AlertFn | None = None,
    seconds: float = 1.0,
    batch: int = BATCH,
    spec: FleetSpec | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """One entry per row: the measured columns of the seed's table (see the module's doc).

    ``gradient_ratio`` holds each length's mean; ``gradient_ratio_median`` its median.
    """
    spec = spec or FleetSpec()
    _, series = fleet_series(spec)
    timing_windows = simulated_windows(20, batch, spec)
    seed = seed_split_data()
    seed_windows = seed["x_test"].astype(np.float32)
    kinds: dict[str, Any] = {}
    for name, forecaster in rows.items():
        progress(f"measuring {name}")
        fleet = horizon_errors(forecaster, series, forecaster.horizon)
        row: dict[str, Any] = {
            "version": forecaster.version,
            "parameters": parameters(forecaster),
            "windows_per_s": throughput(
                forecaster, timing_windows[:, -forecaster.window :], seconds
            ),
            "seed_rmse_c": round(
                errors_c(forecaster.forecast(seed_windows)[:, 0], seed["y_test"])["rmse_c"], 4
            ),
            "fleet_rmse_c": round(fleet["rmse_c"], 4),
            "fleet_next_step_rmse_c": round(fleet["next_step"]["rmse_c"], 4),
        }
        scores = dict(alerts(forecaster)) if alerts is not None else {}
        row["recall"] = scores.pop("recall", None)
        row["median_lead_ticks"] = scores.pop("median_lead_ticks", None)
        row["false_warnings_per_10k"] = scores.pop("false_warnings_per_10k", None)
        row.update(scores)
        ratios = memory(forecaster, spec=spec)
        row["gradient_ratio"] = {k: None if v is None else v["mean"] for k, v in ratios.items()}
        row["gradient_ratio_median"] = {
            k: None if v is None else v["median"] for k, v in ratios.items()
        }
        kinds[name] = row
    return {"kinds": kinds}


def forward_flops(
    kind: str, features: int, hidden: int, layers: int, window: int, horizon: int
) -> int:
    """Floating-point operations of one window's forward pass, counting the matrix products
    only (a multiply and an add each): what a runtime's windows/s is set against the machine's
    matrix-multiply peak with. The element-wise gate arithmetic and the normalisation are left
    out, so the share this gives is a lower bound of the arithmetic done."""
    from models.serving import GATES

    if kind not in GATES:
        raise ValueError(f"kind must be one of {', '.join(GATES)}, not {kind!r}")
    directions = 2 if kind == "bilstm" else 1
    flops = 0
    for layer in range(layers):
        inputs = features if layer == 0 else hidden * directions
        flops += directions * window * 2 * GATES[kind] * hidden * (inputs + hidden)
    return flops + 2 * hidden * directions * horizon + 2 * window * horizon
