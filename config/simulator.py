"""The simulated fleet: size, rate, faults, payload format and replay."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from config.base import Section

FAULT_KINDS: tuple[str, ...] = (
    "overheat",
    "cooling_failure",
    "dropout",
    "stuck_sensor",
    "spikes",
    "noisy_sensor",
    "bad_payload",
)
"""The fault scenarios a fleet can mix (their shapes: :mod:`simulator.faults`)."""


class SimulatorSettings(Section):
    """The synthetic fleet published by `forewarn simulate`."""

    machines: int = Field(50, ge=1, le=1_000_000, description="Machines in the fleet.")
    rate_hz: float = Field(1.0, gt=0, le=1000, description="Readings per machine per second.")
    duration_s: float | None = Field(
        None, gt=0, description="Stop after this many seconds; unset: run until stopped."
    )
    overheat: int = Field(0, ge=0, description="Machines that drift up until they overheat.")
    overheat_shape: Literal["quadratic", "steady"] = Field(
        "quadratic",
        description="How those machines drift: quadratic (slowly, then faster; crossing in the "
        "first two thirds of the run or 50 s) or steady (the demo's: a straight climb from 30 % "
        "of that span to 3 °C over the threshold at 130 %, on machines whose cycle climbs then "
        "too, so the forecaster sees it coming).",
    )
    seed: int = Field(7, description="Seed of the fleet's random draws (reproducible runs).")
    client_id: str = Field("forewarn-simulator", min_length=1, description="MQTT client id.")
    qos: int = Field(0, ge=0, le=1, description="QoS of published readings (0 or 1).")
    machine_prefix: str = Field("m-", description="Machine ids are <prefix><number>.")
    faults: dict[str, int] = Field(
        default_factory=dict,
        description="Fault scenarios by kind and machine count, e.g. "
        '{"overheat": 3, "dropout": 2}; kinds: overheat, cooling_failure, dropout, '
        "stuck_sensor, spikes, noisy_sensor, bad_payload.",
    )
    slow_drifts: int = Field(
        0,
        ge=0,
        description="Machines per slow-drift shape (linear, exponential) and reach (the mean "
        "at the threshold 2,000, 5,000 or 20,000 readings after onset): 6 times this many "
        "drifting machines, a scenario family beside the faults.",
    )
    ground_truth: Path | None = Field(
        None, description="Write the faults' ground truth here (JSON lines)."
    )
    replay: Path | None = Field(
        None, description="Publish this CSV's rows as a live stream instead of simulating."
    )
    machine_column: str | None = Field(
        None, description="Replay: the CSV column holding machine ids (default: one machine)."
    )
    speed: float = Field(1.0, gt=0, description="Replay: speed-up of the original pacing.")
    format: Literal["json", "sparkplug"] = Field(
        "json",
        description="Payloads: json (forewarn's, on mqtt.telemetry_topic) or sparkplug "
        "(Sparkplug B DDATA of group mqtt.sparkplug_group, default forewarn, with edge node "
        "<client_id>: BIRTH first, NDEATH at the end).",
    )
    gateway_batch: int = Field(
        0,
        ge=0,
        description="Gateway mode: each tick the fleet's readings go out as gateway batches of "
        "up to this many readings on mqtt.batch_topic, the + level being client_id. 0: one "
        "message per reading.",
    )

    @model_validator(mode="after")
    def _one_way_to_publish(self) -> SimulatorSettings:
        # Each mode publishes the fleet in its own shape; together they would say nothing clear.
        if self.gateway_batch and self.format == "sparkplug":
            raise ValueError(
                f"FOREWARN_SIMULATOR__GATEWAY_BATCH={self.gateway_batch} and "
                "FOREWARN_SIMULATOR__FORMAT=sparkplug exclude each other: set one of them "
                "(gateway batch 0 or format json)"
            )
        if self.gateway_batch and self.replay is not None:
            raise ValueError(
                f"FOREWARN_SIMULATOR__GATEWAY_BATCH={self.gateway_batch} does not apply to a "
                "replay: set it to 0, or unset FOREWARN_SIMULATOR__REPLAY"
            )
        return self

    @model_validator(mode="after")
    def _check(self) -> SimulatorSettings:

        unknown = sorted(set(self.faults) - set(FAULT_KINDS))
        if unknown:
            raise ValueError(
                f"unknown fault kind(s) {unknown}; choose from {', '.join(FAULT_KINDS)}"
            )
        if any(count < 0 for count in self.faults.values()):
            raise ValueError("fault counts must not be negative")
        if self.overheat > self.machines:
            raise ValueError(
                f"overheat ({self.overheat}) cannot exceed machines ({self.machines}): lower "
                "FOREWARN_SIMULATOR__OVERHEAT or raise FOREWARN_SIMULATOR__MACHINES"
            )
        faulty = self.overheat + sum(self.faults.values()) + 6 * self.slow_drifts
        if faulty > self.machines:
            raise ValueError(
                f"{faulty} faulty machines asked for, but the fleet has {self.machines}: lower "
                "FOREWARN_SIMULATOR__FAULTS or FOREWARN_SIMULATOR__SLOW_DRIFTS, or raise "
                "FOREWARN_SIMULATOR__MACHINES"
            )
        return self
