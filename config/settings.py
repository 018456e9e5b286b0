"""Every knob of forewarn, in one place.

Settings come from (highest first): command-line flags, environment variables with the
``FOREWARN_`` prefix (``__`` separates nesting: ``FOREWARN_MQTT__HOST``), a ``.env`` file in the
working directory, and the defaults below. Each model forbids unknown keys so that a typo in an
env var or ``.env`` file stops start-up instead of being silently ignored.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

ENV_PREFIX = "FOREWARN_"
ENV_NESTED_DELIMITER = "__"

_TOPIC_SEGMENT = re.compile(r"^[^#+\s/]+(/[^#+\s/]+)*$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class MqttSettings(_Section):
    """Broker connection, shared by the agent and the simulator."""

    host: str = Field("localhost", description="Broker host name or IP address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker TCP port.")
    username: str | None = Field(None, description="Broker user name; unset for anonymous.")
    password: SecretStr | None = Field(
        None, description="Broker password (never logged; masked by `forewarn config check`)."
    )
    client_id: str = Field(
        "forewarn-agent",
        min_length=1,
        max_length=128,
        description="MQTT client id of the agent; must be unique per agent on a broker.",
    )
    topic_prefix: str = Field(
        "factory",
        description="First topic level(s): readings on <prefix>/<machine_id>/telemetry, "
        "alerts on <prefix>/<machine_id>/alerts.",
    )
    keepalive_s: int = Field(
        30, ge=5, le=3600, description="MQTT keepalive; a dead link is noticed within ~1.5x."
    )
    reconnect_min_s: float = Field(1.0, gt=0, description="First reconnect back-off delay.")
    reconnect_max_s: float = Field(30.0, gt=0, description="Longest reconnect back-off delay.")
    telemetry_qos: Literal[0, 1] = Field(
        1, description="QoS of the agent's telemetry subscription (the simulator's is separate)."
    )

    @field_validator("topic_prefix")
    @classmethod
    def _plain_topic(cls, value: str) -> str:
        # A field validator, so the error names FOREWARN_MQTT__TOPIC_PREFIX, not the section.
        if not _TOPIC_SEGMENT.match(value):
            raise ValueError(
                f"topic_prefix {value!r} must be plain topic levels without "
                "wildcards (+, #), spaces or empty levels, e.g. 'factory' or 'plant/line-1'"
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> MqttSettings:
        if self.password is not None and self.username is None:
            raise ValueError("a password is set without a username: set FOREWARN_MQTT__USERNAME")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be at least reconnect_min_s")
        return self


class MetricsSettings(_Section):
    """The HTTP listener serving /metrics and /healthz."""

    host: str = Field("0.0.0.0", description="Bind address of the metrics/health listener.")
    port: int = Field(9108, ge=0, le=65535, description="Port of /metrics and /healthz (0: any).")
    max_machine_series: int = Field(
        500,
        ge=0,
        description="Most machines that get per-machine gauges (temperature, forecast); "
        "bounds Prometheus cardinality.",
    )


class ModelSettings(_Section):
    """Which forecaster to serve and how to run it."""

    checkpoint: Path | None = Field(
        None, description="Checkpoint file to serve; unset: the default shipped with forewarn."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA when available, else CPU."
    )
    threads: int = Field(
        0,
        ge=0,
        le=256,
        description="CPU threads for inference; 0: one per core, at most 2 (leaves the "
        "network thread a core on small machines).",
    )
    chunk_size: int = Field(
        1000, ge=1, description="Most windows in one forward pass; larger batches are chunked."
    )


class AgentSettings(_Section):
    """The agent's tick loop and hand-off."""

    tick_interval_s: float = Field(0.5, gt=0, le=60, description="Seconds between forecast ticks.")
    max_pending_readings: int = Field(
        200_000,
        ge=1,
        description="Readings waiting for the next tick; beyond it readings are dropped and "
        "counted as reason=overload.",
    )
    max_machines: int = Field(
        100_000,
        ge=1,
        description="Most machines tracked; readings of further machines are "
        "rejected as reason=too_many_machines.",
    )
    stale_after_s: float = Field(
        30.0, gt=0, description="A machine silent this long is dropped from the per-machine gauges."
    )


class AlertSettings(_Section):
    """The overheat alert policy."""

    threshold_c: float = Field(95.0, description="Overheat threshold in °C.")
    warning_confirm_ticks: int = Field(
        2, ge=1, description="Consecutive ticks the forecast must cross before a warning fires."
    )
    critical_confirm_readings: int = Field(
        3,
        ge=1,
        description="Consecutive readings at or over the threshold before a critical fires "
        "(rides out single-reading spikes).",
    )
    clear_margin_c: float = Field(
        2.0, ge=0, description="Hysteresis: an alert resolves only below threshold - margin."
    )
    clear_confirm_ticks: int = Field(
        4, ge=1, description="Consecutive clear ticks before an alert resolves."
    )


class ReadingLimits(_Section):
    """Physically plausible ranges; a reading outside is rejected as reason=out_of_range."""

    temperature_c: tuple[float, float] = Field((-60.0, 600.0), description="°C range.")
    vibration_hz: tuple[float, float] = Field((-1000.0, 10_000.0), description="Hz range.")
    pressure_psi: tuple[float, float] = Field((-100.0, 20_000.0), description="psi range.")
    rpm: tuple[float, float] = Field((-100_000.0, 100_000.0), description="rpm range.")
    max_payload_bytes: int = Field(4096, ge=64, description="Larger payloads are rejected.")

    @model_validator(mode="after")
    def _ordered(self) -> ReadingLimits:
        for name in ("temperature_c", "vibration_hz", "pressure_psi", "rpm"):
            low, high = getattr(self, name)
            if not low < high:
                raise ValueError(f"{name} range must be (low, high) with low < high")
        return self


class SimulatorSettings(_Section):
    """The synthetic fleet published by `forewarn simulate`."""

    machines: int = Field(50, ge=1, le=1_000_000, description="Machines in the fleet.")
    rate_hz: float = Field(1.0, gt=0, le=1000, description="Readings per machine per second.")
    duration_s: float | None = Field(
        None, gt=0, description="Stop after this many seconds; unset: run until stopped."
    )
    overheat: int = Field(0, ge=0, description="Machines that drift up until they overheat.")
    seed: int = Field(7, description="Seed of the fleet's random draws (reproducible runs).")
    client_id: str = Field("forewarn-simulator", min_length=1, description="MQTT client id.")
    qos: Literal[0, 1] = Field(0, description="QoS of published readings.")
    machine_prefix: str = Field("m-", description="Machine ids are <prefix><number>.")

    @model_validator(mode="after")
    def _check(self) -> SimulatorSettings:
        if self.overheat > self.machines:
            raise ValueError(
                f"overheat ({self.overheat}) cannot exceed machines ({self.machines}): lower "
                "FOREWARN_SIMULATOR__OVERHEAT or raise FOREWARN_SIMULATOR__MACHINES"
            )
        return self


class _ForewarnKeysOnly(PydanticBaseSettingsSource):
    """Wraps the .env source so that it yields only ``FOREWARN_*`` keys.

    A .env file is often shared with docker compose and other tools; their keys are none of
    forewarn's business. A misspelled ``FOREWARN_*`` key still stops start-up.
    """

    def __init__(self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource):
        super().__init__(settings_cls)
        self._inner = inner

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ delegates to the wrapped source

    def __call__(self) -> dict[str, Any]:
        data = self._inner()
        fields = self.settings_cls.model_fields
        prefix = ENV_PREFIX.lower()
        return {k: v for k, v in data.items() if k in fields or k.lower().startswith(prefix)}


class Settings(BaseSettings):
    """The whole configuration. Build it with :func:`load_settings` for readable errors."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="forbid",
        validate_assignment=True,
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level of every forewarn command."
    )
    mqtt: MqttSettings = Field(default_factory=MqttSettings, description="Broker connection.")
    metrics: MetricsSettings = Field(
        default_factory=MetricsSettings, description="Metrics and health listener."
    )
    model: ModelSettings = Field(default_factory=ModelSettings, description="Forecaster.")
    agent: AgentSettings = Field(default_factory=AgentSettings, description="Tick loop.")
    alerts: AlertSettings = Field(default_factory=AlertSettings, description="Alert policy.")
    limits: ReadingLimits = Field(default_factory=ReadingLimits, description="Valid readings.")
    simulator: SimulatorSettings = Field(
        default_factory=SimulatorSettings, description="Simulated fleet."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        dotenv = _ForewarnKeysOnly(settings_cls, dotenv_settings)
        return (init_settings, env_settings, dotenv, file_secret_settings)


class ConfigError(Exception):
    """A configuration that cannot start forewarn; the message names key, value and fix."""


def env_name(location: tuple[str | int, ...]) -> str:
    """The environment variable that sets the setting at ``location``."""
    parts = [str(p).upper() for p in location if not isinstance(p, int)]
    if parts and parts[0].startswith(ENV_PREFIX):  # an unknown key read verbatim from .env
        return ENV_NESTED_DELIMITER.join(parts)
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(parts)


def _mask_secrets(value: Any) -> Any:
    """``value`` with every password inside it (a section's raw input, say) replaced by ***."""
    if isinstance(value, dict):
        return {
            k: "***" if "password" in str(k).lower() else _mask_secrets(v) for k, v in value.items()
        }
    return value


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem: the env var, the offending value, and what is allowed."""
    lines = ["invalid configuration:"]
    for problem in error.errors():
        location = tuple(problem.get("loc", ()))
        value = problem.get("input")
        key = env_name(location) if location else "(settings)"
        if "password" in key.lower():
            shown = "***"
        else:
            value = _mask_secrets(value)
            shown = value if isinstance(value, str) else repr(value)
        message = problem.get("msg", "invalid").removeprefix("Value error, ")
        if problem.get("type") == "extra_forbidden":
            message = "unknown setting; check its spelling against `forewarn config check`"
            if len(location) == 1 and not str(location[0]).upper().startswith(ENV_PREFIX):
                key = str(location[0]).upper()  # a foreign key in .env, e.g. OTHER_TOOL_VAR
                message = f"not a forewarn setting (a .env file may hold only {ENV_PREFIX}*)"
        lines.append(f"  {key}={shown}: {message}")
    return "\n".join(lines)


def unknown_env_vars(environ: dict[str, str] | None = None) -> list[str]:
    """``FOREWARN_*`` variables that name no setting (pydantic-settings ignores those)."""
    environ = dict(os.environ) if environ is None else environ
    sections = set(Settings.model_fields)
    unknown = []
    for name in sorted(environ):
        if name.upper().startswith(ENV_PREFIX):
            top = name[len(ENV_PREFIX) :].split(ENV_NESTED_DELIMITER, 1)[0].lower()
            if top not in sections:
                unknown.append(name)
    return unknown


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, raising :class:`ConfigError` with a readable message."""
    unknown = unknown_env_vars()
    if unknown:
        raise ConfigError(
            "invalid configuration:\n"
            + "\n".join(
                f"  {name}={'***' if 'PASSWORD' in name.upper() else os.environ[name]}: "
                "unknown setting; check its spelling against `forewarn config check`"
                for name in unknown
            )
        )
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error)) from error


def masked_settings(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, with every secret masked."""
    data: dict[str, Any] = settings.model_dump(mode="json")
    if settings.mqtt.password is not None:
        data["mqtt"]["password"] = "***"
    return data
