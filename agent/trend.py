"""The slow path: trends far longer than the forecaster's 20-reading window, per machine.

The forecaster sees 20 readings and looks 15 ahead: on a machine whose mean creeps up over
thousands of readings (fouling, a failing fan, bearing wear) it can only warn a cycle peak or
two before the reading crosses. This path keeps, beside each window, the machine's readings
folded into coarse steps:

* a *fine* ring of the last :data:`FINE_BLOCKS` means of :data:`FINE` readings (2,090
  readings) and a *coarse* ring of the last :data:`COARSE_BLOCKS` means of :data:`COARSE`
  readings (20,000), each reading first passed through a median of three, so that a spike moves
  neither a mean nor a peak, and a reading equal to both its neighbours (a stuck sensor's) left
  out;
* per coarse step, how far the machine's highest reading rose above that step's mean: the
  median of the last :data:`EXCURSION_BLOCKS` of these is the machine's own *excursion*, what
  its cycle and noise add on top of its mean at a peak.

When a fine step completes, least-squares lines are fitted to the last 500, 1,000 and 2,000
readings (fine means smoothed over :data:`SMOOTH` steps, about one cycle) and, refitted at each
completed coarse step, to the last 2,000, 5,000 and 20,000 (coarse means). A line predicts a
crossing when its mean plus the excursion reaches the threshold: the reading crosses when the
peaks get there, long before the mean does. A line extrapolates with its slope minus
``trend_sigma`` standard errors and no further than :data:`SPAN_FACTOR` times its own length; a
line whose last steps fell well below it (a repair, a level shift down) no longer describes the
machine and is dropped, as is a line over a gap in the readings (a restarted window, a stuck
sensor's readings left out) until the gap has left it. The machine is *trending* when the
soonest crossing among its lines falls within ``trend_horizon_readings``, on ``trend_confirm``
fine steps in a row, and *heading* for its threshold when it falls within
:data:`HEADING_HORIZONS` horizons. The time to threshold
it states, and its 10-90 % interval, are that crossing scaled by :data:`TREND_RATIOS`.

The fine ring also gives the machine's cycle (:func:`_period`), which the alert policy uses for
its hold and for the 90 % bound of a forecast's near miss.

Everything is in arrays indexed by the window store's slots and only the machines whose fine
step completed do any fitting, so a tick costs a few vectorised operations. The arrays are
saved to ``agent.state_dir`` (:data:`STATE_FILE`) every ``alerts.trend_save_interval_s`` and
at stop, and taken back at start-up (:meth:`TrendTracker.save`, :meth:`TrendTracker.load`):
a machine whose readings carry on where they stopped (fewer than :data:`STUCK_GAP` missing by
their ``seq`` from what the path takes in, two of which any restart costs: the reading left
waiting for its neighbour at stop and the new window's first) carries on with every line it
had; one that missed more has a gap there, and only the lines over that gap wait for it to
leave them. Without a state directory the path is
blind after a restart until a machine has :data:`MIN_COARSE` coarse steps again (500
readings), and reaches its longest lines only after 20,000 (see docs/alerting-incidents.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from agent.slotfile import Snapshot, StateFileError, load_rows, place
from agent.window import grown
from config.alerts import AlertSettings

logger = logging.getLogger(__name__)

STATE_FILE = "trend.npz"
STATE_VERSION = 1

FINE, FINE_BLOCKS = 10, 209
COARSE, COARSE_BLOCKS = 100, 200
SMOOTH = 10
"""Fine lines fit the mean of the last 10 fine steps (100 readings, about one of the seed's
cycles) at each fine step: a cycle left in would tilt a line over a few cycles by as much as a
fast drift's slope, depending on where in its cycle the window ends."""
FINE_FITS = (50, 100, 200)
"""Lines over the last this many smoothed fine steps (500, 1,000 and 2,000 readings)."""
COARSE_FITS = (20, 50, 200)
"""Lines over the last this many coarse steps (2,000, 5,000, 20,000 readings)."""
SPAN_FACTOR = 4.0
"""A line looks at most this many times its own length ahead: a short one would otherwise carry
a few hundred readings of healthy wear (the sawtooth of rises and maintenance) far ahead."""
EXCURSION_BLOCKS = 20
MIN_COARSE = 5
"""Coarse steps a machine needs before its excursion, and so the path, means anything."""
BREAK_C = 3.0
"""A line whose last 100 readings average this much below it no longer holds (a repair)."""
STUCK_GAP = 10
"""This many stuck readings in a row (left out) make a gap, as a restart of the window does."""
NO_GAP = -(10**9)
PERIOD_BLOCKS = 100
"""The machine's cycle is found in its last 100 fine steps (1,000 readings), or in as many as it
has from :data:`PERIOD_MIN_BLOCKS` on..."""
PERIOD_MIN_BLOCKS = 30
"""...(300 readings: a machine's first incident often comes before it has 1,000, and without
its cycle the 90 % bound of a peak that falls just short misses the crossing at the next one)..."""
PERIOD_LAGS = (4, 40)
"""...as the lag, between 40 and 400 readings (at most half the readings looked at), at which
they correlate best with themselves."""
PERIOD_MIN_CORRELATION = 0.3
"""Below this, the machine has no cycle worth the name: its period is unknown (NaN)."""
HEADING_HORIZONS = 4.0
"""A machine whose soonest line reaches the threshold within 4 horizons is *heading* for
it: not enough to warn, but enough to keep an incident it is in open (a drift's early warnings
at cycle peaks and the trend's own warning are one incident) and to say when it will cross."""
RISING_HORIZONS = 4.0
"""A machine with a line that reaches the threshold within this many horizons, however far that
is beyond the line's own length (:data:`SPAN_FACTOR`), is *rising*: too uncertain to warn on or
to set the time to threshold, but an incident it is in stays open (a slow drift's first warning,
at a peak of its cycle, often comes before its lines look far enough ahead, and would otherwise
resolve and page again when they do), and that line's 90 % bound is the interval's end."""
LEVEL_SHORT, LEVEL_LONG = 10, 50
"""The level gate compares a machine's mean over its last 10 fine steps (100 readings, about a
cycle) with that over its last 50 (500 readings, more than a wear sawtooth)..."""
LEVEL_MIN_BLOCKS = 10
"""...once it has 10 fine steps (100 readings; the long mean is then over what it has); before,
the gate is open (a machine's first warnings, as in the demo, come before)."""
LEVEL_WHOLE_CYCLES = True
"""Both means span whole cycles of the machine where its cycle is known (see
:meth:`TrendTracker._judge_level`)."""
DERIVED = frozenset({"_level_rise", "_usual_peak"})
"""Arrays recomputed at each fine step from the others: not saved across restarts (a file
written before they existed reads back as well)."""
TREND_RATIOS = (0.24, 0.52, 1.2)
"""What the soonest line's crossing is worth: the reading actually crossed after 0.24, 0.52 and
1.2 times it (10 %, 50 % and 90 % of the first trending verdicts of 108 drifts on the slow
family's tuning seeds 101-103). The line predicts late: it is fitted partly over the readings
before a drift began, an exponential drift outruns it, and the first noisy reading over the
threshold comes before the machine's usual peak gets there. The time to threshold it states
is the line's crossing times 0.52, its interval 0.24-1.2 times."""


@dataclass(frozen=True)
class TrendView:
    """The slow path's verdict on some machines, in readings from their latest one."""

    trending: NDArray[np.bool_]
    """Confirmed: a crossing within the horizon on ``trend_confirm`` fine steps in a row."""
    heading: NDArray[np.bool_]
    """A crossing within :data:`HEADING_HORIZONS` horizons, at the last verdict."""
    rising: NDArray[np.bool_]
    """A crossing within :data:`RISING_HORIZONS` horizons, at the last verdict."""
    readings: NDArray[np.float64]
    """Readings until the predicted crossing (NaN where the machine is not heading for one)."""
    low: NDArray[np.float64]
    high: NDArray[np.float64]
    """The 10 % and 90 % bounds of that crossing, in readings (see :data:`TREND_RATIOS`); a
    machine only rising (:data:`RISING_HORIZONS`) has the 90 % bound of its soonest line."""
    period: NDArray[np.float64]
    """The machine's cycle in readings (NaN: none found yet): when a peak falls just short of
    the threshold, the next chance to cross is a cycle later."""
    level_rise: NDArray[np.float64] | None = None
    """How far the machine's mean over its last 100 readings is above its mean over its last
    500 (°C; NaN: not known yet): a ramp lifts it, a cycle's peak does not."""
    usual_peak: NDArray[np.float64] | None = None
    """The machine's mean over its last 100 readings plus its excursion: where its peaks
    usually reach (°C; NaN: not known yet)."""


class TrendTracker:
    """Per-slot coarse history and line fits; see the module docstring."""

    state_file = STATE_FILE
    """Its file in ``agent.state_dir`` (:mod:`agent.learned`)."""

    def __init__(self, settings: AlertSettings, capacity: int = 1024) -> None:
        self.settings = settings
        self.capacity = 0
        self._seen = np.zeros(0, dtype=np.int64)
        self._fine = np.zeros((0, FINE_BLOCKS), dtype=np.float32)
        self._fine_n = np.zeros(0, dtype=np.int64)
        self._coarse = np.zeros((0, COARSE_BLOCKS), dtype=np.float32)
        self._excursion = np.zeros((0, COARSE_BLOCKS), dtype=np.float32)
        self._coarse_n = np.zeros(0, dtype=np.int64)
        self._fine_sum = np.zeros(0, dtype=np.float64)
        self._fine_count = np.zeros(0, dtype=np.int64)
        self._coarse_sum = np.zeros(0, dtype=np.float64)
        self._coarse_max = np.zeros(0, dtype=np.float64)
        self._coarse_count = np.zeros(0, dtype=np.int64)
        # Coarse lines, refitted at each coarse step: level at the step's end, slope and its
        # error per reading, the residual of the last step, per fit.
        fits = len(COARSE_FITS)
        self._c_level = np.zeros((0, fits), dtype=np.float64)
        self._c_slope = np.zeros((0, fits), dtype=np.float64)
        self._c_error = np.zeros((0, fits), dtype=np.float64)
        self._c_broken = np.zeros((0, fits), dtype=np.bool_)
        self._c_at = np.zeros(0, dtype=np.int64)  # fine steps completed at that refit
        self._env = np.zeros(0, dtype=np.float64)
        self._streak = np.zeros(0, dtype=np.int32)
        self._need = np.zeros(0, dtype=np.float64)
        self._readings = np.zeros(0, dtype=np.float64)
        self._low = np.zeros(0, dtype=np.float64)
        self._high = np.zeros(0, dtype=np.float64)
        self._hot = np.zeros(0, dtype=np.bool_)
        self._heading = np.zeros(0, dtype=np.bool_)
        self._rising = np.zeros(0, dtype=np.bool_)
        self._period = np.zeros(0, dtype=np.float64)
        # The machine's level (mean of about its last LEVEL_SHORT fine steps, whole cycles) minus
        # its level over about the last LEVEL_LONG, and its usual peak (that level plus its
        # excursion): NaN while unknown.
        self._level_rise = np.zeros(0, dtype=np.float64)
        self._usual_peak = np.zeros(0, dtype=np.float64)
        # Where the machine's readings last had a gap (its window restarted, or a stuck sensor's
        # readings were left out): the index of the fine and coarse step then in progress. The
        # means around a gap miss part of a cycle, so a line over them is not trusted.
        self._gap_fine = np.zeros(0, dtype=np.int64)
        self._gap_coarse = np.zeros(0, dtype=np.int64)
        self._stuck_run = np.zeros(0, dtype=np.int32)
        # The seq of the last reading each machine's path took in, and whether its state was
        # loaded from a previous run and awaits its first readings (see load).
        self._taken_seq = np.zeros(0, dtype=np.int64)
        self._resumed = np.zeros(0, dtype=np.bool_)
        self.ensure_capacity(capacity)

    # --- state -----------------------------------------------------------------------------

    def _fills(self) -> dict[str, float]:
        return {
            "_seen": 0,
            "_fine": math.nan,
            "_fine_n": 0,
            "_coarse": math.nan,
            "_excursion": math.nan,
            "_coarse_n": 0,
            "_fine_sum": 0.0,
            "_fine_count": 0,
            "_coarse_sum": 0.0,
            "_coarse_max": -math.inf,
            "_coarse_count": 0,
            "_c_level": math.nan,
            "_c_slope": math.nan,
            "_c_error": math.nan,
            "_c_broken": True,
            "_c_at": 0,
            "_env": math.nan,
            "_streak": 0,
            "_need": math.nan,
            "_readings": math.nan,
            "_low": math.nan,
            "_high": math.nan,
            "_hot": False,
            "_heading": False,
            "_rising": False,
            "_period": math.nan,
            "_level_rise": math.nan,
            "_usual_peak": math.nan,
            "_gap_fine": NO_GAP,
            "_gap_coarse": NO_GAP,
            "_stuck_run": 0,
            "_taken_seq": -1,
            "_resumed": False,
        }

    def ensure_capacity(self, capacity: int) -> None:
        if capacity <= self.capacity:
            return
        for name, fill in self._fills().items():
            setattr(self, name, grown(getattr(self, name), capacity, fill))
        self.capacity = capacity

    def reset(self, slots: NDArray[np.int64]) -> None:
        """Forget ``slots``: evicted machines whose slots now hold others."""
        if len(slots) == 0:
            return
        for name, fill in self._fills().items():
            getattr(self, name)[slots] = fill

    # --- readings in -----------------------------------------------------------------------

    def update(
        self,
        slots: NDArray[np.int64],
        temperatures: NDArray[np.float32],
        appended: NDArray[np.int64],
        threshold: NDArray[np.float64],
        last_seq: NDArray[np.int64] | None = None,
    ) -> None:
        """Take in the readings the machines got since their last update.

        ``temperatures`` are their windows (newest last), ``appended`` how many readings each
        window has taken in since it (re)started (the window store's count): the readings
        beyond what this path has seen are the new ones. The newest reading waits one update
        for its neighbour, which the median of three needs. ``last_seq``, the newest reading's
        ``seq``, tells a machine whose state was loaded whether its readings carry on where
        they stopped; without it, such a machine has a gap there.
        """
        if len(slots) == 0 or self.settings.trend_horizon_readings == 0:
            return
        width = temperatures.shape[1]
        seen = self._seen[slots]
        restarted = appended < seen
        self._mark_gap(slots[restarted])
        fresh = np.where(restarted, appended, appended - seen)
        usable = np.clip(np.minimum(fresh, appended - 2), 0, width - 2)
        self._seen[slots] = appended
        self._carry_on(slots, usable, last_seq)
        steps = int(usable.max(initial=0))
        if steps == 0:
            return
        t = temperatures.astype(np.float64)
        filtered = np.median(np.stack([t[:, :-2], t[:, 1:-1], t[:, 2:]]), axis=0)
        # filtered[:, i] is reading i + 1 of the window: the newest usable is column -1. A
        # reading equal to both its neighbours is a stuck sensor's, not the machine's: it is
        # left out, or a sensor stuck in a trough and then freed would look like a rise.
        stuck = (t[:, :-2] == t[:, 1:-1]) & (t[:, 1:-1] == t[:, 2:])
        completed_fine = np.zeros(len(slots), dtype=np.bool_)
        for step in range(steps):
            age = steps - 1 - step  # 0: the newest usable reading
            due = usable > age
            held = due & stuck[:, stuck.shape[1] - 1 - age]
            take = due & ~held
            if held.any():
                run = self._stuck_run[slots[held]] + 1
                self._stuck_run[slots[held]] = run
                self._mark_gap(slots[held][run >= STUCK_GAP])
            column = filtered[:, filtered.shape[1] - 1 - age]
            rows = slots[take]
            self._stuck_run[rows] = 0
            value = column[take]
            self._fine_sum[rows] += value
            self._fine_count[rows] += 1
            self._coarse_sum[rows] += value
            self._coarse_count[rows] += 1
            self._coarse_max[rows] = np.maximum(self._coarse_max[rows], value)
            done = self._fine_count[rows] >= FINE
            if done.any():
                self._push_fine(rows[done])
                completed_fine[np.flatnonzero(take)[done]] = True
            done = self._coarse_count[rows] >= COARSE
            if done.any():
                self._push_coarse(rows[done])
        if last_seq is not None:
            took = usable > 0
            self._taken_seq[slots[took]] = last_seq[took] - 1  # the newest waits (see above)
        if completed_fine.any():
            self._assess(slots[completed_fine], threshold[completed_fine])

    def _carry_on(
        self,
        slots: NDArray[np.int64],
        usable: NDArray[np.int64],
        last_seq: NDArray[np.int64] | None,
    ) -> None:
        """For machines whose state was loaded and which now take in their first readings:
        a gap unless fewer than :data:`STUCK_GAP` readings went missing in between."""
        resumed = self._resumed[slots] & (usable > 0)
        if not resumed.any():
            return
        rows = slots[resumed]
        self._resumed[rows] = False
        if last_seq is None:
            self._mark_gap(rows)
            return
        first = last_seq[resumed] - usable[resumed]  # the oldest reading taken in now
        missing = first - self._taken_seq[rows] - 1
        self._mark_gap(rows[(missing < 0) | (missing >= STUCK_GAP)])

    def _mark_gap(self, rows: NDArray[np.int64]) -> None:
        """A gap in the readings of ``rows`` falls in the fine and coarse steps in progress."""
        self._gap_fine[rows] = self._fine_n[rows]
        self._gap_coarse[rows] = self._coarse_n[rows]

    def _push_fine(self, rows: NDArray[np.int64]) -> None:
        head = self._fine_n[rows] % FINE_BLOCKS
        self._fine[rows, head] = self._fine_sum[rows] / self._fine_count[rows]
        self._fine_n[rows] += 1
        self._fine_sum[rows] = 0.0
        self._fine_count[rows] = 0

    def _push_coarse(self, rows: NDArray[np.int64]) -> None:
        head = self._coarse_n[rows] % COARSE_BLOCKS
        mean = self._coarse_sum[rows] / self._coarse_count[rows]
        self._coarse[rows, head] = mean
        self._excursion[rows, head] = self._coarse_max[rows] - mean
        self._coarse_n[rows] += 1
        self._coarse_sum[rows] = 0.0
        self._coarse_max[rows] = -math.inf
        self._coarse_count[rows] = 0
        recent = _latest(self._excursion[rows], self._coarse_n[rows], EXCURSION_BLOCKS)
        self._env[rows] = np.nanmedian(recent, axis=1)
        for index, blocks in enumerate(COARSE_FITS):
            level, slope, error, broken = _fit(self._coarse[rows], self._coarse_n[rows], blocks)
            self._c_level[rows, index] = level
            self._c_slope[rows, index] = slope / COARSE
            self._c_error[rows, index] = error / COARSE
            across_gap = self._coarse_n[rows] - blocks <= self._gap_coarse[rows]
            self._c_broken[rows, index] = broken | across_gap
        self._c_at[rows] = self._fine_n[rows]
        self._period[rows] = self._periods(rows)

    def _periods(self, rows: NDArray[np.int64]) -> NDArray[np.float64]:
        """The cycle of ``rows`` over their last :data:`PERIOD_BLOCKS` fine steps, or all they
        have from :data:`PERIOD_MIN_BLOCKS` on (rows grouped by that count); NaN below."""
        available = np.minimum(self._fine_n[rows], PERIOD_BLOCKS)
        out = np.full(len(rows), np.nan)
        for blocks in np.unique(available[available >= PERIOD_MIN_BLOCKS]).tolist():
            pick = available == blocks
            out[pick] = _period(_latest(self._fine[rows[pick]], self._fine_n[rows[pick]], blocks))
        return out

    # --- verdicts --------------------------------------------------------------------------

    def _assess(self, rows: NDArray[np.int64], threshold: NDArray[np.float64]) -> None:
        """Refit the fine lines of ``rows`` (a fine step just completed) and judge them."""
        s = self.settings
        lines = []
        longest = max(FINE_FITS)
        fine = _latest(self._fine[rows], self._fine_n[rows], longest + SMOOTH - 1)
        kernel = np.ones(SMOOTH) / SMOOTH
        smooth = np.apply_along_axis(np.convolve, 1, fine, kernel, mode="valid")
        self._judge_level(rows, fine)
        for blocks in FINE_FITS:
            level, slope, error, broken = _fit_series(smooth[:, -blocks:])
            # Neighbouring smoothed steps share 9 of their 10 fine steps: the fit has about a
            # tenth as many independent points as it has steps.
            error = error * math.sqrt(SMOOTH) / FINE
            across_gap = self._fine_n[rows] - blocks - SMOOTH + 1 <= self._gap_fine[rows]
            lines.append((level, slope / FINE, error, broken | across_gap, blocks * FINE))
        since = (self._fine_n[rows] - self._c_at[rows]) * FINE  # readings since the coarse refit
        for index, blocks in enumerate(COARSE_FITS):
            slope = self._c_slope[rows, index]
            level = self._c_level[rows, index] + slope * since
            error, broken = self._c_error[rows, index], self._c_broken[rows, index]
            lines.append((level, slope, error, broken, blocks * COARSE))
        env = self._env[rows]
        ready = self._coarse_n[rows] >= MIN_COARSE
        best = np.full(len(rows), np.inf)
        anywhere = np.full(len(rows), np.inf)
        for level, slope, error, broken, span in lines:
            need = threshold - env - level
            floor = slope - s.trend_sigma * error
            valid = ready & ~broken & np.isfinite(level) & np.isfinite(floor) & (floor > 0)
            with np.errstate(divide="ignore", invalid="ignore"):
                soonest = np.where(valid, np.maximum(need, 0.0) / floor, np.inf)
            # A line looks no further ahead than a few times the readings it was fitted over: a
            # short one would otherwise carry a few hundred readings of healthy wear far ahead.
            best = np.minimum(best, np.where(soonest <= SPAN_FACTOR * span, soonest, np.inf))
            anywhere = np.minimum(anywhere, soonest)
        horizon = s.trend_horizon_readings
        hot = best <= horizon
        streak = np.where(hot, self._streak[rows] + 1, 0)
        self._streak[rows] = streak
        self._hot[rows] = streak >= s.trend_confirm
        heading = best <= HEADING_HORIZONS * horizon
        self._heading[rows] = heading
        rising = anywhere <= RISING_HORIZONS * horizon
        self._rising[rows] = rising
        self._readings[rows] = np.where(heading, best * TREND_RATIOS[1], np.nan)
        self._low[rows] = np.where(heading, best * TREND_RATIOS[0], np.nan)
        self._high[rows] = np.where(
            heading, best * TREND_RATIOS[2], np.where(rising, anywhere * TREND_RATIOS[2], np.nan)
        )

    def _judge_level(self, rows: NDArray[np.int64], fine: NDArray[np.float64]) -> None:
        """The level of ``rows`` over about their last :data:`LEVEL_SHORT` fine steps against
        that over about their last :data:`LEVEL_LONG` (or as many as they have, from
        :data:`LEVEL_MIN_BLOCKS` on), and their usual peak: that level plus the excursion.

        Where a machine's cycle is known, both means span whole cycles (:func:`_cycle_span`):
        100 readings hold 0.8 to 1.25 of the fleet's cycles, and what is left of the cycle in
        their mean swings the level by up to 1 °C, cycle by cycle, on a machine whose level
        does not move: enough to open the gate at a peak of a slow drift's early cycles."""
        known = self._fine_n[rows] >= LEVEL_MIN_BLOCKS
        period = self._period[rows] if LEVEL_WHOLE_CYCLES else np.full(len(rows), np.nan)
        short = _cycle_span(period, LEVEL_SHORT * FINE)
        # At least one cycle more than the short mean: a cycle of 334 readings or longer would
        # otherwise give both means the same single cycle, and the level could never rise.
        long = np.maximum(_cycle_span(period, LEVEL_LONG * FINE), short + np.nan_to_num(period))
        long = np.minimum(long, float(FINE_BLOCKS * FINE))
        level = _mean_over(fine, short)
        rise = level - _mean_over(fine, long)
        self._level_rise[rows] = np.where(known, rise, np.nan)
        self._usual_peak[rows] = np.where(known, level + self._env[rows], np.nan)

    # --- across restarts ---------------------------------------------------------------------

    def save(self, directory: Path, slot_of: dict[str, int]) -> Path:
        """Write every machine's state that holds anything to ``directory`` (atomically)."""
        return self.snapshot(directory, slot_of).write()

    def snapshot(self, directory: Path, slot_of: dict[str, int]) -> Snapshot:
        """Every machine's state that holds anything, copied, for :meth:`Snapshot.write`."""
        has = (self._fine_n > 0) | (self._fine_count > 0)  # took in anything
        ids = [m for m, slot in slot_of.items() if slot < self.capacity and has[slot]]
        slots = np.fromiter((slot_of[m] for m in ids), np.int64, len(ids))
        rows = {n: getattr(self, n)[slots] for n in self._kept()}
        return Snapshot(directory / STATE_FILE, STATE_VERSION, ids, rows)

    def load(self, directory: Path, slot_for: Callable[[str], int | None]) -> int:
        """Take back what :meth:`save` wrote (the machines loaded; 0 with no file).

        ``slot_for`` gives a machine its slot (None: no room). The readings that come next
        are the machines' first of this run (``_seen`` 0) and :meth:`update` judges from their
        ``seq`` whether they carry on. An unreadable or foreign file is logged and ignored.
        """
        path = directory / STATE_FILE
        if not path.exists():
            return 0
        shapes = {n: getattr(self, n).shape[1:] for n in self._kept()}
        try:
            ids, rows, _ = load_rows(path, STATE_VERSION, shapes)
        except StateFileError as error:
            logger.warning(
                "ignoring the saved slow-path state %s (%s): every machine's long trends start "
                "afresh; delete the file to silence this warning",
                path,
                error,
            )
            return 0
        keep, slots = place(ids, slot_for)
        if len(slots) == 0:
            return 0
        self.ensure_capacity(int(slots.max()) + 1)
        for name, array in rows.items():
            getattr(self, name)[slots] = array[keep]
        for name in DERIVED:
            getattr(self, name)[slots] = math.nan
        self._seen[slots] = 0
        self._resumed[slots] = True
        return len(slots)

    def _kept(self) -> list[str]:
        """The arrays :meth:`save` writes: all but those the next fine step derives again."""
        return [name for name in self._fills() if name not in DERIVED]

    def view(self, slots: NDArray[np.int64]) -> TrendView:
        """The latest verdict of ``slots``, shifted by the readings taken in since it."""
        behind = (self._fine_count[slots] + 1).astype(np.float64)  # the median's wait, too
        on = self.settings.trend_horizon_readings > 0
        return TrendView(
            trending=self._hot[slots] & on,
            heading=self._heading[slots] & on,
            rising=self._rising[slots] & on,
            readings=np.maximum(self._readings[slots] - behind, 0.0),
            low=np.maximum(self._low[slots] - behind, 0.0),
            high=np.maximum(self._high[slots] - behind, 0.0),
            period=self._period[slots],
            level_rise=self._level_rise[slots],
            usual_peak=self._usual_peak[slots],
        )


def _cycle_span(period: NDArray[np.float64], readings: int) -> NDArray[np.float64]:
    """Spans, in readings, of the whole number of cycles of ``period`` nearest ``readings`` (at
    least one); ``readings`` where the cycle is unknown. At most the fine ring's length."""
    with np.errstate(invalid="ignore", divide="ignore"):
        cycles = np.maximum(np.rint(readings / period), 1.0)
        span = np.where(np.isfinite(period) & (period > 0), cycles * period, float(readings))
    return np.minimum(span, float(FINE_BLOCKS * FINE))


def _mean_over(fine: NDArray[np.float64], span: NDArray[np.float64]) -> NDArray[np.float64]:
    """Each row's mean over its last ``span`` readings, from its newest fine steps (the last
    rows of ``fine``, NaN where not filled): whole steps, then a share of the next older one.
    NaN steps are left out (a machine with fewer steps: the mean of what it has)."""
    steps = fine.shape[1]
    age = np.arange(steps)[::-1]  # 0 for the newest step
    weight = np.clip(span[:, np.newaxis] / FINE - age[np.newaxis, :], 0.0, 1.0)
    weight = np.where(np.isnan(fine), 0.0, weight)
    total = weight.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, np.nansum(fine * weight, axis=1) / total, np.nan)


def _latest(ring: NDArray[np.float32], count: NDArray[np.int64], blocks: int) -> NDArray:
    """The last ``blocks`` entries of each row's ring, oldest first; NaN where not yet filled."""
    size = ring.shape[1]
    order = (count[:, np.newaxis] - blocks + np.arange(blocks)) % size
    values = np.take_along_axis(ring, order, axis=1).astype(np.float64)
    missing = np.arange(blocks) < (blocks - count[:, np.newaxis])
    return np.where(missing, np.nan, values)


def _fit(
    ring: NDArray[np.float32], count: NDArray[np.int64], blocks: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """Least-squares line over each row's last ``blocks`` steps, per step: the line's level at
    the last step, its slope, the slope's standard error, and whether the last steps fell
    :data:`BREAK_C` below the line. NaN where a row has fewer steps than that."""
    return _fit_series(_latest(ring, count, blocks))


def _fit_series(
    y: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """:func:`_fit` over the rows of ``y`` (oldest first; a row with a NaN gives NaN)."""
    blocks = y.shape[1]
    x = np.arange(blocks, dtype=np.float64) - (blocks - 1) / 2.0
    sxx = float(np.sum(x * x))
    mean = y.mean(axis=1)
    slope = (y @ x) / sxx
    residual = y - mean[:, np.newaxis] - slope[:, np.newaxis] * x
    error = np.sqrt(np.sum(residual**2, axis=1) / (blocks - 2) / sxx)
    tail = max(1, blocks // 10)
    broken = residual[:, -tail:].mean(axis=1) < -BREAK_C
    level = mean + slope * x[-1]
    return level, slope, error, np.asarray(broken | np.isnan(mean))


def _period(y: NDArray[np.float64]) -> NDArray[np.float64]:
    """Each row's cycle in readings: the first lag at which it correlates best with itself
    around that lag (after taking out a straight line), refined between neighbouring lags; NaN
    for a row with a gap or no such lag correlating at :data:`PERIOD_MIN_CORRELATION` or
    more."""
    blocks = y.shape[1]
    x = np.arange(blocks, dtype=np.float64) - (blocks - 1) / 2.0
    mean = y.mean(axis=1, keepdims=True)
    slope = ((y - mean) @ x / float(x @ x))[:, np.newaxis]
    z = y - mean - slope * x
    power = np.sum(z * z, axis=1)
    first, last = PERIOD_LAGS[0], min(PERIOD_LAGS[1], blocks // 2)
    lags = np.arange(first - 1, last + 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.stack(
            [
                np.sum(z[:, lag:] * z[:, :-lag], axis=1) / power * blocks / (blocks - lag)
                for lag in lags
            ],
            axis=1,
        )
    inner = np.nan_to_num(corr[:, 1:-1], nan=-np.inf)
    # The first local maximum that correlates well enough: a cycle's multiples correlate as
    # well as the cycle itself.
    local = (inner >= corr[:, :-2]) & (inner >= corr[:, 2:]) & (inner >= PERIOD_MIN_CORRELATION)
    best = np.where(local.any(axis=1), np.argmax(local, axis=1), 0)
    rows = np.arange(y.shape[0])
    peak = inner[rows, best]
    left, right = corr[rows, best], corr[rows, best + 2]
    curve = left - 2.0 * peak + right
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(curve < 0, 0.5 * (left - right) / curve, 0.0)
    lag = lags[best + 1] + np.clip(shift, -0.5, 0.5)
    found = local.any(axis=1)
    return np.where(found, lag * FINE, np.nan)
