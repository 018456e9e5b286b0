"""A fleet of simulated machines: healthy ones, and some that overheat on a schedule.

An overheating machine gains an extra a·(t - onset)² °C from its onset, capped at a peak; it
stays hot for a while, then is repaired and cools back to its normal band. That gives every
alert its whole life (warning, critical, resolved) within one run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.faults import (
    NOISE_FACTOR,
    DriftPlan,
    RampPlan,
    WindowFault,
    plan_faults,
    plan_slow_drifts,
)
from simulator.signal import FloatArray, MachineParams, readings_from_temperature, spikes


@dataclass(frozen=True)
class OverheatPlan:
    """When and how hard one machine overheats (ticks are reading steps)."""

    machine_index: int
    onset_tick: int
    planned_crossing_tick: int
    coefficient: float
    peak_excess_c: float
    hold_ticks: int
    recover_ticks: int
    kind: str = "overheat"
    power: float = 2.0
    """2: a·(t - onset)² (``forewarn simulate --overheat``); 1: a steady climb (the demo's)."""

    def excess(self, t: FloatArray) -> FloatArray:
        """Extra temperature at ticks t (vectorised)."""
        since = np.maximum(np.asarray(t, dtype=np.float64) - self.onset_tick, 0.0)
        ramp = np.minimum(self.coefficient * since**self.power, self.peak_excess_c)
        peak_tick = float((self.peak_excess_c / self.coefficient) ** (1.0 / self.power))
        cooling = np.clip((since - peak_tick - self.hold_ticks) / self.recover_ticks, 0.0, 1.0)
        return np.asarray(ramp * (1.0 - cooling), dtype=np.float64)


def plan_overheats(
    params: MachineParams,
    count: int,
    within_ticks: int,
    threshold_c: float,
    rng: np.random.Generator,
) -> list[OverheatPlan]:
    """Choose ``count`` machines that cross ``threshold_c`` in the first ``within_ticks`` ticks.

    Onsets fall between 15 % and 35 % of that span and planned crossings between 70 % and 95 % of
    it, so a full window of readings exists well before any crossing and every overheat is
    preceded by a visible ramp that a forecaster can warn about.
    """
    if count == 0:
        return []
    if within_ticks < 40:
        raise ValueError("overheats need at least 40 ticks to develop; run longer or faster")
    chosen = np.sort(rng.choice(params.count, size=count, replace=False))
    plans = []
    for index in chosen:
        onset = int(rng.uniform(0.15, 0.35) * within_ticks)
        crossing = int(rng.uniform(0.7, 0.95) * within_ticks)
        delay = max(crossing - onset, 10)
        # Enough excess that the noise-free signal is over the threshold by the planned crossing
        # even at the trough of its cycle (wear only adds), so every overheat crosses in time.
        swing = float(params.swing_c[index])
        needed = threshold_c - float(params.base_c[index]) + swing
        peak = needed + swing * 0.3 + 8.0
        plans.append(
            OverheatPlan(
                machine_index=int(index),
                onset_tick=onset,
                planned_crossing_tick=onset + delay,
                coefficient=needed / delay**2,
                peak_excess_c=peak,
                hold_ticks=max(20, within_ticks // 6),
                recover_ticks=max(20, within_ticks // 6),
            )
        )
    return plans


def plan_steady_overheats(
    params: MachineParams,
    count: int,
    within_ticks: int,
    threshold_c: float,
    rng: np.random.Generator,
) -> list[OverheatPlan]:
    """The demo's overheats: ``count`` machines that climb steadily into the threshold.

    A person watching the demo should see a machine warned well before it goes critical. The
    forecaster looks 15 readings ahead and needs its 20-reading window full and 20 of its own
    errors (the warning margin) before it warns at its best, so the drift is shaped to suit:
    it starts at 30 % of ``within_ticks`` (15 s of the demo's first 50 at 1 Hz) and climbs in a
    straight line to 3 °C over the threshold at 130 % of it (65 s), on machines whose own cycle
    is climbing then too (its trough in the first 60 %), so that the reading rises steadily
    instead of being pushed back by a falling cycle. The warning comes within the first minute,
    the critical 10 s or more after it.
    """
    if count == 0:
        return []
    onset = int(0.3 * within_ticks)
    crossing = int(1.3 * within_ticks)
    trough = np.mod(0.75 * params.period_ticks - params.phase_ticks, params.period_ticks)
    # Machines whose trough is in the first 60 % first, the others by how near they come.
    distance = np.maximum(trough - 0.6 * within_ticks, 0.0) + rng.uniform(0.0, 1e-3, params.count)
    chosen = np.sort(np.argsort(distance, kind="stable")[:count])
    plans = []
    for index in chosen.tolist():
        clean = float(params.clean_temperature(float(crossing))[index])
        needed = max(threshold_c + 3.0 - clean, 1.0)
        plans.append(
            OverheatPlan(
                machine_index=index,
                onset_tick=onset,
                planned_crossing_tick=crossing,
                coefficient=needed / (crossing - onset),
                peak_excess_c=needed + 8.0,
                hold_ticks=max(20, within_ticks // 3),
                recover_ticks=max(20, within_ticks // 3),
                power=1.0,
            )
        )
    return plans


class Fleet:
    """Machines that produce one reading each per tick, reproducibly from a seed."""

    def __init__(
        self,
        machines: int,
        seed: int,
        overheat: int = 0,
        overheat_within_ticks: int = 120,
        threshold_c: float = 95.0,
        machine_prefix: str = "m-",
        faults: dict[str, int] | None = None,
        run_ticks: int | None = None,
        slow_drifts: int = 0,
        steady_overheats: bool = False,
    ) -> None:
        """``slow_drifts``: machines per slow-drift shape and reach (see
        :func:`simulator.faults.plan_slow_drifts`), a family of its own beside ``faults``;
        ``steady_overheats``: the ``overheat`` machines climb as the demo's do
        (:func:`plan_steady_overheats`) instead of quadratically."""
        if machines < 1:
            raise ValueError("a fleet needs at least one machine")
        if overheat > machines:
            raise ValueError("cannot overheat more machines than the fleet has")
        self._rng = np.random.default_rng(seed)
        self.params = MachineParams.draw(machines, self._rng)
        planner = plan_steady_overheats if steady_overheats else plan_overheats
        self.overheats = planner(
            self.params, overheat, overheat_within_ticks, threshold_c, self._rng
        )
        # Fault scenarios draw after everything above, so a fleet without them is unchanged.
        self.ramps: list[RampPlan] = []
        self.window_faults: list[WindowFault] = []
        if faults:
            if run_ticks is None:
                raise ValueError("fault scenarios need the run's length in ticks")
            self.ramps, self.window_faults = plan_faults(
                self.params,
                faults,
                run_ticks,
                threshold_c,
                self._rng,
                exclude=frozenset(p.machine_index for p in self.overheats),
            )
        # Slow drifts draw after everything else, so a fleet without them is unchanged.
        self.drifts: list[DriftPlan] = plan_slow_drifts(
            self.params,
            slow_drifts,
            threshold_c,
            self._rng,
            exclude=frozenset(
                [p.machine_index for p in self.overheats]
                + [p.machine_index for p in self.ramps]
                + [f.machine_index for f in self.window_faults]
            ),
        )
        self.crossing_plans: list[OverheatPlan | RampPlan | DriftPlan] = [
            *self.overheats,
            *self.ramps,
            *self.drifts,
        ]
        self._noisy = [f for f in self.window_faults if f.kind == "noisy_sensor"]
        self._stuck = [f for f in self.window_faults if f.kind == "stuck_sensor"]
        self._last: FloatArray | None = None
        self.last_spikes_c: FloatArray = np.zeros((machines, 0))
        """The spikes (°C) inside the temperatures of the last :meth:`history` call, same shape.

        Spikes are sensor artefacts, never an overheat: the ground truth takes them out of the
        readings before it looks for a fault's crossing (see :func:`faults.first_crossing`)."""
        width = max(3, len(str(machines - 1)))
        self.machine_ids = [f"{machine_prefix}{i:0{width}d}" for i in range(machines)]
        self.threshold_c = threshold_c

    def silent(self, tick: int) -> list[int]:
        """Machines that publish nothing at ``tick`` (dropout)."""
        return [
            f.machine_index for f in self.window_faults if f.kind == "dropout" and f.active(tick)
        ]

    def bad_payload_machines(self, tick: int) -> list[int]:
        """Machines whose gateway is sending broken payloads at ``tick``."""
        return [
            f.machine_index
            for f in self.window_faults
            if f.kind == "bad_payload" and f.active(tick)
        ]

    @property
    def size(self) -> int:
        return self.params.count

    def clean_temperature(self, ticks: FloatArray) -> FloatArray:
        """Noise-free temperatures, shape (machines, len(ticks)), overheats included."""
        t = np.asarray(ticks, dtype=np.float64)[np.newaxis, :]
        temperature = self.params.clean_temperature(t.T).T  # (machines, ticks)
        for plan in self.crossing_plans:
            temperature[plan.machine_index] += plan.excess(t[0])
        return temperature

    def readings(self, tick: int) -> FloatArray:
        """One reading per machine at ``tick``: shape (machines, 4), FEATURES order."""
        return self.history(tick, 1)[:, 0, :]

    def history(self, start_tick: int, ticks: int) -> FloatArray:
        """Readings for ticks [start, start + ticks): shape (machines, ticks, 4)."""
        t = np.arange(start_tick, start_tick + ticks, dtype=np.float64)
        temperature = self.clean_temperature(t)
        shape = temperature.shape
        noise = self._rng.normal(0.0, 1.0, shape) * self.params.noise_c[:, None]
        for fault in self._noisy:
            active = (t >= fault.start_tick) & (t < fault.end_tick)
            noise[fault.machine_index, active] *= NOISE_FACTOR
        spike_c = spikes(shape, self._rng)
        temperature = temperature + noise + spike_c
        readings = readings_from_temperature(temperature, self._rng)
        self.last_spikes_c = spike_c
        for fault in self._stuck:
            self._hold_stuck(readings, fault, start_tick)
        self._last = readings[:, -1].copy()
        return readings

    def _hold_stuck(self, readings: FloatArray, fault: WindowFault, start_tick: int) -> None:
        """Repeat the reading from just before the fault over the fault's ticks."""
        ticks = readings.shape[1]
        first = max(fault.start_tick, start_tick) - start_tick
        last = min(fault.end_tick, start_tick + ticks) - start_tick
        if first >= last:
            return
        before = fault.start_tick - 1 - start_tick
        if before >= 0:
            held = readings[fault.machine_index, before]
        elif self._last is not None:
            held = self._last[fault.machine_index]
        else:
            return  # the fault starts at tick 0: nothing to repeat yet
        readings[fault.machine_index, first:last] = held
