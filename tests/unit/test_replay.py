"""Replaying a historical CSV (`forewarn simulate --replay`): reading the file and the pacing.

The replay is how a plant feeds its own history to the agent, so each row must come out as one
reading with the file's values, in file order, with the file's spacing (divided by the speed);
a file it cannot use must say what is wrong, and a row it cannot use which line that was.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson
import paho.mqtt.client as mqtt
import pytest

from simulator.replay import ReplayError, ReplayRow, load_replay, replay

HEADER = "machine,ts,temperature_c,vibration_hz,pressure_psi,rpm"


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "history.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class FakeClient:
    """Records what replay() publishes, and when (monotonic), instead of sending it."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, str, dict[str, Any], int]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        self.sent.append((time.monotonic(), topic, orjson.loads(payload), qos))

    @property
    def client(self) -> mqtt.Client:
        """This fake where replay() wants a paho client (it only calls publish)."""
        return cast(mqtt.Client, self)


def test_rows_keep_their_machine_values_and_timestamps(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER,
        "press-1,1000.0,71.5,40.25,120.0,1650",
        "press-2,1000.5,88.125,44.0,126.5,1700",
        "press-1,1001.0,72.0,41.0,121.0,1655",
    )
    rows = load_replay(path, "machine", "m-0")
    assert [r.machine_id for r in rows] == ["press-1", "press-2", "press-1"]
    assert [r.source_ts for r in rows] == [1000.0, 1000.5, 1001.0]
    np.testing.assert_array_equal(rows[1].values, [88.125, 44.0, 126.5, 1700.0])


def test_without_a_machine_column_the_file_is_one_machine(tmp_path: Path) -> None:
    """Also: extra columns are ignored, the column order does not matter, no ts: no pacing."""
    path = write(
        tmp_path,
        "rpm,note,temperature_c,pressure_psi,vibration_hz",
        "1650,start,70.0,120.0,40.0",
        "1660,,70.5,121.0,41.0",
    )
    rows = load_replay(path, None, "m-0")
    assert {r.machine_id for r in rows} == {"m-0"}
    assert [r.source_ts for r in rows] == [None, None]
    np.testing.assert_array_equal(rows[0].values, [70.0, 40.0, 120.0, 1650.0])


def test_a_timestamp_column_is_read_too(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "timestamp,temperature_c,vibration_hz,pressure_psi,rpm",
        "5.0,70,40,120,1650",
        "nan,70,40,120,1650",
        ",70,40,120,1650",
    )
    assert [r.source_ts for r in load_replay(path, None, "m-0")] == [5.0, None, None]


def test_a_row_that_is_not_numbers_is_skipped_naming_its_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(
        tmp_path,
        HEADER,
        "press-1,1000.0,71.5,40.0,120.0,1650",
        "press-1,1000.5,hot,40.0,120.0,1650",
        "press-1,1001.0,72.0,41.0",
        "press-1,1001.5,72.5,41.0,121.0,1660",
    )
    with caplog.at_level(logging.WARNING, logger="simulator.replay"):
        rows = load_replay(path, "machine", "m-0")
    assert [r.source_ts for r in rows] == [1000.0, 1001.5]
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"skipping line 3 of {path}" in m for m in messages), messages
    assert any(f"skipping line 4 of {path}" in m for m in messages), messages


@pytest.mark.parametrize(
    ("lines", "machine_column", "expected"),
    [
        (["machine,temperature_c,rpm", "a,1,2"], None, "lacks the columns"),
        ([HEADER], "machine", "has no usable rows"),
        ([HEADER, "a,1,x,1,1,1", "a,2,y,1,1,1"], "machine", "has no usable rows"),
        ([HEADER, "a,1,70,40,120,1650"], "press", "no machine column 'press'"),
        ([], None, "lacks the columns"),
    ],
)
def test_an_unusable_file_is_refused_saying_why(
    tmp_path: Path, lines: list[str], machine_column: str | None, expected: str
) -> None:
    path = write(tmp_path, *lines)
    with pytest.raises(ReplayError, match=expected) as error:
        load_replay(path, machine_column, "m-0")
    assert str(path) in str(error.value)


def test_a_missing_column_is_named_with_the_header(tmp_path: Path) -> None:
    path = write(tmp_path, "temperature_c,vibration_hz,rpm", "70,40,1650")
    with pytest.raises(ReplayError) as error:
        load_replay(path, None, "m-0")
    assert "['pressure_psi']" in str(error.value)
    assert "['temperature_c', 'vibration_hz', 'rpm']" in str(error.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match=r"cannot read .*absent\.csv"):
        load_replay(tmp_path / "absent.csv", None, "m-0")


def test_replay_keeps_file_order_values_and_spacing_divided_by_speed() -> None:
    """Three rows 0.2 s apart at speed 2: sent 0.1 s apart, each machine's seq counting up."""
    rows = [
        ReplayRow("a", np.array([70.0, 40.0, 120.0, 1650.0]), 100.0),
        ReplayRow("b", np.array([80.5, 41.0, 121.0, 1700.0]), 100.2),
        ReplayRow("a", np.array([71.25, 42.0, 122.0, 1655.0]), 100.4),
    ]
    client = FakeClient()
    sent = replay(client.client, rows, {"a": "t/a", "b": "t/b"}, 2.0, 1.0, 1, threading.Event())
    assert sent == 3
    assert [(topic, p["machine_id"], p["temperature_c"]) for _, topic, p, _ in client.sent] == [
        ("t/a", "a", 70.0),
        ("t/b", "b", 80.5),
        ("t/a", "a", 71.25),
    ]
    assert {qos for *_, qos in client.sent} == {1}
    seq = [p["seq"] for _, _, p, _ in client.sent]
    assert seq[2] == seq[0] + 1, "each machine's sequence counts on by one"
    times = [t for t, *_ in client.sent]
    assert times[1] - times[0] >= 0.1 - 0.005
    assert times[2] - times[0] >= 0.2 - 0.005
    assert abs(client.sent[0][2]["ts"] - time.time()) < 5, "stamped when sent, not the file's ts"


def test_replay_without_timestamps_is_paced_by_rate_and_speed() -> None:
    rows = [ReplayRow("a", np.array([70.0, 40.0, 120.0, 1650.0]), None) for _ in range(3)]
    client = FakeClient()
    replay(client.client, rows, {"a": "t/a"}, 2.0, 10.0, 0, threading.Event())
    times = [t for t, *_ in client.sent]
    assert times[2] - times[0] >= 2 / (10.0 * 2.0) - 0.005


def test_a_stop_ends_the_replay_between_rows() -> None:
    rows = [
        ReplayRow("a", np.array([70.0, 40.0, 120.0, 1650.0]), 0.0),
        ReplayRow("a", np.array([70.0, 40.0, 120.0, 1650.0]), 3600.0),
    ]
    stop = threading.Event()
    stop.set()
    client = FakeClient()
    started = time.monotonic()
    assert replay(client.client, rows, {"a": "t/a"}, 1.0, 1.0, 0, stop) == 1
    assert time.monotonic() - started < 1.0
