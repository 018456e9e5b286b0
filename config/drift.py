"""The drift watch in the agent (see docs/model-lifecycle.md): each machine's
forecast skill against the skill the model had on its own test split."""

from __future__ import annotations

from pydantic import Field, model_validator

from config.base import Section


class DriftSettings(Section):
    """How each machine's rolling forecast and persistence errors are kept."""

    enabled: bool = Field(
        True,
        description="Keep each machine's rolling next-step forecast and persistence errors and "
        "export the drift ratio (a model without the test figures of its training exports "
        "none).",
    )
    memory_readings: int = Field(
        600,
        ge=10,
        description="Readings the rolling errors remember (an exponential average of this "
        "span: 600 is ten minutes at 1 Hz).",
    )
    warm_up_readings: int = Field(
        300,
        ge=1,
        description="Compared readings a machine needs before its drift ratio is exported.",
    )

    @model_validator(mode="after")
    def _warm_up_within_memory(self) -> DriftSettings:
        if self.warm_up_readings > self.memory_readings:
            raise ValueError(
                f"drift warm_up_readings {self.warm_up_readings} is above memory_readings "
                f"{self.memory_readings}: set warm_up_readings at or below memory_readings"
            )
        return self
