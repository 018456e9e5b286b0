"""Rate-limited logging: a flood of one kind of rejection logs a line per interval, safely."""

from __future__ import annotations

import logging

import pytest

from agent.throttle import LogThrottle, printable


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_key_per_interval_with_the_suppressed_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    throttle = LogThrottle(logging.getLogger("test.throttle"), interval_s=10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.throttle"):
        for i in range(10_000):
            throttle.warning("bad_json", "rejected a reading (%s): %s", "bad_json", i)
            throttle.warning("duplicate", "rejected a reading (%s): %s", "duplicate", i)
        assert len(caplog.records) == 2, "one line per reason, not one per reading"
        clock.now = 9.99
        throttle.warning("bad_json", "still suppressed")
        assert len(caplog.records) == 2
        clock.now = 10.0
        throttle.warning("bad_json", "rejected a reading (%s): %s", "bad_json", "late")
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0] == "rejected a reading (bad_json): 0"
    assert messages[1] == "rejected a reading (duplicate): 0"
    assert messages[2] == (
        "rejected a reading (bad_json): late (10000 more like it suppressed since the last one)"
    )


def test_sender_text_cannot_forge_log_lines_or_flood_one() -> None:
    forged = "m-1\n2026-01-01 00:00:00 ERROR agent: forged\x1b[2J\u2028"
    line = printable(f"rejected a reading (bad_type): {forged!s}")
    assert "\n" not in line and "\x1b" not in line and "\u2028" not in line
    assert "m-1\\n2026" in line
    assert "\\x1b[2J" in line
    long = printable("x" * 100_000)
    assert len(long) < 500
    assert long.endswith("(99600 more chars)")


def test_messages_are_made_printable_when_logged(caplog: pytest.LogCaptureFixture) -> None:
    throttle = LogThrottle(logging.getLogger("test.throttle2"))
    with caplog.at_level(logging.WARNING, logger="test.throttle2"):
        throttle.warning("bad_type", "rejected a reading (%s): %s", "bad_type", "a\r\nb")
    assert caplog.records[0].getMessage() == "rejected a reading (bad_type): a\\r\\nb"
