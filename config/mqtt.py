"""The broker connection and every topic the agent and the simulator use."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import NoDecode

from config.base import Section, split_list
from config.topics import (
    SPARKPLUG_NAMESPACE,
    TopicTemplate,
    alerts_template,
    anomaly_template,
    check_batch_filter,
    default_alerts_topic,
    default_anomaly_topic,
    default_batch_topic,
    default_telemetry_topic,
    filters_overlap,
    is_disabled,
    own_topics_problem,
    reading_filters_problem,
    rebaseline_filter,
    restore_marker_topic,
    silence_filter,
    status_topic,
)

_TOPIC_SEGMENT = re.compile(r"^[^#+\s/]+(/[^#+\s/]+)*$")


class MqttSettings(Section):
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
    anomaly_topic: str | None = Field(
        None,
        description="Template of the topic a machine's anomaly alerts go to (anomaly.enabled), "
        "apart from its overheat alerts: fixed levels and exactly one {machine_id}, e.g. "
        "plant/{machine_id}/forewarn/anomaly. Unset: <prefix>/{machine_id}/anomaly.",
    )
    subscriptions: Annotated[list[str] | None, NoDecode] = Field(
        None,
        description="Topic filters the agent takes readings from instead of the whole telemetry "
        "template, to share a fleet out among agents (docs/operating.md: Scaling out), as a "
        "JSON list or comma-separated, e.g. plant/line-1/+/sensors,plant/line-2/+/sensors. Each "
        "narrows the template: its levels, each the template's fixed text, or + or a fixed value "
        "where it has a {placeholder}; no #, no two overlapping. Unset or empty: the template's "
        "filter.",
    )
    shared_group: str | None = Field(
        None,
        description="Shared-subscription group of the agent's reading subscriptions "
        "($share/<group>/<filter>): the broker gives each reading to one agent of the group; "
        "silences still reach every agent. Needs a broker that keeps each topic on one agent "
        "(EMQX: hash_topic); mosquitto takes turns per message (docs/operating.md: Scaling out). "
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
        "message (docs/plant.md: Gateway batches), e.g. plant/gateways/+/batch; it must match "
        "none of the agent's other topics. Unset: <prefix>/_gateway/+/telemetry (+: the "
        "gateway id). off: no batches.",
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
        value = split_list(value, "topic filters")
        return (value or None) if isinstance(value, list) else value

    @field_validator("subscriptions")
    @classmethod
    def _narrowing(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        # Checked against the template, so that every reading's machine id is still read
        # from its topic; a field validator, so the error names FOREWARN_MQTT__SUBSCRIPTIONS.

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

    @field_validator("telemetry_topic", "alerts_topic", "anomaly_topic")
    @classmethod
    def _template(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Parsed here, so that a bad template stops start-up naming its variable.

        if value is not None:
            if info.field_name == "alerts_topic":
                alerts_template(value)
            elif info.field_name == "anomaly_topic":
                anomaly_template(value)
            else:
                TopicTemplate.parse(value)
        return value

    @property
    def telemetry_template(self) -> TopicTemplate:
        """The telemetry template in force (``telemetry_topic`` or the prefix's default)."""

        return TopicTemplate.parse(
            self.telemetry_topic or default_telemetry_topic(self.topic_prefix)
        )

    @property
    def alerts_template(self) -> TopicTemplate:
        """The alerts template in force (``alerts_topic`` or the prefix's default)."""

        return alerts_template(self.alerts_topic or default_alerts_topic(self.topic_prefix))

    @property
    def anomaly_template(self) -> TopicTemplate:
        """The anomaly alerts template in force (``anomaly_topic`` or the prefix's default)."""

        return anomaly_template(self.anomaly_topic or default_anomaly_topic(self.topic_prefix))

    @field_validator("batch_topic")
    @classmethod
    def _batch_topic(cls, value: str | None) -> str | None:

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

        if self.batch_topic is None:
            default = default_batch_topic(self.topic_prefix)
            return None if self.batch_collision(default) else default
        return None if is_disabled(self.batch_topic) else self.batch_topic

    def batch_collision(self, batch_filter: str) -> str | None:
        """Which of the agent's topics ``batch_filter`` overlaps, with its filter; None: none.

        A batch that also matched the telemetry topic would be read twice, once as a batch
        and once as a (rejected) reading; one on the agent's own topics would be read as junk.
        """

        prefix = self.topic_prefix
        others = [
            ("the telemetry topic", self.telemetry_template.filter),
            ("the alerts topic", self.alerts_template.filter),
            ("the anomaly topic", self.anomaly_template.filter),
            ("the silences", silence_filter(prefix)),
            ("the re-baseline commands", rebaseline_filter(prefix)),
            ("the agents' status", status_topic(prefix, "+")),
            ("the agents' restore marker", restore_marker_topic(prefix, "+")),
        ]
        if self.sparkplug_group is not None:
            others.append(("Sparkplug B", f"{SPARKPLUG_NAMESPACE}/{self.sparkplug_group}/#"))
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

    @model_validator(mode="after")
    def _anomaly_topic_apart(self) -> MqttSettings:
        problem = own_topics_problem(
            self.telemetry_template, self.alerts_template, self.anomaly_template
        )
        if problem is not None:
            raise ValueError(f"{problem}; set FOREWARN_MQTT__ANOMALY_TOPIC so that they differ")
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
