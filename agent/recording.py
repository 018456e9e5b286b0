"""Recording the readings the agent accepts to rotating files in a bounded folder.

The tick thread's share is one ``deque.append`` per tick (:meth:`Recorder.record`: the tick's
readings and which of them the window store accepted). A writer thread of its own picks the
wanted machines (``recording.machines``, shell patterns, each id's answer cached), packs each
tick into one compressed block (models.recording's format: about 15 bytes a reading for the
simulated fleet, measured by bench.recording), writes it and rotates files:

* a block that would take the open file past ``file_bytes`` goes to a new file instead;
* before a block is written, the oldest closed files are deleted until it fits under
  ``max_bytes``, so the folder never holds more than that (counted in
  ``forewarn_recording_files_dropped_total``); a block that could never fit is not written.

The features written are the served model's at start-up and stay so while the agent runs: a
live swap never changes them (agent.modelswap refuses a model of other features), so a swap
needs nothing from the recording, which goes on in the same file. A restart under a model of
other features starts a new file whose header names them.

A writer that falls ``max_backlog_ticks`` behind drops the newest tick's readings (counted as
``backlog``) rather than growing memory; a file that cannot be written drops the block
(``error``, logged) and the next block opens a new file. The recording never stops the agent.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.typing import NDArray

from agent.metrics import AgentMetrics
from agent.throttle import LogThrottle
from config.errors import ConfigError
from config.recording import RecordingSettings
from models.recording import SUFFIX, encode_block, file_header, recording_files
from wire.reading import Reading

logger = logging.getLogger(__name__)

_MAX_CACHED_IDS = 1_000_000
"""Machine ids whose pattern answer is cached; the cache starts afresh past this."""


class Recorder:
    """Takes each tick's accepted readings and writes them from a thread of its own."""

    def __init__(
        self, settings: RecordingSettings, features: tuple[str, ...], metrics: AgentMetrics
    ) -> None:
        self.settings = settings
        self.features = features
        self._metrics = metrics
        self._queue: deque[tuple[list[Reading], NDArray[np.bool_]]] = deque()
        self._wake = threading.Condition()
        self._writing = threading.Lock()  # the writer thread, or a caller of flush()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._throttle = LogThrottle(logger)
        patterns = settings.machines
        self._everything = "*" in patterns
        self._patterns = patterns
        self._wanted: dict[str, bool] = {}
        self.directory = settings.directory
        try:  # here, not in start(): a folder it cannot write stops start-up with a message
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = self.directory / f".write-test.{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise ConfigError(
                f"recording.directory (FOREWARN_RECORDING__DIRECTORY) {str(self.directory)!r} "
                f"cannot be created or written: {error.strerror or error}; set it to a folder "
                "the agent may write (an absolute path, e.g. under its state directory), or "
                "turn the recording off (FOREWARN_RECORDING__ENABLED=false)"
            ) from error
        self._closed: deque[tuple[Path, int]] = deque()  # oldest first: (path, bytes)
        self._file: BinaryIO | None = None
        self._file_path: Path | None = None
        self._file_size = 0
        self._names: dict[str, int] = {}
        self._serial = 0
        self.folder_bytes = 0

    # --- the tick thread's side --------------------------------------------------------------

    def record(self, readings: list[Reading], accepted: NDArray[np.bool_]) -> None:
        """Queue one tick's readings (``accepted``: which the window store took)."""
        if not readings:
            return
        with self._wake:
            if len(self._queue) >= self.settings.max_backlog_ticks:
                self._metrics.recording_dropped.labels(reason="backlog").inc(int(accepted.sum()))
                self._throttle.warning(
                    "recording-backlog",
                    "the recording's writer is %d ticks behind: a tick's readings were not "
                    "recorded (is %s slow or full?)",
                    len(self._queue),
                    self.directory,
                )
                return
            self._queue.append((readings, accepted))
            self._wake.notify()

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Create the folder, account for the files already there, start the writer."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in recording_files(self.directory):
            size = path.stat().st_size
            self._closed.append((path, size))
            self.folder_bytes += size
        self._metrics.recording_folder_bytes.set(self.folder_bytes)
        self._thread = threading.Thread(target=self._loop, name="forewarn-recording", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Write what is queued (for at most ``timeout_s``), then close the open file."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._thread is None or not self._thread.is_alive():
            self._close()

    def flush(self) -> None:
        """Write everything queued now, in the caller's thread (for tools and tests)."""
        while True:
            with self._wake:
                if not self._queue:
                    break
                item = self._queue.popleft()
            with self._writing:
                self._write_tick(*item)

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._stopping:
                    self._wake.wait()
                if not self._queue:
                    return  # stopping, everything written
                item = self._queue.popleft()
            try:
                with self._writing:
                    self._write_tick(*item)
            except Exception:
                logger.exception("recording a tick failed; the next tick starts afresh")

    # --- the writer thread's side ------------------------------------------------------------

    def _wants(self, machine_id: str) -> bool:
        answer = self._wanted.get(machine_id)
        if answer is None:
            if len(self._wanted) >= _MAX_CACHED_IDS:
                self._wanted.clear()
            answer = any(fnmatch.fnmatchcase(machine_id, p) for p in self._patterns)
            self._wanted[machine_id] = answer
        return answer

    def _write_tick(self, readings: list[Reading], accepted: NDArray[np.bool_]) -> None:
        index = np.flatnonzero(accepted).tolist()
        if self._everything:
            chosen = [readings[i] for i in index]
        else:
            wants = self._wants
            chosen = [r for r in (readings[i] for i in index) if wants(r.machine_id)]
        n = len(chosen)
        if not n:
            return
        ids = [r.machine_id for r in chosen]
        ts = np.fromiter((r.ts for r in chosen), np.float64, n)
        seq = np.fromiter((r.seq for r in chosen), np.int64, n)
        values = np.array([r.values for r in chosen], dtype=np.float32)
        try:
            self._write(ids, ts, seq, values)
        except OSError as error:
            self._metrics.recording_dropped.labels(reason="error").inc(n)
            self._throttle.warning(
                "recording-error",
                "could not write the recording in %s (%s): %d readings not recorded",
                self.directory,
                error.strerror or error,
                n,
            )
            self._close()

    def _write(
        self,
        ids: list[str],
        ts: NDArray[np.float64],
        seq: NDArray[np.int64],
        values: NDArray[np.float32],
    ) -> None:
        block, fresh = self._encode(ids, ts, seq, values)
        settings = self.settings
        if len(file_header(self.features, time.time())) + len(block) > settings.max_bytes:
            # Not even a folder of this one file could hold it: keep the files there are.
            self._too_big(len(ids), len(block))
            return
        if self._file is not None and self._file_size + len(block) > settings.file_bytes:
            self._close()
        if self._file is None:
            self._open()
            block, fresh = self._encode(ids, ts, seq, values)  # the new file's names start afresh
        needed = len(block)
        while self.folder_bytes + needed > settings.max_bytes and self._closed:
            self._drop_oldest()
        if self.folder_bytes + needed > settings.max_bytes:
            self._too_big(len(ids), needed)
            return
        assert self._file is not None
        self._file.write(block)
        self._file.flush()
        self._names.update(fresh)
        self._file_size += needed
        self.folder_bytes += needed
        self._metrics.recording_bytes.inc(needed)
        self._metrics.recording_readings.inc(len(ids))
        self._metrics.recording_folder_bytes.set(self.folder_bytes)

    def _too_big(self, readings: int, size: int) -> None:
        self._metrics.recording_dropped.labels(reason="too_big").inc(readings)
        self._throttle.warning(
            "recording-too-big",
            "a tick's %d readings (%d bytes) do not fit recording.max_bytes %d: not recorded "
            "(raise FOREWARN_RECORDING__MAX_BYTES, or record fewer machines)",
            readings,
            size,
            self.settings.max_bytes,
        )

    def _encode(
        self,
        ids: list[str],
        ts: NDArray[np.float64],
        seq: NDArray[np.int64],
        values: NDArray[np.float32],
    ) -> tuple[bytes, dict[str, int]]:
        """The block for these readings, naming the machines the open file has not seen yet,
        and those new names with their indices: the caller commits them to the open file's
        table only once the block is written, so that a block left out (too big for the
        folder's cap) leaves no name behind that later blocks would point at unwritten."""
        names = self._names
        new: list[str] = []
        base = len(names)
        fresh: dict[str, int] = {}
        index = np.empty(len(ids), dtype=np.uint32)
        for i, machine_id in enumerate(ids):
            slot = names.get(machine_id)
            if slot is None:
                slot = fresh.get(machine_id)
                if slot is None:
                    slot = fresh[machine_id] = base + len(new)
                    new.append(machine_id)
            index[i] = slot
        return encode_block(new, index, ts, seq, values), fresh

    def _open(self) -> None:
        self._serial += 1
        name = f"rec-{int(time.time() * 1000):013d}-{self._serial:06d}{SUFFIX}"
        path = self.directory / name
        header = file_header(self.features, time.time())
        while self.folder_bytes + len(header) > self.settings.max_bytes and self._closed:
            self._drop_oldest()
        handle = path.open("xb")
        handle.write(header)
        self._file, self._file_path, self._file_size = handle, path, len(header)
        self._names = {}
        self.folder_bytes += len(header)
        self._metrics.recording_bytes.inc(len(header))

    def _close(self) -> None:
        if self._file is None or self._file_path is None:
            return
        with contextlib.suppress(OSError):
            self._file.close()
        self._closed.append((self._file_path, self._file_size))
        self._file, self._file_path = None, None

    def _drop_oldest(self) -> None:
        path, size = self._closed.popleft()
        with contextlib.suppress(FileNotFoundError):  # already gone: no room taken either way
            path.unlink()
        self.folder_bytes -= size
        self._metrics.recording_files_dropped.inc()
        self._metrics.recording_folder_bytes.set(self.folder_bytes)
