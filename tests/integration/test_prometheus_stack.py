"""A real Prometheus scrapes a real agent fed by the simulator through a real mosquitto.

Prometheus (Debian's server) runs on a free loopback port with the stack's own
config/prometheus/prometheus.yml and alerts.yml, changed only where a test needs it: a 1 s
scrape and evaluation interval, the in-process agent as the target, no Alertmanager, and every
rule's `for:` cut to 2 s (the overheat of a simulated machine lasts seconds here, minutes on
a plant). Then every PromQL expression of every panel of the Grafana dashboard must return
data, and the "machine overheating" alert must fire for a machine the simulator overheats.
"""

from __future__ import annotations

import json
import math
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.app import Agent
from config.settings import Settings, load_settings
from forewarn.broker import stop_process
from simulator.publish import SimulatorPublisher, build_fleet
from tests.conftest import REPO, Mosquitto, free_port

pytestmark = pytest.mark.integration

PROMETHEUS_DIR = REPO / "config" / "prometheus"
DASHBOARD = REPO / "config" / "grafana" / "dashboards" / "forewarn.json"
OVERHEAT_ALERT = "ForewarnMachineOverheating"
JOB = "forewarn"
TEST_FOR = "2s"
# What Grafana puts in for its interval variables, at a 1 s scrape interval.
GRAFANA_VARIABLES = {"$__rate_interval": "10s", "$__interval": "1s", "$__range": "5m"}


@dataclass
class Prometheus:
    url: str
    log: Path

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(self.url + path + query, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{path} {params}: HTTP {error.code} {error.read()!r}") from error
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        result = data["result"]
        assert isinstance(result, list)
        return result

    def alerts(self, name: str) -> list[dict[str, Any]]:
        return [
            alert
            for alert in self.get("/api/v1/alerts")["alerts"]
            if alert["labels"]["alertname"] == name
        ]


def rules_for_test(tmp_path: Path) -> Path:
    """alerts.yml as it is, but with every `for:` cut to TEST_FOR."""
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = TEST_FOR
    path = tmp_path / "alerts.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


def config_for_test(tmp_path: Path, agent_port: int) -> Path:
    """prometheus.yml scraping only the forewarn job, at the in-process agent, every second."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(
        {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    )
    config.pop("alerting")
    config["rule_files"] = [str(rules_for_test(tmp_path))]
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == JOB]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{agent_port}"]}]
    config["scrape_configs"] = [job]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@contextmanager
def running_prometheus(binary: str, tmp_path: Path, agent_port: int) -> Iterator[Prometheus]:
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_for_test(tmp_path, agent_port)}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=out,
        )
    prometheus = Prometheus(url=f"http://127.0.0.1:{port}", log=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(prometheus.url + "/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert process.poll() is None, f"prometheus exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"prometheus not ready: {log.read_text()}"
            time.sleep(0.2)
        yield prometheus
    finally:
        stop_process(process)


def dashboard_queries(machine_id: str) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel, Grafana variables filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    panels = list(dashboard["panels"])
    while panels:
        panel = panels.pop(0)
        panels.extend(panel.get("panels", []))  # panels inside collapsed rows
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$machine", machine_id)
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"{panel['title']}: unknown variable in {expr}"
            queries.append((panel["title"], expr))
    return queries


def settings_for(mosquitto: Mosquitto) -> Settings:
    settings = load_settings(_env_file=None)
    settings.mqtt = settings.mqtt.model_copy(
        update={"host": mosquitto.host, "port": mosquitto.port, "client_id": "agent-scraped"}
    )
    settings.metrics = settings.metrics.model_copy(update={"host": "127.0.0.1", "port": 0})
    settings.agent = settings.agent.model_copy(update={"tick_interval_s": 0.1})
    # The calibrated anomaly score, for the "Anomaly score" panel's second query.
    settings.anomaly = settings.anomaly.model_copy(update={"enabled": True})
    # A drift ratio within seconds, for the "machines drifting most" panel.
    settings.drift = settings.drift.model_copy(
        update={"warm_up_readings": 20, "memory_readings": 100}
    )
    # 10 Hz: the overheating machines cross the threshold 19-26 s into the run and stay over
    # it for several seconds; the test stops the simulator once it has what it needs.
    settings.simulator = settings.simulator.model_copy(
        update={"machines": 8, "rate_hz": 10.0, "duration_s": 40.0, "overheat": 2, "seed": 3}
    )
    return settings


def wait_for(what: str, check: Any, timeout_s: float, prometheus: Prometheus) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, (
            f"{what} within {timeout_s:.0f} s; prometheus log:\n{prometheus.log.read_text()}"
        )
        time.sleep(0.5)


def test_dashboard_has_data_and_overheat_alert_fires_in_prometheus(
    mosquitto: Mosquitto, tmp_path: Path, prometheus_binary: str
) -> None:
    settings = settings_for(mosquitto)
    fleet = build_fleet(settings.simulator, settings.alerts.threshold_c)
    overheating = {fleet.machine_ids[plan.machine_index] for plan in fleet.overheats}
    agent = Agent(settings)
    agent.start()
    stop_simulator = threading.Event()
    simulator = SimulatorPublisher(
        settings.mqtt, settings.simulator, settings.alerts.threshold_c, stop=stop_simulator
    )
    simulator_thread = threading.Thread(target=simulator.run, name="test-simulator")
    try:
        assert agent.wait_connected(10), "agent did not connect to mosquitto"
        with running_prometheus(prometheus_binary, tmp_path, agent.http.port) as prometheus:
            simulator_thread.start()
            check_prometheus(prometheus, settings, fleet.machine_ids, overheating)
    finally:
        stop_simulator.set()
        if simulator_thread.is_alive():
            simulator_thread.join(timeout=30)
        agent.stop()


def check_prometheus(
    prometheus: Prometheus, settings: Settings, machine_ids: list[str], overheating: set[str]
) -> None:
    wait_for(
        "the agent is not scraped",
        lambda: prometheus.query(f'up{{job="{JOB}"}} == 1'),
        20,
        prometheus,
    )
    firing = wait_for(
        f"{OVERHEAT_ALERT} did not fire",
        lambda: [a for a in prometheus.alerts(OVERHEAT_ALERT) if a["state"] == "firing"],
        60,
        prometheus,
    )
    machine_id = firing[0]["labels"]["machine_id"]
    assert machine_id in overheating, f"{machine_id} does not overheat; {overheating} do"
    assert firing[0]["labels"]["severity"] == "critical"
    assert float(firing[0]["value"]) >= settings.alerts.threshold_c
    assert machine_id in firing[0]["annotations"]["summary"]

    # Every panel's query returns at least one finite sample.
    empty = []
    for title, expr in dashboard_queries(machine_id):
        result = prometheus.query(expr)
        values = [float(sample["value"][1]) for sample in result]
        if not any(math.isfinite(v) for v in values):
            empty.append(f"{title}: {expr} -> {result}")
    assert not empty, "panels without data:\n" + "\n".join(empty)
    # The machine variable (label_values(...)) lists every machine of the fleet.
    machines = prometheus.get(
        "/api/v1/label/machine_id/values", **{"match[]": "forewarn_machine_temperature_celsius"}
    )
    assert set(machines) == set(machine_ids)

    # Every rule loaded and evaluates without error on real data.
    groups = prometheus.get("/api/v1/rules")["groups"]
    loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
    expected = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    names = {rule["alert"] for group in expected["groups"] for rule in group["rules"]}
    assert set(loaded) == names
    errors = {name: rule.get("lastError") for name, rule in loaded.items()}
    assert all(rule["health"] == "ok" for rule in loaded.values()), errors
    # Healthy machines raise no overheat alert, and nothing is wrong with the agent.
    for alert in prometheus.alerts(OVERHEAT_ALERT):
        assert alert["labels"]["machine_id"] in overheating
    for quiet in ("ForewarnAgentDown", "ForewarnBrokerDisconnected", "ForewarnMachineSilent"):
        fired = [a for a in prometheus.alerts(quiet) if a["state"] == "firing"]
        assert not fired, f"{quiet} fired: {fired}"
