"""The whole configuration: every section of ``config/`` gathered, and how it loads.

Each concern defines its own section (``config/mqtt.py``, ``config/model.py``, ...); this
module puts them under one root and reads it. Settings come from (highest first): command-line
flags, environment variables with the ``FOREWARN_`` prefix (``__`` separates nesting:
``FOREWARN_MQTT__HOST``), a ``.env`` file in the working directory, and the defaults. Each
section forbids unknown keys so that a typo in an env var or ``.env`` file stops start-up
instead of being silently ignored.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from config.agent import AgentSettings
from config.alerts import AlertSettings
from config.anomaly import AnomalySettings
from config.base import ENV_NESTED_DELIMITER, ENV_PREFIX
from config.drift import DriftSettings
from config.errors import ConfigError
from config.metrics import MetricsSettings
from config.model import MODEL_TAG_PREFIX, CheckpointModelSettings, ModelSettings
from config.mqtt import MqttSettings
from config.readings import MappingSettings, ReadingLimits
from config.recording import RecordingSettings
from config.simulator import SimulatorSettings

__all__ = [
    "ENV_NESTED_DELIMITER",
    "ENV_PREFIX",
    "ConfigError",
    "Settings",
    "describe_validation_error",
    "env_name",
    "load_settings",
    "masked_settings",
    "unknown_env_vars",
]


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
    model: ModelSettings = Field(default_factory=CheckpointModelSettings, description="Forecaster.")
    agent: AgentSettings = Field(default_factory=AgentSettings, description="Tick loop.")
    alerts: AlertSettings = Field(default_factory=AlertSettings, description="Alert policy.")
    anomaly: AnomalySettings = Field(
        default_factory=AnomalySettings, description="Per-sensor anomaly score."
    )
    drift: DriftSettings = Field(default_factory=DriftSettings, description="Model drift watch.")
    recording: RecordingSettings = Field(
        default_factory=RecordingSettings, description="Recording of accepted readings."
    )
    limits: ReadingLimits = Field(default_factory=ReadingLimits, description="Valid readings.")
    mapping: MappingSettings = Field(
        default_factory=MappingSettings, description="Plant field and unit mapping."
    )
    simulator: SimulatorSettings = Field(
        default_factory=SimulatorSettings, description="Simulated fleet."
    )

    @model_validator(mode="after")
    def _a_payload_fits_the_hand_off(self) -> Settings:
        # A single reading waits, undecoded, in a hand-off bounded in bytes: a payload the
        # limits allow but that bound does not would be dropped as overload every time.
        if self.agent.max_pending_bytes < self.limits.max_payload_bytes:
            raise ValueError(
                f"FOREWARN_AGENT__MAX_PENDING_BYTES={self.agent.max_pending_bytes} is below "
                f"FOREWARN_LIMITS__MAX_PAYLOAD_BYTES={self.limits.max_payload_bytes}: a payload "
                "within the limit could never wait for a tick; set it to at least "
                f"{self.limits.max_payload_bytes} (default 67108864)"
            )
        return self

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


def env_name(location: tuple[str | int, ...]) -> str:
    """The environment variable that sets the setting at ``location``."""
    parts = [
        str(p).upper()
        for p in location
        if not isinstance(p, int) and not str(p).startswith(MODEL_TAG_PREFIX)
    ]
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
