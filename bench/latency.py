"""The agent, timed from each reading's arrival to its forecast: an instrumented agent process.

The agent exports no per-reading latency (``forewarn_tick_duration_seconds`` says how long a
tick took, not how long a reading waited for it), so this runs the real :class:`Agent` — the
same settings, threads, MQTT client and tick — with thin wrappers that note, per reading, the
monotonic time paho handed it to the agent (``Reading.received``, stamped by the agent's message
callback), and per tick the machines forecast and when their forecast was ready. Joining the two
on (machine, seq) gives each reading's wait; the wrappers cost a list append per reading and
two small array copies per tick.

Started by ``bench.e2e`` as a process of its own (as ``forewarn agent`` would be), configured by
the same ``FOREWARN_*`` variables. SIGUSR1 starts the measured span (after the windows have
filled); SIGTERM stops the agent and writes the report to ``--out`` as JSON.

    python -m bench.latency --out latency.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agent.app import Agent
from agent.tick import Ticker
from agent.window import Appended, Batch
from bench.loadgen import parse_metrics, peak_rss_mb, percentile, rejected_by_reason, rss_mb
from config.settings import load_settings
from wire.reading import Reading


class LatencyProbe:
    """Wraps an agent's tick (its window store's append and gather, its forecast and the tick
    itself) to time readings through it."""

    def __init__(self, ticker: Ticker) -> None:
        self.ticker = ticker
        self.measuring = False
        self._reset()
        self._current: tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]] | None = (
            None
        )
        append_many: Callable[[Sequence[Reading], float], Appended] = ticker.store.append_many
        take_ready: Callable[[], Batch] = ticker.store.take_ready
        forecast: Callable[[NDArray[np.float32]], NDArray[np.float32]] = ticker.forecaster.forecast
        tick: Callable[[], Any] = ticker.tick
        monotonic = time.monotonic

        def timed_append_many(readings: Sequence[Reading], now: float) -> Appended:
            since = self.started_at  # what arrived before start() is not joined
            self.arrivals.extend(
                (reading.machine_id, reading.seq, reading.received)
                for reading in readings
                if reading.received >= since
            )
            return append_many(readings, now)

        def timed_take_ready() -> Batch:
            batch = take_ready()
            store = ticker.store
            self._current = (
                batch.slots.copy(),
                store.last_seq[batch.slots].copy(),
                store.last_ts[batch.slots].copy(),
            )
            return batch

        def timed_forecast(windows: NDArray[np.float32]) -> NDArray[np.float32]:
            started = monotonic()
            out = forecast(windows)
            done, wall = monotonic(), time.time()
            if self.measuring and self._current is not None:
                self.forecasts.append((*self._current, done, wall))
                self.forecast_s.append(done - started)
            return out

        def timed_tick() -> Any:
            started = monotonic()
            self._current = None
            forecasts = self.forecasts  # start() may swap the lists in between
            before = len(forecasts)
            events = tick()
            ended = monotonic()
            if self.measuring and forecasts is self.forecasts:
                self.ticks.append(ended - started)
                if len(forecasts) > before:
                    self.tick_ends.append((len(forecasts) - 1, ended))
                    self.forecasting_ticks.append(ended - started)
            return events

        # Instance attributes shadow the methods: the tick loop calls self.tick(), which calls
        # self.store.append_many(...), self.store.take_ready(), self.forecaster.forecast(...).
        ticker.store.append_many = timed_append_many  # type: ignore[method-assign]
        ticker.store.take_ready = timed_take_ready  # type: ignore[method-assign]
        ticker.forecaster.forecast = timed_forecast  # type: ignore[method-assign]
        ticker.tick = timed_tick  # type: ignore[method-assign]

    def _reset(self) -> None:
        self.arrivals: list[tuple[str, int, float]] = []
        self.forecasts: list[
            tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64], float, float]
        ] = []
        self.tick_ends: list[tuple[int, float]] = []
        self.ticks: list[float] = []
        self.forecasting_ticks: list[float] = []
        self.forecast_s: list[float] = []
        self.started_at = time.monotonic()

    def start(self) -> None:
        """Start the measured span: what arrived before it is not joined."""
        self._reset()
        self.measuring = True

    def report(self) -> dict[str, Any]:
        """Latency percentiles (ms), tick and forecast durations (s), counts."""
        self.measuring = False
        arrived = {(machine, seq): at for machine, seq, at in self.arrivals}
        ids = self.ticker.store.machine_ids
        to_forecast: list[float] = []
        from_publish: list[float] = []
        to_tick_end: list[float] = []
        tick_end_of = dict(self.tick_ends)
        for index, (slots, seqs, ts, done, wall) in enumerate(self.forecasts):
            from_publish.extend((wall - ts).tolist())
            ended = tick_end_of.get(index)
            for slot, seq in zip(slots.tolist(), seqs.tolist(), strict=True):
                at = arrived.get((ids[slot], seq))
                if at is not None:
                    to_forecast.append(done - at)
                    if ended is not None:
                        to_tick_end.append(ended - at)
        span = time.monotonic() - self.started_at

        def ms(values: list[float]) -> dict[str, float | None]:
            return {
                "p50": _round(percentile(values, 50), 1000),
                "p99": _round(percentile(values, 99), 1000),
                "max": _round(max(values) if values else None, 1000),
            }

        return {
            "span_s": round(span, 1),
            "readings_arrived": len(self.arrivals),
            "forecasts_joined": len(to_forecast),
            "arrival_to_forecast_ms": ms(to_forecast),
            "publish_to_forecast_ms": ms(from_publish),
            "arrival_to_tick_end_ms": ms(to_tick_end),
            "ticks": len(self.ticks),
            "readings_per_s": round(len(self.arrivals) / span) if span > 0 else None,
            # Ticks that forecast (a tick with nothing new to forecast only drains and checks).
            "tick_s": {
                "p50": _round(percentile(self.forecasting_ticks, 50)),
                "p99": _round(percentile(self.forecasting_ticks, 99)),
                "mean": _round(
                    float(np.mean(self.forecasting_ticks)) if self.forecasting_ticks else None
                ),
            },
            "forecast_s": {
                "p50": _round(percentile(self.forecast_s, 50)),
                "p99": _round(percentile(self.forecast_s, 99)),
            },
            "batch_mean": round(
                sum(len(f[0]) for f in self.forecasts) / max(1, len(self.forecasts)), 1
            ),
        }


def _round(value: float | None, scale: float = 1.0, digits: int = 4) -> float | None:
    return None if value is None else round(value * scale, digits)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON report")
    args = parser.parse_args(argv)
    settings = load_settings()
    logging.basicConfig(level=settings.log_level, stream=sys.stderr)
    agent = Agent(settings)
    probe = LatencyProbe(agent.ticker)
    signal.signal(signal.SIGUSR1, lambda *_: probe.start())
    signal.signal(signal.SIGTERM, lambda *_: agent.stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: agent.stop_event.set())
    agent.start()
    try:
        agent.stop_event.wait()
    finally:
        report = probe.report()
        samples = parse_metrics(_exposition(agent))
        report["readings_accepted"] = int(samples.get("forewarn_readings_total", 0))
        report["rejected"] = rejected_by_reason(samples)
        report["rss_mb"] = _round(rss_mb(os.getpid()), digits=1)
        report["peak_rss_mb"] = _round(peak_rss_mb(os.getpid()), digits=1)
        report["machines"] = len(agent.store)
        agent.stop(flush_timeout_s=1.0)
        args.out.write_text(json.dumps(report))
    return 0 if agent.failure is None else 1


def _exposition(agent: Agent) -> str:
    from prometheus_client import generate_latest

    return generate_latest(agent.metrics.registry).decode()


if __name__ == "__main__":
    sys.exit(main())
