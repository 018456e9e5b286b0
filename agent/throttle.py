"""Rate-limited logging, so a flood of bad readings cannot flood the log too.

The messages quote what senders sent (machine ids, error details), so each is also made safe
for a log line: control characters are escaped, so a machine id cannot forge a line, and the
line is cut to a bounded length.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

MAX_MESSAGE_CHARS = 400
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` on one line of at most about ``limit`` characters, control characters escaped."""
    text = _UNPRINTABLE.sub(lambda match: ascii(match.group())[1:-1], text)
    if len(text) > limit:
        text = text[:limit] + f"… ({len(text) - limit} more chars)"
    return text


class LogThrottle:
    """Logs at most once per ``interval_s`` per key, saying how many were suppressed.

    Keys must come from a small fixed set (the rejection reasons), so the throttle's own
    memory stays bounded whatever arrives.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def warning(self, key: str, message: str, *args: object) -> None:
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        text = printable(message % args if args else message)
        if suppressed:
            text += f" ({suppressed} more like it suppressed since the last one)"
        self._logger.warning("%s", text)
