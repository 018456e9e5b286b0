"""How a network is fitted, without torch: the options are read and checked by the command
line and by :class:`models.train.TrainConfig` on machines that only serve."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

ProgressFn = Callable[[str], None]


@dataclass(frozen=True)
class FitOptions:
    """How a network is fitted; the defaults are the shipped recipe's."""

    epochs: int = 10
    batch_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 4
    first_step_weight: float = 10.0
    loss: Literal["mse", "huber"] = "mse"
    huber_delta: float = 1.0
    schedule: Literal["cosine", "plateau"] = "cosine"
    warmup_fraction: float = 0.1
    seed: int = 2024

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError("learning_rate must be positive")
        if self.first_step_weight < 0 or self.weight_decay < 0:
            raise ValueError("first_step_weight and weight_decay must not be negative")
        if self.loss not in ("mse", "huber") or not self.huber_delta > 0:
            raise ValueError(f"loss must be 'mse' or 'huber' (delta > 0), not {self.loss!r}")
        if self.schedule not in ("cosine", "plateau"):
            raise ValueError(f"schedule must be 'cosine' or 'plateau', not {self.schedule!r}")
