"""Recurrent forecasting networks: the seed's simple RNN, its LSTM, GRU and bidirectional LSTM.

Every network takes windows of raw readings and returns temperatures in the same units; the
normalisation is part of the network (see :mod:`models.normalise`), so the serving wrapper, the
training loop and an exported graph all see the same function.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from models.normalise import NORMALISATIONS, despike_torch, window_stats_torch

RNN_CLASSES: dict[str, type[nn.RNN] | type[nn.LSTM] | type[nn.GRU]] = {
    "rnn": nn.RNN,
    "lstm": nn.LSTM,
    "gru": nn.GRU,
    "bilstm": nn.LSTM,
}
"""Network kinds and their cells. ``rnn`` is the seed's simple (Elman) cell,
h = tanh(W_ih·x + b_ih + W_hh·h + b_hh), without gates; ``bilstm`` runs its LSTM in both
directions."""


class RecurrentForecaster(nn.Module):
    """A recurrent network over the window, then a linear head: the next ``horizon`` values.

    The head forecasts offsets from the last observed target value. Predicting the change rather
    than the level lets the network follow a rising machine past the hottest temperature it saw
    in training, where a bounded tanh state would otherwise flatten out. With ``global``
    normalisation and horizon 1 this is the seed's architecture plus that skip.

    With ``window`` normalisation every window is centred and scaled by its own per-feature mean
    and spread before the network sees it, and the forecast is mapped back with the target's:
    the network then forecasts a machine at any level and range as it would one of the training
    fleet. A linear path from the normalised target column to the head adds what an
    autoregression would forecast, so the recurrent part only has to learn the non-linear rest
    (the cycle's curvature, spikes to ignore).

    A bidirectional network reads the forward direction's last output and the backward
    direction's first one: the two that have seen the whole window.
    """

    minimum: torch.Tensor
    span: torch.Tensor

    def __init__(
        self,
        n_features: int = 4,
        hidden: int = 64,
        layers: int = 2,
        dropout: float = 0.2,
        horizon: int = 1,
        cell: str = "lstm",
        target_index: int = 0,
        normalisation: str = "global",
        window: int = 20,
        minimum: NDArray[np.floating] | None = None,
        span: NDArray[np.floating] | None = None,
        despike: bool = False,
    ) -> None:
        super().__init__()
        if horizon < 1:
            raise ValueError("horizon must be at least 1")
        rnn_class = RNN_CLASSES.get(cell)
        if rnn_class is None:
            raise ValueError(f"cell must be one of {sorted(RNN_CLASSES)}, not {cell!r}")
        if normalisation not in NORMALISATIONS:
            raise ValueError(
                f"normalisation must be one of {NORMALISATIONS}, not {normalisation!r}"
            )
        if not 0 <= target_index < n_features:
            raise ValueError(f"target_index {target_index} is not one of {n_features} features")
        self.bidirectional = cell == "bilstm"
        self.rnn = rnn_class(
            input_size=n_features,
            hidden_size=hidden,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
            bidirectional=self.bidirectional,
        )
        self.hidden = hidden
        self.head = nn.Linear(hidden * (2 if self.bidirectional else 1), horizon)
        self.skip = nn.Linear(window, horizon) if normalisation == "window" else None
        self.target_index = target_index
        self.normalisation = normalisation
        self.despike = despike and normalisation == "window"
        # The global scaler's arrays travel in the checkpoint's own field, not the state dict.
        low = torch.zeros(n_features) if minimum is None else torch.as_tensor(minimum).float()
        width = torch.ones(n_features) if span is None else torch.as_tensor(span).float()
        self.register_buffer("minimum", low.reshape(1, 1, -1), persistent=False)
        self.register_buffer("span", width.reshape(1, 1, -1), persistent=False)

    def normalise(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Model-space inputs, and the target's centre and scale (each (batch, 1)) to undo it.

        Per-window statistics are computed in float64 and the inputs rounded to the windows'
        dtype after centring: a reading near 60 °C carries ~4e-6 °C of float32 rounding, which
        a noise scale of ~0.3 °C would magnify to ~1e-5 in model units, as much as the runtimes
        are held to (docs/runtimes.md). The centre and scale stay in float64 to map the
        forecast back.
        """
        if self.normalisation == "window":
            data = windows.double()
            centre, scale = window_stats_torch(data)
            if self.despike:
                data = despike_torch(data, scale)
                centre = data.mean(dim=1, keepdim=True)
            inputs = ((data - centre) / scale).to(windows.dtype)
        else:
            centre, scale = self.minimum.expand(1, 1, -1), self.span.expand(1, 1, -1)
            inputs = (windows - centre) / scale
        t = self.target_index
        return inputs, centre[:, 0, t : t + 1], scale[:, 0, t : t + 1]

    def forward_normalised(self, inputs: torch.Tensor) -> torch.Tensor:
        """The forecast in model space, from model-space inputs (what training optimises)."""
        outputs, _ = self.rnn(inputs)
        if self.bidirectional:
            read = torch.cat([outputs[:, -1, : self.hidden], outputs[:, 0, self.hidden :]], dim=1)
        else:
            read = outputs[:, -1, :]
        target = inputs[:, :, self.target_index]
        out = target[:, -1:] + self.head(read)
        if self.skip is not None:
            out = out + self.skip(target)
        return out

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        inputs, centre, scale = self.normalise(windows)
        return (centre + scale * self.forward_normalised(inputs)).to(windows.dtype)
