"""The calibrated per-sensor anomaly score in the agent (see docs/alerting.md, "Anomaly
detection"): whether it runs, how long each machine learns its normal, and the default rule."""

from __future__ import annotations

from pydantic import Field, model_validator

from config.base import Section


class AnomalySettings(Section):
    """The per-sensor anomaly scorer and its alert rule."""

    enabled: bool = Field(
        False,
        description="Score every feature of every machine with the calibrated scorer and keep "
        "the anomaly alert state. Off by default: about one false anomaly alert per 10,000 "
        "healthy readings per machine (bench.anomaly's simulator figure) is too many for a "
        "fleet reporting every second.",
    )
    warm_up_readings: int = Field(
        500, ge=20, description="Readings a machine learns its normal from before it is scored."
    )
    memory_readings: int = Field(
        2000, ge=100, description="How many readings the learned normal remembers after that."
    )
    fire_score: float = Field(
        0.5,
        gt=0,
        le=1,
        description="The anomaly alert fires at this machine score (0.5: a 1-in-100,000 "
        "reading for a normal machine) ...",
    )
    confirm_readings: int = Field(
        3,
        ge=1,
        description="... confirmed over this many readings: the onset's and each later "
        "reading's rarity at or over fire_score.",
    )
    clear_score: float = Field(
        0.3, ge=0, le=1, description="It resolves under this score (0.3: 1 in 1,000) ..."
    )
    clear_readings: int = Field(10, ge=1, description="... held for this many readings.")

    sensor_metrics: bool = Field(
        False,
        description="Also export forewarn_machine_sensor_score{machine_id,sensor}, one series "
        "per feature of each machine under metrics.max_machine_series (features times as many "
        "series); off: per-machine gauges only.",
    )
    save_interval_s: float = Field(
        300.0,
        gt=0,
        description="How often the learned normal of every machine is written to "
        "agent.state_dir (and once at stop), so that it survives a restart.",
    )

    @model_validator(mode="after")
    def _clear_below_fire(self) -> AnomalySettings:
        if self.clear_score > self.fire_score:
            raise ValueError(
                f"anomaly clear_score {self.clear_score} is above fire_score {self.fire_score}: "
                "an alert would resolve while still over its firing score; set clear_score at "
                "or below fire_score"
            )
        return self
