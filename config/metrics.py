"""The HTTP listener of /metrics and /healthz."""

from __future__ import annotations

from pydantic import Field

from config.base import Section


class MetricsSettings(Section):
    """The HTTP listener serving /metrics and /healthz."""

    host: str = Field("0.0.0.0", description="Bind address of the metrics/health listener.")
    port: int = Field(9108, ge=0, le=65535, description="Port of /metrics and /healthz (0: any).")
    max_machine_series: int = Field(
        500,
        ge=0,
        description="Most machines that get per-machine gauges (temperature, forecast); "
        "bounds Prometheus cardinality.",
    )
