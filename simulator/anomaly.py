"""The anomaly scenario family: faults that an anomaly score must see and a threshold may not.

Separate from the fleet's fault mixes (:mod:`simulator.faults`), which stay as they are: every
machine here starts as a healthy fleet machine (its own level, cycle, wear, noise and spikes,
with vibration, pressure and rpm coupled to temperature), and from ``start`` on one of:

* ``runaway``: the temperature climbs steadily (0.15 °C per tick) and the coupled sensors follow;
* ``cooling_failure``: the temperature rises towards a plateau 25 °C higher (time constant 100
  ticks), coupled sensors following;
* ``stuck``: the temperature sensor repeats its last reading;
* ``noisy``: the temperature sensor's noise triples;
* ``broken_relationship``: pressure stops following temperature (it stays in its usual range,
  so only the relation between the two shows it);
* ``healthy``: nothing happens.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from simulator.fleet import Fleet

ANOMALY_KINDS: tuple[str, ...] = (
    "runaway",
    "cooling_failure",
    "stuck",
    "noisy",
    "broken_relationship",
)
COUPLING = np.array([1.0, 0.5, 0.3, 2.0])
"""How each feature follows the temperature (the fleet's signal model)."""


@dataclass(frozen=True)
class AnomalyScenario:
    readings: NDArray[np.float64]
    """(machines, ticks, 4) in FEATURES order."""
    kinds: list[str]
    """Per machine: one of ``ANOMALY_KINDS`` or ``healthy``."""
    start: int
    """The tick every fault starts at."""


def anomaly_scenario(
    per_kind: int,
    healthy: int,
    seed: int,
    ticks: int = 2000,
    start: int = 1200,
    period_scale: float = 1.0,
) -> AnomalyScenario:
    """``per_kind`` machines of each kind and ``healthy`` healthy ones, reproducibly.

    ``period_scale`` stretches every machine's cycle (80-120 ticks in the fleet) by that factor,
    the faults unchanged: slow-cycled machines, whose calm stretch between two peaks outlasts
    what a fault near each peak leaves calm on a fast one."""
    kinds = [kind for kind in ANOMALY_KINDS for _ in range(per_kind)] + ["healthy"] * healthy
    fleet = Fleet(len(kinds), seed)
    if period_scale != 1.0:
        fleet.params = replace(fleet.params, period_ticks=fleet.params.period_ticks * period_scale)
    readings = fleet.history(0, ticks).copy()
    rng = np.random.default_rng(seed + 7919)
    after = np.arange(ticks - start, dtype=np.float64)
    for m, kind in enumerate(kinds):
        if kind == "runaway":
            readings[m, start:] += (0.15 * after)[:, None] * COUPLING
        elif kind == "cooling_failure":
            readings[m, start:] += (25.0 * (1.0 - np.exp(-after / 100.0)))[:, None] * COUPLING
        elif kind == "stuck":
            readings[m, start:, 0] = readings[m, start - 1, 0]
        elif kind == "noisy":
            # Independent noise of sqrt(8) sigmas on top of the usual one: 3 sigmas in all.
            sigma = np.sqrt(8.0) * fleet.params.noise_c[m]
            readings[m, start:, 0] += rng.normal(0.0, sigma, ticks - start)
        elif kind == "broken_relationship":
            usual = float(readings[m, :start, 2].mean())
            readings[m, start:, 2] = usual + rng.normal(0.0, 3.0, ticks - start)
    return AnomalyScenario(readings=readings, kinds=kinds, start=start)
