"""Field/unit mapping and topic templates: conversions, start-up errors, decoder hook."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from agent.restore import parse_retained_alert
from config.errors import ConfigError
from config.fields import FEATURES
from config.readings import FieldMap, ReadingLimits
from config.settings import load_settings
from config.topics import TemplateError, TopicTemplate, alerts_template
from forewarn.cli import main
from models.checkpoint import CheckpointError, TorchForecaster
from wire import sparkplug
from wire.mapping import FieldMapping
from wire.reading import ReadingDecoder, Rejected


def mapping(fields: dict[str, Any], features: tuple[str, ...] = FEATURES) -> FieldMapping:
    return FieldMapping({k: FieldMap.model_validate(v) for k, v in fields.items()}, features)


@pytest.mark.parametrize(
    ("unit", "raw", "expected"),
    [
        ("degF", 212.0, 100.0),
        ("F", 32.0, 0.0),
        ("°F", -40.0, -40.0),
        ("K", 273.15, 0.0),
        ("degC", 71.5, 71.5),
    ],
)
def test_temperature_units(unit: str, raw: float, expected: float) -> None:
    rules = mapping({"temp": {"feature": "temperature_c", "unit": unit}})
    assert rules.apply({"temp": raw})["temperature_c"] == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("unit", "raw", "expected_psi"),
    [("bar", 1.0, 14.503773773), ("kPa", 100.0, 14.503773773), ("psi", 30.0, 30.0)],
)
def test_pressure_units(unit: str, raw: float, expected_psi: float) -> None:
    rules = mapping({"p": {"feature": "pressure_psi", "unit": unit}})
    assert rules.apply({"p": raw})["pressure_psi"] == pytest.approx(expected_psi)


def test_scale_and_offset_come_before_the_unit() -> None:
    # A 0..4095 ADC count over 32..392 °F: count * (360/4095) + 32 in °F, then into °C.
    rules = mapping(
        {"adc7": {"feature": "temperature_c", "unit": "degF", "scale": 360 / 4095, "offset": 32}}
    )
    assert rules.apply({"adc7": 4095})["temperature_c"] == pytest.approx(200.0)
    assert rules.apply({"adc7": 0})["temperature_c"] == pytest.approx(0.0)


def test_renames_envelope_fields_and_leaves_the_rest() -> None:
    rules = mapping({"asset": "machine_id", "time_ms": {"feature": "ts", "scale": 0.001}})
    out = rules.apply({"asset": "press-4", "time_ms": 1_700_000_000_500, "rpm": 1500})
    assert out == {"machine_id": "press-4", "ts": pytest.approx(1_700_000_000.5), "rpm": 1500}


def test_unapply_is_the_inverse() -> None:
    rules = mapping(
        {
            "temp": {"feature": "temperature_c", "unit": "degF"},
            "p": {"feature": "pressure_psi", "unit": "bar"},
        }
    )
    native = {"temperature_c": 71.25, "pressure_psi": 120.0, "seq": 3}
    plant = rules.unapply(native)
    assert set(plant) == {"temp", "p", "seq"}
    assert plant["temp"] == pytest.approx(160.25)
    back = rules.apply(plant)
    assert back == {k: pytest.approx(v) for k, v in native.items()}


def test_a_feature_the_model_lacks_stops_start_up_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"'spindle'.*'rpm'.*does not have"):
        mapping({"spindle": "rpm"}, features=("temperature_c", "vibration_hz"))


def test_two_fields_for_one_feature_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"'t2'.*'t1' already"):
        mapping({"t1": "temperature_c", "t2": "temperature_c"})


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"temp": "temprature_c"}, "'temp'"),
        ({"temp": {"feature": "temperature_c", "unit": "bar"}}, "'temp'.*'bar'"),
        ({"temp": {"feature": "temperature_c", "units": "F"}}, "'temp'.*units"),
    ],
)
def test_bad_mapping_settings_name_the_field(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=f"FOREWARN_MAPPING__FIELDS.*{named}"):
        load_settings(_env_file=None, mapping={"fields": fields})


def test_decoder_maps_before_validating_and_keeps_its_reasons() -> None:
    rules = mapping({"temp": {"feature": "temperature_c", "unit": "degF"}, "vib": "vibration_hz"})
    decoder = ReadingDecoder(ReadingLimits(), FEATURES, rules)
    plant = {"ts": 1.0, "seq": 1, "temp": 212.0, "vib": 30.0, "pressure_psi": 100.0, "rpm": 1500}
    reading = decoder.decode(orjson.dumps(plant), "m-1")
    assert reading.values.tolist() == pytest.approx([100.0, 30.0, 100.0, 1500.0])
    with pytest.raises(Rejected) as caught:
        decoder.decode(orjson.dumps({**plant, "temp": "hot"}), "m-1")
    assert caught.value.reason == "bad_type"
    with pytest.raises(Rejected) as caught:
        decoder.decode(orjson.dumps({**plant, "temp": 5000.0}), "m-1")  # 2760 °C
    assert caught.value.reason == "out_of_range"


def test_decoder_reads_only_the_served_models_features() -> None:
    decoder = ReadingDecoder(ReadingLimits(), ("temperature_c", "rpm"))
    reading = decoder.decode(
        orjson.dumps({"ts": 1.0, "seq": 1, "temperature_c": 70, "rpm": 900}), "m"
    )
    assert reading.values.dtype == np.float32
    assert reading.values.tolist() == [70.0, 900.0]


def test_template_filter_and_machine_id() -> None:
    template = TopicTemplate.parse("plant/{line}/{machine_id}/sensors")
    assert template.filter == "plant/+/+/sensors"
    assert template.match("plant/l1/press-4/sensors") == {"line": "l1", "machine_id": "press-4"}
    assert template.machine_id("plant/l1/press-4/sensors") == "press-4"
    assert template.machine_id("plant/l1/press-4/other") is None
    assert template.machine_id("plant/l1/x/press-4/sensors") is None
    assert TopicTemplate.parse("plant/{line}/data").machine_id("plant/l1/data") is None


def test_default_templates_are_todays_topics() -> None:
    mqtt = load_settings(_env_file=None).mqtt
    assert mqtt.telemetry_template.filter == "factory/+/telemetry"
    assert mqtt.telemetry_template.machine_id("factory/m-1/telemetry") == "m-1"
    assert mqtt.alerts_template.render("m-1") == "factory/m-1/alerts"


@pytest.mark.parametrize(
    "text", ["", "a//b", "a/+/b", "a/#", "a/{x}y", "a/{x}/{x}", "a/{1x}", "a/b c"]
)
def test_bad_templates(text: str) -> None:
    with pytest.raises(TemplateError):
        TopicTemplate.parse(text)


def test_alerts_template_takes_only_machine_id() -> None:
    assert alerts_template("p/{machine_id}/alerts").render("m") == "p/m/alerts"
    with pytest.raises(TemplateError, match="exactly one"):
        alerts_template("p/{line}/{machine_id}/alerts")
    with pytest.raises(TemplateError, match="exactly one"):
        alerts_template("p/alerts")


def test_template_errors_name_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"FOREWARN_MQTT__TELEMETRY_TOPIC.*'a/\+'"):
        load_settings(_env_file=None, mqtt={"telemetry_topic": "a/+"})
    with pytest.raises(ConfigError, match="FOREWARN_MQTT__ALERTS_TOPIC"):
        load_settings(_env_file=None, mqtt={"alerts_topic": "a/b"})
    # Alerts on a topic the agent subscribes to would come back as readings.
    with pytest.raises(ConfigError, match="matches the telemetry topic"):
        load_settings(
            _env_file=None,
            mqtt={"telemetry_topic": "p/{machine_id}/{kind}", "alerts_topic": "p/{machine_id}/a"},
        )


def test_restore_reads_the_alerts_back_from_the_alerts_template() -> None:
    template = alerts_template("plant/{machine_id}/forewarn/alerts")
    retained = orjson.dumps(
        {"machine_id": "p-1", "status": "firing", "severity": "warning", "alert_id": "a", "seq": 2}
    )
    alert = parse_retained_alert("factory", "plant/p-1/forewarn/alerts", retained, template)
    assert (alert.machine_id, alert.seq) == ("p-1", 2)
    with pytest.raises(ValueError, match="not an alerts topic"):
        parse_retained_alert("factory", "factory/p-1/alerts", retained, template)


def test_simulate_flags_reach_the_simulator(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`forewarn simulate` builds its simulator from the flags: the payload format and topic
    template in its settings, and with --mapped the plant's field mapping (the mapping
    settings') to publish through. The command runs up to the publishing, which is replaced."""
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in list(os.environ):
        if name.startswith("FOREWARN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FOREWARN_MAPPING__FIELDS", '{"temp": "temperature_c"}')
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # keep pytest's handlers
    built: list[tuple[Any, Any, FieldMapping | None]] = []

    class Recorded:
        def __init__(self, mqtt: Any, simulator: Any, threshold_c: float, **kwargs: Any) -> None:
            built.append((mqtt, simulator, kwargs.get("mapping")))

        def run(self) -> None:
            return None

    monkeypatch.setattr("simulator.publish.SimulatorPublisher", Recorded)
    flags = ["--format", "sparkplug", "--topic-template", "p/{machine_id}/s"]
    assert main(["simulate", *flags, "--mapped"]) == 0
    assert main(["simulate", *flags]) == 0
    (mqtt, simulator, mapping), (_, _, unmapped) = built
    assert simulator.format == "sparkplug"
    assert mqtt.telemetry_topic == "p/{machine_id}/s"
    assert mapping is not None and mapping.unapply({"temperature_c": 70.0}) == {"temp": 70.0}
    assert unmapped is None


def test_a_checkpoint_of_some_features_temperature_first_is_servable(tmp_path: Path) -> None:
    path = tmp_path / "kiln.pt"
    TorchForecaster.new(features=("temperature_c", "vibration_hz"), window=20, horizon=5).save(path)
    served = TorchForecaster.from_path(path, device="cpu", threads=1)
    assert served.features == ("temperature_c", "vibration_hz")
    TorchForecaster.new(features=("vibration_hz", "temperature_c"), window=20, horizon=5).save(path)
    with pytest.raises(CheckpointError, match="temperature_c first"):
        TorchForecaster.from_path(path, device="cpu", threads=1)


def test_sparkplug_topics_and_metric_values() -> None:
    device = sparkplug.parse_topic("spBv1.0/g/DDATA/edge/press-1")
    assert device is not None and device.machine_id == "press-1"
    node = sparkplug.parse_topic("spBv1.0/g/NDATA/edge")
    assert node is not None and node.machine_id == "edge"
    for topic in ("spBv1.0/g/DDATA/edge", "spBv1.0/host/STATE", "factory/m/telemetry"):
        assert sparkplug.parse_topic(topic) is None
    message = sparkplug.Payload(timestamp=1_700_000_000_250, seq=0)
    message.metrics.add(name="T", datatype=3, int_value=(1 << 32) - 5)  # Int32 -5
    message.metrics.add(name="P", datatype=10, is_null=True, double_value=1.0)
    data = sparkplug.SparkplugIngest().reading(device, message.SerializeToString())
    assert data == {"T": -5, "P": None, "machine_id": "press-1", "ts": 1_700_000_000.25, "seq": 1}
