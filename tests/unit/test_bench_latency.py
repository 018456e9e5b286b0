"""The latency probe joins each reading's arrival to the forecast that used it."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from agent.window import WindowStore
from bench.latency import LatencyProbe
from wire.reading import Reading


class _Forecaster:
    def forecast(self, windows: np.ndarray) -> np.ndarray:
        time.sleep(0.01)
        return np.zeros((len(windows), 3), dtype=np.float32)


class _Agent:
    """The agent's shape as the probe sees it: a store, a forecaster, tick."""

    def __init__(self) -> None:
        self.store = WindowStore(2, 4, 100)
        self.forecaster = _Forecaster()
        self.pending: list[Reading] = []

    def hand_off(self, reading: Reading) -> None:
        self.pending.append(reading)

    def tick(self) -> Any:
        self.store.append_many(self.pending, time.time())
        self.pending.clear()
        batch = self.store.take_ready()
        if len(batch):
            self.forecaster.forecast(batch.windows)
        return []


def _reading(machine: str, seq: int) -> Reading:
    return Reading(machine, time.time(), seq, np.ones(4, dtype=np.float32), time.monotonic())


def test_each_forecast_is_joined_to_its_readings_arrival():
    agent = _Agent()
    probe = LatencyProbe(agent)  # type: ignore[arg-type]
    agent.hand_off(_reading("a", 0))
    agent.tick()  # before the measured span: not joined
    probe.start()
    began = time.monotonic()
    for seq in (1, 2):
        agent.hand_off(_reading("a", seq))
        agent.hand_off(_reading("b", seq - 1))
        time.sleep(0.02)
        agent.tick()
    span_ms = (time.monotonic() - began) * 1000
    report = probe.report()
    # a: seq 1 and 2 forecast (full windows of 2); b: seq 1 only (its first window is 0, 1).
    assert report["forecasts_joined"] == 3
    latency = report["arrival_to_forecast_ms"]
    # Each joined reading waited out the 20 ms sleep and a 10 ms forecast, and arrived and was
    # forecast within the span timed here: bounds from this run, not from a machine's speed.
    assert 25 <= latency["p50"] <= span_ms
    assert report["arrival_to_tick_end_ms"]["p50"] >= latency["p50"]
    assert report["ticks"] == 2
    assert report["forecast_s"]["p50"] >= 0.009
