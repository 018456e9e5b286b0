"""The `forewarn` command line, without a broker: parsing, overrides, config check, train."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from agent import __version__
from config.errors import ConfigError
from config.settings import Settings, load_settings
from forewarn.cli import apply_overrides, build_parser, main
from models.checkpoint import Checkpoint
from tests.conftest import free_port


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("FOREWARN_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["agent", "--help"],
        ["simulate", "--help"],
        ["train", "--help"],
        ["demo", "--help"],
        ["config", "--help"],
        ["config", "check", "--help"],
        ["anomaly", "rebaseline", "--help"],
    ],
)
def test_help_exits_zero(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 0
    assert "usage: forewarn" in capsys.readouterr().out


def test_subcommands() -> None:
    parser = build_parser()
    for command in ("agent", "simulate", "train", "demo"):
        assert parser.parse_args([command]).command == command
    args = parser.parse_args(["config", "check"])
    assert (args.command, args.config_command) == ("config", "check")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["config"],
        ["config", "frobnicate"],
        ["agent", "--device", "tpu"],
        ["anomaly"],
        ["anomaly", "rebaseline"],
    ],
)
def test_bad_command_lines_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(argv)
    assert caught.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"forewarn {__version__}"


def test_broker_flag() -> None:
    parser = build_parser()
    assert parser.parse_args(["agent", "--broker", "mq.local:8883"]).broker == ("mq.local", 8883)
    assert parser.parse_args(["simulate", "--broker", "::1:1883"]).broker == ("::1", 1883)
    for bad in ("mq.local", ":1883", "mq.local:port"):
        with pytest.raises(SystemExit):
            parser.parse_args(["agent", "--broker", bad])


def test_simulation_flag_defaults() -> None:
    parser = build_parser()
    demo = parser.parse_args(["demo"])
    # 1 Hz: the forecaster's 15 readings ahead are 15 s, room for a warning 10 s before critical.
    assert (demo.machines, demo.rate, demo.overheat) == (12, 1.0, 2)
    simulate = parser.parse_args(["simulate"])
    # Unset flags stay None so that the environment's settings apply.
    assert (simulate.machines, simulate.rate, simulate.overheat, simulate.seed) == (None,) * 4


def test_apply_overrides_applies_and_ignores_none() -> None:
    settings = Settings()
    apply_overrides(
        settings,
        {"mqtt.host": "broker", "mqtt.port": 8883, "metrics.port": None, "simulator.machines": 9},
    )
    assert settings.mqtt.host == "broker"
    assert settings.mqtt.port == 8883
    assert settings.metrics.port == 9108
    assert settings.simulator.machines == 9


def test_apply_overrides_validates_across_fields() -> None:
    settings = Settings()
    with pytest.raises(ConfigError) as caught:
        apply_overrides(settings, {"simulator.machines": 3, "simulator.overheat": 5})
    message = str(caught.value)
    assert "FOREWARN_SIMULATOR__OVERHEAT" in message or "FOREWARN_SIMULATOR__MACHINES" in message
    # Nothing half-applied.
    assert settings.simulator.machines == 50
    assert settings.simulator.overheat == 0


def test_apply_overrides_names_env_var_flag_and_value() -> None:
    with pytest.raises(ConfigError) as caught:
        apply_overrides(Settings(), {"metrics.port": 70000})
    message = str(caught.value)
    assert "FOREWARN_METRICS__PORT" in message
    assert "--port" in message
    assert "70000" in message
    assert "65535" in message


def test_apply_overrides_keeps_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOREWARN_MQTT__USERNAME", "agent")
    monkeypatch.setenv("FOREWARN_MQTT__PASSWORD", "hunter2")
    settings = apply_overrides(load_settings(), {"mqtt.host": "elsewhere"})
    assert settings.mqtt.host == "elsewhere"
    assert settings.mqtt.password is not None
    assert settings.mqtt.password.get_secret_value() == "hunter2"


def test_config_check_prints_masked_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FOREWARN_MQTT__USERNAME", "agent")
    monkeypatch.setenv("FOREWARN_MQTT__PASSWORD", "hunter2")
    monkeypatch.setenv("FOREWARN_MQTT__HOST", "broker.example")
    assert main(["config", "check"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["mqtt"]["password"] == "***"
    assert data["mqtt"]["username"] == "agent"
    assert data["mqtt"]["host"] == "broker.example"
    assert data["metrics"]["port"] == 9108
    assert "hunter2" not in captured.out + captured.err


def test_config_check_reads_dotenv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / ".env").write_text("FOREWARN_ALERTS__THRESHOLD_C=91\n", encoding="utf-8")
    assert main(["config", "check"]) == 0
    assert json.loads(capsys.readouterr().out)["alerts"]["threshold_c"] == 91.0


def test_config_check_bad_env_value_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FOREWARN_MQTT__PORT", "notaport")
    assert main(["config", "check"]) == 2
    captured = capsys.readouterr()
    assert "FOREWARN_MQTT__PORT" in captured.err
    assert "notaport" in captured.err
    assert captured.out == ""


def test_simulate_with_too_many_overheats_exits_2_before_connecting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["simulate", "--machines", "2", "--overheat", "3"]) == 2
    assert "FOREWARN_SIMULATOR" in capsys.readouterr().err


@pytest.fixture
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_thread")
def test_train_writes_a_checkpoint_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out" / "tiny.pt"
    argv = ["train", "--output", str(output), "--episodes", "3", "--machines", "4"]
    argv += ["--ticks", "120", "--epochs", "1", "--horizon", "5", "--device", "cpu"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["checkpoint"] == str(output)
    assert set(report["test_next_step"]) == {"rmse_c", "mae_c"}
    assert "persistence" in captured.err
    checkpoint = Checkpoint.load(output)
    assert checkpoint.horizon == 5
    assert checkpoint.report["config"]["episodes"] == 3
    reference = checkpoint.report["drift_reference"]  # the drift watch's reference
    assert reference["step"] == 1 and reference["split"] == "test"
    assert reference["model_rmse_c"] == pytest.approx(report["test_next_step"]["rmse_c"])
    assert reference["persistence_rmse_c"] == pytest.approx(
        report["persistence_next_step"]["rmse_c"]
    )


@pytest.mark.parametrize(
    ("flags", "named"),
    [(["--ticks", "30"], "ticks"), (["--epochs", "0"], "epochs"), (["--horizon", "0"], "horizon")],
)
def test_train_rejects_impossible_config(
    flags: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", *flags, "--device", "cpu", "--output", str(tmp_path / "x.pt")]) == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_rebaseline_with_no_broker_says_so_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    assert main(["anomaly", "rebaseline", "m-1", "--broker", f"127.0.0.1:{port}"]) == 1
    assert f"cannot reach the broker at 127.0.0.1:{port}" in capsys.readouterr().err
