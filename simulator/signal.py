"""The seed's sensor signal model: the exact reference series, and a vectorised fleet version.

The reference series reproduces the seed's draws bit for bit (numpy's legacy global generator,
seed 42, draws in the seed's order), so evaluations can quote the seed's reference numbers. The
fleet version keeps the same physics but gives every machine its own level, swing, period, phase
and noise, and bounds the slow degradation trend with periodic maintenance so that a healthy
machine stays in its band however long it runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

SPIKE_PROBABILITY = 0.02
SPIKE_LOW_C, SPIKE_HIGH_C = 5.0, 15.0

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class SeedSeries:
    """The seed's series: readings (n, 4) in FEATURES order and the noise-free temperature."""

    readings: FloatArray
    clean_temperature: FloatArray


def seed_series(n: int = 1000, seed: int = 42) -> SeedSeries:
    """The seed's exact series (same generator, same draws in the same order)."""
    np.random.seed(seed)  # the seed's recipe uses the legacy global generator on purpose
    t = np.arange(n, dtype=np.float64)
    clean = 70.0 + 10.0 * np.sin(2.0 * np.pi * t / 100.0) + 0.01 * t
    temperature = clean + np.random.normal(0.0, 2.0, n)
    spikes = np.random.choice(n, 20, replace=False)
    temperature[spikes] += np.random.uniform(5.0, 15.0, 20)
    vibration = 0.5 * temperature + np.random.normal(0.0, 5.0, n)
    pressure = 100.0 + 0.3 * temperature + np.random.normal(0.0, 3.0, n)
    rpm = 1500.0 + 2.0 * temperature + np.random.normal(0.0, 50.0, n)
    readings = np.stack([temperature, vibration, pressure, rpm], axis=1)
    return SeedSeries(readings=readings, clean_temperature=clean)


@dataclass(frozen=True)
class MachineParams:
    """Per-machine constants of the fleet signal; arrays of shape (machines,)."""

    base_c: FloatArray
    swing_c: FloatArray
    period_ticks: FloatArray
    phase_ticks: FloatArray
    noise_c: FloatArray
    trend_c_per_tick: FloatArray
    maintenance_ticks: FloatArray
    maintenance_offset: FloatArray

    @property
    def count(self) -> int:
        return int(self.base_c.shape[0])

    @classmethod
    def draw(cls, machines: int, rng: np.random.Generator) -> MachineParams:
        """A fleet of healthy machines whose noise-free peak stays below ~88 °C."""
        return cls(
            base_c=rng.uniform(66.0, 72.0, machines),
            swing_c=rng.uniform(8.0, 11.0, machines),
            period_ticks=rng.uniform(80.0, 120.0, machines),
            phase_ticks=rng.uniform(0.0, 120.0, machines),
            noise_c=rng.uniform(1.5, 2.5, machines),
            trend_c_per_tick=rng.uniform(0.005, 0.015, machines),
            maintenance_ticks=rng.uniform(250.0, 400.0, machines),
            maintenance_offset=rng.uniform(0.0, 400.0, machines),
        )

    def clean_temperature(self, t: float | FloatArray) -> FloatArray:
        """Noise-free temperature at tick(s) t; t broadcasts against the machine axis."""
        cycle = self.swing_c * np.sin(2.0 * np.pi * (t + self.phase_ticks) / self.period_ticks)
        wear = self.trend_c_per_tick * np.mod(t + self.maintenance_offset, self.maintenance_ticks)
        return np.asarray(self.base_c + cycle + wear, dtype=np.float64)


def readings_from_temperature(temperature: FloatArray, rng: np.random.Generator) -> FloatArray:
    """The seed's coupled sensors: (..., 4) readings in FEATURES order from temperatures."""
    vibration = 0.5 * temperature + rng.normal(0.0, 5.0, temperature.shape)
    pressure = 100.0 + 0.3 * temperature + rng.normal(0.0, 3.0, temperature.shape)
    rpm = 1500.0 + 2.0 * temperature + rng.normal(0.0, 50.0, temperature.shape)
    return np.stack([temperature, vibration, pressure, rpm], axis=-1)


def spikes(shape: tuple[int, ...], rng: np.random.Generator) -> FloatArray:
    """The seed's spikes: +U(5, 15) °C on about 2 % of readings, zero elsewhere."""
    hit = rng.random(shape) < SPIKE_PROBABILITY
    return np.where(hit, rng.uniform(SPIKE_LOW_C, SPIKE_HIGH_C, shape), 0.0)
