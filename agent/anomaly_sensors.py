"""A calibrated anomaly score per sensor and per machine: the tail probability of recent behaviour.

One score must mean one rarity on every series, whether a sensor is smooth, integer-valued,
stepped, flat, heavy-tailed or seasonal, so that one threshold serves a whole plant. Each sensor
therefore learns its own normal, and each statistic below is judged against the distribution
that same statistic had on that same sensor while it was normal (the idea of HTM's "anomaly
likelihood", applied to control-chart statistics):

* the readings pass a median-of-3 filter first, so a single spike never moves any statistic;
* ``level``: an EWMA of the standardised level ``(y - mean) / spread``: a runaway, a slow
  drift or a step out of the learned envelope (either sign);
* ``slope``: an EWMA of the standardised one-step change: a climb or fall that the level has
  not yet shown (a CUSUM-like early warning for runaways);
* ``surprise``: an EWMA of the absolute standardised change off the local slope: a sensor
  turned noisy, or jumpy;
* ``stuck``: the run of unchanged readings, against the runs this sensor showed while normal
  (so an integer or stepped series is not "stuck", a continuous one soon is);
* with two or more sensors, ``relation``: the Mahalanobis distance of the vector of smoothed
  levels under their learned covariance, which catches broken relationships between sensors
  (current rising while flow does not) that no single sensor shows, and each sensor's
  residual given the others, which sees one sensor leaving the rest (pressure no longer
  following temperature) where the whole distance dilutes it with every sensor's noise.

Each statistic gives a one-sided tail probability under a normal law with the statistic's own
learned mean and spread (a rate per row, not a p-value of a test); a sensor's probability is the
smallest of its four times four, a machine's the smallest over its sensors and the relation
times their number (Bonferroni: more sensors do not mean more false alarms). A probability p
maps to

    score = min(1, -log10(p) / 10)        0.5 <=> a 1-in-100,000 row; 1 <=> 1 in 10**10

Per sensor, the score is its departure from the learned normal. The machine score is the rarity
of an *onset*, so that one threshold serves series whose departures last (a level shift) and
series whose anomalies are brief:

* the same statistics are also judged against a **recent normal** learned from every row, which
  follows a departure that lasts; the machine's onset rarity is the rarest of them (and of the
  learned normal's surprise and the relation), and it counts only on a row rarer than every
  row of the last ``onset_rows`` (an episode's first row scores, later rows only where they
  are rarer still, its tail not at all);
* a departure from the learned normal scores in full on the row it has lasted
  ``departure_rows`` rows (a slow drift or a stuck sensor: its onset as a lasting one), and
  otherwise holds at ``hold``, the default rule's clear level: an alert that fired stays
  firing while the departure lasts, without scoring each row of it as a new event. A lasting
  departure ends only once its score has stayed under ``hold`` for ``settle_rows`` rows, so
  a machine whose cycle brings it back inside its band for part of each cycle is still
  departing; on a machine whose cycle the scorer has timed (the rows between upward passes
  of a sensor's smoothed level, while normal, regular enough to be a cycle), a departure
  lasts once it has lasted 3 rows and ends only after ``settle_cycles`` (1.2) calm cycles, so that a
  fault that shows near each peak of a slow cycle pages once, its calm troughs however long;
* the ``onset`` output is the onset rarity alone (a lasting departure is no new event), each
  episode reported once: for ``repeat_rows`` rows after an onset at or over ``hold`` it is 0
  unless an onset beats that peak by ``repeat_margin`` (NAB, like an operator, counts the first
  detection of an event and charges every later one outside it). It is the score to threshold
  when each event should count once; on NAB's 51 files it scores 48.6 pooled where the machine
  score scores 40.2. The machine score keeps every new peak.

The rule needs more than one row to fire, yet an episode's second and third rows are seldom new
peaks: ``rarity`` is each row's rarity before that test (the onset rarity, or the departure,
in full once it has lasted), and the rule confirms an onset on it. Scoring those rows as
onsets instead (and a lasting departure's first five rows) cost NAB's pooled score 9 points
(30.9), each confirming row of a false episode charged as a false positive.

The default alert rule fires at 0.5 (see :mod:`agent.anomaly_alert`): derived from that rarity
alone, never from labels.

The normal is learned on the first ``warm_up`` rows of a machine (a plain running average),
then slowly (``memory`` rows), and only from rows that score under ``learn_below``: a machine
that is departing does not teach its departure as normal. After maintenance an operator
re-baselines it (``reset``). Every array is indexed [slot, sensor] like the window store, and
one update scores a whole batch of machines at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

LOG10 = float(np.log(10.0))
STATS = ("level", "slope", "surprise", "stuck")
"""The per-sensor statistics, in the order of the last axis of the learned arrays."""
SCORE_DECADES = 10.0
"""A score of 1 is a tail probability of 10**-SCORE_DECADES per row."""
MAD_TO_SD = 1.2533
"""Mean absolute deviation to standard deviation, for a normal law."""
ONSET_ROWS = 100
"""Default ``ScorerParams.onset_rows``."""
RELATION_RATE = 0.05
"""EWMA rate of the relation statistic (per row)."""
RESIDUAL_RATE = 0.02
"""EWMA rate of each sensor's squared residual given the others (per row)."""
RESIDUAL_SD = 1.3
"""The least spread the residual statistic is credited with, as a share of its learned mean
(plus 0.1): an EWMA of a squared residual whose inputs are themselves smoothed moves in slow,
heavy-tailed swings that a short warm-up under-learns (chosen on the simulator's seeds 0-11:
false alerts as without the residual test, see docs/alerting.md)."""
MAX_ABS = 1e150
"""Readings are clipped to +-this, so that squares and differences stay finite."""
CLIP_Z = 8.0
"""A standardised reading counts at most this far out: one wild value cannot rule an EWMA."""
CYCLE_BAND = 0.5
"""A sensor's cycle is timed by its smoothed standardised level passing up through +this many
spreads after it was under -this many: noise does not chatter across a band this wide once
smoothed, and a cycle too short for the smoothing to show is shorter than ``settle_rows``."""
CYCLE_MIN = 3
"""Cycles timed (while the machine was normal) before a sensor's cycle counts as known."""
CYCLE_REGULAR = 0.2
"""A sensor's cycle counts as known only while its length varies by at most this share of it
(mean absolute deviation over mean): a noisy or autocorrelated sensor crosses the band at
irregular times (0.35-0.65 on the test shapes), a cycle at regular ones (the simulator's
temperatures 0.02-0.08), and a sensor without a known cycle settles in ``settle_rows``."""
CYCLE_RATE = 0.1
"""Least weight of each new cycle in a sensor's learned cycle length (a running mean before)."""
STAT_SPREAD_FLOOR = np.array([0.1, 0.03, 0.05, 0.5])
"""The least spread each of level, slope, surprise (standardised units) and stuck (readings) is
credited with,
so that a perfectly flat series does not make any change infinitely rare."""


@dataclass(frozen=True)
class ScorerParams:
    """How fast the normal is learned and how the statistics smooth (rows, rates per row)."""

    warm_up: int = 500
    memory: int = 2000
    level_rate: float = 0.1
    slope_rate: float = 0.05
    surprise_rate: float = 0.1
    learn_below: float = 0.3
    relearn_after: int = 0
    """Rows a departure may last before its level becomes the new normal, learned afresh
    (0: never; the operator re-baselines the machine instead)."""
    onset_rows: int = ONSET_ROWS
    """A machine's onset score counts only on rows rarer than every row of the last this many:
    an episode's first row scores, its tail does not (see the module docstring)."""
    hold: float = 0.3
    """The machine score while a departure from the learned normal lasts, once its onset has
    passed: the default rule's clear level, so an alert that fired stays firing (it is not a
    new event, and does not score as one)."""
    onset_stuck: bool = False
    """Whether a run of unchanged readings counts towards the onset score too (on NAB it only
    adds false positives; a stuck sensor fires as a lasting departure instead)."""
    onset_normal_surprise: bool = True
    """Whether the surprise statistic against the learned normal counts towards the onset
    too: the recent normal learns a sensor turned noisy before its surprise builds up."""
    departure_level: float = 0.5
    """The departure score (against the learned normal) that counts towards a lasting one."""
    repeat_rows: int = 50
    """After an onset scoring at or over ``hold``, the next this many rows are repeats of its
    episode: the onset output (``SensorScores.onset``) shows one only when it beats the
    episode's peak so far by ``repeat_margin``, and is 0 otherwise (the machine score keeps
    every new peak, and the rule reads every row's rarity)."""
    repeat_margin: float = 0.15
    departure_rows: int = 30
    """A departure (a score at or over ``departure_level`` against the learned normal) scores
    in full on the row it has lasted this many rows, and its rarity from then on, while the
    machine score holds at ``hold``: a slow drift, a stuck or a noisy sensor fires, a
    departure that comes and goes with the noise does not."""
    settle_rows: int = 50
    """A departure that has lasted stays one (the machine score holds at ``hold``, so its
    alert keeps firing) until its score has been under ``hold`` for this many rows in a row: a
    cooling failure on a cyclic machine leaves its normal band at each cycle's peaks only, and
    must not resolve and fire again with every cycle (0: it ends as soon as it stops lasting).
    On a machine whose cycle the scorer has learned, the span is at least ``settle_cycles``
    of its cycles instead."""
    settle_cycles: float = 1.2
    """On a machine whose cycle the scorer has learned (``SensorScorer.cycle_length``), a
    departure lasts once it has lasted ``cyclic_departure_rows`` rows at ``departure_level``
    (the machine score holds at ``hold``, so an alert that fired stays firing) and ends only
    once its score has been under ``hold`` for this many of its cycles, and ``settle_rows``:
    a fault that shows near each peak of a slow cycle leaves troughs calm for longer than
    ``settle_rows``, yet never a whole cycle, and its first peak's alert would otherwise
    resolve before the departure has lasted ``departure_rows`` (0: ``settle_rows`` alone,
    whatever the cycle)."""
    cyclic_departure_rows: int = 3
    """On a machine with a learned cycle, the rows in a row at ``departure_level`` that make a
    departure a lasting one: the default rule's ``confirm_rows``, so that a departure that
    could fire the alert holds it through the cycle's calm troughs, and one odd row does not
    hold the machine score at ``hold`` for a cycle."""


@dataclass
class SensorScores:
    """One update's output, one row per slot in the batch."""

    score: NDArray[np.float64]
    """(n, sensors) per-sensor score in [0, 1]."""
    machine: NDArray[np.float64]
    """(n,) the machine score in [0, 1]: sensors and their relation, the rarity of an onset
    (on its first row and on any rarer one after it) or a departure that lasts (what the
    default rule fires on)."""
    rarity: NDArray[np.float64]
    """(n,) the row's rarity before the onset test, >= ``machine``: the onset rarity, or the
    departure (in full once it has lasted ``departure_rows``): what the default rule confirms
    an onset on."""
    onset: NDArray[np.float64]
    """(n,) the onset rarity with each episode reported once, 0 on its repeats and on a
    lasting departure's rows (see ``ScorerParams.repeat_rows``): ``forewarn detect``'s
    ``anomaly_onset`` column."""
    driver: NDArray[np.int64]
    """(n,) the sensor that drove the machine score most."""
    low: NDArray[np.float64]
    """(n, sensors) lower end of each sensor's learned normal range (mean - 4 spreads)."""
    high: NDArray[np.float64]
    """(n, sensors) upper end of that range."""
    warm: NDArray[np.bool_]
    """(n,) whether the machine has learned enough to be scored (scores are 0 until then)."""


class SensorScorer:
    """Learned normal of every sensor of every slot; ``update`` scores and learns a batch."""

    count: NDArray[np.float64]
    last: NDArray[np.float64]
    prev: NDArray[np.float64]
    mean: NDArray[np.float64]
    mad: NDArray[np.float64]
    dmad: NDArray[np.float64]
    step: NDArray[np.float64]
    run: NDArray[np.float64]
    ew: NDArray[np.float64]
    stat_mean: NDArray[np.float64]
    stat_var: NDArray[np.float64]
    cov: NDArray[np.float64]
    precision: NDArray[np.float64]
    rel_mean: NDArray[np.float64]
    rel_var: NDArray[np.float64]
    rel_count: NDArray[np.float64]
    rel_ew: NDArray[np.float64]
    res_count: NDArray[np.float64]
    """Rows each slot's residual statistic has learned from (apart from ``rel_count``, so that
    a state file saved before the residual test starts it afresh)."""
    res_ew: NDArray[np.float64]
    """(n, sensors) EWMA of each sensor's squared standardised residual given the others."""
    res_mean: NDArray[np.float64]
    res_var: NDArray[np.float64]
    res_q: NDArray[np.float64]
    res_b: NDArray[np.float64]
    tail_q: NDArray[np.float64]
    tail_b: NDArray[np.float64]
    rel_q: NDArray[np.float64]
    rel_b: NDArray[np.float64]
    warm_up: NDArray[np.float64]
    """Rows each slot learns before it is scored (``params.warm_up`` unless set per slot)."""
    held: NDArray[np.float64]
    """Rows in a row that each slot has not learned from (its departure, for relearn_after)."""
    r_mean: NDArray[np.float64]
    r_mad: NDArray[np.float64]
    r_dmad: NDArray[np.float64]
    r_ew: NDArray[np.float64]
    r_stat_mean: NDArray[np.float64]
    r_stat_var: NDArray[np.float64]
    r_tail_q: NDArray[np.float64]
    r_tail_b: NDArray[np.float64]
    departed: NDArray[np.float64]
    """Rows in a row that each slot's departure score has been at or over
    ``params.departure_level``."""
    lasting: NDArray[np.float64]
    """1 while each slot's departure counts as a lasting one (see ``params.settle_rows``)."""
    settled: NDArray[np.float64]
    """Rows in a row that each slot's departure score has been under ``params.hold``."""
    phase: NDArray[np.float64]
    """(n, sensors) +1 once a sensor's smoothed level passed over ``CYCLE_BAND``, -1 once under
    its negative, 0 before either: where each sensor is in its cycle."""
    up_at: NDArray[np.float64]
    """(n, sensors) the row (``count``) of each sensor's last upward pass, NaN when a row since
    was not learned from (the cycle it started is not timed)."""
    cycle: NDArray[np.float64]
    """(n, sensors) each sensor's learned cycle length in rows (the mean time between upward
    passes while normal); counts only where ``cycle_known`` says so."""
    cycle_dev: NDArray[np.float64]
    """(n, sensors) the mean absolute deviation of the timed cycles from ``cycle``."""
    cycles: NDArray[np.float64]
    """(n, sensors) how many cycles each sensor has timed."""
    score_past: NDArray[np.float64]
    """(n, repeat_rows) the machine's onset score on its last ``repeat_rows`` rows."""
    onset_past: NDArray[np.float64]
    """(n, onset_rows) the machine's onset rarity (decades) on its last ``onset_rows`` rows."""
    last_log_p: NDArray[np.float64]
    """(n, sensors, 4) log10 tail probability of each statistic at the last update, in
    ``STATS`` order: which statistic drove a score, for diagnosis."""

    def __init__(self, sensors: int, capacity: int = 1024, params: ScorerParams | None = None):
        self.sensors = sensors
        self.params = params or ScorerParams()
        self.capacity = 0
        self._arrays: dict[str, tuple[tuple[int, ...], float]] = {
            "count": ((), 0.0),
            "last": ((sensors, 2), np.nan),
            "prev": ((sensors,), np.nan),
            "mean": ((sensors,), 0.0),
            "mad": ((sensors,), 0.0),
            "dmad": ((sensors,), 0.0),
            "step": ((sensors,), np.inf),
            "run": ((sensors,), 0.0),
            "ew": ((sensors, 3), 0.0),
            "stat_mean": ((sensors, 4), 0.0),
            "stat_var": ((sensors, 4), 0.0),
            "cov": ((sensors, sensors), 0.0),
            "precision": ((sensors, sensors), 0.0),
            "rel_mean": ((), 0.0),
            "rel_var": ((), 0.0),
            "rel_count": ((), 0.0),
            "rel_ew": ((), 0.0),
            "res_count": ((), 0.0),
            "res_ew": ((sensors,), 0.0),
            "res_mean": ((sensors,), 0.0),
            "res_var": ((sensors,), 0.0),
            "res_q": ((sensors,), np.nan),
            "res_b": ((sensors,), np.nan),
            "tail_q": ((sensors, 4), np.nan),
            "tail_b": ((sensors, 4), np.nan),
            "rel_q": ((), np.nan),
            "rel_b": ((), np.nan),
            "warm_up": ((), float(self.params.warm_up)),
            "held": ((), 0.0),
            # The recent normal: the same statistics, learned from every row (it follows a
            # departure that lasts; the onset score is judged against it).
            "r_mean": ((sensors,), 0.0),
            "r_mad": ((sensors,), 0.0),
            "r_dmad": ((sensors,), 0.0),
            "r_ew": ((sensors, 3), 0.0),
            "r_stat_mean": ((sensors, 4), 0.0),
            "r_stat_var": ((sensors, 4), 0.0),
            "r_tail_q": ((sensors, 4), np.nan),
            "r_tail_b": ((sensors, 4), np.nan),
            "onset_past": ((self.params.onset_rows,), 0.0),
            "departed": ((), 0.0),
            "lasting": ((), 0.0),
            "settled": ((), 0.0),
            # The machine's cycle, timed per sensor: how long a lasting departure takes to settle.
            "phase": ((sensors,), 0.0),
            "up_at": ((sensors,), np.nan),
            "cycle": ((sensors,), 0.0),
            "cycle_dev": ((sensors,), 0.0),
            "cycles": ((sensors,), 0.0),
            "score_past": ((self.params.repeat_rows,), 0.0),
        }
        for name, (shape, fill) in self._arrays.items():
            setattr(self, name, np.full((0, *shape), fill))
        self.ensure_capacity(capacity)

    # -- storage -------------------------------------------------------------------------------

    def ensure_capacity(self, capacity: int) -> None:
        if capacity <= self.capacity:
            return
        for name, (shape, fill) in self._arrays.items():
            old = getattr(self, name)
            new = np.full((capacity, *shape), fill)
            new[: old.shape[0]] = old
            setattr(self, name, new)
        self.capacity = capacity

    def reset(self, slots: NDArray[np.int64]) -> None:
        """Forget what ``slots`` learned: a new machine in the slot, or a re-baseline after
        maintenance; the machine learns its normal again from its next ``warm_up`` rows."""
        for name, (_shape, fill) in self._arrays.items():
            getattr(self, name)[slots] = fill

    def set_warm_up(self, slots: NDArray[np.int64], rows: NDArray[np.int64] | int) -> None:
        """Learn for ``rows`` rows before scoring ``slots`` (e.g. a file's own fit rows)."""
        self.warm_up[slots] = rows

    def state(self) -> dict[str, NDArray[np.float64]]:
        """The learned arrays, for saving (see ``load``)."""
        return {name: getattr(self, name)[: self.capacity].copy() for name in self._arrays}

    def load(self, state: dict[str, NDArray[np.float64]]) -> None:
        """Take back arrays from ``state``; a mismatched shape means a different sensor set."""
        rows = min(len(state["count"]), self.capacity)
        for name, (shape, _fill) in self._arrays.items():
            if name not in state:
                continue  # saved before this array existed: it starts afresh
            saved = np.asarray(state[name])
            if saved.shape[1:] != shape:
                raise ValueError(
                    f"saved anomaly state {name!r} has shape {saved.shape[1:]}, "
                    f"expected {shape}: it was learned for other sensors"
                )
            getattr(self, name)[:rows] = saved[:rows]

    # -- scoring -------------------------------------------------------------------------------

    def update(
        self,
        slots: NDArray[np.int64],
        values: NDArray[np.floating],
        frozen: NDArray[np.bool_] | None = None,
    ) -> SensorScores:
        """Score one new reading of every sensor of each slot, then learn from it.

        ``values`` is (n, sensors); a NaN (a sensor that did not report) scores 0 and teaches
        nothing. Outputs are finite and in range for any input, however large (readings beyond
        ``MAX_ABS`` count as ``MAX_ABS``). ``frozen`` (n,) marks slots that must not learn from
        this reading whatever it scores (the agent's: an anomaly alert firing on them).
        """
        p = self.params
        at = _index(slots)
        x = np.asarray(values, dtype=np.float64)
        x = np.where(np.isfinite(x), np.clip(x, -MAX_ABS, MAX_ABS), np.nan)
        present = ~np.isnan(x)
        count = self.count[at]
        last = self.last[at]
        same = present & (x == last[:, :, 1])  # NaN (no previous reading) is never the same
        window = np.concatenate([last, x[:, :, None]], axis=2)
        self.last[at] = np.where(present[:, :, None], window[:, :, 1:], last)
        # The median of three, a missing neighbour standing in for the reading itself: min/max
        # instead of np.nanmedian, whose masked-array path was an eighth of the update's time.
        filled = np.where(np.isnan(window), x[:, :, None], window)
        a, b, c = filled[:, :, 0], filled[:, :, 1], filled[:, :, 2]
        y = np.where(present, np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c)), np.nan)
        prev = self.prev[at]
        diff = np.where(np.isnan(prev), 0.0, y - prev)
        step = self.step[at]
        run = np.where(present, np.where(same, self.run[at] + 1.0, 0.0), self.run[at])
        started = (count >= 1)[:, None, None]

        # Each statistic against the learned normal (departure) and the recent one (onset).
        base = _Core.read(self, at, "")
        recent = _Core.read(self, at, "r_")
        log_p = base.score(y, diff, step, run, present, started, self.params)
        recent_log_p = recent.score(y, diff, step, run, present, started, self.params)
        self.last_log_p = log_p
        sensor_log_p = np.where(present, log_p.min(axis=2), 0.0)
        onset_stats = recent_log_p if p.onset_stuck else recent_log_p[..., :3]
        onset_stats = onset_stats.min(axis=2)
        if p.onset_normal_surprise:
            onset_stats = np.minimum(onset_stats, log_p[..., 2])
        onset_log_p = np.where(present, onset_stats, 0.0)

        relation_log_p, share, relation, residual = self._relation(slots, base.ew[..., 0], present)
        n_tests = np.log10(self.sensors + (1 if self.sensors > 1 else 0))
        machine_log_p = np.minimum(
            np.minimum(sensor_log_p.min(axis=1), relation_log_p) + n_tests, 0.0
        )
        onset_log_p_machine = np.minimum(
            np.minimum(onset_log_p.min(axis=1), relation_log_p) + n_tests, 0.0
        )
        warm_up = self.warm_up[at]
        warm = count >= warm_up
        # The onset: a row counts only when it is rarer than every row of the last onset_rows.
        onset = np.where(warm, -onset_log_p_machine, 0.0)
        past = self.onset_past[at]
        new_peak = onset > past.max(axis=1)
        rows = np.arange(len(slots))
        past[rows, count.astype(np.int64) % past.shape[1]] = onset
        self.onset_past[at] = past
        departure_score = np.where(warm, _score(machine_log_p), 0.0)
        onset_score = np.where(new_peak, _score(-onset), 0.0)
        departed = np.where(departure_score >= p.departure_level, self.departed[at] + 1.0, 0.0)
        self.departed[at] = departed
        settled = np.where(departure_score < p.hold, self.settled[at] + 1.0, 0.0)
        self.settled[at] = settled
        # On a machine with a learned cycle a departure lasts after 3 rows, not 30: the cycle
        # brings a fault back inside the band for much of each cycle, and an alert that fired at
        # one peak must not resolve in the trough and fire again at the next.
        cycle = self.cycle_length(at)
        cyclic = np.isfinite(cycle) & (p.settle_cycles > 0)
        lasts = (departed >= p.departure_rows) | (cyclic & (departed >= p.cyclic_departure_rows))
        lasting = np.where(
            lasts, 1.0, np.where(settled >= self.settle_span(at, cycle), 0.0, self.lasting[at])
        )
        self.lasting[at] = lasting
        capped = np.where(lasting > 0, p.hold, np.minimum(departure_score, p.hold))
        lasted = np.where(departed >= p.departure_rows, departure_score, capped)
        shown = np.where(departed == p.departure_rows, departure_score, capped)
        machine_score = np.maximum(onset_score, shown)
        rarity = np.maximum(_score(-onset), lasted)
        # The onset output: onsets only (a lasting departure is no new event), each episode
        # once (NAB and an operator alike count an event once): a repeat is shown only when it
        # beats the episode's peak by repeat_margin.
        history = self.score_past[at]
        peak = history.max(axis=1)
        repeat = (peak >= p.hold) & (onset_score <= peak + p.repeat_margin)
        reported = np.where(repeat, 0.0, onset_score)
        history[np.arange(len(slots)), count.astype(np.int64) % history.shape[1]] = onset_score
        self.score_past[at] = history
        sensor_score = np.where(warm[:, None], _score(sensor_log_p), 0.0)
        by_sensor = np.where(
            (relation_log_p < sensor_log_p.min(axis=1))[:, None], share, -sensor_log_p
        )
        driver = np.argmax(by_sensor, axis=1).astype(np.int64)

        # Learn: the normal from rows that look normal (all of them while warming up), and
        # nothing while the machine's alert fires (``frozen``); the recent normal from every row.
        learn = (~warm) | (departure_score < p.learn_below)
        if frozen is not None:
            learn &= ~frozen
        teach = present & learn[:, None]
        absdiff = np.abs(diff)
        has_prev = ~np.isnan(prev)
        moved = teach & has_prev & (absdiff > 0)
        self.step[at] = np.where(moved, np.minimum(step, absdiff), step)
        rate = np.where(warm, 1.0 / p.memory, 1.0 / (count + 1.0))[:, None]
        # The statistics' own law: learned in the second half of the warm-up, then slowly.
        half = warm_up // 2
        since = count - half
        srate = np.where(
            warm, 1.0 / p.memory, np.where(since >= 0, 1.0 / np.maximum(since + 1.0, 1.0), 0.0)
        )
        base.learn(teach, rate, srate, warm, diff, has_prev)
        base.write(self, at, "")
        recent.learn(present, rate, srate, warm, diff, has_prev)
        recent.write(self, at, "r_")
        self._learn_cycle(at, base.ew[..., 0], present, teach, count, since >= 0)
        self.run[at] = run
        self.prev[at] = np.where(present, y, prev)
        self.count[at] = count + 1
        held = np.where(learn, 0.0, self.held[at] + 1.0)
        self.held[at] = held
        if self.sensors > 1:
            self.rel_ew[at] = relation
            self.res_ew[at] = residual
            teach_relation = learn & present.all(axis=1)
            self._learn_relation(slots, base.ew[..., 0], relation, residual, srate, teach_relation)
        if p.relearn_after > 0 and (held >= p.relearn_after).any():
            again = slots[held >= p.relearn_after]
            warm_up_again = self.warm_up[again]
            self.reset(again)
            self.warm_up[again] = warm_up_again
        return SensorScores(
            score=sensor_score,
            machine=machine_score,
            rarity=rarity,
            onset=reported,
            driver=driver,
            low=base.mean - 4.0 * base.lspread,
            high=base.mean + 4.0 * base.lspread,
            warm=warm,
        )

    # -- the machine's cycle -------------------------------------------------------------------

    def cycle_length(self, at: Index) -> NDArray[np.float64]:
        """(n,) each slot's learned cycle in rows: the longest known cycle of its sensors, NaN
        where none is known (no cycle, too irregular a one, or not timed ``CYCLE_MIN`` times)."""
        cycle = self.cycle[at]
        known = (self.cycles[at] >= CYCLE_MIN) & (self.cycle_dev[at] <= CYCLE_REGULAR * cycle)
        longest = np.where(known, cycle, 0.0).max(axis=1)
        return np.where(longest > 0, longest, np.nan)

    def settle_span(
        self, at: Index, cycle: NDArray[np.float64] | None = None
    ) -> NDArray[np.float64]:
        """(n,) rows a lasting departure must stay under ``hold`` to end: ``settle_rows``, or
        ``settle_cycles`` of the machine's learned cycle where that is longer, so that a fault
        that shows near each peak of a slow cycle stays one departure through its calm troughs."""
        p = self.params
        cycle = self.cycle_length(at) if cycle is None else cycle
        cycles = np.nan_to_num(np.ceil(p.settle_cycles * cycle))
        return np.asarray(np.maximum(float(p.settle_rows), cycles), dtype=np.float64)

    def _learn_cycle(
        self,
        at: Index,
        level: NDArray[np.float64],
        present: NDArray[np.bool_],
        teach: NDArray[np.bool_],
        count: NDArray[np.float64],
        learning: NDArray[np.bool_],
    ) -> None:
        """Time each sensor's cycle from its smoothed standardised ``level`` (against the
        learned normal): the rows between upward passes through ``CYCLE_BAND``, counted only
        where every row between them was learned from (``teach``) and the statistics' own law
        is being learned (``learning``, from the second half of the warm-up on)."""
        phase, up_at = self.phase[at], self.up_at[at]
        up = present & (phase < 0) & (level > CYCLE_BAND)
        rows = np.broadcast_to(count[:, None], up.shape)
        timed = up & teach & learning[:, None] & np.isfinite(up_at)
        interval = np.where(timed, rows - up_at, 0.0)
        cycles, cycle, dev = self.cycles[at], self.cycle[at], self.cycle_dev[at]
        rate = np.where(timed, np.maximum(1.0 / (cycles + 1.0), CYCLE_RATE), 0.0)
        drate = np.where(
            timed & (cycles >= 1), np.maximum(1.0 / np.maximum(cycles, 1.0), CYCLE_RATE), 0.0
        )
        self.cycle_dev[at] = dev + drate * (np.abs(interval - cycle) - dev)
        self.cycle[at] = cycle + rate * (interval - cycle)
        self.cycles[at] = cycles + timed
        self.phase[at] = np.where(
            present & (level > CYCLE_BAND),
            1.0,
            np.where(present & (level < -CYCLE_BAND), -1.0, phase),
        )
        up_at = np.where(up, rows, up_at)
        self.up_at[at] = np.where(present & ~teach, np.nan, up_at)

    # -- relation between sensors --------------------------------------------------------------

    def _relation(
        self, slots: NDArray[np.int64], level: NDArray[np.float64], present: NDArray[np.bool_]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """log10 tail probability of the relation, each sensor's share of it, and the two
        statistics: an EWMA of the smoothed level vector's squared Mahalanobis distance (a
        relation that stays broken builds up, one odd row does not), and per sensor an EWMA of
        its squared standardised residual given the other sensors, which sees one sensor
        leaving the others (pressure no longer following temperature) that the whole
        vector's distance dilutes with every other sensor's noise. The relation's rarity is
        the rarer of the distance and the rarest residual (corrected for testing one per
        sensor); a sensor's share is its residual's rarity where that drove it, so that the
        sensor that left the others is named, not the ones it left."""
        n = len(slots)
        at = _index(slots)
        if self.sensors < 2:
            none = np.zeros((n, self.sensors))
            return np.zeros(n), none, np.zeros(n), none
        level = np.where(present, level, 0.0)
        precision = self.precision[at]
        solved = np.einsum("nij,nj->ni", precision, level)
        contribution = level * solved
        squared = np.maximum(contribution.sum(axis=1), 0.0)
        ready = precision.any(axis=(1, 2)) & present.all(axis=1)
        started: NDArray[np.bool_] = np.asarray(self.rel_count[at] > 0)
        previous = self.rel_ew[at]
        smoothed = np.where(started, previous, squared)
        smoothed = smoothed + RELATION_RATE * (squared - smoothed)
        statistic = np.where(ready, smoothed, previous)
        sd = np.maximum(np.sqrt(self.rel_var[at]), 0.1)
        excess = np.maximum(statistic - self.rel_mean[at], 0.0)
        log_p = _tail_log_p(excess, sd, self.rel_q[at], self.rel_b[at], 0.3) / LOG10
        # Each sensor's residual given the others: (P v)_j / sqrt(P_jj) is standard normal
        # when v is normal with precision P.
        diagonal = np.einsum("nii->ni", precision)
        res_squared = solved**2 / np.maximum(diagonal, 1e-12)
        res_previous = self.res_ew[at]
        res_count = self.res_count[at]
        # Started at 1, its expectation when the relation holds, not at one row's draw.
        res_smoothed = np.where((res_count > 0)[:, None], res_previous, 1.0)
        res_smoothed = res_smoothed + RESIDUAL_RATE * (res_squared - res_smoothed)
        residual = np.where(np.asarray(ready)[:, None], res_smoothed, res_previous)
        res_sd = _residual_spread(self.res_mean[at], self.res_var[at])
        res_excess = np.maximum(residual - self.res_mean[at], 0.0)
        res_log_p = _tail_log_p(res_excess, res_sd, self.res_q[at], self.res_b[at], 0.3) / LOG10
        # Credited once its law has been learned over one time constant of its average, and
        # from ten rows per sensor: a residual given many sensors, judged on the rows that
        # taught it, is smaller than on rows to come (Tennessee Eastman's 52 variables).
        known = (res_count >= max(1.0 / RESIDUAL_RATE, 10.0 * self.sensors))[:, None]
        res_log_p = np.where(known, res_log_p, 0.0)
        rarest_residual = np.minimum(res_log_p.min(axis=1) + np.log10(self.sensors), 0.0)
        share = np.where((rarest_residual < log_p)[:, None], -res_log_p, contribution)
        relation_log_p = np.where(ready, np.minimum(log_p, rarest_residual), 0.0)
        return relation_log_p, share, statistic, residual

    def _learn_relation(
        self,
        slots: NDArray[np.int64],
        level: NDArray[np.float64],
        statistic: NDArray[np.float64],
        residual: NDArray[np.float64],
        rate: NDArray[np.float64],
        teach: NDArray[np.bool_],
    ) -> None:
        rows = slots[teach & (rate > 0)]
        if not len(rows):
            return
        r = rate[teach & (rate > 0)][:, None, None]
        v = level[teach & (rate > 0)]
        cov = self.cov[rows]
        cov = (1.0 - r) * cov + r * np.einsum("ni,nj->nij", v, v)
        self.cov[rows] = cov
        # The statistic's own law, with the precision as it stands.
        distance = statistic[teach & (rate > 0)]
        ready = self.precision[rows].any(axis=(1, 2))
        rel_count = self.rel_count[rows]
        rr = np.where(ready, np.maximum(r[:, 0, 0], 1.0 / (rel_count + 1.0)), 0.0)
        self.rel_count[rows] = rel_count + ready
        delta = distance - self.rel_mean[rows]
        sd = np.maximum(np.sqrt(self.rel_var[rows]), 0.1)
        self.rel_q[rows], self.rel_b[rows] = _learn_tail(
            np.maximum(delta, 0.0), sd, self.rel_q[rows], self.rel_b[rows], rr
        )
        self.rel_mean[rows] = self.rel_mean[rows] + rr * delta
        self.rel_var[rows] = (1.0 - rr) * (self.rel_var[rows] + rr * delta**2)
        res_count = self.res_count[rows]
        res_rate = np.where(ready, np.maximum(r[:, 0, 0], 1.0 / (res_count + 1.0)), 0.0)[:, None]
        self.res_count[rows] = res_count + ready
        res_delta = residual[teach & (rate > 0)] - self.res_mean[rows]
        res_sd = _residual_spread(self.res_mean[rows], self.res_var[rows])
        self.res_q[rows], self.res_b[rows] = _learn_tail(
            np.maximum(res_delta, 0.0), res_sd, self.res_q[rows], self.res_b[rows], res_rate
        )
        self.res_mean[rows] = self.res_mean[rows] + res_rate * res_delta
        self.res_var[rows] = (1.0 - res_rate) * (self.res_var[rows] + res_rate * res_delta**2)
        # Refresh the precision every 25 rows (and at the end of the warm-up): cheap enough.
        count = self.count[rows]
        warm_up = self.warm_up[rows]
        due = (count % 25 == 0) | (count == warm_up)
        due &= count >= warm_up // 2 + 2 * self.sensors
        if due.any():
            c = cov[due]
            ridge = 0.05 * np.trace(c, axis1=1, axis2=2)[:, None, None] / self.sensors + 1e-6
            eye = np.eye(self.sensors)[None]
            self.precision[rows[due]] = np.linalg.inv(c + ridge * eye)


class _Core:
    """One learned normal of every sensor of a batch of slots: its level, spread, step and the
    law of each statistic. The scorer keeps two: the normal (learned from rows that look
    normal) and the recent normal (learned from every row)."""

    NAMES = ("mean", "mad", "dmad", "ew", "stat_mean", "stat_var", "tail_q", "tail_b")

    def __init__(self, arrays: dict[str, NDArray[np.float64]]) -> None:
        self.mean, self.mad, self.dmad = arrays["mean"], arrays["mad"], arrays["dmad"]
        self.ew, self.stat_mean, self.stat_var = (
            arrays["ew"],
            arrays["stat_mean"],
            arrays["stat_var"],
        )
        self.tail_q, self.tail_b = arrays["tail_q"], arrays["tail_b"]

    @classmethod
    def read(cls, scorer: SensorScorer, at: Index, prefix: str) -> _Core:
        return cls({name: getattr(scorer, prefix + name)[at] for name in cls.NAMES})

    def write(self, scorer: SensorScorer, at: Index, prefix: str) -> None:
        for name in self.NAMES:
            getattr(scorer, prefix + name)[at] = getattr(self, name)

    def score(
        self,
        y: NDArray[np.float64],
        diff: NDArray[np.float64],
        step: NDArray[np.float64],
        run: NDArray[np.float64],
        present: NDArray[np.bool_],
        started: NDArray[np.bool_],
        params: ScorerParams,
    ) -> NDArray[np.float64]:
        """log10 tail probability (n, sensors, 4) of each statistic in ``STATS`` order, with
        the correction for testing four; advances the EWMAs."""
        mean = self.mean
        tiny = 1e-9 * (np.abs(mean) + np.abs(np.nan_to_num(y))) + 1e-12
        floor = np.maximum(np.where(np.isfinite(step), step, 0.0), tiny)
        self.dspread = np.maximum(MAD_TO_SD * self.dmad, floor)
        self.lspread = np.maximum(
            MAD_TO_SD * self.mad, np.maximum(self.dspread / np.sqrt(2.0), floor)
        )
        zl = np.nan_to_num(np.clip((y - mean) / self.lspread, -CLIP_Z, CLIP_Z))
        zd = np.nan_to_num(np.clip(diff / self.dspread, -CLIP_Z, CLIP_Z))
        rates = np.array([params.level_rate, params.slope_rate, params.surprise_rate])
        ew = self.ew
        # Surprise is the change off the local slope, so a seasonal climb is not "noise".
        raw = np.stack([zl, zd, np.abs(zd - ew[..., 1])], axis=2)
        ew = np.where(present[:, :, None], ew + rates * (raw - ew), ew)
        self.ew = np.where(started, ew, raw)
        self.y = y
        sd = np.maximum(np.sqrt(self.stat_var), STAT_SPREAD_FLOOR)
        stats = np.concatenate([self.ew, run[:, :, None]], axis=2)
        delta = stats - self.stat_mean
        d = np.concatenate(
            [np.abs(delta[..., :2]), np.maximum(delta[..., 2:3], 0.0), run[:, :, None]], axis=-1
        )
        self.delta, self.d, self.sd = delta, d, sd
        log_p = _tail_log_p(d, sd, self.tail_q, self.tail_b, TAIL_FLOOR) + np.log(
            [2.0, 2.0, 1.0, 1.0]
        )
        # A sensor that never changed while normal cannot be told stuck from flat.
        log_p[..., 3] = np.where(np.isfinite(step), log_p[..., 3], 0.0)
        return np.asarray(np.minimum(log_p / LOG10 + np.log10(len(STATS)), 0.0))

    def learn(
        self,
        teach: NDArray[np.bool_],
        rate: NDArray[np.float64],
        srate: NDArray[np.float64],
        warm: NDArray[np.bool_],
        diff: NDArray[np.float64],
        has_prev: NDArray[np.bool_],
    ) -> None:
        """Learn from the rows ``teach`` marks, after ``score``."""
        rate = np.where(teach, rate, 0.0)
        dev = np.nan_to_num(self.y - self.mean)
        clip_l = np.where(warm[:, None], 4.0 * self.lspread, np.inf)
        self.mean = self.mean + rate * np.clip(dev, -clip_l, clip_l)
        self.mad = self.mad + rate * (np.minimum(np.abs(dev), clip_l) - self.mad)
        drate = np.where(has_prev, rate, 0.0)
        clip_d = np.where(warm[:, None], 4.0 * self.dspread, np.inf)
        self.dmad = self.dmad + drate * (np.minimum(np.abs(diff), clip_d) - self.dmad)
        srate3 = np.where(teach, srate[:, None], 0.0)[:, :, None]
        self.tail_q, self.tail_b = _learn_tail(self.d, self.sd, self.tail_q, self.tail_b, srate3)
        self.stat_mean = self.stat_mean + srate3 * self.delta
        self.stat_var = (1.0 - srate3) * (self.stat_var + srate3 * self.delta**2)


Index = NDArray[np.int64] | slice


def _index(slots: NDArray[np.int64]) -> Index:
    """``slots`` as a slice when they are a run of consecutive slots (the agent sorts a round's
    readings by slot, and a fleet reporting once a tick fills one run): every array is then
    read as a view and written in place, instead of gathered and scattered, which at 10,000
    machines was a fifth of an update's time. Callers read before they write the same rows."""
    n = len(slots)
    if (
        n
        and int(slots[-1]) - int(slots[0]) == n - 1
        and (n == 1 or bool((np.diff(slots) == 1).all()))
    ):
        return slice(int(slots[0]), int(slots[0]) + n)
    return slots


def _residual_spread(mean: NDArray[np.float64], var: NDArray[np.float64]) -> NDArray[np.float64]:
    """The spread the residual statistic is judged with: its learned one, or ``RESIDUAL_SD``
    times its learned mean (+0.1) where that is wider (see ``RESIDUAL_SD``)."""
    return np.asarray(np.maximum(np.sqrt(var), RESIDUAL_SD * mean + 0.1), dtype=np.float64)


def _score(log10_p: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(np.clip(-log10_p / SCORE_DECADES, 0.0, 1.0) + 0.0, dtype=np.float64)


TAIL_FLOOR = np.array([0.05, 0.05, 0.5, 0.5])
"""Least mean excess, in spreads, for level, slope and surprise. Level and slope may really be
bounded (a seasonal sensor never leaves its band: a thin tail is right, and is what makes a
runaway stand out early); surprise is an average of noise, never thinner-tailed than normal;
a run of unchanged readings is counted in whole readings."""
TAIL = 0.01
"""Beyond the learned 99th percentile of a statistic, its tail is taken as exponential with the
learned mean excess (peaks over threshold): a bounded (seasonal) statistic gets a short tail,
a heavy-tailed one a long tail, each from what the sensor itself did while normal."""


_ERFC = (
    -1.26551223,
    1.00002368,
    0.37409196,
    0.09678418,
    -0.18628806,
    0.27886807,
    -1.13520398,
    1.48851587,
    -0.82215223,
    0.17087277,
)


def _log_upper(z: NDArray[np.float64]) -> NDArray[np.float64]:
    """log P(Z > z) of a standard normal for z >= 0, without underflow however far out (the
    complementary error function in Chebyshev form, relative error under 1.2e-7; numpy only,
    so that the agent does not load SciPy)."""
    x = np.maximum(z, 0.0) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.5 * x)
    poly = np.zeros_like(t)
    for coefficient in reversed(_ERFC):
        poly = poly * t + coefficient
    return np.asarray(np.log(0.5 * t) - x * x + poly, dtype=np.float64)


def _tail_log_p(
    d: NDArray[np.float64],
    sd: NDArray[np.float64],
    q: NDArray[np.float64],
    b: NDArray[np.float64],
    floor: NDArray[np.float64] | float,
) -> NDArray[np.float64]:
    """Natural log of the one-sided tail probability of a deviation ``d`` (>= 0); the mean
    excess is credited with at least ``floor`` spreads (a tail learned from few exceedances
    must not come out thinner than the statistic can be)."""
    q = np.where(np.isnan(q), 2.33 * sd, q)
    b = np.where(np.isnan(b), 0.4 * sd, np.maximum(b, floor * sd))
    inside = np.maximum(_log_upper(d / sd), np.log(TAIL))
    beyond = np.log(TAIL) - np.maximum(d - q, 0.0) / b
    return np.asarray(np.where(d > q, beyond, inside), dtype=np.float64)


def _learn_tail(
    d: NDArray[np.float64],
    sd: NDArray[np.float64],
    q: NDArray[np.float64],
    b: NDArray[np.float64],
    rate: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """One step of a streaming 99th percentile and of the mean excess over it."""
    q = np.where(np.isnan(q), 2.33 * sd, q)
    b = np.where(np.isnan(b), 0.4 * sd, b)
    r = np.minimum(rate, 0.01)
    over = d > q
    new_q = q + r * sd * (over - TAIL) / (10 * TAIL)
    new_b = np.where(over, b + np.minimum(10 * r, 0.2) * ((d - q) - b), b)
    keep = rate > 0
    return np.where(keep, new_q, q), np.where(keep, new_b, b)
