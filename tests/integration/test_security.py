"""No one gets in: passwords, TLS and topic ACLs, proven against a real mosquitto.

The test makes its own PKI with the openssl command line (a CA, a broker certificate, a client
certificate, and a second, unrelated CA), a mosquitto password file with mosquitto_passwd, and
runs the shipped ACL example (config/mosquitto/acl.example). Wrong settings must stop the
agent and the simulator at start-up with a message that names the setting to fix, and no
secret may appear in any output.

Unusable TLS files and `forewarn config check` are judged before any connection: those tests
need no broker (openssl makes their files) and are not marked integration.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.alerts import AlertEvent
from agent.app import Agent
from config.errors import ConfigError
from config.mqtt import MqttSettings
from config.settings import Settings, load_settings
from forewarn.broker import stop_process
from forewarn.cli import main
from simulator.publish import SimulatorPublisher
from tests.conftest import (
    REPO,
    Mosquitto,
    find_tool,
    forewarn_command,
    forewarn_env,
    free_port,
    wait_for_port,
)
from tests.faultkit import holds_within
from tests.modelfiles import LSTM, RIDGE, copy_model
from wire.tls import BrokerCheckError, check_broker, tls_context

PASSWORDS = {
    "forewarn-agent": "agent-pw-Zq81",
    "forewarn-simulator": "sim-pw-Kx27",
    "forewarn-reader": "reader-pw-Lm55",
    "forewarn-operator": "operator-pw-Vd43",
}

CA_CONF = """[req]
distinguished_name = dn
prompt = no
[dn]
CN = {cn}
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
"""
LEAF_EXT = """basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
subjectAltName = {san}
"""


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    misnamed_cert: Path  # a broker certificate for another host name
    misnamed_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # an unrelated CA: trusting it instead is the "wrong CA"
    other_client_cert: Path  # a client certificate the broker's CA did not sign
    other_client_key: Path


def openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        [find_tool("openssl"), *args], cwd=cwd, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    (directory / f"{name}.cnf").write_text(CA_CONF.format(cn=f"forewarn test {name}"))
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
        "-config", f"{name}.cnf", "-extensions", "v3_ca",
        cwd=directory,
    )  # fmt: skip
    return directory / f"{name}.pem", directory / f"{name}.key"


def make_leaf(directory: Path, name: str, ca: tuple[Path, Path], san: str) -> tuple[Path, Path]:
    (directory / f"{name}.ext").write_text(LEAF_EXT.format(san=san))
    openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=directory,
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        cwd=directory,
    )  # fmt: skip
    key = directory / f"{name}.key"
    key.chmod(0o644)  # mosquitto may run as another user; these keys protect nothing real
    return directory / f"{name}.pem", key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    directory.chmod(0o755)
    ca = make_ca(directory, "ca")
    other = make_ca(directory, "other-ca")
    server = make_leaf(directory, "server", ca, "IP:127.0.0.1,DNS:localhost")
    misnamed = make_leaf(directory, "misnamed", ca, "DNS:broker.invalid")
    client = make_leaf(directory, "forewarn-client", ca, "DNS:forewarn-client")
    rogue = make_leaf(directory, "rogue-client", other, "DNS:rogue-client")
    return Pki(
        ca=ca[0],
        server_cert=server[0],
        server_key=server[1],
        misnamed_cert=misnamed[0],
        misnamed_key=misnamed[1],
        client_cert=client[0],
        client_key=client[1],
        other_ca=other[0],
        other_client_cert=rogue[0],
        other_client_key=rogue[1],
    )


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """broker(*config lines) -> a real mosquitto on a free port, anonymous off, our passwords."""
    processes: list[subprocess.Popen[bytes]] = []
    tmp_path.chmod(0o755)
    passwd = tmp_path / "passwd"
    for index, (user, password) in enumerate(PASSWORDS.items()):
        create = ["-c"] if index == 0 else []
        subprocess.run(
            [find_tool("mosquitto_passwd"), *create, "-b", str(passwd), user, password],
            check=True,
            capture_output=True,
            timeout=30,
        )
    passwd.chmod(0o644)

    def start(*lines: str, port: int | None = None) -> Mosquitto:
        port = port or free_port()
        conf = tmp_path / f"mosquitto-{port}.conf"
        conf.write_text(
            "\n".join(
                [
                    f"listener {port} 127.0.0.1",
                    "allow_anonymous false",
                    f"password_file {passwd}",
                    "persistence false",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    # As root, mosquitto would drop to user `mosquitto`, who cannot read tmp.
                    f"user {getpass.getuser()}",
                    *lines,
                ]
            )
            + "\n"
        )
        log = tmp_path / f"mosquitto-{port}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [find_tool("mosquitto"), "-c", str(conf)], stdout=out, stderr=out
            )
        processes.append(process)
        try:
            wait_for_port(port)
        except TimeoutError:
            pytest.fail(f"mosquitto did not start: {log.read_text()}")
        return Mosquitto(port=port, process=process, log=log)

    yield start
    for process in processes:
        stop_process(process)


def tls_lines(pki: Pki, require_certificate: bool, misnamed: bool = False) -> list[str]:
    cert, key = (
        (pki.misnamed_cert, pki.misnamed_key) if misnamed else (pki.server_cert, pki.server_key)
    )
    return [
        f"cafile {pki.ca}",
        f"certfile {cert}",
        f"keyfile {key}",
        f"require_certificate {'true' if require_certificate else 'false'}",
    ]


def mqtt_settings(broker: Mosquitto, **changes: object) -> MqttSettings:
    return MqttSettings.model_validate({"host": broker.host, "port": broker.port, **changes})


def tls_env(pki: Pki, **extra: str) -> dict[str, str]:
    return {
        "FOREWARN_MQTT__TLS_ENABLED": "true",
        "FOREWARN_MQTT__TLS_CA_FILE": str(pki.ca),
        "FOREWARN_MQTT__TLS_CERT_FILE": str(pki.client_cert),
        "FOREWARN_MQTT__TLS_KEY_FILE": str(pki.client_key),
        **extra,
    }


def run_forewarn(
    broker: Mosquitto, *args: str, env: dict[str, str], timeout_s: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        forewarn_command(*args),
        env=forewarn_env(broker, FOREWARN_LOG_LEVEL="DEBUG", FOREWARN_METRICS__PORT="0", **env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO,
    )


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for password in PASSWORDS.values():
            assert password not in text, "a password leaked into the output"


# ------------------------------------------------------------------ a secure run end to end


@pytest.mark.integration
def test_agent_and_simulator_over_tls_with_client_certificates_and_passwords(
    pki: Pki, broker: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    """TLS with client certificates and passwords on the same listener: readings flow; the
    agent reads its password from a file, the simulator from the environment."""
    secure = broker(*tls_lines(pki, require_certificate=True))
    password_file = tmp_path / "agent-password"
    password_file.write_text(PASSWORDS["forewarn-agent"] + "\n")
    common = {
        "tls_enabled": True,
        "tls_ca_file": pki.ca,
        "tls_cert_file": pki.client_cert,
        "tls_key_file": pki.client_key,
    }
    settings = load_settings(_env_file=None)
    settings.mqtt = mqtt_settings(
        secure,
        client_id="forewarn-agent",
        username="forewarn-agent",
        password_file=password_file,
        **common,
    )
    assert settings.mqtt.password is not None
    assert settings.mqtt.password.get_secret_value() == PASSWORDS["forewarn-agent"]
    settings.metrics = settings.metrics.model_copy(update={"host": "127.0.0.1", "port": 0})
    settings.agent = settings.agent.model_copy(update={"tick_interval_s": 0.05})
    settings.simulator = settings.simulator.model_copy(
        update={"machines": 5, "rate_hz": 20.0, "duration_s": 2.0, "client_id": "sim"}
    )
    agent = Agent(settings)
    agent.start()
    try:
        assert agent.wait_connected(15), f"agent not connected: {secure.log.read_text()}"
        assert agent.http._server.server_address[0] == "127.0.0.1", "metrics.host is the bind"
        simulator_mqtt = mqtt_settings(
            secure,
            username="forewarn-simulator",
            password=PASSWORDS["forewarn-simulator"],
            **common,
        )
        publisher = SimulatorPublisher(simulator_mqtt, settings.simulator, 95.0)
        stats = publisher.run()
        deadline = time.monotonic() + 15
        registry = agent.metrics.registry
        while (
            time.monotonic() < deadline
            and (registry.get_sample_value("forewarn_readings_total") or 0) < stats.readings
        ):
            time.sleep(0.1)
        assert registry.get_sample_value("forewarn_readings_total") == stats.readings == 5 * 40
    finally:
        agent.stop()
    assert_no_secret(secure.log.read_text())


# ------------------------------------------------------------------ loud failures at start-up


@pytest.mark.integration
@pytest.mark.parametrize("command", ["agent", "simulate"])
def test_a_wrong_ca_stops_start_up_with_a_message(
    pki: Pki, broker: Callable[..., Mosquitto], command: str
) -> None:
    secure = broker(*tls_lines(pki, require_certificate=False))
    env = tls_env(
        pki,
        FOREWARN_MQTT__TLS_CA_FILE=str(pki.other_ca),
        FOREWARN_MQTT__USERNAME="forewarn-agent",
        FOREWARN_MQTT__PASSWORD=PASSWORDS["forewarn-agent"],
    )
    started = time.monotonic()
    result = run_forewarn(
        secure, command, *(["--duration", "5"] * (command == "simulate")), env=env
    )
    took = time.monotonic() - started
    print(result.stderr[-1500:])
    assert result.returncode == 2, "a configuration error: exit status 2"
    assert "TLS handshake" in result.stderr
    assert "certificate verify failed" in result.stderr
    assert "FOREWARN_MQTT__TLS_CA_FILE" in result.stderr
    assert took < 60, "it fails at once, not after retrying"
    assert_no_secret(result.stdout, result.stderr)


@pytest.mark.integration
@pytest.mark.parametrize("command", ["agent", "simulate"])
def test_a_wrong_password_stops_start_up_with_a_message(
    pki: Pki, broker: Callable[..., Mosquitto], command: str
) -> None:
    plain = broker()
    env = {
        "FOREWARN_MQTT__USERNAME": "forewarn-agent",
        "FOREWARN_MQTT__PASSWORD": PASSWORDS["forewarn-simulator"],  # someone else's
    }
    result = run_forewarn(plain, command, *(["--duration", "5"] * (command == "simulate")), env=env)
    print(result.stderr[-1500:])
    assert result.returncode == 2, "a configuration error: exit status 2"
    assert "refused the credentials" in result.stderr
    assert "FOREWARN_MQTT__USERNAME" in result.stderr
    assert "FOREWARN_MQTT__PASSWORD" in result.stderr
    assert_no_secret(result.stdout, result.stderr)


@pytest.mark.integration
def test_every_tls_and_login_mistake_is_named(pki: Pki, broker: Callable[..., Mosquitto]) -> None:
    """The start-up check against each kind of mistake (in-process, the same code the agent
    and the simulator run before connecting)."""
    plain = broker()
    with_certs = broker(*tls_lines(pki, require_certificate=True))
    misnamed = broker(*tls_lines(pki, require_certificate=False, misnamed=True))
    agent_login = {"username": "forewarn-agent", "password": PASSWORDS["forewarn-agent"]}
    tls = {"tls_enabled": True, "tls_ca_file": pki.ca}
    client_cert = {"tls_cert_file": pki.client_cert, "tls_key_file": pki.client_key}

    def failure(target: Mosquitto, **changes: object) -> str:
        with pytest.raises(BrokerCheckError) as caught:
            check_broker(mqtt_settings(target, **changes), timeout_s=10)
        return str(caught.value)

    # Right: passes.
    check_broker(mqtt_settings(plain, **agent_login))
    check_broker(mqtt_settings(with_certs, **agent_login, **tls, **client_cert))
    check_broker(mqtt_settings(misnamed, **agent_login, **tls, tls_insecure=True))

    assert "anonymous" in failure(plain)
    assert "FOREWARN_MQTT__USERNAME" in failure(plain, username="nobody", password="x")
    message = failure(with_certs, **agent_login, **tls)
    assert "client certificate" in message and "FOREWARN_MQTT__TLS_CERT_FILE" in message
    other_client = {"tls_cert_file": pki.other_client_cert, "tls_key_file": pki.other_client_key}
    message = failure(with_certs, **agent_login, **tls, **other_client)
    assert "client certificate" in message and "FOREWARN_MQTT__TLS_CERT_FILE" in message
    message = failure(misnamed, **agent_login, **tls)
    assert "does not name 127.0.0.1" in message and "FOREWARN_MQTT__HOST" in message
    message = failure(with_certs, **agent_login)
    assert "TLS listener" in message and "FOREWARN_MQTT__TLS_ENABLED=true" in message
    message = failure(plain, **agent_login, **tls)
    assert "TLS listener" in message and "FOREWARN_MQTT__PORT" in message
    # A broker that is not there (yet), or that hangs up or stays silent, is not a
    # configuration error: the client keeps trying.
    check_broker(MqttSettings(host="127.0.0.1", port=free_port()), timeout_s=2)
    for behaviour in ("hang up", "stay silent"):
        with socket.create_server(("127.0.0.1", 0)) as server:
            port = server.getsockname()[1]

            accepted: list[int] = []

            def serve(
                server: socket.socket = server,
                behaviour: str = behaviour,
                accepted: list[int] = accepted,
            ) -> None:
                with contextlib.suppress(OSError):  # the server closes under accept()
                    while True:
                        connection, _ = server.accept()
                        accepted.append(1)
                        if behaviour == "stay silent":
                            time.sleep(1.5)
                        connection.close()

            threading.Thread(target=serve, daemon=True).start()
            check_broker(MqttSettings(host="127.0.0.1", port=port, **agent_login), timeout_s=1)
            # Hung up on: a second look (does it speak TLS?) before trying anyway.
            assert len(accepted) == (2 if behaviour == "hang up" else 1)


def test_unusable_tls_files_are_named_before_any_connection(pki: Pki, tmp_path: Path) -> None:
    """A CA file that is no certificate, a key of another certificate, an encrypted key (which
    would make OpenSSL prompt on a terminal a daemon does not have): each is a ConfigError
    (exit status 2) naming the setting."""
    openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-aes256", "-pass", "pass:secret", "-out", "encrypted.key",
        cwd=tmp_path,
    )  # fmt: skip
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    cases = [
        ({"tls_ca_file": not_pem}, "FOREWARN_MQTT__TLS_CA_FILE"),
        ({"tls_cert_file": pki.client_cert, "tls_key_file": pki.server_key}, "TLS_KEY_FILE"),
        ({"tls_cert_file": pki.client_cert, "tls_key_file": tmp_path / "encrypted.key"},
         "encrypted"),
    ]  # fmt: skip
    for changes, named in cases:
        with pytest.raises(ConfigError) as caught:
            tls_context(MqttSettings.model_validate({"tls_enabled": True, **changes}))
        assert named in str(caught.value)


def test_config_check_masks_secrets_from_env_and_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`forewarn config check` (its entry point, in-process) shows secrets as *** whether
    they come from the environment or from a file, and names an unreadable password file."""
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in list(os.environ):
        if name.startswith("FOREWARN_"):
            monkeypatch.delenv(name)
    secret_file = tmp_path / "password"
    secret_file.write_text("from-a-file-Qw3\n")
    monkeypatch.setenv("FOREWARN_MQTT__USERNAME", "u")
    for name, value in (
        ("FOREWARN_MQTT__PASSWORD", "from-env-Pz9"),
        ("FOREWARN_MQTT__PASSWORD_FILE", str(secret_file)),
    ):
        monkeypatch.setenv(name, value)
        assert main(["config", "check"]) == 0
        out, err = capsys.readouterr()
        assert orjson.loads(out)["mqtt"]["password"] == "***"
        assert "from-env-Pz9" not in out + err
        assert "from-a-file-Qw3" not in out + err
        monkeypatch.delenv(name)
    monkeypatch.setenv("FOREWARN_MQTT__PASSWORD_FILE", str(tmp_path / "nope"))
    assert main(["config", "check"]) == 2
    err = capsys.readouterr().err
    assert "FOREWARN_MQTT__PASSWORD_FILE" in err
    assert "No such file" in err


# ------------------------------------------------------------------ the ACL example


@dataclass
class Watcher:
    """A logged-in client recording what reaches its subscriptions, and their grants."""

    client: mqtt.Client
    messages: list[tuple[str, bytes]]
    granted: dict[str, int]


def watcher(target: Mosquitto, user: str, *filters: str) -> Watcher:
    messages: list[tuple[str, bytes]] = []
    granted: dict[str, int] = {}
    done = threading.Event()
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"w-{user}")
    client.username_pw_set(user, PASSWORDS[user])

    def on_connect(c: mqtt.Client, u: object, f: object, rc: object, p: object) -> None:
        c.subscribe([(topic_filter, 1) for topic_filter in filters])

    def on_subscribe(c: mqtt.Client, u: object, mid: int, codes: list, p: object) -> None:
        granted.update(
            {
                topic_filter: int(code.value)
                for topic_filter, code in zip(filters, codes, strict=True)
            }
        )
        done.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = lambda c, u, m: messages.append((m.topic, m.payload))
    client.connect(target.host, target.port)
    client.loop_start()
    assert done.wait(10), f"{user} could not subscribe"
    return Watcher(client, messages, granted)


def publisher(target: Mosquitto, user: str) -> mqtt.Client:
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"p-{user}")
    client.username_pw_set(user, PASSWORDS[user])
    client.connect(target.host, target.port)
    client.loop_start()
    return client


def reading(machine_id: str, seq: int) -> bytes:
    return orjson.dumps(
        {
            "machine_id": machine_id,
            "ts": time.time() - 100 + seq,
            "seq": seq,
            "temperature_c": 70.0,
            "vibration_hz": 35.0,
            "pressure_psi": 120.0,
            "rpm": 1650.0,
        }
    )


@pytest.mark.integration
def test_the_acl_example_confines_each_user(broker: Callable[..., Mosquitto]) -> None:
    acl = REPO / "config" / "mosquitto" / "acl.example"
    target = broker(f"acl_file {acl}")
    settings: Settings = load_settings(_env_file=None)
    settings.mqtt = mqtt_settings(
        target,
        client_id="forewarn-agent",
        username="forewarn-agent",
        password=PASSWORDS["forewarn-agent"],
    )
    settings.metrics = settings.metrics.model_copy(update={"host": "127.0.0.1", "port": 0})
    settings.agent = settings.agent.model_copy(update={"tick_interval_s": 0.05})
    reader = watcher(target, "forewarn-reader", "factory/+/alerts", "factory/_agents/+/status",
                     "factory/+/telemetry")  # fmt: skip
    sneak = watcher(target, "forewarn-simulator", "factory/+/alerts", "factory/+/telemetry")
    agent = Agent(settings)
    agent.start()
    machine = publisher(target, "forewarn-simulator")
    clients = [reader.client, sneak.client, machine]
    try:
        # The agent's restore (which reads the alerts back through its marker topic) and its
        # connection succeed within the ACL.
        assert agent.wait_connected(15), f"agent not ready: {agent.health()[1]}"
        registry = agent.metrics.registry

        # Allowed: a machine's telemetry reaches the agent.
        for seq in range(3):
            machine.publish("factory/m-1/telemetry", reading("m-1", seq), qos=1).wait_for_publish(5)

        # Denied: the agent writing telemetry or anything else; the machine user forging an
        # alert or another agent's status; the reader writing telemetry. Each is acknowledged
        # (mosquitto acknowledges a denied publish and drops it) before the next step, so each
        # has been routed, or dropped, before the fences below are sent.
        denied = [
            agent.client.publish("factory/m-2/telemetry", reading("m-2", 0), qos=1),
            agent.client.publish("factory/_agents/someone-else/status", b"online", qos=1),
            agent.client.publish("elsewhere/topic", b"x", qos=1),
            machine.publish("factory/m-1/alerts", b'{"forged": true}', qos=1),
            machine.publish("factory/_agents/forewarn-agent/status", b"forged", qos=1),
        ]
        reader_out = publisher(target, "forewarn-reader")
        clients.append(reader_out)
        denied.append(reader_out.publish("factory/m-3/telemetry", reading("m-3", 0), qos=1))
        for info in denied:
            info.wait_for_publish(5)

        # Fences: a broker delivers to each subscriber in the order it routed, so once the last
        # allowed reading has been counted and the agent's alert has reached the reader, what a
        # denied publish would have brought them has arrived too. Then "nothing else" is known.
        machine.publish("factory/m-1/telemetry", reading("m-1", 3), qos=1).wait_for_publish(5)
        event = AlertEvent(
            machine_id="m-1", severity="warning", status="firing", ts=time.time(),
            temperature_c=90.0, forecast_c=96.0, threshold_c=95.0, time_to_threshold_s=10.0,
            alert_id="m-1-1", seq=1, previous_state="ok",
        )  # fmt: skip
        agent.publisher.publish(event)
        assert holds_within(
            lambda: (registry.get_sample_value("forewarn_readings_total") or 0) >= 4, 10
        ), "m-1's readings did not all arrive"
        assert holds_within(
            lambda: any(t.endswith("/alerts") for t, _ in list(reader.messages)), 10
        ), "the agent's alert did not reach the reader"

        assert registry.get_sample_value("forewarn_readings_total") == 4, "only m-1's readings"
        assert set(agent.store.slot_of) == {"m-1"}, (
            "m-2 and m-3 were written by users without rights"
        )
        alerts = [(t, orjson.loads(p)) for t, p in reader.messages if t.endswith("/alerts")]
        assert [(t, p["alert_id"]) for t, p in alerts] == [("factory/m-1/alerts", "m-1-1")]
        statuses = {t for t, _ in reader.messages if t.endswith("/status")}
        assert statuses == {"factory/_agents/forewarn-agent/status"}
        assert all(p != b"forged" for _, p in reader.messages)
        assert not [t for t, _ in reader.messages if t.endswith("/telemetry")], (
            "the reader may not read telemetry"
        )
        # The machine user may read nothing, so nothing can fence it: mosquitto grants its
        # subscriptions and filters at delivery. The alert that fenced the reader was routed to
        # both at once; had the filter let it through, it would be on its way here too.
        assert not [t for t, _ in sneak.messages], "the machine user may read nothing"
    finally:
        agent.stop()
        for client in clients:
            client.disconnect()
            client.loop_stop()


@pytest.mark.integration
def test_only_the_operator_role_commands_models_and_silences(
    broker: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    """Under the shipped ACL, the reader and the machine user publishing a model command or a
    silence are refused by mosquitto (the agent never hears them); the operator's reach the
    agent, which swaps its model and silences the machine."""
    acl = REPO / "config" / "mosquitto" / "acl.example"
    target = broker(f"acl_file {acl}")
    folder = tmp_path / "models"
    live = copy_model(RIDGE, folder, "ridge")
    copy_model(LSTM, folder, "lstm")
    settings: Settings = load_settings(
        _env_file=None,
        model={"kind": "ridge", "checkpoint": live, "runtime": "numpy", "directory": folder},
    )
    settings.mqtt = mqtt_settings(
        target,
        client_id="forewarn-agent",
        username="forewarn-agent",
        password=PASSWORDS["forewarn-agent"],
    )
    settings.metrics = settings.metrics.model_copy(update={"host": "127.0.0.1", "port": 0})
    agent = Agent(settings)
    agent.start()
    clients = [publisher(target, user) for user in ("forewarn-reader", "forewarn-simulator")]
    operator = publisher(target, "forewarn-operator")
    clients.append(operator)
    command = "factory/_agents/forewarn-agent/model"
    try:
        assert agent.wait_connected(15), f"agent not ready: {agent.health()[1]}"
        served = agent.forecaster.version
        until = orjson.dumps({"until": time.time() + 3600, "reason": "test"})
        denied = []
        for client in clients[:2]:
            denied.append(client.publish(command, b'{"live": "lstm.json"}', qos=1, retain=True))
            denied.append(client.publish("factory/m-1/silence", until, qos=1, retain=True))
        for info in denied:
            info.wait_for_publish(5)
        # Fence: the operator's silence of m-9 is routed after every denied publish above.
        operator.publish("factory/m-9/silence", until, qos=1, retain=True).wait_for_publish(5)
        assert holds_within(lambda: agent.silences.silenced("m-9", time.time()), 10), (
            "the operator's silence did not reach the agent"
        )
        assert not agent.silences.silenced("m-1", time.time()), "a silence without the role"
        assert agent.models.wait_idle()
        assert agent.forecaster.version == served, "a model command without the role"

        operator.publish(command, b'{"live": "lstm.json"}', qos=1, retain=True).wait_for_publish(5)
        assert holds_within(lambda: agent.forecaster.kind == "lstm", 15), (
            "the operator's model command was not applied"
        )
    finally:
        agent.stop()
        for client in clients:
            client.disconnect()
            client.loop_stop()


@pytest.mark.integration
def test_the_acl_example_lets_only_operators_silence_and_rebaseline(
    broker: Callable[..., Mosquitto],
) -> None:
    """Silences and re-baseline commands share one auth story: the agent reads both, the
    operator user writes both, a machine's user writes neither; anomaly alerts reach readers."""
    acl = REPO / "config" / "mosquitto" / "acl.example"
    target = broker(f"acl_file {acl}")
    agent_side = watcher(target, "forewarn-agent", "factory/+/silence", "factory/+/rebaseline")
    reader = watcher(target, "forewarn-reader", "factory/+/anomaly")
    operator = publisher(target, "forewarn-operator")
    machine = publisher(target, "forewarn-simulator")
    agent_out = publisher(target, "forewarn-agent")
    clients = [agent_side.client, reader.client, operator, machine, agent_out]
    try:
        for info in (
            machine.publish("factory/m-1/rebaseline", b'{"at": 1, "reason": "forged"}', qos=1),
            machine.publish("factory/m-1/silence", b'{"until": 1, "reason": "forged"}', qos=1),
        ):
            info.wait_for_publish(5)
        operator.publish("factory/m-1/silence", b'{"until": 2}', qos=1).wait_for_publish(5)
        operator.publish("factory/m-1/rebaseline", b'{"at": 2}', qos=1).wait_for_publish(5)
        agent_out.publish("factory/m-1/anomaly", b"{}", qos=1).wait_for_publish(5)
        assert holds_within(lambda: len(agent_side.messages) >= 2, 10), agent_side.messages
        assert holds_within(lambda: len(reader.messages) >= 1, 10), "anomaly alerts reach readers"
        assert sorted(agent_side.messages) == [
            ("factory/m-1/rebaseline", b'{"at": 2}'),
            ("factory/m-1/silence", b'{"until": 2}'),
        ], "only the operator's commands arrive"
    finally:
        for client in clients:
            client.disconnect()
            client.loop_stop()
