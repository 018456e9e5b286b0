"""A network's whole forward pass as an ONNX graph, built from its weights without torch.

The graph is written operator by operator from a :class:`models.serving.ServingModel`, so that
exporting needs the ``onnx`` package but not torch's exporter, and the graph computes exactly
what :mod:`models.reference` does: the per-window normalisation (statistics in float64, the
median of the steps as the lower middle value, despiking), the recurrent layers as ONNX's own
``RNN`` / ``GRU`` / ``LSTM`` operators, the head and the skip path, and the mapping back to
degrees. ONNX Runtime then runs it with its optimised recurrent kernels.

Input ``windows`` (batch, window, features) float32 in sensor units; output ``forecast``
(batch, horizon) float32 in the target's units.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.normalise import (
    ABSOLUTE_FLOOR,
    DESPIKE_SIGMAS,
    NOISE_FROM_STEPS,
    RELATIVE_FLOOR,
    SPREAD_FLOOR,
)
from models.serving import ServingModel

OPSET = 17
INPUT = "windows"
OUTPUT = "forecast"
MODEL_UNITS = "forecast_model_units"
"""A second output: the forecast before it is mapped back to degrees, float32 (batch, horizon),
in which the runtimes are compared with :mod:`models.reference`."""

GATE_ORDER = {"rnn": [0], "gru": [1, 0, 2], "lstm": [0, 3, 1, 2], "bilstm": [0, 3, 1, 2]}
"""torch's gate blocks in ONNX's order: GRU r, z, n -> z, r, h; LSTM i, f, g, o -> i, o, f, c."""


class _Graph:
    """A small builder: named nodes and constants, each name used once."""

    def __init__(self) -> None:
        import onnx

        self.onnx = onnx
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, value: NDArray[Any] | float | list[int], dtype: Any, hint: str = "c") -> str:
        name = self.name(hint)
        array = np.asarray(value, dtype=dtype)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def op(self, kind: str, inputs: list[str], outputs: int = 1, **attrs: Any) -> list[str]:
        names = [self.name(kind.lower()) for _ in range(outputs)]
        self.nodes.append(self.onnx.helper.make_node(kind, inputs, names, **attrs))
        return names

    def one(self, kind: str, *inputs: str, **attrs: Any) -> str:
        return self.op(kind, list(inputs), **attrs)[0]

    def slice(self, data: str, start: int, end: int, axis: int) -> str:
        ints = np.int64
        return self.one(
            "Slice",
            data,
            self.const([start], ints, "start"),
            self.const([end], ints, "end"),
            self.const([axis], ints, "axis"),
        )


def _window_stats(g: _Graph, x: str, steps: int) -> tuple[str, str]:
    """Centre and scale (batch, 1, features) of float64 windows ``x``, as
    :func:`models.normalise.network_window_stats_np` computes them."""
    f64 = np.float64
    centre = g.one("ReduceMean", x, axes=[1], keepdims=1)
    diffs = g.one("Abs", g.one("Sub", g.slice(x, 1, steps, 1), g.slice(x, 0, steps - 1, 1)))
    middle = (steps - 2) // 2  # the lower median of steps - 1 differences
    smallest = g.op("TopK", [diffs, g.const([middle + 1], np.int64, "k")], 2, axis=1, largest=0)
    median = g.slice(smallest[0], middle, middle + 1, 1)
    noise = g.one("Div", median, g.const(NOISE_FROM_STEPS, f64))
    centred = g.one("Sub", x, centre)
    spread = g.one(
        "Sqrt", g.one("ReduceMean", g.one("Mul", centred, centred), axes=[1], keepdims=1)
    )
    floor = g.one(
        "Max",
        g.one("Mul", g.one("Abs", centre), g.const(RELATIVE_FLOOR, f64)),
        g.const(ABSOLUTE_FLOOR, f64),
    )
    scale = g.one(
        "Max", g.one("Max", noise, g.one("Mul", spread, g.const(SPREAD_FLOOR, f64))), floor
    )
    return centre, scale


def _despike(g: _Graph, x: str, scale: str, steps: int) -> str:
    """:func:`models.normalise.despike_np` on float64 windows ``x``."""
    left = g.one(
        "Concat",
        g.slice(x, 1, 2, 1),
        g.slice(x, 0, steps - 2, 1),
        g.slice(x, steps - 3, steps - 2, 1),
        axis=1,
    )
    right = g.one(
        "Concat",
        g.slice(x, 2, 3, 1),
        g.slice(x, 2, steps, 1),
        g.slice(x, steps - 2, steps - 1, 1),
        axis=1,
    )
    median = g.one("Max", g.one("Min", left, x), g.one("Min", g.one("Max", left, x), right))
    limit = g.one("Mul", scale, g.const(DESPIKE_SIGMAS, np.float64))
    spike = g.one("Greater", g.one("Abs", g.one("Sub", x, median)), limit)
    return g.one("Where", spike, median, x)


def _recurrent_weights(
    model: ServingModel, layer: int
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    """ONNX's W, R and B of one layer: (directions, gates·hidden, inputs), (directions,
    gates·hidden, hidden), (directions, 2·gates·hidden), gate blocks in ONNX's order."""
    hidden = model.hidden
    rows = np.concatenate([np.arange(k * hidden, (k + 1) * hidden) for k in GATE_ORDER[model.kind]])
    w, r, b = [], [], []
    for suffix in ("", "_reverse")[: 2 if model.bidirectional else 1]:
        name = f"_l{layer}{suffix}"
        w.append(model.array(f"rnn.weight_ih{name}")[rows])
        r.append(model.array(f"rnn.weight_hh{name}")[rows])
        b.append(
            np.concatenate(
                [model.array(f"rnn.bias_ih{name}")[rows], model.array(f"rnn.bias_hh{name}")[rows]]
            )
        )
    as32 = np.float32
    return np.stack(w).astype(as32), np.stack(r).astype(as32), np.stack(b).astype(as32)


def build_graph(model: ServingModel) -> bytes:
    """The serialised ONNX model of ``model``'s forward pass (a network kind)."""
    import onnx
    from onnx import TensorProto, helper

    g = _Graph()
    steps, features, hidden = model.window, len(model.features), model.hidden
    t = model.target_index
    f32, f64, i64 = np.float32, np.float64, np.int64
    if model.normalisation == "window":
        x = g.one("Cast", INPUT, to=TensorProto.DOUBLE)
        centre, scale = _window_stats(g, x, steps)
        if model.despike and steps >= 3:
            x = _despike(g, x, scale, steps)
            centre = g.one("ReduceMean", x, axes=[1], keepdims=1)
        inputs = g.one("Cast", g.one("Div", g.one("Sub", x, centre), scale), to=TensorProto.FLOAT)
        pick = g.const([t], i64, "target")
        centre_t = g.one("Reshape", g.one("Gather", centre, pick, axis=2), g.const([-1, 1], i64))
        scale_t = g.one("Reshape", g.one("Gather", scale, pick, axis=2), g.const([-1, 1], i64))
    else:
        assert model.scaler is not None
        low = model.scaler.minimum.astype(f32).reshape(1, 1, -1)
        span = model.scaler.span.astype(f32).reshape(1, 1, -1)
        inputs = g.one("Div", g.one("Sub", INPUT, g.const(low, f32)), g.const(span, f32))
        centre_t = g.const(np.array([[low[0, 0, t]]], dtype=f64), f64)
        scale_t = g.const(np.array([[span[0, 0, t]]], dtype=f64), f64)
    sequence = g.one("Transpose", inputs, perm=[1, 0, 2])  # (steps, batch, features)
    operator = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM", "bilstm": "LSTM"}[model.kind]
    attrs: dict[str, Any] = {
        "hidden_size": hidden,
        "direction": "bidirectional" if model.bidirectional else "forward",
    }
    if model.kind == "gru":
        attrs["linear_before_reset"] = 1  # torch's GRU: r·(W_hn·h + b_hn)
    final = ""
    for layer in range(model.layers):
        w, r, b = _recurrent_weights(model, layer)
        y, y_h = g.op(
            operator,
            [sequence, g.const(w, f32, "W"), g.const(r, f32, "R"), g.const(b, f32, "B")],
            2,
            **attrs,
        )
        if layer < model.layers - 1:
            # (steps, directions, batch, hidden) -> (steps, batch, directions·hidden)
            spread = g.one("Transpose", y, perm=[0, 2, 1, 3])
            sequence = g.one("Reshape", spread, g.const([0, 0, -1], i64))
        final = y_h
    # (directions, batch, hidden) -> (batch, directions·hidden): the forward direction's last
    # step and the backward direction's first, as the torch module reads them.
    read = g.one("Reshape", g.one("Transpose", final, perm=[1, 0, 2]), g.const([0, -1], i64))
    target = g.one("Gather", inputs, g.const(t, i64, "target"), axis=2)  # (batch, steps)
    out = g.one(
        "Gemm",
        read,
        g.const(model.array("head.weight"), f32),
        g.const(model.array("head.bias"), f32),
        transB=1,
    )
    out = g.one("Add", out, g.slice(target, steps - 1, steps, 1))
    if model.normalisation == "window":
        skip = g.one(
            "Gemm",
            target,
            g.const(model.array("skip.weight"), f32),
            g.const(model.array("skip.bias"), f32),
            transB=1,
        )
        out = g.one("Add", out, skip)
    g.nodes.append(helper.make_node("Identity", [out], [MODEL_UNITS]))
    degrees = g.one(
        "Add", g.one("Mul", g.one("Cast", out, to=TensorProto.DOUBLE), scale_t), centre_t
    )
    g.nodes.append(helper.make_node("Cast", [degrees], [OUTPUT], to=TensorProto.FLOAT))
    graph = helper.make_graph(
        g.nodes,
        f"forewarn_{model.kind}",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", steps, features])],
        [
            helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", model.horizon]),
            helper.make_tensor_value_info(MODEL_UNITS, TensorProto.FLOAT, ["batch", model.horizon]),
        ],
        g.initializers,
    )
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="forewarn",
        doc_string=f"{model.kind} {model.version}: windows in sensor units -> forecast",
    )
    proto.ir_version = 8  # what ONNX Runtime releases of the last years all read
    onnx.checker.check_model(proto)
    return bytes(proto.SerializeToString())
