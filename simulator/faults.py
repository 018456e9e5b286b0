"""Fault scenarios with ground truth, mixable per fleet.

The shapes are fixed here, independently of any alert policy, so that no policy is tuned to its
own test:

* ``overheat`` — from a random onset in the first third of the run an extra a·(t - onset)² °C
  is added, a chosen so that the reading crosses the threshold 100-300 ticks after onset;
* ``cooling_failure`` — at the onset the slope jumps by +0.1 to +0.3 °C per tick until the
  crossing;
* ``dropout`` — no readings for 20-100 ticks, then they resume;
* ``stuck_sensor`` — the last reading repeats for 50-200 ticks;
* ``spikes`` — the seed's spikes (+U(5, 15) °C on 2 % of ticks) and nothing else: every machine
  has them, so a ``spikes`` machine is the control that must never be called an overheat;
* ``noisy_sensor`` — sensor noise ×3 for 100-300 ticks;
* ``bad_payload`` — malformed JSON, wrong types, NaN/inf, missing fields, out-of-range values,
  duplicate and out-of-order sequence numbers, in place of some readings.

Overheating and failing-cooling machines are hot for a while after the crossing and are then
repaired, so their alerts resolve within the run.

Slow drifts are a separate family (:func:`plan_slow_drifts`), fixed here for the same reason and
never mixed into the scenarios above: fouling, a failing fan or bearing wear, whose mean
temperature (the cycle removed) climbs over thousands of readings. Each shape of
:data:`DRIFT_SHAPES` (linear, exponential) reaches the threshold with its mean
:data:`DRIFT_REACH_TICKS` (2,000, 5,000 or 20,000) readings after its onset; the seed's cycle,
noise and spikes ride on top, so the readings cross well before the mean does. Like the ramps,
a drift is repaired a while after its crossing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from config.simulator import FAULT_KINDS
from simulator.signal import FloatArray, MachineParams

CROSSING_KINDS = frozenset({"overheat", "cooling_failure"})
NOISE_FACTOR = 3.0
MIN_RAMP_RUN_TICKS = 400
"""Overheat and cooling-failure scenarios need runs at least this long (onset and crossing)."""
BAD_PAYLOAD_PROBABILITY = 0.05
DRIFT_SHAPES: tuple[str, ...] = ("linear", "exponential")
DRIFT_REACH_TICKS: tuple[int, ...] = (2_000, 5_000, 20_000)
"""Readings from a slow drift's onset until its mean (cycle removed) reaches the threshold."""
DRIFT_EXP_RATE = 3.0
"""An exponential drift's excess is proportional to exp(3·s/reach) - 1: at half its reach it has
covered only 18 % of the way, so most of its rise comes late, as a failing part's does."""
DRIFT_ONSET_TICKS = (500, 1500)
"""Slow drifts start within these readings: every machine first shows its healthy self."""


def drift_kind(shape: str, reach_ticks: int) -> str:
    """The ground-truth name of a slow drift, e.g. ``drift_linear_2000``."""
    return f"drift_{shape}_{reach_ticks}"


@dataclass(frozen=True)
class RampPlan:
    """A temperature fault that drives one machine over its threshold, then is repaired."""

    machine_index: int
    kind: str
    onset_tick: int
    planned_crossing_tick: int
    coefficient: float  # °C per tick² (overheat) or °C per tick (cooling_failure)
    peak_excess_c: float
    hold_ticks: int
    recover_ticks: int

    @property
    def _power(self) -> float:
        return 2.0 if self.kind == "overheat" else 1.0

    def excess(self, t: FloatArray) -> FloatArray:
        """Extra temperature at ticks t (vectorised)."""
        since = np.maximum(np.asarray(t, dtype=np.float64) - self.onset_tick, 0.0)
        ramp = np.minimum(self.coefficient * since**self._power, self.peak_excess_c)
        peak_tick = float((self.peak_excess_c / self.coefficient) ** (1.0 / self._power))
        cooling = np.clip((since - peak_tick - self.hold_ticks) / self.recover_ticks, 0.0, 1.0)
        return np.asarray(ramp * (1.0 - cooling), dtype=np.float64)


@dataclass(frozen=True)
class WindowFault:
    """A fault that holds for ticks [start, end): dropout, stuck or noisy sensor, bad payloads."""

    machine_index: int
    kind: str
    start_tick: int
    end_tick: int

    def active(self, tick: int) -> bool:
        return self.start_tick <= tick < self.end_tick


def parse_mix(text: str) -> dict[str, int]:
    """``"overheat=5,dropout=3"`` → {"overheat": 5, "dropout": 3}, with a clear error."""
    mix: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, count = part.partition("=")
        name = name.strip()
        if name not in FAULT_KINDS:
            raise ValueError(f"unknown fault {name!r}; choose from {', '.join(FAULT_KINDS)}")
        if not sep or not count.strip().isdigit():
            raise ValueError(f"fault {name!r} needs a count, e.g. {name}=3")
        mix[name] = mix.get(name, 0) + int(count)
    return mix


def plan_faults(
    params: MachineParams,
    mix: dict[str, int],
    run_ticks: int,
    threshold_c: float,
    rng: np.random.Generator,
    exclude: frozenset[int] = frozenset(),
) -> tuple[list[RampPlan], list[WindowFault]]:
    """Assign each fault of ``mix`` to its own machine and draw its timing and size."""
    wanted = sum(mix.values())
    free = np.array([i for i in range(params.count) if i not in exclude])
    if wanted > free.size:
        raise ValueError(f"{wanted} faulty machines asked for, but only {free.size} are free")
    if run_ticks < MIN_RAMP_RUN_TICKS and any(mix.get(k) for k in CROSSING_KINDS):
        raise ValueError("overheat and cooling_failure scenarios need runs of at least 400 ticks")
    machines = iter(rng.permutation(free)[:wanted].tolist())
    ramps: list[RampPlan] = []
    windows: list[WindowFault] = []
    for kind in FAULT_KINDS:
        for _ in range(mix.get(kind, 0)):
            index = int(next(machines))
            if kind in CROSSING_KINDS:
                ramps.append(_ramp(kind, index, params, run_ticks, threshold_c, rng))
            elif kind == "spikes":
                windows.append(WindowFault(index, kind, 0, run_ticks))
            elif kind == "bad_payload":
                start = int(rng.uniform(0.1, 0.6) * run_ticks)
                windows.append(WindowFault(index, kind, start, start + int(rng.uniform(100, 300))))
            else:
                low, high = {"dropout": (20, 100), "stuck_sensor": (50, 200)}.get(kind, (100, 300))
                start = int(rng.uniform(0.1, 0.8) * run_ticks)
                windows.append(
                    WindowFault(index, kind, start, start + int(rng.integers(low, high)))
                )
    return ramps, windows


def _ramp(
    kind: str,
    index: int,
    params: MachineParams,
    run_ticks: int,
    threshold_c: float,
    rng: np.random.Generator,
) -> RampPlan:
    onset = int(rng.uniform(0.05, 1.0 / 3.0) * run_ticks)
    if kind == "overheat":
        delay = int(rng.uniform(100, 300))
    else:
        slope = float(rng.uniform(0.1, 0.3))

    # The excess needed for the noise-free signal to reach the threshold at the crossing.
    def needed_at(tick: int) -> float:
        clean = float(params.clean_temperature(float(tick))[index])
        return max(threshold_c + 1.0 - clean, 1.0)

    if kind == "overheat":
        crossing = onset + delay
        coefficient = needed_at(crossing) / delay**2
    else:
        # Walk forward until the linear ramp meets the threshold: the crossing follows the slope.
        crossing = onset + 1
        while slope * (crossing - onset) < needed_at(crossing) and crossing < onset + 2000:
            crossing += 1
        coefficient = slope
    swing = float(params.swing_c[index])
    return RampPlan(
        machine_index=index,
        kind=kind,
        onset_tick=onset,
        planned_crossing_tick=crossing,
        coefficient=coefficient,
        peak_excess_c=threshold_c - float(params.base_c[index]) + swing * 1.3 + 8.0,
        hold_ticks=int(rng.uniform(30, 80)),
        recover_ticks=int(rng.uniform(30, 80)),
    )


@dataclass(frozen=True)
class DriftPlan:
    """A slow drift of one machine's mean temperature, then its repair."""

    machine_index: int
    shape: str
    reach_ticks: int
    onset_tick: int
    needed_c: float
    """Excess at which the machine's mean reaches the threshold (at ``onset + reach``)."""
    planned_crossing_tick: int
    """The first tick whose noise-free reading (cycle included) reaches the threshold."""
    hold_ticks: int
    recover_ticks: int

    @property
    def kind(self) -> str:
        return drift_kind(self.shape, self.reach_ticks)

    @property
    def repair_tick(self) -> int:
        """When the drift stops and cooling back to normal begins."""
        return self.planned_crossing_tick + self.hold_ticks

    def _rise(self, since: FloatArray) -> FloatArray:
        x = since / self.reach_ticks
        if self.shape == "linear":
            return np.asarray(self.needed_c * x, dtype=np.float64)
        scale = self.needed_c / np.expm1(DRIFT_EXP_RATE)
        return np.asarray(scale * np.expm1(DRIFT_EXP_RATE * x), dtype=np.float64)

    def excess(self, t: FloatArray) -> FloatArray:
        """Extra temperature at ticks t (vectorised): the drift, held at its value from the
        repair on while it cools back to zero over ``recover_ticks``."""
        t = np.asarray(t, dtype=np.float64)
        since = np.clip(t, self.onset_tick, self.repair_tick) - self.onset_tick
        cooling = np.clip((t - self.repair_tick) / self.recover_ticks, 0.0, 1.0)
        return np.asarray(self._rise(since) * (1.0 - cooling), dtype=np.float64)


def plan_slow_drifts(
    params: MachineParams,
    per_kind: int,
    threshold_c: float,
    rng: np.random.Generator,
    exclude: frozenset[int] = frozenset(),
) -> list[DriftPlan]:
    """``per_kind`` machines for each shape and reach, each on a machine of its own.

    A drift's mean is the machine's level plus its average wear (the wear sawtooth averages half
    its height); it needs ``threshold - mean`` more to reach the threshold at ``onset + reach``.
    """
    kinds = [(shape, reach) for shape in DRIFT_SHAPES for reach in DRIFT_REACH_TICKS]
    wanted = per_kind * len(kinds)
    if wanted == 0:
        return []
    free = np.array([i for i in range(params.count) if i not in exclude])
    if wanted > free.size:
        raise ValueError(f"{wanted} drifting machines asked for, but only {free.size} are free")
    machines = iter(rng.permutation(free)[:wanted].tolist())
    plans = []
    for shape, reach in kinds:
        for _ in range(per_kind):
            index = int(next(machines))
            onset = int(rng.integers(*DRIFT_ONSET_TICKS))
            mean = float(
                params.base_c[index]
                + params.trend_c_per_tick[index] * params.maintenance_ticks[index] / 2.0
            )
            draft = DriftPlan(index, shape, reach, onset, threshold_c - mean, onset + reach, 0, 1)
            ticks = np.arange(onset, onset + reach + 1, dtype=np.float64)
            clean = params.clean_temperature(ticks[:, np.newaxis])[:, index] + draft.excess(ticks)
            hot = np.flatnonzero(clean >= threshold_c)
            crossing = onset + int(hot[0]) if hot.size else onset + reach
            plans.append(
                DriftPlan(
                    machine_index=index,
                    shape=shape,
                    reach_ticks=reach,
                    onset_tick=onset,
                    needed_c=threshold_c - mean,
                    planned_crossing_tick=crossing,
                    hold_ticks=int(rng.uniform(100, 300)),
                    recover_ticks=int(rng.uniform(50, 150)),
                )
            )
    return plans


def slow_drift_run_ticks(plans: list[DriftPlan], after_repair: int = 1_000) -> int:
    """Readings a run needs for every drift to cross, be repaired and settle."""
    return max(p.repair_tick + p.recover_ticks for p in plans) + after_repair


def first_crossing(
    temperatures: FloatArray,
    onset_tick: int,
    threshold_c: float,
    spikes_c: FloatArray | None = None,
) -> int | None:
    """Ground truth: the first tick from the onset on whose reading is at or over the threshold.

    ``spikes_c`` (same shape) are taken out of the readings first: a spike is a sensor
    artefact and never an overheat, so a reading over the threshold only because of a spike is
    not the moment a machine overheats, and no forecast could see it coming. Sensor noise stays
    in: the crossing is the first real reading over the threshold, usually a few ticks before
    the noise-free temperature gets there.
    """
    readings = np.asarray(temperatures)
    if spikes_c is not None:
        readings = readings - np.asarray(spikes_c)
    hot = np.flatnonzero(readings[onset_tick:] >= threshold_c)
    return int(onset_tick + hot[0]) if hot.size else None
