"""The agent's tick loop, hand-off bounds and state."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from config.base import Section


class AgentSettings(Section):
    """The agent's tick loop and hand-off."""

    tick_interval_s: float = Field(
        0.25,
        gt=0,
        le=60,
        description="Seconds between forecast ticks: a reading waits up to this long for its "
        "forecast.",
    )
    stall_after_s: float = Field(
        30.0,
        gt=0,
        description="Watchdog: /healthz turns 503 and the agent exits with status 1 when the "
        "MQTT network thread or the tick thread dies, or a tick or an MQTT callback runs "
        "longer than this.",
    )
    max_pending_readings: int = Field(
        200_000,
        ge=1,
        description="Readings waiting for the next tick (single messages are decoded by the "
        "tick, so those still to be judged count too); beyond it readings are dropped and "
        "counted as reason=overload.",
    )
    max_pending_bytes: int = Field(
        67_108_864,
        ge=4096,
        description="Bytes of single-reading payloads waiting for the next tick to decode "
        "them; beyond it readings are dropped and counted as reason=overload. With "
        "max_pending_readings it bounds the hand-off's memory whatever size payloads come "
        "(the tick decodes it in slices of at most 1 MiB). At least limits.max_payload_bytes.",
    )
    max_machines: int = Field(
        100_000,
        ge=1,
        description="Most machines tracked (bounds memory); a new machine beyond it evicts "
        "the least recently seen one (counted in forewarn_machines_evicted_total).",
    )
    stale_after_s: float = Field(
        30.0,
        gt=0,
        description="A machine without an accepted reading this long is stale: its per-machine "
        "gauges are dropped and its next reading restarts its window; a jump of ts this large "
        "is a gap that restarts the window too.",
    )
    max_missing_readings: int = Field(
        5,
        ge=0,
        description="Readings a machine may lose (a jump in seq) without a window restart; "
        "more is a gap and the window restarts, so no forecast spans it.",
    )
    max_future_s: float = Field(
        60.0,
        ge=0,
        description="Readings whose ts is further ahead of the agent's clock are rejected as "
        "reason=future (raise it for senders with badly set clocks).",
    )
    state_dir: Path | None = Field(
        None,
        description="Folder where the agent keeps what must survive a restart and the broker "
        "does not hold: the model it serves after a swap (so that a promotion survives a "
        "restart), the anomaly scorer's learned normal of every machine (anomaly.npz) and "
        "the slow path's long trends (trend.npz). "
        "Unset: $STATE_DIRECTORY when systemd sets it (StateDirectory= in the shipped unit), "
        "else nothing is kept.",
    )
