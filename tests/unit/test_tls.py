"""TLS and login settings, and the start-up check's CONNECT packet (no broker needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from config.mqtt import MqttSettings
from wire.tls import connect_packet


def decode_connect(packet: bytes) -> dict[str, object]:
    """Parse an MQTT 3.1.1 CONNECT by the spec, independently of the code that wrote it."""
    assert packet[0] == 0x10
    length, multiplier, index = 0, 1, 1
    while True:
        byte = packet[index]
        length += (byte & 0x7F) * multiplier
        multiplier *= 128
        index += 1
        if not byte & 0x80:
            break
    body = packet[index:]
    assert len(body) == length

    def string(at: int) -> tuple[bytes, int]:
        size = int.from_bytes(body[at : at + 2], "big")
        return body[at + 2 : at + 2 + size], at + 2 + size

    protocol, at = string(0)
    level, flags = body[at], body[at + 1]
    keepalive = int.from_bytes(body[at + 2 : at + 4], "big")
    client_id, at = string(at + 4)
    fields: dict[str, object] = {
        "protocol": protocol, "level": level, "clean": bool(flags & 0x02),
        "keepalive": keepalive, "client_id": client_id,
    }  # fmt: skip
    if flags & 0x80:
        fields["username"], at = string(at)
    if flags & 0x40:
        fields["password"], at = string(at)
    assert at == len(body)
    return fields


def test_connect_packet_is_a_clean_anonymous_session_with_the_credentials() -> None:
    fields = decode_connect(connect_packet(MqttSettings(username="agent", password="pw")))
    assert fields == {
        "protocol": b"MQTT", "level": 4, "clean": True, "keepalive": 30, "client_id": b"",
        "username": b"agent", "password": b"pw",
    }  # fmt: skip
    assert "username" not in decode_connect(connect_packet(MqttSettings()))
    without = decode_connect(connect_packet(MqttSettings(username="a", password="p"), False))
    assert "username" not in without and "password" not in without


def test_connect_packet_with_long_credentials_uses_a_multi_byte_length() -> None:
    settings = MqttSettings(username="u" * 200, password="p" * 20_000)
    fields = decode_connect(connect_packet(settings))
    assert fields["username"] == b"u" * 200
    assert fields["password"] == b"p" * 20_000


def test_password_file_is_read_once_and_stripped_of_one_newline(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(" spaced pw \n")
    settings = MqttSettings(username="u", password_file=secret)
    assert settings.password is not None
    assert settings.password.get_secret_value() == " spaced pw "
    assert "spaced" not in repr(settings) and "spaced" not in str(settings.model_dump())
    # Re-validating a copy (flags applied over the environment) keeps working.
    again = MqttSettings.model_validate({**dict(settings), "host": "broker"})
    assert again.password is not None and again.password.get_secret_value() == " spaced pw "


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"username": "u", "password": "other", "password_file": "SECRET"}, "not both"),
        ({"username": "u", "password_file": "EMPTY"}, "is empty"),
        ({"username": "u", "password_file": "MISSING"}, "cannot read"),
        ({"password_file": "SECRET"}, "without a username"),
        ({"tls_ca_file": "SECRET"}, "FOREWARN_MQTT__TLS_ENABLED=true"),
        ({"tls_enabled": True, "tls_key_file": "SECRET"}, "without FOREWARN_MQTT__TLS_CERT_FILE"),
        ({"tls_enabled": True, "tls_cert_file": "MISSING"}, "cannot read"),
    ],
)
def test_bad_secret_and_tls_settings_are_refused(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    files = {"SECRET": tmp_path / "secret", "EMPTY": tmp_path / "empty", "MISSING": tmp_path / "no"}
    files["SECRET"].write_text("pw\n")
    files["EMPTY"].write_text("\n")
    values = {k: files.get(v, v) if isinstance(v, str) else v for k, v in changes.items()}
    with pytest.raises(ValidationError) as caught:
        MqttSettings.model_validate(values)
    assert message in str(caught.value)
