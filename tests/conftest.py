"""Fixtures that start real things: a mosquitto broker on a free loopback port, promtool.

A missing mosquitto or promtool fails the test with the command that installs it; it never
skips, so CI cannot go green without the real servers. ``make test`` installs both.

Hypothesis runs under one of two profiles, chosen here before any test module builds its
settings (a ``settings`` object takes what it does not name from the profile loaded when it is
made). Developers get Hypothesis's default: new examples each run, and the failing ones kept in
``.hypothesis/`` (git-ignored) and tried first next time. CI (``CI`` set, as ``.ci/run`` does)
gets ``ci``: derandomised, so a red build is the same red build when rerun, and each failure
printed with its ``@reproduce_failure`` blob, since CI keeps no example database.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from hypothesis import settings as hypothesis_settings
from paho.mqtt.enums import CallbackAPIVersion

from agent.app import Agent
from config.settings import Settings
from forewarn.broker import free_port, stop_process, wait_for_port

__all__ = ["free_port", "wait_for_port"]  # shared with the test modules

hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "default")

REPO = Path(__file__).resolve().parents[1]
INSTALL_HINT = (
    "sudo apt-get install -y mosquitto prometheus prometheus-alertmanager docker-compose "
    "openssl  (or run `make test`)"
)


SERVER_TOOLS = frozenset(
    {"mosquitto", "mosquitto_passwd", "prometheus", "promtool", "amtool", "docker-compose"}
)
"""The servers and their tools a test marked ``integration`` needs (pyproject's marker text);
other tools (openssl, hadolint from a wheel) do not make a test an integration test."""

_servers_used: set[str] = set()


def find_tool(name: str) -> str:
    """Path of a system tool, failing (not skipping) the test when it is absent."""
    if name in SERVER_TOOLS:
        _servers_used.add(name)
    path = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )
    if path is None:
        pytest.fail(f"{name} is not installed; install it with: {INSTALL_HINT}", pytrace=False)
    return path


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the test, for :func:`integration_marker_tells_the_truth`."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(autouse=True)
def integration_marker_tells_the_truth(request: pytest.FixtureRequest) -> Iterator[None]:
    """A passing test uses a server or a server's tool exactly when it is marked integration.

    So the marker means what pyproject says it means: ``-m "not integration"`` runs every test
    that needs no mosquitto, Prometheus or their tools, and no test hides among those that do.
    """
    _servers_used.clear()
    yield
    call = getattr(request.node, "report_call", None)
    if call is None or not call.passed:
        return  # a failed test may have stopped before it started its server
    marked = request.node.get_closest_marker("integration") is not None
    if _servers_used and not marked:
        pytest.fail(f"uses {', '.join(sorted(_servers_used))}: mark it integration")
    if marked and not _servers_used:
        pytest.fail("marked integration, yet started no server and ran none of their tools")


@dataclass
class Mosquitto:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def host(self) -> str:
        return "127.0.0.1"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real mosquitto on a free loopback port that never drops a message on its way.

    Its queues are unbounded (``max_queued_messages 0``): mosquitto drops messages for a
    subscriber that falls behind only when that bounds them, QoS 0 included. So a test that
    counts what an agent took counts what was published, whatever the QoS.
    """
    binary = find_tool("mosquitto")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "persistence false\n"
        "max_queued_messages 0\n"
        "log_type error\nlog_type warning\n"
    )
    log = tmp_path / "mosquitto.log"
    with log.open("wb") as out:
        process = subprocess.Popen([binary, "-c", str(conf)], stdout=out, stderr=out)
    try:
        wait_for_port(port)
        yield Mosquitto(port=port, process=process, log=log)
    finally:
        stop_process(process)


@pytest.fixture
def running_agent() -> Iterator[Callable[[Settings], Agent]]:
    """start(settings) -> an agent running and connected to its broker; all stopped at the end."""
    started: list[Agent] = []

    def start(settings: Settings) -> Agent:
        agent = Agent(settings)
        agent.start()
        started.append(agent)
        assert agent.wait_connected(15), f"{settings.mqtt.client_id} did not connect"
        return agent

    yield start
    for agent in started:
        agent.stop()


@pytest.fixture
def promtool() -> str:
    return find_tool("promtool")


@dataclass
class Recorder:
    """Collects JSON messages from a topic filter on a real broker."""

    messages: list[tuple[str, dict[str, object], bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[tuple[str, dict[str, object], bool]]:
        with self.lock:
            return list(self.messages)

    def wait_for(
        self,
        predicate: Callable[[list[tuple[str, dict[str, object], bool]]], bool],
        timeout_s: float,
    ) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self.snapshot()):
                return True
            time.sleep(0.1)
        return predicate(self.snapshot())


@pytest.fixture
def subscribe(mosquitto: Mosquitto) -> Iterator[Callable[[str], Recorder]]:
    """subscribe(filter) -> Recorder of every JSON message on it (retained ones flagged)."""
    clients: list[mqtt.Client] = []

    def start(topic_filter: str) -> Recorder:
        recorder = Recorder()
        subscribed = threading.Event()
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)

        def on_connect(c: mqtt.Client, u: object, f: object, rc: object, p: object) -> None:
            c.subscribe(topic_filter, qos=1)

        def on_subscribe(c: mqtt.Client, u: object, mid: int, rcs: object, p: object) -> None:
            subscribed.set()

        def on_message(c: mqtt.Client, u: object, message: mqtt.MQTTMessage) -> None:
            with recorder.lock:
                recorder.messages.append(
                    (message.topic, orjson.loads(message.payload), bool(message.retain))
                )

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.connect(mosquitto.host, mosquitto.port)
        client.loop_start()
        assert subscribed.wait(10), "test subscriber could not subscribe"
        clients.append(client)
        return recorder

    yield start
    for client in clients:
        client.disconnect()
        client.loop_stop()


def forewarn_env(mosquitto: Mosquitto | None = None, **extra: str) -> dict[str, str]:
    """Environment for a `forewarn` subprocess: no stray .env settings, our broker, and this
    checkout's code first on the path (an editable install elsewhere, a second git worktree
    say, would otherwise be what the subprocess runs while the tests run this one's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOREWARN_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    if mosquitto is not None:
        env["FOREWARN_MQTT__HOST"] = mosquitto.host
        env["FOREWARN_MQTT__PORT"] = str(mosquitto.port)
    env.update(extra)
    return env


def forewarn_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "forewarn.cli", *args]


@pytest.fixture
def prometheus_binary() -> str:
    """Debian's Prometheus server (package prometheus, like promtool)."""
    return find_tool("prometheus")


@pytest.fixture
def amtool() -> str:
    """Alertmanager's checker (Debian package prometheus-alertmanager)."""
    return find_tool("amtool")


@pytest.fixture
def docker_compose() -> str:
    """Debian's docker-compose: validates compose files without a Docker engine."""
    return find_tool("docker-compose")


@pytest.fixture(scope="module")
def torch_one_thread() -> Iterator[None]:
    """One torch intra-op thread for a module's model tests: on a busy 2-core runner, spinning
    thread pools cost seconds. Modules opt in with ``pytest.mark.usefixtures``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
