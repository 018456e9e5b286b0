"""Recurrent forecasting networks: the seed's LSTM, generalised to a multi-step head."""

from __future__ import annotations

import torch
from torch import nn


class RecurrentForecaster(nn.Module):
    """An LSTM or GRU over the window, then a linear head on the last step's output.

    The head forecasts the next ``horizon`` scaled temperatures as offsets from the last
    observed one. Predicting the change rather than the level lets the network extrapolate a
    rising machine past the hottest temperature it saw in training, where a bounded tanh state
    would otherwise flatten out. With horizon 1 this is the seed's architecture plus that skip.
    """

    def __init__(
        self,
        n_features: int = 4,
        hidden: int = 64,
        layers: int = 2,
        dropout: float = 0.2,
        horizon: int = 1,
        cell: str = "lstm",
        target_index: int = 0,
    ) -> None:
        super().__init__()
        if horizon < 1:
            raise ValueError("horizon must be at least 1")
        rnn_class = {"lstm": nn.LSTM, "gru": nn.GRU}.get(cell)
        if rnn_class is None:
            raise ValueError(f"cell must be 'lstm' or 'gru', not {cell!r}")
        self.rnn = rnn_class(
            input_size=n_features,
            hidden_size=hidden,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.head = nn.Linear(hidden, horizon)
        self.target_index = target_index

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.rnn(windows)
        last_observed = windows[:, -1, self.target_index : self.target_index + 1]
        return last_observed + self.head(outputs[:, -1, :])
