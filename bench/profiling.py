"""Where the agent's time goes: py-spy samples summarised per thread.

py-spy cannot attach to a running process on every machine (ptrace may be restricted), but it
can always launch its target, so the benchmarks start the process to profile under
``py-spy record --format raw`` and read the collapsed stacks it writes at the end. Idle
samples (a thread waiting on a lock, a socket or a frozen process) are not recorded, so the
shares below are of the time a thread was actually running.

A summary names, for the samples of one thread (picked by a function only it runs):

* ``parts``: the share of chosen functions, inclusive (a function and what it calls);
* ``top_self``: the functions that were on top of the stack most often (exclusive time),
  native code (orjson, torch's kernels) counting as the Python function that called it.
"""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RATE_HZ = 100
"""Samples per second: enough for shares to a percent over a few seconds of work."""

NETWORK_PARTS = (
    ("agent callback (hand-off)", "Ingest._on_message"),
    ("gateway batch callback", "Ingest._on_batch"),
    ("paho: socket reads", "Client._sock_recv"),
    ("paho: select / loop", "Client._loop"),
    ("paho: PUBACK send", "Client._send_puback"),
)
"""Parts of paho's network thread: the agent's callback, and paho's own work around it."""

TICK_PARTS = (
    ("drain hand-off into windows", "Ticker._drain"),
    ("  decode + validate (orjson, numpy)", "ReadingDecoder.decode_many"),
    ("  window store append", "WindowStore.append_many"),
    ("gather ready windows", "WindowStore.take_ready"),
    ("model forward", "TorchForecaster.forecast"),
    ("anomaly scorer", "AnomalyScorer.update"),
    ("alert policy", "AlertPolicy.update"),
    ("per-machine gauges", "Ticker._export_machines"),
    ("staleness", "Ticker._track_staleness"),
    ("alert publishing", "AlertPublisher.pump"),
)
"""Parts of a tick, in the order the tick runs them."""


def py_spy() -> str | None:
    """py-spy's executable: beside this Python (the virtualenv) or on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def spy_command(output: Path, command: Sequence[str], executable: str) -> list[str]:
    """``command`` launched under py-spy, writing collapsed stacks to ``output`` at its end.

    Non-blocking: py-spy reads the target's memory without pausing it, so the profiled run
    keeps (nearly) its speed; a rare torn stack is noise at these sample counts.
    """
    return [
        executable,
        "record",
        "--format",
        "raw",
        "--rate",
        str(RATE_HZ),
        "--nonblocking",
        "--output",
        str(output),
        "--",
        *command,
    ]


@dataclass(frozen=True)
class Stack:
    frames: tuple[str, ...]
    """Function names, outermost first, each as ``qualname (file)`` without the line."""
    count: int


def _frame(text: str) -> str:
    """``Ticker.tick (agent/tick.py:640)`` -> ``Ticker.tick (agent/tick.py)``."""
    name, _, where = text.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def read_raw(text: str) -> list[Stack]:
    """py-spy's raw (collapsed) output: one ``frame;frame;... count`` per line."""
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stacks.append(Stack(tuple(_frame(f) for f in stack.split(";")), int(count)))
    return stacks


def _name(frame: str) -> str:
    return frame.split(" (", 1)[0]


def select(stacks: Iterable[Stack], function: str) -> list[Stack]:
    """The stacks that pass through ``function`` (a qualified name, e.g. ``Ticker._loop``)."""
    return [s for s in stacks if any(_name(f) == function for f in s.frames)]


def summarise(
    stacks: Sequence[Stack], parts: Sequence[tuple[str, str]] = (), top: int = 8
) -> dict[str, Any]:
    """Samples, seconds of running, inclusive shares of ``parts``, the top self-time functions."""
    total = sum(s.count for s in stacks)
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for stack in stacks:
        for name in {_name(f) for f in stack.frames}:
            inclusive[name] += stack.count
        own[stack.frames[-1]] += stack.count

    def share(samples: int) -> float:
        return round(100 * samples / total, 1) if total else 0.0

    return {
        "samples": total,
        "running_s": round(total / RATE_HZ, 2),
        "parts": [
            {"part": label, "function": function, "pct": share(inclusive[function])}
            for label, function in parts
            if inclusive[function]
        ],
        "top_self": [{"function": f, "pct": share(n)} for f, n in own.most_common(top)],
    }


def profile_file(path: Path, threads: Sequence[tuple[str, str, Sequence[tuple[str, str]]]]) -> Any:
    """Summaries of a py-spy raw file, one per (label, thread's function, parts)."""
    if not path.exists():
        return None
    stacks = read_raw(path.read_text())
    return {label: summarise(select(stacks, root), parts) for label, root, parts in threads}


def format_summary(label: str, summary: dict[str, Any]) -> list[str]:
    """Table lines for one thread's summary."""
    lines = [f"  {label}: {summary['running_s']:.1f} s running ({summary['samples']} samples)"]
    for part in summary["parts"]:
        lines.append(f"    {part['pct']:>5.1f} %  {part['part']}")
    if summary["top_self"]:
        lines.append("    top self time:")
        for entry in summary["top_self"][:6]:
            lines.append(f"    {entry['pct']:>5.1f} %  {entry['function']}")
    return lines
