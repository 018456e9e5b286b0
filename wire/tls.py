"""TLS for the MQTT clients, and the start-up check that makes a wrong CA or password loud.

paho retries a failed connection forever and says little about why, so a wrong CA file, a
missing client certificate or a wrong password would leave the agent quietly unhealthy.
:func:`check_broker` makes one connection of its own before the client's first one, with the
same TLS context and credentials, and turns those failures into a :class:`BrokerCheckError`
that names the setting to fix. A broker that is merely down is not an error here: the client
keeps trying, and /healthz says it is not connected.
"""

from __future__ import annotations

import logging
import socket
import ssl

import paho.mqtt.client as mqtt

from config.errors import ConfigError
from config.mqtt import MqttSettings

logger = logging.getLogger(__name__)

CA_HINT = "check FOREWARN_MQTT__TLS_CA_FILE"
CERT_HINT = "check FOREWARN_MQTT__TLS_CERT_FILE / FOREWARN_MQTT__TLS_KEY_FILE"
CREDENTIALS_HINT = (
    "check FOREWARN_MQTT__USERNAME / FOREWARN_MQTT__PASSWORD (or FOREWARN_MQTT__PASSWORD_FILE)"
)

_CONNACK = 0x20
_CONNACK_CODES = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


class BrokerCheckError(ConfigError):
    """The broker turned the configured TLS settings or credentials down; the message says
    which setting to fix. A ConfigError, so the command exits with the configuration status."""


def _refuse_encrypted_key() -> bytes:
    # Without a password callback OpenSSL would prompt on the terminal: a daemon would hang.
    raise ConfigError(
        "FOREWARN_MQTT__TLS_KEY_FILE: the private key is encrypted; forewarn needs an "
        "unencrypted key file (protect it with file permissions)"
    )


def tls_context(settings: MqttSettings) -> ssl.SSLContext:
    """The client-side TLS context of the settings: verify the broker, optionally present a
    client certificate. Raises ConfigError naming the file that cannot be used."""
    ca = settings.tls_ca_file
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=None if ca is None else str(ca)
        )
    except (ssl.SSLError, OSError) as error:
        raise ConfigError(
            f"FOREWARN_MQTT__TLS_CA_FILE={ca}: not a usable PEM CA certificate ({error})"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.tls_cert_file is not None:
        key = settings.tls_key_file
        try:
            context.load_cert_chain(
                str(settings.tls_cert_file),
                None if key is None else str(key),
                password=_refuse_encrypted_key,
            )
        except (ssl.SSLError, OSError) as error:
            raise ConfigError(
                f"FOREWARN_MQTT__TLS_CERT_FILE={settings.tls_cert_file}"
                + ("" if key is None else f", FOREWARN_MQTT__TLS_KEY_FILE={key}")
                + f": cannot use them as a client certificate and its key ({error})"
            ) from None
    if settings.tls_insecure:
        context.check_hostname = False  # the chain is still verified (CERT_REQUIRED)
    return context


def configure_tls(client: mqtt.Client, settings: MqttSettings) -> None:
    """Turn TLS on for ``client`` when the settings ask for it (before its first connect)."""
    if settings.tls_enabled:
        client.tls_set_context(tls_context(settings))


def _string(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


def connect_packet(settings: MqttSettings, credentials: bool = True) -> bytes:
    """An MQTT 3.1.1 CONNECT with a clean session and an empty client id (the broker assigns
    one), so the check can neither take over nor wipe the real client's session."""
    flags = 0x02
    payload = _string(b"")
    if credentials and settings.username is not None:
        flags |= 0x80
        payload += _string(settings.username.encode())
        if settings.password is not None:
            flags |= 0x40
            payload += _string(settings.password.get_secret_value().encode())
    body = _string(b"MQTT") + bytes([4, flags]) + settings.keepalive_s.to_bytes(2, "big") + payload
    length, encoded = len(body), bytearray()
    while True:
        byte, length = length % 128, length // 128
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([0x10]) + bytes(encoded) + body


def _receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _speaks_tls(host: str, port: int, timeout_s: float) -> bool:
    """Whether the listener answers a TLS handshake (nothing is verified or sent)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return True
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
        return False
    except ssl.SSLError:
        return True  # a TLS alert: it speaks TLS
    except OSError:
        return False


def _speaks_plain_mqtt(settings: MqttSettings, timeout_s: float) -> bool:
    """Whether the listener answers a plain CONNECT; sent without credentials, which must not
    cross the network unencrypted when TLS was asked for."""
    try:
        with socket.create_connection((settings.host, settings.port), timeout=timeout_s) as sock:
            sock.sendall(connect_packet(settings, credentials=False))
            return _receive(sock, 1) == bytes([_CONNACK])
    except OSError:
        return False


def _closed(
    settings: MqttSettings, where: str, tls: bool, handshake_done: bool, timeout_s: float
) -> BrokerCheckError | None:
    """The broker hung up before answering the CONNECT: a listener of the other kind, a TLS
    listener that turned down our client certificate (or its absence), or a hiccup (None)."""
    if not tls:
        if _speaks_tls(settings.host, settings.port, timeout_s):
            return BrokerCheckError(
                f"{where} is a TLS listener: set FOREWARN_MQTT__TLS_ENABLED=true "
                "(and FOREWARN_MQTT__TLS_CA_FILE)"
            )
        return None
    if not handshake_done:
        if _speaks_plain_mqtt(settings, timeout_s):
            return BrokerCheckError(
                f"TLS handshake with {where} failed: it is not a TLS listener — check "
                "FOREWARN_MQTT__PORT or set FOREWARN_MQTT__TLS_ENABLED=false"
            )
        return None
    return BrokerCheckError(
        f"{where} closed the TLS connection without answering MQTT: the broker requires a "
        f"client certificate it trusts — {CERT_HINT}"
    )


def _tls_failure(error: ssl.SSLError, where: str, host: str) -> BrokerCheckError:
    if isinstance(error, ssl.SSLCertVerificationError):
        detail = error.verify_message or str(error)
        if "hostname" in detail.lower() or "ip address mismatch" in detail.lower():
            return BrokerCheckError(
                f"TLS handshake with {where} failed: the broker's certificate does not name "
                f"{host} ({detail}) — set FOREWARN_MQTT__HOST to a name in the certificate"
            )
        return BrokerCheckError(
            f"TLS handshake with {where} failed: certificate verify failed ({detail}) — {CA_HINT}"
        )
    reason = (error.reason or str(error)).lower().replace("_", " ")  # TLSV1_ALERT_UNKNOWN_CA
    if "certificate required" in reason:
        hint = f"the broker requires a client certificate — {CERT_HINT}"
    elif "certificate" in reason or "unknown ca" in reason:
        hint = f"the broker rejected the client certificate — {CERT_HINT}"
    elif "wrong version" in reason or "record layer" in reason or "packet length" in reason:
        hint = (
            f"is {where} a TLS listener? check FOREWARN_MQTT__PORT or set "
            "FOREWARN_MQTT__TLS_ENABLED=false"
        )
    else:
        hint = "check the FOREWARN_MQTT__TLS_* settings"
    return BrokerCheckError(f"TLS handshake with {where} failed: {error.reason or error} — {hint}")


def check_broker(settings: MqttSettings, timeout_s: float = 10.0) -> None:
    """Connect once with the configured TLS and credentials; raise BrokerCheckError when the
    broker turns them down. Unreachable or slow brokers only log a warning."""
    where = f"{settings.host}:{settings.port}"
    context = tls_context(settings) if settings.tls_enabled else None
    try:
        raw = socket.create_connection((settings.host, settings.port), timeout=timeout_s)
    except OSError as error:
        logger.warning("broker %s not reachable yet (%s); the client keeps trying", where, error)
        return
    sock: socket.socket = raw
    handshake_done = context is None
    try:
        if context is not None:
            sock = context.wrap_socket(raw, server_hostname=settings.host)
            handshake_done = True
        sock.sendall(connect_packet(settings))
        reply = _receive(sock, 4)
        if reply == bytes([_CONNACK, 2, 0, 0]):
            sock.sendall(bytes([0xE0, 0]))  # DISCONNECT: a clean goodbye in the broker's log
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError) as error:
        logger.debug("start-up check of %s: %s", where, error)
        reply = b""
    except ssl.SSLError as error:
        raise _tls_failure(error, where, settings.host) from None
    except TimeoutError:
        logger.warning("broker %s did not answer within %.0f s; trying anyway", where, timeout_s)
        return
    finally:
        sock.close()
    if not reply:
        failure = _closed(settings, where, context is not None, handshake_done, timeout_s)
        if failure is not None:
            raise failure
        logger.warning("broker %s hung up on the start-up check; trying anyway", where)
        return
    if context is None and reply[0] in (0x15, 0x16):  # a TLS alert or handshake record
        raise BrokerCheckError(
            f"{where} is a TLS listener: set FOREWARN_MQTT__TLS_ENABLED=true "
            "(and FOREWARN_MQTT__TLS_CA_FILE)"
        )
    if len(reply) < 4 or reply[0] != _CONNACK:
        logger.warning("broker %s answered the start-up check oddly (%r)", where, reply[:4])
        return
    code = reply[3]
    if code in (4, 5):
        who = "the credentials" if settings.username is not None else "anonymous access"
        raise BrokerCheckError(
            f"broker {where} refused {who} ({_CONNACK_CODES[code]}): {CREDENTIALS_HINT}"
        )
    if code:
        logger.warning(
            "broker %s refused the start-up check (%s); trying anyway",
            where,
            _CONNACK_CODES.get(code, f"code {code}"),
        )
        return
    logger.info(
        "broker %s accepted %s%s",
        where,
        "anonymous access" if settings.username is None else f"user {settings.username}",
        " over TLS" if context is not None else "",
    )
