"""The ``onnx`` runtime: ONNX Runtime on a serving file's graph (:mod:`models.onnx_graph`).

ONNX Runtime's recurrent kernels run the networks faster than torch's on a CPU, at a fraction
of the memory: the session runs on ``model.threads`` intra-op threads (one inter-op thread:
the graph is a chain), and a batch is cut into chunks that stay in the cache, padded to a
multiple of :data:`BATCH_QUANTUM` so that the session sees few shapes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.serving import CheckpointError, LeanForecaster, ServingModel, check_windows

DEFAULT_CHUNK = 256
"""Windows per session run. Measured here (docs/runtimes.md): chunks of 250 ran fastest on 2
threads; 256 keeps them whole batch quanta."""
BATCH_QUANTUM = 128
"""Chunks are padded up to a multiple of this many windows, bounding the shapes the session
plans and caches memory for, as the torch runtime does."""


class OnnxForecaster(LeanForecaster):
    """Serves a network from a serving file's ONNX graph with ONNX Runtime."""

    runtime = "onnx"

    def __init__(self, model: ServingModel, threads: int = 0, chunk_size: int = 1000) -> None:
        import onnxruntime

        super().__init__(model, threads, min(chunk_size, DEFAULT_CHUNK))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        # ONNX Runtime's pool spin-waits for work after each run by default, burning the cores
        # that paho's network thread and the tick's own work need between forecasts.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # warnings about unused initialisers are not news
        try:
            self.session = onnxruntime.InferenceSession(
                model.graph(), options, providers=["CPUExecutionProvider"]
            )
        except CheckpointError:
            raise
        except Exception as error:  # onnxruntime raises its own exception types
            raise CheckpointError(
                f"ONNX Runtime cannot load the graph of serving file {model.path}: {error}; "
                "export it again with `forewarn export`, or set FOREWARN_MODEL__RUNTIME=numpy"
            ) from error
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name

    def warm_up(self) -> None:
        self.forecast(np.zeros((2, self.window, len(self.features)), dtype=np.float32))

    def forecast(self, windows: NDArray[np.float32]) -> NDArray[np.float32]:
        check_windows(windows, self.window, len(self.features))
        rows = windows.shape[0]
        out = np.empty((rows, self.horizon), dtype=np.float32)
        for start in range(0, rows, self.chunk_size):
            chunk = windows[start : start + self.chunk_size]
            count = len(chunk)
            out[start : start + count] = self._run(_padded(chunk))[:count]
        return out

    def _run(self, chunk: NDArray[np.float32]) -> NDArray[Any]:
        result: NDArray[Any] = self.session.run([self._output], {self._input: chunk})[0]
        return result

    def forecast_model_units(self, windows: NDArray[np.float32]) -> NDArray[np.float32]:
        """The graph's forecast before it is mapped back to degrees (for comparisons)."""
        check_windows(windows, self.window, len(self.features))
        result: NDArray[np.float32] = self.session.run(
            ["forecast_model_units"], {self._input: np.ascontiguousarray(windows, np.float32)}
        )[0]
        return result


def _padded(rows: NDArray[Any]) -> NDArray[np.float32]:
    """``rows`` as float32, padded with copies of its last window to a whole batch quantum."""
    size = -(-len(rows) // BATCH_QUANTUM) * BATCH_QUANTUM
    if size == len(rows):
        return np.ascontiguousarray(rows, dtype=np.float32)
    padded = np.empty((size, *rows.shape[1:]), dtype=np.float32)
    padded[: len(rows)] = rows
    padded[len(rows) :] = rows[-1]  # a real window, so normalisation sees nothing odd
    return padded
