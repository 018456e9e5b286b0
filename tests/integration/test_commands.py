"""The `forewarn` commands as a user runs them: separate processes over a real mosquitto.

A configuration error and `forewarn demo` (its own embedded broker) need no mosquitto: those
tests are not marked integration.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.silence import SilenceBook
from config.topics import silence_topic, status_topic
from forewarn.cli import main
from tests.conftest import (
    Mosquitto,
    Recorder,
    forewarn_command,
    forewarn_env,
    free_port,
)


def healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


def retained(mosquitto: Mosquitto, topic: str, timeout_s: float = 10.0) -> bytes | None:
    """The message retained on ``topic`` now; None when there is none.

    Absence is proven, not waited out: the broker queues a subscription's retained messages
    before anything the subscriber publishes afterwards, so once a marker it sends to itself
    comes back, a retained message would already have arrived (the agent's restore relies on
    the same order).
    """
    marker = f"test/retained/{secrets.token_hex(4)}"
    found: list[bytes] = []
    done = threading.Event()
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)

    def on_connect(c: mqtt.Client, u: object, f: object, rc: object, p: object) -> None:
        c.subscribe([(topic, 1), (marker, 1)])

    def on_subscribe(c: mqtt.Client, u: object, mid: int, rcs: object, p: object) -> None:
        c.publish(marker, b"end", qos=1)

    def on_message(c: mqtt.Client, u: object, message: mqtt.MQTTMessage) -> None:
        if message.topic == marker:
            done.set()
        elif message.retain:
            found.append(bytes(message.payload))

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        assert done.wait(timeout_s), f"the marker did not come back (reading {topic!r})"
    finally:
        client.disconnect()
        client.loop_stop()
    return found[-1] if found else None


@pytest.mark.integration
def test_agent_and_simulator_processes_end_to_end(
    mosquitto: Mosquitto, tmp_path: Path, subscribe: Callable[[str], Recorder]
) -> None:
    metrics_port = free_port()
    env = forewarn_env(
        mosquitto,
        FOREWARN_METRICS__PORT=str(metrics_port),
        FOREWARN_METRICS__HOST="127.0.0.1",
        FOREWARN_AGENT__TICK_INTERVAL_S="0.05",
    )
    status = subscribe("factory/_agents/+/status")
    alerts = subscribe("factory/+/alerts")
    agent_log = (tmp_path / "agent.log").open("wb")
    agent = subprocess.Popen(
        forewarn_command("agent"), env=env, cwd=tmp_path, stdout=agent_log, stderr=agent_log
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and healthz(metrics_port) != 200:
            time.sleep(0.2)
        assert healthz(metrics_port) == 200, (tmp_path / "agent.log").read_text()
        simulate = subprocess.run(
            forewarn_command(
                "simulate",
                "--machines",
                "8",
                "--rate",
                "20",
                "--duration",
                "15",
                "--overheat",
                "2",
                "--seed",
                "5",
            ),
            env=env,
            cwd=tmp_path,
            capture_output=True,
            timeout=120,
        )
        assert simulate.returncode == 0, simulate.stderr.decode()
        assert alerts.wait_for(
            lambda ms: any(p["severity"] == "critical" for _, p, _ in ms), timeout_s=10
        ), (tmp_path / "agent.log").read_text()
    finally:
        agent.send_signal(signal.SIGTERM)
        code = agent.wait(timeout=60)
    assert code == 0, (tmp_path / "agent.log").read_text()
    assert status.wait_for(lambda ms: any(p["status"] == "offline" for _, p, _ in ms), timeout_s=10)
    statuses = [p["status"] for _, p, _ in status.snapshot()]
    assert statuses[0] == "online" and statuses[-1] == "offline", statuses


def test_bad_configuration_stops_with_key_value_and_fix(tmp_path: Path) -> None:
    """Stops at the settings, before any broker: not marked integration."""
    result = subprocess.run(
        forewarn_command("agent"),
        env=forewarn_env(FOREWARN_MQTT__PORT="70000"),
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 2
    message = result.stderr.decode()
    assert "FOREWARN_MQTT__PORT=70000" in message
    assert "less than or equal to 65535" in message


@pytest.mark.slow
def test_demo_runs_on_its_embedded_broker_and_exits_zero(tmp_path: Path) -> None:
    """`forewarn demo` brings its own broker (amqtt, in Python): not marked integration."""
    result = subprocess.run(
        forewarn_command("demo", "--duration", "30", "--rate", "4", "--machines", "8"),
        env=forewarn_env(FOREWARN_METRICS__PORT=str(free_port())),
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
    )
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    lines = re.findall(r"^ALERT (\S+) (warning|critical) (firing|resolved)", out, re.MULTILINE)
    assert lines, out
    warned = [m for m, severity, status in lines if (severity, status) == ("warning", "firing")]
    critical = [m for m, severity, status in lines if (severity, status) == ("critical", "firing")]
    assert any(
        m in critical
        and lines.index((m, "warning", "firing")) < lines.index((m, "critical", "firing"))
        for m in warned
    ), out
    assert "forewarn demo finished" in out


SIGINT_EXIT_DEADLINE_S = 15.0
"""A stop finishes a tick and flushes for at most FOREWARN_MQTT__FLUSH_TIMEOUT_S (5 s)."""


@pytest.mark.integration
def test_sigint_stops_the_agent_with_status_0_and_leaves_offline_retained(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """Ctrl-C in a terminal is SIGINT: the agent must stop as it does on SIGTERM (exit
    status 0, docs/operating.md "Exit status") and say `offline` itself, retained, so that a
    dashboard tells a clean stop ("stopped") from a lost agent (the will's "connection lost")."""
    client_id = "agent-sigint"
    metrics_port = free_port()
    env = forewarn_env(
        mosquitto,
        FOREWARN_MQTT__CLIENT_ID=client_id,
        FOREWARN_METRICS__PORT=str(metrics_port),
        FOREWARN_METRICS__HOST="127.0.0.1",
        FOREWARN_AGENT__TICK_INTERVAL_S="0.05",
        FOREWARN_MODEL__THREADS="1",
    )
    log = tmp_path / "agent.log"
    with log.open("wb") as out:
        agent = subprocess.Popen(
            forewarn_command("agent"), env=env, cwd=tmp_path, stdout=out, stderr=out
        )
    topic = status_topic("factory", client_id)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and healthz(metrics_port) != 200:
            time.sleep(0.1)
        assert healthz(metrics_port) == 200, log.read_text()
        online = retained(mosquitto, topic)
        assert online is not None and orjson.loads(online)["status"] == "online", online
        agent.send_signal(signal.SIGINT)
        sent = time.monotonic()
        try:
            code = agent.wait(timeout=SIGINT_EXIT_DEADLINE_S)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"the agent still ran {SIGINT_EXIT_DEADLINE_S:.0f} s after SIGINT:\n"
                + log.read_text()[-3000:]
            )
        took = time.monotonic() - sent
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(timeout=10)
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "received SIGINT; stopping" in text, text[-3000:]
    offline = retained(mosquitto, topic)
    assert offline is not None, "no retained status"
    status = orjson.loads(offline)
    assert (status["status"], status["reason"]) == ("offline", "stopped"), status
    print(f"agent exited {took:.2f} s after SIGINT")


@pytest.mark.integration
def test_silence_command_publishes_a_retained_silence_and_clears_it(
    mosquitto: Mosquitto,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`forewarn silence` is how an operator starts and ends maintenance: the silence must be
    retained (a restarted agent honours it) in the form the agent reads, `--clear` must remove
    it, and a duration it cannot read must publish nothing. Run in-process (the command's
    main), as a subprocess would spend its time importing the model libraries."""
    for name in [n for n in os.environ if n.upper().startswith("FOREWARN_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env
    topic = silence_topic("factory", "m-007")
    broker = ["--broker", f"{mosquitto.host}:{mosquitto.port}"]

    before = time.time()
    assert main(["silence", "m-007", "--for", "2h", "--reason", "bearing swap", *broker]) == 0
    after = time.time()
    assert "silence of m-007 set for 2h" in capsys.readouterr().out
    payload = retained(mosquitto, topic)
    assert payload is not None, "the silence is not retained"
    body = orjson.loads(payload)
    assert before + 7200 - 0.01 <= body["until"] <= after + 7200 + 0.01, (before, body)
    assert body["reason"] == "bearing swap"
    book = SilenceBook("factory")  # what every agent does with it
    book.handle(topic, payload)
    assert book.silenced("m-007", after + 7000) and not book.silenced("m-007", after + 7300)

    assert main(["silence", "m-007", "--clear", *broker]) == 0
    assert "silence of m-007 lifted" in capsys.readouterr().out
    assert retained(mosquitto, topic) is None, "--clear left the silence retained"

    assert main(["silence", "m-007", "--for", "2 weeks", *broker]) == 2
    assert "'2 weeks' is not a duration" in capsys.readouterr().err
    assert retained(mosquitto, topic) is None, "a refused duration published a silence"


REPLAY_HEADER = "machine,ts,temperature_c,vibration_hz,pressure_psi,rpm"


@pytest.mark.integration
def test_simulate_replay_publishes_the_csv_rows_in_order_with_their_values(
    mosquitto: Mosquitto, tmp_path: Path, subscribe: Callable[[str], Recorder]
) -> None:
    """A replay turns each usable CSV row into one reading on its machine's topic, in file
    order, with the file's values and spacing (ts 0.1 s apart at speed 2: 0.05 s); a row that
    is not numbers is skipped with a warning that names its line."""
    rows = [
        (f"press-{i % 2 + 1}", 1_000.0 + 0.1 * i, 70.0 + 0.5 * i, 40.125 + i, 120.5, 1650.0 + i)
        for i in range(8)
    ]
    lines = [REPLAY_HEADER, *(",".join(str(v) for v in row) for row in rows)]
    lines.insert(3, "press-1,1000.15,hot,40,120,1650")  # line 4 of the file
    csv_path = tmp_path / "history.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    telemetry = subscribe("factory/+/telemetry")
    result = subprocess.run(
        forewarn_command(
            "simulate",
            "--replay",
            str(csv_path),
            "--machine-column",
            "machine",
            "--speed",
            "2",
            "--qos",
            "1",
            "--broker",
            f"{mosquitto.host}:{mosquitto.port}",
        ),
        env=forewarn_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"skipping line 4 of {csv_path}" in result.stderr, result.stderr
    assert telemetry.wait_for(lambda ms: len(ms) >= len(rows), 10), telemetry.snapshot()
    received = telemetry.snapshot()
    assert [
        (
            topic,
            p["machine_id"],
            p["temperature_c"],
            p["vibration_hz"],
            p["pressure_psi"],
            p["rpm"],
        )
        for topic, p, _ in received
    ] == [(f"factory/{m}/telemetry", m, t, v, p, r) for m, _, t, v, p, r in rows]
    for machine in ("press-1", "press-2"):
        seq = [int(str(p["seq"])) for _, p, _ in received if p["machine_id"] == machine]
        assert seq == list(range(seq[0], seq[0] + 4)), (machine, seq)
    stamps = [float(str(p["ts"])) for _, p, _ in received]
    assert stamps == sorted(stamps)
    span = (rows[-1][1] - rows[0][1]) / 2
    assert stamps[-1] - stamps[0] >= span - 0.01, "faster than the file's spacing / speed"


def test_simulate_replay_of_a_file_without_a_feature_column_says_which(tmp_path: Path) -> None:
    csv_path = tmp_path / "history.csv"
    csv_path.write_text("machine,temperature_c,vibration_hz,pressure_psi\npress-1,70,40,120\n")
    result = subprocess.run(
        forewarn_command("simulate", "--replay", str(csv_path), "--broker", "127.0.0.1:1"),
        env=forewarn_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert f"error: {csv_path} lacks the columns ['rpm']" in result.stderr, result.stderr
