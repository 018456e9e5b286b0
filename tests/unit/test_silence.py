"""Maintenance silences: the duration syntax of `forewarn silence --for` and the silence book.

The book decides which alert changes the agent withholds and which machines get their state
published again when a silence ends, so a wrong answer either leaks alerts during maintenance
or leaves subscribers with a "resolved" for an alert they never saw.
"""

from __future__ import annotations

import logging

import orjson
import pytest

from agent.silence import SilenceBook, parse_duration, silence_payload

NOW = 1_700_000_000.0
TOPIC = "factory/m-7/silence"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("30m", 1800.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1.5h", 5400.0),
        (" 45 s ", 45.0),
        ("0.5", 0.5),
    ],
)
def test_a_duration_is_read_in_its_unit(text: str, seconds: float) -> None:
    """The forms the README and `forewarn silence --help` show: bare seconds or s/m/h/d."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "   ", "abc", "h", "0", "0s", "0.0h", "-5m", "2w", "2hh", "1e3", "2h30m", "1,5h"]
)
def test_a_bad_duration_is_refused_naming_the_input_and_the_forms(text: str) -> None:
    """A silence of no length (or of a unit we do not know) must not be published: the
    command turns this error into exit status 2 with the message."""
    with pytest.raises(ValueError) as error:
        parse_duration(text)
    message = str(error.value)
    assert repr(text) in message
    assert all(example in message for example in ("90s", "30m", "2h", "1d"))


def test_a_silence_holds_until_its_end_then_ends_once() -> None:
    book = SilenceBook("factory")
    book.handle(TOPIC, silence_payload(NOW + 60, "bearing swap"))
    assert book.silenced("m-7", NOW)
    assert book.silenced("m-7", NOW + 59.9)
    assert not book.silenced("m-7", NOW + 60), "the end is exclusive"
    assert not book.silenced("m-8", NOW), "only the machine named by the topic"
    assert book.active_count(NOW) == 1
    assert book.ended(NOW) == [], "still running"
    assert book.ended(NOW + 61) == ["m-7"]
    assert book.ended(NOW + 62) == [], "each end is reported once"
    assert book.active_count(NOW) == 0, "an ended silence is forgotten"


def test_an_empty_message_lifts_a_silence_and_the_end_is_reported_once() -> None:
    book = SilenceBook("factory")
    book.handle(TOPIC, silence_payload(NOW + 3600, "bearing swap"))
    assert book.ended(NOW) == []  # the agent's tick: the silence is now known to be active
    book.handle(TOPIC, b"")
    assert not book.silenced("m-7", NOW)
    assert book.active_count(NOW) == 0
    assert book.ended(NOW) == ["m-7"]
    assert book.ended(NOW) == []


def test_a_silence_set_and_lifted_between_two_ticks_is_not_reported() -> None:
    """ended() reports machines that were silenced at the previous call: only those can have
    had an alert withheld (the agent checks at each tick), so only those need republishing."""
    book = SilenceBook("factory")
    assert book.ended(NOW) == []
    book.handle(TOPIC, silence_payload(NOW + 3600, ""))
    book.handle(TOPIC, b"")
    assert book.ended(NOW) == []


def test_a_new_silence_replaces_the_old_one() -> None:
    book = SilenceBook("factory")
    book.handle(TOPIC, silence_payload(NOW + 3600, "long"))
    book.handle(TOPIC, silence_payload(NOW + 10, "shortened"))
    assert not book.silenced("m-7", NOW + 11)


def test_several_machines_end_in_order_and_each_once() -> None:
    book = SilenceBook("factory")
    for machine, seconds in (("m-3", 10), ("m-1", 20), ("m-2", 3600)):
        book.handle(f"factory/{machine}/silence", silence_payload(NOW + seconds, ""))
    assert book.active_count(NOW) == 3
    assert book.ended(NOW) == []
    assert book.ended(NOW + 30) == ["m-1", "m-3"]
    assert book.active_count(NOW + 30) == 1
    assert book.silenced("m-2", NOW + 30)


def test_a_prefix_of_several_levels_finds_the_machine_level() -> None:
    book = SilenceBook("plant/hall-2")
    book.handle("plant/hall-2/press-4/silence", silence_payload(NOW + 60, ""))
    assert book.silenced("press-4", NOW)
    book.handle("plant/press-5/silence", silence_payload(NOW + 60, ""))  # too few levels
    book.handle("plant/hall-2/a/b/silence", silence_payload(NOW + 60, ""))  # too many
    assert book.active_count(NOW) == 1


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[1, 2]",
        b'{"reason": "no until"}',
        b'{"until": "tomorrow"}',
        b'{"until": null}',
        b'{"until": "nan"}',
        b'{"until": "inf"}',
        b"\xff\xfe",
    ],
)
def test_a_malformed_silence_is_logged_and_changes_nothing(
    payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken message (a hand-written retained payload, say) must neither raise into the
    network thread nor lift or shorten a silence that is running."""
    book = SilenceBook("factory")
    book.handle(TOPIC, silence_payload(NOW + 3600, "bearing swap"))
    with caplog.at_level(logging.WARNING, logger="agent.silence"):
        book.handle(TOPIC, payload)
    assert book.silenced("m-7", NOW + 3000)
    assert any("malformed silence for m-7" in r.getMessage() for r in caplog.records)


def test_the_payload_is_what_the_readme_documents() -> None:
    assert orjson.loads(silence_payload(NOW + 0.12345, "bearing swap")) == {
        "until": round(NOW + 0.12345, 3),
        "reason": "bearing swap",
    }
