"""What the demo shows: a live table on a terminal, plain alert lines anywhere else."""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from typing import TextIO

from agent.alerts import AlertEvent
from agent.tick import MachineView

_STATE_ORDER = {"critical": 0, "warning": 1, "ok": 2}
_COLOURS = {"critical": "\033[1;31m", "warning": "\033[1;33m", "ok": "\033[32m"}
_RESET = "\033[0m"


class PlainView:
    """One line per alert change, for logs, pipes and CI."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self._out = out
        self._lock = threading.Lock()

    def on_alert(self, event: AlertEvent) -> None:
        with self._lock:
            print(event.line(), file=self._out, flush=True)

    def on_tick(self, rows: list[MachineView]) -> None:
        """Plain output is about alert changes only."""


class LiveView:
    """Redraws a table of machines each tick, hottest and alerting first."""

    def __init__(self, out: TextIO = sys.stdout, rows: int = 20, header: str = "") -> None:
        self._out = out
        self._rows = rows
        self._header = header
        self._machines: dict[str, MachineView] = {}
        self._alerts: deque[str] = deque(maxlen=6)
        self._lock = threading.Lock()
        self._started = time.monotonic()

    def on_alert(self, event: AlertEvent) -> None:
        with self._lock:
            self._alerts.append(f"{time.strftime('%H:%M:%S')} {event.line()}")

    def on_tick(self, rows: list[MachineView]) -> None:
        with self._lock:
            for row in rows:
                self._machines[row.machine_id] = row
            self._draw()

    def _draw(self) -> None:
        shown = sorted(
            self._machines.values(),
            key=lambda r: (_STATE_ORDER[r.state], -r.forecast_c, r.machine_id),
        )[: self._rows]
        counts = {state: 0 for state in _STATE_ORDER}
        for row in self._machines.values():
            counts[row.state] += 1
        elapsed = time.monotonic() - self._started
        lines = [
            "\033[H\033[2J",
            f"forewarn demo  {elapsed:5.0f} s  {self._header}",
            f"machines {len(self._machines)}   critical {counts['critical']}   "
            f"warning {counts['warning']}   ok {counts['ok']}",
            "",
            f"{'machine':<10} {'temp °C':>8} {'forecast °C':>12}  state",
        ]
        for row in shown:
            colour = _COLOURS[row.state]
            lines.append(
                f"{row.machine_id:<10} {row.temperature_c:8.1f} {row.forecast_c:12.1f}  "
                f"{colour}{row.state}{_RESET}"
            )
        lines += ["", "recent alerts:"] + (list(self._alerts) or ["  (none yet)"])
        lines.append("\nCtrl-C to stop")
        self._out.write("\n".join(lines) + "\n")
        self._out.flush()
