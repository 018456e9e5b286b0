"""Gateway batch topics: where a gateway publishes many machines' readings in one message.

A gateway that forwards a whole line's sensors pays the MQTT and broker cost per message, so
it sends them as one batch (``{"readings": [...]}``, decoded by
:meth:`agent.reading.ReadingDecoder.decode_batch`). Batches arrive on their own subscription,
by default ``<prefix>/_gateway/+/telemetry`` (the ``+`` level is the gateway's id). Levels that
start with ``_`` are forewarn's own, like ``<prefix>/_agents/...``; the default batch topic has
one level more than the default per-machine topic ``<prefix>/<machine_id>/telemetry``, so a
machine that happens to be called ``_gateway`` still publishes single readings as any other.
Any configured batch topic is checked against the agent's other subscriptions and its own
topics at start-up: a message that matched two of them would be read twice, or read as the
wrong thing.
"""

from __future__ import annotations

import re

GATEWAY_LEVEL = "_gateway"
DISABLED = ("", "off")
"""Values of ``mqtt.batch_topic`` that switch batches off (compared without case or spaces)."""

_FIXED_LEVEL = re.compile(r"^[^#+\s\x00]+$")
_TOPIC_LEVEL = re.compile(r"^[^#+/\s\x00]+$")


def default_batch_topic(prefix: str) -> str:
    return f"{prefix}/{GATEWAY_LEVEL}/+/telemetry"


def is_disabled(value: str) -> bool:
    return value.strip().lower() in DISABLED


def check_batch_filter(text: str) -> str:
    """``text`` if it is a subscription filter a batch topic may be, else ValueError.

    Levels are fixed text or a ``+``; a ``#`` may end it. No empty levels and no ``$`` at the
    start: those are the broker's own topics, which wildcards never match.
    """
    levels = text.split("/")
    for index, level in enumerate(levels):
        if level == "+" or (level == "#" and index == len(levels) - 1):
            continue
        if not _FIXED_LEVEL.match(level):
            raise ValueError(
                f"{text!r}: level {level!r} must be fixed text without spaces, a whole-level "
                "+, or a # at the end, e.g. 'factory/_gateway/+/telemetry' (or 'off')"
            )
    if text.startswith("$"):
        raise ValueError(f"{text!r}: topics starting with $ are the broker's own")
    return text


def filters_overlap(first: str, second: str) -> bool:
    """Whether some topic matches both MQTT subscription filters.

    ``#`` matches the rest of a topic, including nothing (``a/#`` matches ``a``); ``+`` matches
    exactly one level.
    """
    a, b = first.split("/"), second.split("/")
    for index in range(max(len(a), len(b))):
        x = a[index] if index < len(a) else None
        y = b[index] if index < len(b) else None
        if x == "#" or y == "#":
            return True
        if x is None or y is None:
            return False
        if x != y and "+" not in (x, y):
            return False
    return True


def gateway_topic(batch_filter: str, gateway_id: str) -> str:
    """The topic a gateway called ``gateway_id`` publishes its batches on.

    Every wildcard level of the filter becomes the id: ``factory/_gateway/+/telemetry`` gives
    ``factory/_gateway/<gateway_id>/telemetry``.
    """
    if not _TOPIC_LEVEL.match(gateway_id):
        raise ValueError(
            f"gateway id {gateway_id!r} must be one topic level without '/', '+', '#' or spaces"
        )
    return "/".join(
        gateway_id if level in ("+", "#") else level for level in batch_filter.split("/")
    )
