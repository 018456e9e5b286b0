"""Every knob of forewarn, in one place.

Settings come from (highest first): command-line flags, environment variables with the
``FOREWARN_`` prefix (``__`` separates nesting: ``FOREWARN_MQTT__HOST``), a ``.env`` file in the
working directory, and the defaults below. Each model forbids unknown keys so that a typo in an
env var or ``.env`` file stops start-up instead of being silently ignored.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from models.base import DEFAULT_CUDA_CHUNK_SIZE

if TYPE_CHECKING:
    from agent.topics import TopicTemplate

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
    password_file: Path | None = Field(
        None,
        description="File holding the broker password (a Docker or Kubernetes secret, say), "
        "read at start-up instead of FOREWARN_MQTT__PASSWORD; one trailing newline is ignored.",
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
    telemetry_topic: str | None = Field(
        None,
        description="Template of the topics readings arrive on, e.g. "
        "plant/{line}/{machine_id}/sensors: each {placeholder} fills one whole level and "
        "becomes + in the subscription; the machine id is the {machine_id} level, or the "
        "payload's machine_id field when the template has none. Unset: "
        "<prefix>/{machine_id}/telemetry.",
    )
    alerts_topic: str | None = Field(
        None,
        description="Template of the topic a machine's alerts go to: fixed levels and exactly "
        "one {machine_id}, e.g. plant/{machine_id}/forewarn/alerts. Unset: "
        "<prefix>/{machine_id}/alerts.",
    )
    subscriptions: Annotated[list[str] | None, NoDecode] = Field(
        None,
        description="Topic filters the agent takes readings from instead of the whole telemetry "
        "template, to share a fleet out among agents (README: Scaling out), as a JSON list or "
        "comma-separated, e.g. plant/line-1/+/sensors,plant/line-2/+/sensors. Each narrows the "
        "template: its levels, each the template's fixed text, or + or a fixed value where it "
        "has a {placeholder}; no #, no two overlapping. Unset or empty: the template's filter.",
    )
    shared_group: str | None = Field(
        None,
        description="Shared-subscription group of the agent's reading subscriptions "
        "($share/<group>/<filter>): the broker gives each reading to one agent of the group; "
        "silences still reach every agent. Needs a broker that keeps each topic on one agent "
        "(EMQX: hash_topic); mosquitto takes turns per message (README: Scaling out). "
        "Unset or empty: no group.",
    )
    sparkplug_group: str | None = Field(
        None,
        description="Also ingest Sparkplug B: DDATA/NDATA (protobuf) of this group id on "
        "spBv1.0/<group>/..., each device (or edge node) a machine, metrics mapped by name "
        "through mapping.fields; a DDEATH/NDEATH marks it stale. + : every group. Unset: off.",
    )
    batch_topic: str | None = Field(
        None,
        description="Subscription filter of gateway batches, many machines' readings in one "
        "message (README: Gateway batches), e.g. plant/gateways/+/batch; it must match none "
        "of the agent's other topics. Unset: <prefix>/_gateway/+/telemetry (+: the gateway "
        "id). off: no batches.",
    )
    keepalive_s: int = Field(
        30,
        ge=1,
        le=3600,
        description="MQTT keepalive; a cut or black-holed link is noticed within "
        "2 x keepalive + 1 s, the broker notices a dead agent (and sends its will) after 1.5x.",
    )
    reconnect_min_s: float = Field(
        1.0, gt=0, description="First reconnect back-off delay (whole seconds, at least 1)."
    )
    reconnect_max_s: float = Field(
        4.0,
        gt=0,
        description="Longest reconnect back-off delay (whole seconds); the agent is back within "
        "about this long of the broker's return.",
    )
    persistent_session: bool = Field(
        True,
        description="The agent keeps its MQTT session (clean session off, stable client id): "
        "the broker queues QoS 1 readings while the agent is away and delivers them when it "
        "returns. The simulator always uses a clean session.",
    )
    protocol: Literal["3.1.1", "5"] = Field(
        "3.1.1",
        description="MQTT version of every forewarn client: 3.1.1 (any broker, the demo's "
        "embedded one included) or 5 (a persistent session then starts with clean start off "
        "and a session that never expires by itself, as 3.1.1's).",
    )
    max_queued_alerts: int = Field(
        10_000,
        ge=1,
        description="Alert messages held while the broker is unreachable; beyond it the oldest "
        "superseded (else oldest) one is dropped, logged and counted in "
        "forewarn_alerts_dropped_total.",
    )
    flush_timeout_s: float = Field(
        5.0,
        ge=0,
        description="On stop, the longest wait for the broker to acknowledge queued QoS 1 "
        "alerts and the offline status.",
    )
    restore_timeout_s: float = Field(
        5.0,
        ge=0,
        description="At start-up, the longest wait for the retained alert states on "
        "<prefix>/+/alerts, from which the agent resumes each machine's alert; ticks start "
        "after them. 0: do not restore (every machine starts ok).",
    )
    telemetry_qos: int = Field(
        1,
        ge=0,
        le=1,
        description="QoS of the agent's telemetry subscription (the simulator's is separate).",
    )
    tls_enabled: bool = Field(
        False, description="Connect with TLS (a broker's TLS listener is usually port 8883)."
    )
    tls_ca_file: Path | None = Field(
        None,
        description="CA certificate(s), PEM, that signed the broker's certificate; unset: the "
        "system's trusted CAs.",
    )
    tls_cert_file: Path | None = Field(
        None,
        description="Client certificate, PEM, for a broker that requires one "
        "(mosquitto: require_certificate true).",
    )
    tls_key_file: Path | None = Field(
        None, description="Unencrypted private key of tls_cert_file, PEM; unset: in that file."
    )
    tls_insecure: bool = Field(
        False,
        description="Accept a broker certificate that does not name mqtt.host (the CA is still "
        "checked); for tests only, it allows a man in the middle with any certificate of the CA.",
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

    @field_validator("sparkplug_group")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        if value is not None and value != "+" and not re.fullmatch(r"[^#+/\s\x00]+", value):
            raise ValueError(
                f"sparkplug_group {value!r} must be one topic level without wildcards, or +"
            )
        return value

    @field_validator("subscriptions", mode="before")
    @classmethod
    def _filter_list(cls, value: Any) -> Any:
        # Read raw (NoDecode), so that an env var may be a JSON list or comma-separated.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as error:
                    raise ValueError(f"not a JSON list of topic filters ({error})") from None
            else:
                value = text.split(",")
        if isinstance(value, list | tuple):
            # Spaces around commas and a trailing comma are typing, not topics.
            value = [f.strip() if isinstance(f, str) else f for f in value]
            return [f for f in value if f != ""] or None
        return value

    @field_validator("subscriptions")
    @classmethod
    def _narrowing(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        # Checked against the template, so that every reading's machine id is still read
        # from its topic; a field validator, so the error names FOREWARN_MQTT__SUBSCRIPTIONS.
        from agent.mqtt import reading_filters_problem
        from agent.topics import TopicTemplate, default_telemetry_topic

        if value is None or not {"topic_prefix", "telemetry_topic"} <= info.data.keys():
            return value  # nothing to check, or the template is wrong and reported itself
        template = TopicTemplate.parse(
            info.data["telemetry_topic"] or default_telemetry_topic(info.data["topic_prefix"])
        )
        problem = reading_filters_problem(template, value)
        if problem is not None:
            raise ValueError(
                f"{problem}. Each filter narrows the telemetry template {template.text!r}: "
                f"{len(template.levels)} levels, each the template's fixed text, or + or a "
                f"fixed value where it has a {{placeholder}} (the whole fleet: "
                f"{template.filter}); set FOREWARN_MQTT__TELEMETRY_TOPIC if the plant's "
                "topics have another shape"
            )
        return value

    @field_validator("shared_group")
    @classmethod
    def _share_name(cls, value: str | None) -> str | None:
        if value == "":
            return None
        if value is not None and not re.fullmatch(r"[^#+/\s\x00]+", value):
            raise ValueError(
                f"shared_group {value!r} must be one topic level without wildcards (+, #), "
                "'/' or spaces, e.g. 'forewarn'"
            )
        return value

    @field_validator("telemetry_topic", "alerts_topic")
    @classmethod
    def _template(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Parsed here, so that a bad template stops start-up naming its variable.
        from agent.topics import TopicTemplate, alerts_template

        if value is not None:
            if info.field_name == "alerts_topic":
                alerts_template(value)
            else:
                TopicTemplate.parse(value)
        return value

    @property
    def telemetry_template(self) -> TopicTemplate:
        """The telemetry template in force (``telemetry_topic`` or the prefix's default)."""
        from agent.topics import TopicTemplate, default_telemetry_topic

        return TopicTemplate.parse(
            self.telemetry_topic or default_telemetry_topic(self.topic_prefix)
        )

    @property
    def alerts_template(self) -> TopicTemplate:
        """The alerts template in force (``alerts_topic`` or the prefix's default)."""
        from agent.topics import alerts_template, default_alerts_topic

        return alerts_template(self.alerts_topic or default_alerts_topic(self.topic_prefix))

    @field_validator("batch_topic")
    @classmethod
    def _batch_topic(cls, value: str | None) -> str | None:
        from agent.gateway import check_batch_filter, is_disabled

        if value is not None and not is_disabled(value):
            check_batch_filter(value)
        return value

    @property
    def batch_filter(self) -> str | None:
        """The gateway batch subscription in force; None when batches are off.

        The default is off, too, where it would overlap one of the agent's topics (a telemetry
        template one level deeper than the default, say): a configuration that ran before
        batches existed keeps running, and the agent says at start-up why it takes none.
        """
        from agent.gateway import default_batch_topic, is_disabled

        if self.batch_topic is None:
            default = default_batch_topic(self.topic_prefix)
            return None if self.batch_collision(default) else default
        return None if is_disabled(self.batch_topic) else self.batch_topic

    def batch_collision(self, batch_filter: str) -> str | None:
        """Which of the agent's topics ``batch_filter`` overlaps, with its filter; None: none.

        A batch that also matched the telemetry topic would be read twice, once as a batch
        and once as a (rejected) reading; one on the agent's own topics would be read as junk.
        """
        from agent.gateway import filters_overlap
        from agent.mqtt import restore_marker_topic, status_topic
        from agent.silence import silence_filter
        from agent.sparkplug import NAMESPACE

        prefix = self.topic_prefix
        others = [
            ("the telemetry topic", self.telemetry_template.filter),
            ("the alerts topic", self.alerts_template.filter),
            ("the silences", silence_filter(prefix)),
            ("the agents' status", status_topic(prefix, "+")),
            ("the agents' restore marker", restore_marker_topic(prefix, "+")),
        ]
        if self.sparkplug_group is not None:
            others.append(("Sparkplug B", f"{NAMESPACE}/{self.sparkplug_group}/#"))
        return next(
            (f"{name}, {other}" for name, other in others if filters_overlap(batch_filter, other)),
            None,
        )

    @model_validator(mode="after")
    def _batch_topic_apart(self) -> MqttSettings:
        batch = self.batch_filter if self.batch_topic is not None else None
        collision = None if batch is None else self.batch_collision(batch)
        if collision is not None:
            raise ValueError(
                f"FOREWARN_MQTT__BATCH_TOPIC={batch} overlaps {collision}: a message on both "
                "would be read twice or as the wrong thing; set FOREWARN_MQTT__BATCH_TOPIC to a "
                "filter none of the agent's topics match, or to off"
            )
        return self

    @field_validator("password_file", "tls_ca_file", "tls_cert_file", "tls_key_file")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        # Checked here, so that a wrong path stops start-up with the variable's name instead
        # of surfacing later as a connection that never comes up.
        if value is not None:
            try:
                with value.open("rb") as file:
                    file.read(1)
            except OSError as error:
                raise ValueError(f"cannot read {value}: {error.strerror or error}") from None
        return value

    @model_validator(mode="after")
    def _check(self) -> MqttSettings:
        if self.password_file is not None:
            secret = self.password_file.read_text(encoding="utf-8").removesuffix("\n")
            secret = secret.removesuffix("\r")
            if not secret:
                raise ValueError(f"FOREWARN_MQTT__PASSWORD_FILE {self.password_file} is empty")
            if self.password is not None and self.password.get_secret_value() != secret:
                raise ValueError(
                    "set FOREWARN_MQTT__PASSWORD or FOREWARN_MQTT__PASSWORD_FILE, not both"
                )
            # Resolved once, so that every client reads settings.password alike; set without
            # validate_assignment, which would run this validator again.
            self.__dict__["password"] = SecretStr(secret)
        tls_files = {
            "TLS_CA_FILE": self.tls_ca_file,
            "TLS_CERT_FILE": self.tls_cert_file,
            "TLS_KEY_FILE": self.tls_key_file,
        }
        if not self.tls_enabled:
            for name, path in tls_files.items():
                if path is not None:
                    raise ValueError(
                        f"FOREWARN_MQTT__{name} is set but TLS is off: "
                        "set FOREWARN_MQTT__TLS_ENABLED=true"
                    )
        if self.tls_key_file is not None and self.tls_cert_file is None:
            raise ValueError(
                "FOREWARN_MQTT__TLS_KEY_FILE is set without FOREWARN_MQTT__TLS_CERT_FILE"
            )
        if self.password is not None and self.username is None:
            raise ValueError("a password is set without a username: set FOREWARN_MQTT__USERNAME")
        if self.shared_group is not None and self.sparkplug_group is not None:
            # A device's BIRTH (its metric aliases) and its DATA come on different topics and
            # could reach different agents of the group, which could then not read the DATA.
            raise ValueError(
                f"FOREWARN_MQTT__SHARED_GROUP={self.shared_group} cannot be combined with "
                f"FOREWARN_MQTT__SPARKPLUG_GROUP={self.sparkplug_group}: a Sparkplug device's "
                "BIRTH and DATA would reach different agents; unset one of them, or give each "
                "agent its own Sparkplug group instead of a shared group"
            )
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be at least reconnect_min_s")
        if self.telemetry_template.match(self.alerts_template.render("x")) is not None:
            # The agent would read its own alerts back as readings.
            raise ValueError(
                f"alerts topic {self.alerts_template.text!r} matches the telemetry topic "
                f"{self.telemetry_template.text!r}: set FOREWARN_MQTT__ALERTS_TOPIC or "
                "FOREWARN_MQTT__TELEMETRY_TOPIC so that they differ"
            )
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


class _ModelCommon(_Section):
    """How any forecaster runs, whatever its kind."""

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
        1000,
        ge=1,
        description="Most windows in one forward pass on the CPU; larger batches are chunked.",
    )
    cuda_chunk_size: int = Field(
        DEFAULT_CUDA_CHUNK_SIZE,
        ge=1,
        description="Most windows in one forward pass on a GPU, rounded up to a multiple of 128 "
        "(the whole batch crosses to the device in one copy either way).",
    )


MODEL_KINDS = ("lstm", "gru", "bilstm", "ridge", "persistence", "linear_extrapolation")


class CheckpointModelSettings(_ModelCommon):
    """A trained forecaster read from a checkpoint: a recurrent network or Ridge regression."""

    kind: Literal["lstm", "gru", "bilstm", "ridge"] = Field(
        "lstm",
        description="Forecaster: lstm, gru, bilstm or ridge (served from a checkpoint of that "
        "kind, see `forewarn train --kind`); persistence or linear_extrapolation (baselines, "
        "no checkpoint).",
    )
    checkpoint: Path | None = Field(
        None,
        description="Checkpoint file to serve; unset: the default shipped with forewarn (an "
        "lstm). Not for the baselines.",
    )

    @field_validator("kind", mode="before")
    @classmethod
    def _known_kind(cls, value: Any) -> Any:
        # Unknown kinds land here; name every kind, not only this member's.
        if value not in MODEL_KINDS:
            raise ValueError(f"kind must be one of {', '.join(MODEL_KINDS)}, not {value!r}")
        return value


class PersistenceModelSettings(_ModelCommon):
    """The last reading, repeated over the horizon: the simplest baseline."""

    kind: Literal["persistence"]
    horizon: int = Field(
        15,
        ge=1,
        le=10_000,
        description="Steps forecast ahead; baselines only (a checkpoint carries its own).",
    )


class LinearExtrapolationModelSettings(_ModelCommon):
    """A straight line through the window, carried on over the horizon."""

    kind: Literal["linear_extrapolation"]
    horizon: int = Field(
        15,
        ge=1,
        le=10_000,
        description="Steps forecast ahead; baselines only (a checkpoint carries its own).",
    )


MODEL_TAG_PREFIX = "kind:"
"""Tags of the model union: they appear in validation error locations, never in env vars."""


def _model_tag(value: Any) -> str:
    """The union member for a raw or built model section; without a kind, the default lstm."""
    kind = value.get("kind", "lstm") if isinstance(value, dict) else getattr(value, "kind", "lstm")
    if kind in ("persistence", "linear_extrapolation"):
        return MODEL_TAG_PREFIX + str(kind)
    return MODEL_TAG_PREFIX + "checkpoint"


ModelSettings = Annotated[
    Annotated[CheckpointModelSettings, Tag(MODEL_TAG_PREFIX + "checkpoint")]
    | Annotated[PersistenceModelSettings, Tag(MODEL_TAG_PREFIX + "persistence")]
    | Annotated[LinearExtrapolationModelSettings, Tag(MODEL_TAG_PREFIX + "linear_extrapolation")],
    Discriminator(_model_tag),
]
"""Which forecaster to serve and how to run it: one of the kinds above, chosen by ``kind``."""


class AgentSettings(_Section):
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


class AlertSettings(_Section):
    """The overheat alert policy."""

    threshold_c: float = Field(95.0, description="Overheat threshold in °C.")
    warning_confirm_ticks: int = Field(
        3, ge=1, description="Consecutive ticks the forecast must cross before a warning fires."
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
    overrides: dict[str, float] = Field(
        default_factory=dict,
        description="Per-machine thresholds in °C by machine id or shell pattern, e.g. "
        '{"oven-*": 190, "bearing-7": 60}; an exact id wins over patterns.',
    )
    warning_sigma: float = Field(
        2.0,
        ge=0,
        description="Widen the warning: it fires when forecast + this many standard deviations "
        "of the machine's own recent forecast error reaches the threshold (0: the forecast "
        "alone). The widening stands for the sensor noise that takes a reading over the "
        "threshold before the machine's temperature itself gets there.",
    )
    warning_margin_max_c: float = Field(
        3.0, ge=0, description="Cap on that widening, so a noisy sensor cannot warn on its own."
    )
    warning_noise_ratio_max: float = Field(
        1.5,
        ge=0,
        description="Forecasts made while a machine's forecast error is more than this many "
        "times its usual one (a sensor turned noisy) do not count towards a warning; 0: no "
        "such check.",
    )

    @field_validator("warning_noise_ratio_max")
    @classmethod
    def _ratio_off_or_above_usual(cls, value: float) -> float:
        # A machine behaving as usual has a ratio of about 1 (exactly 1 while warming up), so a
        # limit below 1 would silently discard every forecast: no warning could ever fire.
        if 0 < value < 1:
            raise ValueError(
                f"warning_noise_ratio_max {value} would hold back every warning (a machine's "
                "usual ratio is 1): use 0 to turn the check off, or a value of 1.2 or more"
            )
        return value


class ReadingLimits(_Section):
    """Physically plausible ranges; a reading outside is rejected as reason=out_of_range."""

    temperature_c: tuple[float, float] = Field((-60.0, 600.0), description="°C range.")
    vibration_hz: tuple[float, float] = Field((-1000.0, 10_000.0), description="Hz range.")
    pressure_psi: tuple[float, float] = Field((-100.0, 20_000.0), description="psi range.")
    rpm: tuple[float, float] = Field((-100_000.0, 100_000.0), description="rpm range.")
    max_payload_bytes: int = Field(4096, ge=64, description="Larger payloads are rejected.")
    max_batch_bytes: int = Field(
        2_097_152,
        ge=64,
        description="Larger gateway batch payloads are rejected whole, as one reason=too_large; "
        "a batch is parsed in one go, so this bounds the memory one message takes (the default "
        "fits max_batch_readings readings of 200 bytes).",
    )
    max_batch_readings: int = Field(
        10_000,
        ge=1,
        description="A gateway batch with more readings is rejected whole, as one "
        "reason=too_large.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> ReadingLimits:
        for name in ("temperature_c", "vibration_hz", "pressure_psi", "rpm"):
            low, high = getattr(self, name)
            if not low < high:
                raise ValueError(f"{name} range must be (low, high) with low < high")
        return self


class FieldMap(_Section):
    """One plant payload field: the forewarn field it becomes, its unit, a scale for raw counts.

    The value becomes ``(raw * scale + offset)`` converted from ``unit`` into the feature's own
    unit (°C, psi, Hz, rpm), before the limits check it.
    """

    feature: str = Field(
        description="The forewarn field: a feature (temperature_c, vibration_hz, pressure_psi, "
        "rpm), or machine_id, ts or seq."
    )
    unit: str | None = Field(
        None, description="The field's unit, e.g. degF, K, bar, kPa, MPa, Pa, Hz, cpm."
    )
    scale: float = Field(1.0, description="Raw counts to engineering units: raw * scale + offset.")
    offset: float = Field(0.0, description="Added after scale.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # {"temp": "temperature_c"}: a rename without conversion.
        return {"feature": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _known(self) -> FieldMap:
        from agent.mapping import ENVELOPE, units_for
        from simulator.signal import FEATURES

        if self.feature not in (*FEATURES, *ENVELOPE):
            raise ValueError(
                f"{self.feature!r} is not a forewarn field; use one of "
                f"{', '.join((*FEATURES, *ENVELOPE))}"
            )
        if self.unit is not None and self.unit.lower() not in units_for(self.feature):
            raise ValueError(
                f"unit {self.unit!r} does not fit {self.feature!r}; use one of "
                f"{', '.join(units_for(self.feature)) or 'none'}"
            )
        return self


class MappingSettings(_Section):
    """How a plant's payload fields become forewarn's (see README, "Connecting your plant")."""

    fields: dict[str, str | dict[str, Any]] = Field(
        default_factory=dict,
        description="Plant field name -> forewarn field, as JSON, e.g. "
        '{"temp": {"feature": "temperature_c", "unit": "degF"}, "asset": "machine_id"}; a '
        "feature the served model lacks stops start-up. Unset: the payload uses forewarn's names.",
    )

    @field_validator("fields")
    @classmethod
    def _each(cls, value: dict[str, str | dict[str, Any]]) -> dict[str, str | dict[str, Any]]:
        # Kept as plain data (one settings-table row), checked here field by field, so that the
        # error names the plant's field.
        for source, spec in value.items():
            try:
                FieldMap.model_validate(spec)
            except ValidationError as error:
                problems = "; ".join(
                    f"{'.'.join(map(str, p['loc'])) or 'value'}: "
                    + p["msg"].removeprefix("Value error, ")
                    for p in error.errors()
                )
                raise ValueError(f"field {source!r}: {problems}") from None
        return value

    def field_maps(self) -> dict[str, FieldMap]:
        """``fields`` as checked :class:`FieldMap` objects."""
        return {source: FieldMap.model_validate(spec) for source, spec in self.fields.items()}


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
    qos: int = Field(0, ge=0, le=1, description="QoS of published readings (0 or 1).")
    machine_prefix: str = Field("m-", description="Machine ids are <prefix><number>.")
    faults: dict[str, int] = Field(
        default_factory=dict,
        description="Fault scenarios by kind and machine count, e.g. "
        '{"overheat": 3, "dropout": 2}; kinds: overheat, cooling_failure, dropout, '
        "stuck_sensor, spikes, noisy_sensor, bad_payload.",
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
        from simulator.faults import FAULT_KINDS  # the simulator owns the fault names

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
        if self.overheat + sum(self.faults.values()) > self.machines:
            raise ValueError(
                f"{self.overheat + sum(self.faults.values())} faulty machines asked for, "
                f"but the fleet has {self.machines}: lower FOREWARN_SIMULATOR__FAULTS or raise "
                "FOREWARN_SIMULATOR__MACHINES"
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
    model: ModelSettings = Field(default_factory=CheckpointModelSettings, description="Forecaster.")
    agent: AgentSettings = Field(default_factory=AgentSettings, description="Tick loop.")
    alerts: AlertSettings = Field(default_factory=AlertSettings, description="Alert policy.")
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


class ConfigError(Exception):
    """A configuration that cannot start forewarn; the message names key, value and fix."""


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
