"""The networks' forward pass written out by hand in numpy: the reference every runtime matches.

The seed notebook builds a simple RNN from scratch: from a zero state, for each step
``h = tanh(x·W_xh + h·W_hh + b_h)``, and reads ``y = h·W_hy + b_y``. This module does the same
for every kind forewarn trains, one step at a time, in float64, from a model's weights
(:class:`models.serving.ServingModel`, the torch state dict's arrays), including the per-window
normalisation and despiking the torch module applies inside its forward pass. It is written to
be read against torch's documented cell equations, not to be fast: torch, the numpy runtime and
the ONNX graph are each tested against it (tests/unit/test_runtimes.py), so a wrong gate order
or a missing bias in any of them shows up as a difference here.

Cells, with torch's gate order in the stacked weight matrices (W·x means x @ W.T):

* ``rnn`` (Elman): h = tanh(W_ih·x + b_ih + W_hh·h + b_hh)
* ``lstm``: blocks i, f, g, o; c = σ(f)·c + σ(i)·tanh(g); h = σ(o)·tanh(c)
* ``gru``: blocks r, z, n; n = tanh(W_in·x + b_in + σ(r)·(W_hn·h + b_hn)); h = (1-σ(z))·n + σ(z)·h
* ``bilstm``: an LSTM over the window forwards and another backwards, their outputs side by side.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.normalise import despike_np, network_window_stats_np
from models.serving import ServingModel

Array = NDArray[np.float64]


def sigmoid(x: Array) -> Array:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def rnn_cell(x: Array, h: Array, c: Array, w: dict[str, Array]) -> tuple[Array, Array]:
    """The seed's simple RNN step. ``c`` is unused (only the LSTM has a cell state)."""
    h = np.tanh(x @ w["ih"].T + w["b_ih"] + h @ w["hh"].T + w["b_hh"])
    return h, c


def lstm_cell(x: Array, h: Array, c: Array, w: dict[str, Array]) -> tuple[Array, Array]:
    gates = x @ w["ih"].T + w["b_ih"] + h @ w["hh"].T + w["b_hh"]
    i, f, g, o = np.split(gates, 4, axis=1)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h = sigmoid(o) * np.tanh(c)
    return h, c


def gru_cell(x: Array, h: Array, c: Array, w: dict[str, Array]) -> tuple[Array, Array]:
    x_r, x_z, x_n = np.split(x @ w["ih"].T + w["b_ih"], 3, axis=1)
    h_r, h_z, h_n = np.split(h @ w["hh"].T + w["b_hh"], 3, axis=1)
    r = sigmoid(x_r + h_r)
    z = sigmoid(x_z + h_z)
    n = np.tanh(x_n + r * h_n)
    return (1.0 - z) * n + z * h, c


CELLS = {"rnn": rnn_cell, "lstm": lstm_cell, "bilstm": lstm_cell, "gru": gru_cell}


def normalise(
    model: ServingModel, windows: NDArray[np.floating]
) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    """Model-space inputs (batch, window, features), and the target's centre and scale (each
    (batch, 1)) that map a model-space forecast back to degrees."""
    x: NDArray[Any] = np.asarray(windows, dtype=np.float64)
    centre: NDArray[Any]
    scale: NDArray[Any]
    if model.normalisation == "window":
        centre, scale = network_window_stats_np(x)
        if model.despike:
            x = despike_np(x, scale)
            centre = x.mean(axis=1, keepdims=True)
    else:
        assert model.scaler is not None
        centre = model.scaler.minimum.astype(np.float64).reshape(1, 1, -1)
        scale = model.scaler.span.astype(np.float64).reshape(1, 1, -1)
        centre = np.broadcast_to(centre, (len(x), 1, x.shape[2]))
        scale = np.broadcast_to(scale, (len(x), 1, x.shape[2]))
    t = model.target_index
    return (x - centre) / scale, centre[:, 0, t : t + 1], scale[:, 0, t : t + 1]


def layer_weights(model: ServingModel, layer: int, reverse: bool) -> dict[str, Array]:
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    return {
        "ih": model.array(f"rnn.weight_ih{suffix}"),
        "hh": model.array(f"rnn.weight_hh{suffix}"),
        "b_ih": model.array(f"rnn.bias_ih{suffix}"),
        "b_hh": model.array(f"rnn.bias_hh{suffix}"),
    }


def run_direction(
    model: ServingModel, sequence: Array, layer: int, reverse: bool
) -> tuple[Array, Array]:
    """One layer in one direction over ``sequence`` (batch, steps, inputs), from a zero state.

    Returns every step's hidden state (batch, steps, hidden), in the window's order whichever
    way it was read, and the cell state after the last step read.
    """
    cell = CELLS[model.kind]
    weights = layer_weights(model, layer, reverse)
    batch, steps, _ = sequence.shape
    h = np.zeros((batch, model.hidden))
    c = np.zeros((batch, model.hidden))
    outputs = np.empty((batch, steps, model.hidden))
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    for t in order:
        h, c = cell(sequence[:, t], h, c, weights)
        outputs[:, t] = h
    return outputs, c


def forward_normalised(model: ServingModel, inputs: NDArray[np.floating]) -> Array:
    """The forecast in model space from model-space inputs (``forward_normalised`` of
    :class:`models.zoo.RecurrentForecaster`)."""
    sequence = np.asarray(inputs, dtype=np.float64)
    for layer in range(model.layers):
        directions = [run_direction(model, sequence, layer, False)[0]]
        if model.bidirectional:
            directions.append(run_direction(model, sequence, layer, True)[0])
        sequence = np.concatenate(directions, axis=2)
    hidden = model.hidden
    if model.bidirectional:
        # The forward direction's last output and the backward one's first: each has read all.
        read = np.concatenate([sequence[:, -1, :hidden], sequence[:, 0, hidden:]], axis=1)
    else:
        read = sequence[:, -1, :]
    target = np.asarray(inputs, dtype=np.float64)[:, :, model.target_index]
    out = target[:, -1:] + read @ model.array("head.weight").T + model.array("head.bias")
    if model.normalisation == "window":
        out = out + target @ model.array("skip.weight").T + model.array("skip.bias")
    return np.asarray(out)


def forecast(model: ServingModel, windows: NDArray[np.floating]) -> Array:
    """Forecasts in degrees of raw windows (batch, window, features): (batch, horizon)."""
    inputs, centre, scale = normalise(model, windows)
    return np.asarray(centre + scale * forward_normalised(model, inputs))


def forecast_normalised(
    model: ServingModel, windows: NDArray[np.floating]
) -> tuple[Array, Array, Array]:
    """The forecast in model space of raw windows, with the target's centre and scale: the
    units in which runtimes are compared (a difference of 1e-5 there is 1e-5 of the window's
    noise scale, whatever the machine's level)."""
    inputs, centre, scale = normalise(model, windows)
    return forward_normalised(model, inputs), centre, scale
