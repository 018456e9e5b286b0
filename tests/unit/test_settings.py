"""Settings: defaults, environment and .env sources, validation messages, secret masking."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from config.errors import ConfigError
from config.mqtt import MqttSettings
from config.settings import Settings, env_name, load_settings, masked_settings
from config.simulator import SimulatorSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No FOREWARN_* variable of the calling shell and no stray .env may leak into a test."""
    for name in list(os.environ):
        if name.upper().startswith("FOREWARN_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def config_error(**env: str) -> str:
    """The ConfigError message load_settings raises under ``env``."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        with pytest.raises(ConfigError) as caught:
            load_settings()
    return str(caught.value)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.metrics.port == 9108
    assert settings.mqtt.topic_prefix == "factory"
    assert settings.mqtt.host == "localhost"
    assert settings.mqtt.port == 1883
    assert settings.mqtt.username is None
    assert settings.mqtt.password is None
    assert settings.alerts.threshold_c == 95.0
    assert settings.log_level == "INFO"


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOREWARN_MQTT__HOST", "broker.example")
    monkeypatch.setenv("FOREWARN_MQTT__PORT", "8883")
    monkeypatch.setenv("FOREWARN_METRICS__PORT", "9999")
    monkeypatch.setenv("FOREWARN_MQTT__USERNAME", "agent")
    monkeypatch.setenv("FOREWARN_MQTT__PASSWORD", "s3cret")
    settings = load_settings()
    assert settings.mqtt.host == "broker.example"
    assert settings.mqtt.port == 8883
    assert settings.metrics.port == 9999
    assert settings.mqtt.username == "agent"
    assert settings.mqtt.password is not None
    assert settings.mqtt.password.get_secret_value() == "s3cret"
    # The secret never shows in the model's repr.
    assert "s3cret" not in repr(settings)


def test_dotenv_file_in_cwd_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "FOREWARN_MQTT__HOST=from-dotenv\nFOREWARN_ALERTS__THRESHOLD_C=88.5\n", encoding="utf-8"
    )
    settings = load_settings()
    assert settings.mqtt.host == "from-dotenv"
    assert settings.alerts.threshold_c == 88.5


def test_environment_beats_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("FOREWARN_MQTT__HOST=from-dotenv\n", encoding="utf-8")
    monkeypatch.setenv("FOREWARN_MQTT__HOST", "from-env")
    assert load_settings().mqtt.host == "from-env"


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("FOREWARN_MQTT__PORT", "notaport", "integer"),
        ("FOREWARN_MQTT__PORT", "70000", "65535"),
        ("FOREWARN_METRICS__PORT", "-1", "greater than or equal to 0"),
        ("FOREWARN_LOG_LEVEL", "CHATTY", "DEBUG"),
        ("FOREWARN_ALERTS__WARNING_CONFIRM_TICKS", "0", "greater than or equal to 1"),
        ("FOREWARN_ALERTS__WARNING_NOISE_RATIO_MAX", "0.5", "use 0 to turn the check off"),
        ("FOREWARN_ALERTS__KEEP_FIRING_FOR_S", "-1", "greater than or equal to 0"),
        ("FOREWARN_ALERTS__KEEP_FIRING_CYCLES", "-0.5", "greater than or equal to 0"),
        ("FOREWARN_ALERTS__TREND_HORIZON_READINGS", "50000", "less than or equal to 20000"),
        ("FOREWARN_ALERTS__TREND_CONFIRM", "0", "greater than or equal to 1"),
        ("FOREWARN_SIMULATOR__OVERHEAT_SHAPE", "cubic", "'quadratic' or 'steady'"),
    ],
)
def test_bad_value_names_variable_value_and_what_is_allowed(
    name: str, value: str, allowed: str
) -> None:
    message = config_error(**{name: value})
    line = next(line for line in message.splitlines() if name in line)
    assert value in line
    assert allowed in line


def test_bad_value_is_a_config_error_not_a_validation_error() -> None:
    # ConfigError is not a pydantic ValidationError subclass: callers catch one type.
    from pydantic import ValidationError

    assert not issubclass(ConfigError, ValidationError)


@pytest.mark.parametrize(
    "name",
    [
        "FOREWARN_MQTT__HOSTT",  # typo of a nested field
        "FOREWARN_LOGLEVEL",  # typo of a top-level field
        "FOREWARN_MQTT_HOST",  # single underscore instead of the nesting delimiter
    ],
)
def test_unknown_environment_keys_are_rejected(name: str) -> None:
    message = config_error(**{name: "x"})
    assert name in message
    assert "unknown setting" in message


def test_unknown_dotenv_keys_are_rejected(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("FOREWARN_MQTT__HOSTT=x\nFOREWARN_BOGUS=1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "FOREWARN_MQTT__HOSTT" in message
    # Named as written in the file, not with the prefix doubled.
    assert "FOREWARN_BOGUS" in message
    assert "FOREWARN_FOREWARN" not in message


def test_foreign_dotenv_keys_are_left_to_their_tools(tmp_path: Path) -> None:
    """A .env shared with docker compose holds other tools' keys; forewarn reads only its own."""
    (tmp_path / ".env").write_text(
        "GRAFANA_ADMIN_PASSWORD=secret\nFOREWARN_MQTT__HOST=broker.plant\n", encoding="utf-8"
    )
    settings = load_settings()
    assert settings.mqtt.host == "broker.plant"


def test_unknown_keyword_rejected() -> None:
    with pytest.raises(ConfigError, match="not a forewarn setting"):
        load_settings(mqttt={"host": "x"})


def test_sections_forbid_unknown_keys() -> None:
    with pytest.raises(ValueError):
        MqttSettings(hots="x")  # type: ignore[call-arg]


def test_password_without_username_is_rejected_and_not_echoed() -> None:
    message = config_error(FOREWARN_MQTT__PASSWORD="hunter2")
    assert "FOREWARN_MQTT__USERNAME" in message
    assert "hunter2" not in message


def test_password_never_echoed_in_field_errors() -> None:
    message = config_error(
        FOREWARN_MQTT__USERNAME="agent",
        FOREWARN_MQTT__PASSWORD="hunter2",
        FOREWARN_MQTT__PORT="0",
    )
    assert "FOREWARN_MQTT__PORT" in message
    assert "hunter2" not in message


def test_masked_settings_masks_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOREWARN_MQTT__USERNAME", "agent")
    monkeypatch.setenv("FOREWARN_MQTT__PASSWORD", "hunter2")
    data = masked_settings(load_settings())
    assert data["mqtt"]["password"] == "***"
    assert data["mqtt"]["username"] == "agent"
    assert "hunter2" not in json.dumps(data)


def test_masked_settings_without_password_is_null() -> None:
    data = masked_settings(load_settings())
    assert data["mqtt"]["password"] is None
    assert data["metrics"]["port"] == 9108
    json.dumps(data)  # plain data, serialisable as is


@pytest.mark.parametrize("prefix", ["factory/#", "a/+/b", "+", "plant line", "a//b", "/a", ""])
def test_topic_prefix_with_wildcards_or_empty_levels_rejected(prefix: str) -> None:
    message = config_error(FOREWARN_MQTT__TOPIC_PREFIX=prefix)
    assert "FOREWARN_MQTT__TOPIC_PREFIX" in message
    assert "wildcards" in message


@pytest.mark.parametrize("prefix", ["factory", "plant/line-1", "a/b/c"])
def test_plain_topic_prefixes_accepted(prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOREWARN_MQTT__TOPIC_PREFIX", prefix)
    assert load_settings().mqtt.topic_prefix == prefix


def test_overheat_cannot_exceed_machines() -> None:
    message = config_error(FOREWARN_SIMULATOR__MACHINES="3", FOREWARN_SIMULATOR__OVERHEAT="5")
    assert "FOREWARN_SIMULATOR__OVERHEAT" in message
    assert "FOREWARN_SIMULATOR__MACHINES" in message
    with pytest.raises(ValueError):
        SimulatorSettings(machines=2, overheat=3)
    assert SimulatorSettings(machines=3, overheat=3).overheat == 3


def test_slow_drifts_count_six_machines_each() -> None:
    message = config_error(FOREWARN_SIMULATOR__MACHINES="10", FOREWARN_SIMULATOR__SLOW_DRIFTS="2")
    assert "FOREWARN_SIMULATOR__SLOW_DRIFTS" in message
    assert "12 faulty machines" in message
    assert SimulatorSettings(machines=12, slow_drifts=2).slow_drifts == 2


def test_reconnect_bounds_ordered() -> None:
    message = config_error(FOREWARN_MQTT__RECONNECT_MIN_S="10", FOREWARN_MQTT__RECONNECT_MAX_S="5")
    assert "reconnect_max_s" in message


def test_reading_limits_must_be_ordered() -> None:
    message = config_error(FOREWARN_LIMITS__TEMPERATURE_C="[100, 50]")
    assert "temperature_c" in message


def test_assignment_is_validated() -> None:
    settings = Settings()
    with pytest.raises(ValueError):
        settings.mqtt.port = 0


def test_env_name() -> None:
    assert env_name(("mqtt", "host")) == "FOREWARN_MQTT__HOST"
    assert env_name(("limits", "temperature_c", 0)) == "FOREWARN_LIMITS__TEMPERATURE_C"
    assert env_name(("log_level",)) == "FOREWARN_LOG_LEVEL"


# --- scaling out: reading subscriptions, shared group, protocol -------------------------------

PLANT_TEMPLATE = "plant/{line}/{machine_id}/sensors"


@pytest.mark.parametrize(
    "value",
    [
        '["plant/line-1/+/sensors", "plant/line-2/+/sensors"]',
        "plant/line-1/+/sensors,plant/line-2/+/sensors",
        " plant/line-1/+/sensors , plant/line-2/+/sensors, ",
    ],
)
def test_subscriptions_read_as_json_list_or_comma_separated(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOREWARN_MQTT__TELEMETRY_TOPIC", PLANT_TEMPLATE)
    monkeypatch.setenv("FOREWARN_MQTT__SUBSCRIPTIONS", value)
    assert load_settings().mqtt.subscriptions == [
        "plant/line-1/+/sensors",
        "plant/line-2/+/sensors",
    ]


@pytest.mark.parametrize("value", ["", "  ", "[]"])
def test_empty_subscriptions_mean_the_template(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from wire.mqtt import reading_filters

    monkeypatch.setenv("FOREWARN_MQTT__TELEMETRY_TOPIC", PLANT_TEMPLATE)
    monkeypatch.setenv("FOREWARN_MQTT__SUBSCRIPTIONS", value)
    mqtt = load_settings().mqtt
    assert mqtt.subscriptions is None
    assert reading_filters(mqtt) == ["plant/+/+/sensors"]


@pytest.mark.parametrize(
    "value",
    [
        "plant/line-1/+/sensors",  # one line
        "plant/+/m-7/sensors",  # one machine on every line
        "plant/line-1/m-7/sensors,plant/line-2/+/sensors",  # disjoint
        "plant/+/+/sensors",  # the template's own filter
    ],
)
def test_narrowing_subscriptions_accepted(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOREWARN_MQTT__TELEMETRY_TOPIC", PLANT_TEMPLATE)
    monkeypatch.setenv("FOREWARN_MQTT__SUBSCRIPTIONS", value)
    assert load_settings().mqtt.subscriptions == value.split(",")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("plant/#", "# matches any number of levels"),
        ("plant/line-1/+/#", "# matches any number of levels"),
        ("plant/line-1/+", "has 3 levels"),
        ("plant/line-1/+/sensors/extra", "has 5 levels"),
        ("+/line-1/+/sensors", "level 1 '+' must be the template's fixed text 'plant'"),
        ("plant/line-1/+/status", "level 4 'status' must be the template's fixed text"),
        ("plant/line+1/+/sensors", "must be + or a fixed value"),
        ("$share/g/plant/+/+/sensors", "FOREWARN_MQTT__SHARED_GROUP"),
        ("plant/line-1/+/sensors,plant/+/m-7/sensors", "overlap"),
        ("plant/line-1/+/sensors,plant/line-1/+/sensors", "overlap"),
    ],
)
def test_subscriptions_must_narrow_the_telemetry_template(value: str, problem: str) -> None:
    message = config_error(
        FOREWARN_MQTT__TELEMETRY_TOPIC=PLANT_TEMPLATE, FOREWARN_MQTT__SUBSCRIPTIONS=value
    )
    assert f"FOREWARN_MQTT__SUBSCRIPTIONS={value}:" in message
    assert problem in message
    # The fix: the shape every filter must have, and the whole fleet's filter as a start.
    assert "plant/+/+/sensors" in message


def test_subscriptions_follow_the_default_template(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOREWARN_MQTT__TOPIC_PREFIX", "site-a")
    monkeypatch.setenv("FOREWARN_MQTT__SUBSCRIPTIONS", "site-a/+/telemetry")
    assert load_settings().mqtt.subscriptions == ["site-a/+/telemetry"]
    message = config_error(
        FOREWARN_MQTT__TOPIC_PREFIX="site-a", FOREWARN_MQTT__SUBSCRIPTIONS="factory/+/telemetry"
    )
    assert "'site-a/{machine_id}/telemetry'" in message


def test_shared_group_shares_readings_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from wire.mqtt import reading_filters

    monkeypatch.setenv("FOREWARN_MQTT__TELEMETRY_TOPIC", PLANT_TEMPLATE)
    monkeypatch.setenv("FOREWARN_MQTT__SUBSCRIPTIONS", "plant/line-1/+/sensors")
    monkeypatch.setenv("FOREWARN_MQTT__SHARED_GROUP", "forewarn")
    assert reading_filters(load_settings().mqtt) == ["$share/forewarn/plant/line-1/+/sensors"]


@pytest.mark.parametrize("group", ["a/b", "+", "#", "line 1", "g#"])
def test_shared_group_is_one_plain_level(group: str) -> None:
    message = config_error(FOREWARN_MQTT__SHARED_GROUP=group)
    assert f"FOREWARN_MQTT__SHARED_GROUP={group}:" in message
    assert "one topic level" in message


def test_empty_shared_group_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOREWARN_MQTT__SHARED_GROUP", "")
    assert load_settings().mqtt.shared_group is None


def test_shared_group_refuses_sparkplug() -> None:
    message = config_error(
        FOREWARN_MQTT__SHARED_GROUP="forewarn", FOREWARN_MQTT__SPARKPLUG_GROUP="plant"
    )
    assert "FOREWARN_MQTT__SHARED_GROUP=forewarn" in message
    assert "FOREWARN_MQTT__SPARKPLUG_GROUP=plant" in message


def test_protocol_defaults_to_3_1_1_and_takes_5(monkeypatch: pytest.MonkeyPatch) -> None:
    from wire.mqtt import connect_options

    mqtt = load_settings().mqtt
    assert mqtt.protocol == "3.1.1"
    assert connect_options(mqtt, persistent=True) == {}
    monkeypatch.setenv("FOREWARN_MQTT__PROTOCOL", "5")
    mqtt = load_settings().mqtt
    assert mqtt.protocol == "5"
    options = connect_options(mqtt, persistent=True)
    assert options["clean_start"] is False
    assert options["properties"].SessionExpiryInterval == 0xFFFFFFFF
    assert connect_options(mqtt, persistent=False) == {"clean_start": True}


def test_unknown_protocol_names_the_choices() -> None:
    message = config_error(FOREWARN_MQTT__PROTOCOL="3")
    assert "FOREWARN_MQTT__PROTOCOL=3:" in message
    assert "'3.1.1' or '5'" in message


def test_qos_settings_parse_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Environment values are strings: "0" must become QoS 0, as docs/settings.md documents."""
    monkeypatch.setenv("FOREWARN_MQTT__TELEMETRY_QOS", "0")
    monkeypatch.setenv("FOREWARN_SIMULATOR__QOS", "1")
    settings = load_settings(_env_file=None)
    assert (settings.mqtt.telemetry_qos, settings.simulator.qos) == (0, 1)


def test_the_hand_off_must_hold_one_payload_of_the_largest_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FOREWARN_LIMITS__MAX_PAYLOAD_BYTES", "8000")
    monkeypatch.setenv("FOREWARN_AGENT__MAX_PENDING_BYTES", "5000")
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    message = str(caught.value)
    assert "FOREWARN_AGENT__MAX_PENDING_BYTES=5000" in message
    assert "FOREWARN_LIMITS__MAX_PAYLOAD_BYTES=8000" in message
    assert "at least 8000" in message
    monkeypatch.setenv("FOREWARN_AGENT__MAX_PENDING_BYTES", "8000")
    assert load_settings(_env_file=None).agent.max_pending_bytes == 8000


def test_an_anomaly_topic_on_the_alerts_or_telemetry_topic_is_refused() -> None:
    message = config_error(FOREWARN_MQTT__ANOMALY_TOPIC="factory/{machine_id}/alerts")
    assert "FOREWARN_MQTT__ANOMALY_TOPIC" in message and "overheat state" in message
    message = config_error(FOREWARN_MQTT__ANOMALY_TOPIC="factory/{machine_id}/telemetry")
    assert "matches the telemetry topic" in message
    message = config_error(FOREWARN_MQTT__ANOMALY_TOPIC="factory/{line}/anomaly")
    assert "exactly one placeholder" in message
