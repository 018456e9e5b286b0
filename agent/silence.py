"""Maintenance silences: a machine's alerts are still computed and counted, but not published.

A silence is a retained message on ``<prefix>/<machine_id>/silence``, so every agent (and a
restarted one) knows it: ``{"until": <epoch seconds>, "reason": "..."}``; an empty retained
message lifts it. ``forewarn silence MACHINE --for 2h`` publishes one. When a silence ends
while the machine is still alerting, the agent publishes the machine's current state, so a
subscriber never sees a "resolved" for an alert it was not told about. What the eviction of a
silenced machine would publish (its last "stale", its anomaly alert's "resolved") is held back
too and published when the silence ends (:mod:`agent.tick`).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time

import orjson

logger = logging.getLogger(__name__)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"30m"``, ``"2h"``, ``"1d"`` → seconds."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration such as 90s, 30m, 2h or 1d")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def silence_payload(until: float, reason: str) -> bytes:
    return orjson.dumps({"until": round(until, 3), "reason": reason})


class SilenceBook:
    """Which machines are silenced until when; written by the network thread, read by ticks."""

    def __init__(self, prefix: str) -> None:
        self._prefix_levels = prefix.count("/") + 1
        self._until: dict[str, float] = {}
        self._announced: set[str] = set()
        self._lock = threading.Lock()

    def handle(self, topic: str, payload: bytes | bytearray) -> None:
        """Apply a silence message; a malformed one is logged and ignored."""
        levels = topic.split("/")
        if len(levels) != self._prefix_levels + 2:
            return
        machine_id = levels[self._prefix_levels]
        if not payload:
            with self._lock:
                self._until.pop(machine_id, None)
            logger.info("silence of %s lifted", machine_id)
            return
        try:
            body = orjson.loads(payload)
            until = float(body["until"])
            if not math.isfinite(until):
                raise ValueError("until must be a finite time")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            logger.warning("ignoring a malformed silence for %s: %r", machine_id, payload[:200])
            return
        with self._lock:
            self._until[machine_id] = until
        logger.info(
            "%s silenced until %s (%s)",
            machine_id,
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(until)),
            body.get("reason", "no reason given") if isinstance(body, dict) else "",
        )

    def silenced(self, machine_id: str, now: float) -> bool:
        with self._lock:
            until = self._until.get(machine_id)
        return until is not None and now < until

    def active_count(self, now: float) -> int:
        with self._lock:
            return sum(until > now for until in self._until.values())

    def ended(self, now: float) -> list[str]:
        """Machines whose silence ran out or was lifted since the last call (each once)."""
        with self._lock:
            active = {m for m, until in self._until.items() if until > now}
            ended = sorted(self._announced - active)
            self._announced = active
            for machine_id in [m for m, until in self._until.items() if until <= now]:
                del self._until[machine_id]
        return ended
