"""The ``numpy`` runtime: a network's forward pass in float32 numpy, for serving without torch.

It computes what :mod:`models.reference` does, arranged for speed:

* the windows are normalised in float64 (a 1,000-window batch is 80,000 numbers: cheap), so
  that the float32 network sees the same inputs whatever the machine's level;
* each layer's input projections for all steps are one matrix product, laid out time-major so
  that a step's slice is contiguous; only ``h·W_hh`` remains per step;
* σ(x) = (1 + tanh(x/2)) / 2: the rows of the σ gates are halved once at load, so that one
  ``tanh`` over all gates per step replaces an ``exp``, a division and the slicing between them,
  and every operation writes into preallocated buffers;
* batches are cut into chunks that stay in the CPU's cache, and with ``threads`` > 1 the chunks
  run on a pool of threads (numpy releases the interpreter lock inside its loops), with the BLAS
  library's own threads held at one so the two pools do not fight over the cores.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.normalise import (
    ABSOLUTE_FLOOR,
    NOISE_FROM_STEPS,
    RELATIVE_FLOOR,
    SPREAD_FLOOR,
    despike_np,
    network_window_stats_np,
)
from models.serving import LeanForecaster, ServingModel, check_windows

Array = NDArray[np.float32]

DEFAULT_CHUNK = 256
"""Windows per chunk: 256 windows' gates (256 x 4 x 64 float32) stay in a core's L2 cache;
measured on this machine's kind, larger chunks were slower (docs/runtimes.md)."""

_BLAS_LIMIT = threading.Lock()
_blas_limited = False


def _limit_blas_threads() -> None:
    """Hold the BLAS library's thread pool at one thread, once per process.

    Its per-step products are small (chunk x 64 x 256); its threads only contend with the
    runtime's own. threadpoolctl finds the BLAS numpy was built with; without it the library
    keeps its default.
    """
    global _blas_limited
    with _BLAS_LIMIT:
        if _blas_limited:
            return
        _blas_limited = True
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            return
        threadpool_limits(limits=1, user_api="blas")


class _Layer:
    """One direction of one recurrent layer, weights rearranged for :func:`_run_layer`."""

    def __init__(self, model: ServingModel, layer: int, reverse: bool) -> None:
        suffix = f"_l{layer}" + ("_reverse" if reverse else "")
        w_ih = model.array(f"rnn.weight_ih{suffix}")
        w_hh = model.array(f"rnn.weight_hh{suffix}")
        b_ih = model.array(f"rnn.bias_ih{suffix}")
        b_hh = model.array(f"rnn.bias_hh{suffix}")
        hidden = model.hidden
        self.kind = "lstm" if model.kind == "bilstm" else model.kind
        self.reverse = reverse
        self.hidden = hidden
        self.b_hn: Array | None = None
        if self.kind == "lstm":
            # torch's blocks i, f, g, o become i, f, o, g (the σ gates side by side), halved.
            order = [0, 1, 3, 2]
            halve = np.array([0.5, 0.5, 0.5, 1.0])
            blocks = 4
            bias_in = b_ih + b_hh
        elif self.kind == "gru":
            # r, z halved for σ; n keeps its own hidden bias inside r·(W_hn·h + b_hn).
            order = [0, 1, 2]
            halve = np.array([0.5, 0.5, 1.0])
            blocks = 3
            bias_in = b_ih + np.concatenate([b_hh[: 2 * hidden], np.zeros(hidden)])
            self.b_hn = b_hh[2 * hidden :].astype(np.float32)
        else:
            order, halve, blocks, bias_in = [0], np.array([1.0]), 1, b_ih + b_hh
        rows = np.concatenate([np.arange(k * hidden, (k + 1) * hidden) for k in order])
        factor = np.repeat(halve, hidden)[:, None]
        self.w_in = np.ascontiguousarray((w_ih[rows] * factor).T, dtype=np.float32)
        self.w_h = np.ascontiguousarray((w_hh[rows] * factor).T, dtype=np.float32)
        self.b_in = (bias_in[rows] * factor[:, 0]).astype(np.float32)
        self.blocks = blocks


def _run_layer(layer: _Layer, inputs: Array, keep: bool) -> tuple[Array | None, Array]:
    """Run one direction over time-major ``inputs`` (steps, batch, features).

    Returns every step's hidden state (steps, batch, hidden) when ``keep``, and the state after
    the last step read.
    """
    steps, batch, _ = inputs.shape
    hidden = layer.hidden
    projected = (inputs.reshape(steps * batch, -1) @ layer.w_in + layer.b_in).reshape(
        steps, batch, -1
    )
    outputs = np.empty((steps, batch, hidden), dtype=np.float32) if keep else None
    h = np.zeros((batch, hidden), dtype=np.float32)
    gates = np.empty((batch, layer.blocks * hidden), dtype=np.float32)
    scratch = np.empty((batch, hidden), dtype=np.float32)
    c = np.zeros((batch, hidden), dtype=np.float32) if layer.kind == "lstm" else None
    order = range(steps - 1, -1, -1) if layer.reverse else range(steps)
    for t in order:
        np.matmul(h, layer.w_h, out=gates)
        if layer.kind == "lstm":
            assert c is not None
            gates += projected[t]
            np.tanh(gates, out=gates)
            sig = gates[:, : 3 * hidden]
            sig *= 0.5
            sig += 0.5
            c *= gates[:, hidden : 2 * hidden]
            np.multiply(gates[:, :hidden], gates[:, 3 * hidden :], out=scratch)
            c += scratch
            np.tanh(c, out=scratch)
            np.multiply(gates[:, 2 * hidden : 3 * hidden], scratch, out=h)
        elif layer.kind == "gru":
            assert layer.b_hn is not None
            rz = gates[:, : 2 * hidden]
            rz += projected[t][:, : 2 * hidden]
            np.tanh(rz, out=rz)
            rz *= 0.5
            rz += 0.5
            n = gates[:, 2 * hidden :]
            n += layer.b_hn
            n *= rz[:, :hidden]
            n += projected[t][:, 2 * hidden :]
            np.tanh(n, out=n)
            # h = (1 - z)·n + z·h = n + z·(h - n)
            np.subtract(h, n, out=scratch)
            scratch *= rz[:, hidden:]
            np.add(n, scratch, out=h)
        else:
            gates += projected[t]
            np.tanh(gates, out=h)
        if outputs is not None:
            outputs[t] = h
    return outputs, h


def _window_inputs(
    windows: NDArray[Any], target: int
) -> tuple[Array, NDArray[np.float64], NDArray[np.float64]]:
    """Per-window normalisation (:func:`models.normalise.network_window_stats_np`) laid out
    feature-major, so that every reduction runs along contiguous memory: about twice as fast
    as along the window's middle axis, which matters at a tenth of the forward pass's time."""
    x = np.asarray(windows).transpose(0, 2, 1).astype(np.float64)  # (batch, features, steps)
    centre = x.mean(axis=2, keepdims=True)
    steps = np.abs(np.diff(x, axis=2))
    if steps.shape[2]:
        middle = (steps.shape[2] - 1) // 2
        steps.partition(middle, axis=2)
        noise = steps[:, :, middle : middle + 1] / NOISE_FROM_STEPS
    else:
        noise = np.zeros_like(centre)
    x -= centre
    spread = np.sqrt(np.einsum("bft,bft->bf", x, x)[:, :, None] / x.shape[2])
    floor = np.maximum(RELATIVE_FLOOR * np.abs(centre), ABSOLUTE_FLOOR)
    scale = np.maximum(np.maximum(noise, SPREAD_FLOOR * spread), floor)
    x /= scale
    inputs = x.transpose(2, 0, 1).astype(np.float32)  # (steps, batch, features)
    return inputs, centre[:, target], scale[:, target]


class NumpyForecaster(LeanForecaster):
    """Serves a network from a serving file with numpy alone (``model.runtime=numpy``)."""

    runtime = "numpy"

    def __init__(self, model: ServingModel, threads: int = 0, chunk_size: int = 1000) -> None:
        super().__init__(model, threads, min(chunk_size, DEFAULT_CHUNK))
        directions = (False, True) if model.bidirectional else (False,)
        self.layers = [
            [_Layer(model, layer, reverse) for reverse in directions]
            for layer in range(model.layers)
        ]
        self.head_w = np.ascontiguousarray(model.array("head.weight").T, dtype=np.float32)
        self.head_b = model.array("head.bias").astype(np.float32)
        self.skip_w: Array | None = None
        self.skip_b: Array | None = None
        if model.normalisation == "window":
            self.skip_w = np.ascontiguousarray(model.array("skip.weight").T, dtype=np.float32)
            self.skip_b = model.array("skip.bias").astype(np.float32)
        self._pool: ThreadPoolExecutor | None = None
        _limit_blas_threads()

    def warm_up(self) -> None:
        self.forecast(np.zeros((2, self.window, len(self.features)), dtype=np.float32))

    def forecast(self, windows: NDArray[np.float32]) -> NDArray[np.float32]:
        check_windows(windows, self.window, len(self.features))
        out = np.empty((windows.shape[0], self.horizon), dtype=np.float32)
        starts = range(0, windows.shape[0], self.chunk_size)
        if self.threads == 1 or len(starts) < 2:
            for start in starts:
                self._forecast_chunk(windows, out, start)
            return out
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="forewarn-numpy")
        for done in [self._pool.submit(self._forecast_chunk, windows, out, s) for s in starts]:
            done.result()
        return out

    def _forecast_chunk(self, windows: NDArray[Any], out: NDArray[np.float32], start: int) -> None:
        rows = windows[start : start + self.chunk_size]
        inputs, centre, scale = self.normalise(rows)
        out[start : start + len(rows)] = centre + scale * self.forward_normalised(inputs)

    def normalise(self, windows: NDArray[Any]) -> tuple[Array, NDArray[Any], NDArray[Any]]:
        """Model-space inputs, time-major (steps, batch, features), float32; and the target's
        centre and scale (batch, 1), float64."""
        model = self.model
        t = model.target_index
        if model.normalisation == "window" and not model.despike:
            return _window_inputs(windows, t)
        x: NDArray[Any] = np.asarray(windows, dtype=np.float64)
        centre: NDArray[Any]
        scale: NDArray[Any]
        if model.normalisation == "window":
            centre, scale = network_window_stats_np(x)
            x = despike_np(x, scale)
            centre = x.mean(axis=1, keepdims=True)
        else:
            assert model.scaler is not None
            centre = model.scaler.minimum.astype(np.float64).reshape(1, 1, -1)
            scale = model.scaler.span.astype(np.float64).reshape(1, 1, -1)
        inputs = ((x - centre) / scale).transpose(1, 0, 2).astype(np.float32)
        shape = (len(x), 1)
        return (
            inputs,
            np.broadcast_to(centre[:, 0, t : t + 1], shape),
            np.broadcast_to(scale[:, 0, t : t + 1], shape),
        )

    def forward_normalised(self, inputs: Array) -> Array:
        """The forecast in model space (batch, horizon) from time-major model-space inputs."""
        sequence = inputs
        last = len(self.layers) - 1
        finals: list[Array] = []
        for number, directions in enumerate(self.layers):
            keep = number < last
            results = [_run_layer(layer, sequence, keep) for layer in directions]
            if keep:
                kept = [r[0] for r in results if r[0] is not None]
                sequence = kept[0] if len(kept) == 1 else np.concatenate(kept, axis=2)
            else:
                # The last step read: the forward direction's last, the backward one's first.
                finals = [r[1] for r in results]
        read = finals[0] if len(finals) == 1 else np.concatenate(finals, axis=1)
        target = inputs[:, :, self.model.target_index]  # (steps, batch)
        out = read @ self.head_w
        out += self.head_b
        out += target[-1][:, None]
        if self.skip_w is not None and self.skip_b is not None:
            out += target.T @ self.skip_w
            out += self.skip_b
        return out
