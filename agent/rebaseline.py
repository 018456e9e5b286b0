"""Re-baselining a machine: its learned normal is forgotten and learned afresh (after maintenance).

A re-baseline is a retained message on ``<prefix>/<machine_id>/rebaseline``,
``{"at": <epoch seconds>, "reason": "..."}``, the same place in the topic tree (and so the same
ACL story) as a maintenance silence. ``forewarn anomaly rebaseline MACHINE`` publishes one.
Retained, so an agent that was down when it was sent still applies it; the agent remembers the
``at`` of the last one it applied to each machine (in its saved state), so a restart does not
apply the same one again and throw away what the machine learned since. An empty retained
message clears the command and does nothing else.

The network thread queues the commands; the tick thread, the scorer's only writer, applies them.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque

import orjson

logger = logging.getLogger(__name__)


def rebaseline_payload(at: float, reason: str) -> bytes:
    return orjson.dumps({"at": round(at, 3), "reason": reason})


class RebaselineQueue:
    """Re-baseline commands heard by the network thread, waiting for the tick to apply them."""

    def __init__(self, prefix: str) -> None:
        self._prefix_levels = prefix.count("/") + 1
        self._waiting: deque[tuple[str, float, str]] = deque()
        self._lock = threading.Lock()

    def handle(self, topic: str, payload: bytes | bytearray) -> None:
        """Queue a command; an empty one (cleared) is ignored, a malformed one logged."""
        levels = topic.split("/")
        if len(levels) != self._prefix_levels + 2 or not payload:
            return
        machine_id = levels[self._prefix_levels]
        try:
            body = orjson.loads(payload)
            at = body["at"]
            # A number of seconds: NaN compares to nothing (applied on every read), infinity
            # to everything (every later re-baseline of the machine would look applied).
            if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
                raise ValueError(f"at {at!r} is not a time")
            at = float(at)
            reason = str(body.get("reason", "no reason given"))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            logger.warning(
                'ignoring a malformed re-baseline for %s: %r (expected {"at": <epoch s>, '
                '"reason": "..."}; `forewarn anomaly rebaseline` sends one)',
                machine_id,
                bytes(payload[:200]),
            )
            return
        with self._lock:
            self._waiting.append((machine_id, at, reason))

    def take(self) -> list[tuple[str, float, str]]:
        """The commands queued since the last call: (machine id, at, reason)."""
        with self._lock:
            taken = list(self._waiting)
            self._waiting.clear()
        return taken
