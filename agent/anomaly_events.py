"""The anomaly alert in the agent: every reading scored, its own lifecycle, its learned state kept.

The calibrated scorer (:mod:`agent.anomaly_sensors`) scores every feature of every reading the
agent accepts, not only each machine's newest one per tick: a tick's readings are scored in
rounds (round ``k`` holds every machine's ``k``-th reading of the tick, so each round is one
vectorised update over all the machines in it). The default rule (:mod:`agent.anomaly_alert`)
turns the machine score into a firing/resolved state with hysteresis.

The lifecycle mirrors the overheat alert's: a new ``alert_id`` when the alert fires, the same
one on its resolution, a per-machine ``seq`` on every message; it goes on its own retained
topic (``mqtt.anomaly_topic``), so the overheat state on the alerts topic is never overwritten,
and a restarted agent reads it back (:mod:`agent.restore`). What subscribers were last told is
kept per machine (``announced``), and each tick publishes where that differs from the state,
unless the machine is

* **inhibited**: an overheat incident is open for it (its state is not ok): the lesser alert is
  held back, as Alertmanager inhibits one, and counted (``forewarn_anomaly_alerts_inhibited``);
* **silenced**: counted (``forewarn_anomaly_alerts_silenced``), not published (an evicted
  machine's last message, its resolution, is held until the silence ends, then published, so
  that no retained "firing" outlives it);

and once neither holds any more, the machine's current anomaly state is published (nothing when
it fired and resolved while held back). While a machine's alert fires, its learned normal is
frozen: a departure is never learned as normal, however long it lasts. An operator re-baselines
a machine after maintenance (:mod:`agent.rebaseline`): its normal is learned afresh and a firing
alert resolves. The learned state of every machine is saved to ``agent.state_dir`` every
``anomaly.save_interval_s`` and at stop, and loaded at start-up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
from numpy.typing import NDArray

from agent.anomaly_alert import AnomalyAlertState, AnomalyRule
from agent.anomaly_sensors import SensorScorer
from agent.slotfile import Snapshot, StateFileError, load_rows, place
from agent.window import occurrence

logger = logging.getLogger(__name__)

ANOMALY_SCHEMA_VERSION = 1
STATE_FILE = "anomaly.npz"
STATE_VERSION = 1
STATE_PREFIX = "s_"
"""The prefix of the scorer's arrays in the file (:mod:`agent.slotfile`)."""
ADDED_SINCE = (
    "score_past",
    "lasting",
    "settled",
    "res_count",
    "res_ew",
    "res_mean",
    "res_var",
    "res_q",
    "res_b",
    "phase",
    "up_at",
    "cycle",
    "cycle_dev",
    "cycles",
)
"""Scorer arrays added since the first files were written: a file without them still loads
(they start afresh)."""


@dataclass(frozen=True)
class SensorReading:
    """One sensor's part of an anomaly alert."""

    score: float
    value: float | None
    expected_range: tuple[float, float] | None
    """The sensor's learned normal range (mean ± 4 spreads); None before it learned one."""


@dataclass(frozen=True)
class AnomalyEvent:
    """One anomaly alert change of one machine, as published on its anomaly topic."""

    machine_id: str
    status: str  # "firing" or "resolved"
    ts: float
    anomaly_score: float
    sensors: dict[str, SensorReading]
    driver: str | None
    alert_id: str
    seq: int
    previous_state: str  # "ok" or "anomaly"
    reason: str | None = None
    severity: str = "anomaly"

    def line(self) -> str:
        text = f"ANOMALY {self.machine_id} {self.status} score {self.anomaly_score:.2f}"
        if self.status == "firing" and self.driver is not None:
            text += f" (driven by {self.driver})"
        return text + (f" ({self.reason})" if self.reason else "")


def _number(value: float) -> float | None:
    return round(value, 6) if np.isfinite(value) else None


def anomaly_payload(event: AnomalyEvent, model_version: str) -> bytes:
    """The JSON of ``wire/schemas/anomaly.schema.json``."""
    body: dict[str, object] = {
        "machine_id": event.machine_id,
        "severity": event.severity,
        "status": event.status,
        "ts": round(event.ts, 3),
        "alert_id": event.alert_id,
        "seq": event.seq,
        "previous_state": event.previous_state,
        "anomaly_score": round(event.anomaly_score, 6),
        "driver": event.driver,
        "sensors": {
            name: {
                "score": round(s.score, 6),
                "value": s.value,
                "expected_range": None if s.expected_range is None else list(s.expected_range),
            }
            for name, s in event.sensors.items()
        },
        "model_version": model_version,
        "schema": ANOMALY_SCHEMA_VERSION,
    }
    if event.reason is not None:
        body["reason"] = event.reason
    return orjson.dumps(body)


@dataclass(frozen=True, slots=True)
class RestoredAnomaly:
    """One machine's anomaly alert state as its retained anomaly message says."""

    machine_id: str
    firing: bool
    alert_id: str
    seq: int
    ts: float = float("-inf")
    """When it was published: a re-baseline commanded before it was applied before it."""


class AnomalyAlerts:
    """Per-slot anomaly scoring and alert lifecycle; the tick thread is its only writer."""

    state_file = STATE_FILE
    """Its file in ``agent.state_dir`` (:mod:`agent.learned`)."""

    def __init__(
        self,
        scorer: SensorScorer,
        rule: AnomalyRule,
        features: tuple[str, ...],
        capacity: int = 1024,
    ) -> None:
        self.scorer = scorer
        self.state = AnomalyAlertState(rule, capacity)
        self.features = features
        self.capacity = 0
        f = len(features)
        self.seq = np.zeros(0, dtype=np.int64)
        self.announced = np.zeros(0, dtype=np.bool_)
        """Whether subscribers were last told "firing" (the retained message's status)."""
        self.machine = np.zeros(0)
        self.rarity = np.zeros(0)
        """Each machine's rarity at its last reading (``SensorScores.rarity``): high for as
        long as it departs, where the machine score marks an onset on one row. The gauge
        exports it, so that a scrape every few seconds sees a departure."""
        self.peak = np.zeros(0)
        """The highest machine score since the alert fired (0 while it does not fire)."""
        self.sensor_score = np.zeros((0, f))
        self.value = np.zeros((0, f))
        self.low = np.zeros((0, f))
        self.high = np.zeros((0, f))
        self.driver = np.zeros(0, dtype=np.int64)
        self.alert_id: dict[int, str] = {}
        self.rebaselined_at: dict[str, float] = {}
        """The ``at`` of the last re-baseline applied to each machine (saved with the state)."""
        self.told_at: dict[str, float] = {}
        """When each machine's retained anomaly message, read at start-up, was published: a
        retained re-baseline older than it was applied before it (known without a state
        file, so a restart does not re-apply it and resolve a later episode)."""
        self.rebaselined_why: dict[int, str] = {}
        """The operator's reason of a re-baseline whose resolution is still to be published."""
        self._changed: list[NDArray[np.int64]] = []
        self._scored: list[NDArray[np.int64]] = []
        self.ensure_capacity(capacity)

    # -- storage -------------------------------------------------------------------------------

    def ensure_capacity(self, capacity: int) -> None:
        self.scorer.ensure_capacity(capacity)
        self.state.ensure_capacity(capacity)
        old = self.capacity
        if capacity <= old:
            return
        for name, fill in (
            ("seq", 0),
            ("announced", False),
            ("machine", 0.0),
            ("rarity", 0.0),
            ("peak", 0.0),
            ("sensor_score", 0.0),
            ("value", np.nan),
            ("low", np.nan),
            ("high", np.nan),
            ("driver", 0),
        ):
            array = getattr(self, name)
            new = np.full((capacity, *array.shape[1:]), fill, dtype=array.dtype)
            new[:old] = array
            setattr(self, name, new)
        self.capacity = capacity

    def reset(self, slots: NDArray[np.int64]) -> None:
        """Forget everything about ``slots``: their machines were evicted."""
        self.scorer.reset(slots)
        self.state.reset(slots)
        self.seq[slots] = 0
        self.announced[slots] = False
        self.machine[slots] = 0.0
        self.rarity[slots] = 0.0
        self.peak[slots] = 0.0
        self.sensor_score[slots] = 0.0
        for name in ("value", "low", "high"):
            getattr(self, name)[slots] = np.nan
        for slot in slots.tolist():
            self.alert_id.pop(slot, None)
            self.rebaselined_why.pop(slot, None)

    # -- scoring -------------------------------------------------------------------------------

    def score_readings(self, slots: NDArray[np.int64], values: NDArray[np.floating]) -> None:
        """Score a tick's accepted readings (``values`` (n, features), in arrival order, each
        machine's in its own order), one round per reading of the busiest machine."""
        if not len(slots):
            return
        rounds = occurrence(slots)
        order = np.argsort(rounds, kind="stable")
        bounds = np.searchsorted(rounds[order], np.arange(int(rounds.max()) + 2))
        for k in range(len(bounds) - 1):
            pick = order[bounds[k] : bounds[k + 1]]
            pick = pick[np.argsort(slots[pick])]  # by slot: the scorer then reads runs of rows
            self._score_round(slots[pick], values[pick])

    def _score_round(self, slots: NDArray[np.int64], values: NDArray[np.floating]) -> None:
        # Frozen while the alert fires, once the machine has a learned normal: a machine still
        # learning one (an alert restored at start-up without a saved normal, say) must learn
        # it, or its alert could never resolve.
        scorer = self.scorer
        learned = scorer.count[slots] >= scorer.warm_up[slots]
        result = scorer.update(slots, values, frozen=self.state.firing[slots] & learned)
        self.machine[slots] = result.machine
        self.rarity[slots] = result.rarity
        self.sensor_score[slots] = result.score
        self.value[slots] = values
        self.low[slots] = result.low
        self.high[slots] = result.high
        self.driver[slots] = result.driver
        self._scored.append(slots)
        # A machine still learning its normal scores 0: that says nothing, so it neither fires
        # nor resolves (an alert restored at start-up stays firing until the machine is warm).
        warm = slots[result.warm]
        if len(warm):
            fired, resolved = self.state.update(
                warm, result.machine[result.warm], result.rarity[result.warm]
            )
            if len(fired) or len(resolved):
                self._changed.append(np.concatenate([fired, resolved]))
                for slot in fired.tolist():  # a new episode: no re-baseline ended it
                    self.rebaselined_why.pop(slot, None)
                for slot in resolved[~self.announced[resolved]].tolist():
                    self.alert_id.pop(slot, None)  # an episode never published: its id goes
        now_firing = self.state.firing[slots]
        # From the onset that started the episode on: the rows that confirmed it and the row
        # that fired it need not score as high (they are read as their rarity).
        seen = np.maximum(result.machine, self.state.onset[slots])
        self.peak[slots] = np.where(now_firing, np.maximum(self.peak[slots], seen), 0.0)

    def take_scored(self) -> NDArray[np.int64]:
        """The slots scored since the last call, each once."""
        scored = np.unique(np.concatenate(self._scored)) if self._scored else np.zeros(0, np.int64)
        self._scored = []
        return scored.astype(np.int64)

    def take_changed(self) -> NDArray[np.int64]:
        """Slots whose alert fired or resolved since the last call (each once)."""
        changed = np.unique(np.concatenate(self._changed)) if self._changed else np.zeros(0)
        self._changed = []
        return changed.astype(np.int64)

    def open_ids(self, slots: NDArray[np.int64], machine_ids: list[str], now: float) -> None:
        """Give each slot that fired (and has no open alert) a new ``alert_id``."""
        for slot in slots[self.state.firing[slots]].tolist():
            if slot not in self.alert_id:
                self.alert_id[slot] = f"{machine_ids[slot]}-anomaly-{int(now * 1000)}"

    # -- what to publish -----------------------------------------------------------------------

    def out_of_sync(self, used: int) -> NDArray[np.int64]:
        """Slots whose state differs from what subscribers were last told."""
        return np.flatnonzero(self.state.firing[:used] != self.announced[:used])

    def event(
        self, slot: int, machine_id: str, now: float, reason: str | None = None
    ) -> AnomalyEvent:
        """The message that tells subscribers the slot's current state (and records it told)."""
        firing = bool(self.state.firing[slot])
        alert_id = self.alert_id.get(slot) or f"{machine_id}-anomaly-{int(now * 1000)}"
        rebaselined = self.rebaselined_why.pop(slot, None)
        if reason is None and not firing and rebaselined is not None:
            reason = f"re-baselined: {rebaselined}"
        self.seq[slot] += 1
        event = AnomalyEvent(
            machine_id=machine_id,
            status="firing" if firing else "resolved",
            ts=now,
            anomaly_score=float(self.peak[slot] if firing else self.machine[slot]),
            sensors=self.sensors(slot),
            driver=self.features[int(self.driver[slot])] if firing else None,
            alert_id=alert_id,
            seq=int(self.seq[slot]),
            previous_state="anomaly" if self.announced[slot] else "ok",
            reason=reason,
        )
        self.announced[slot] = firing
        if firing:
            self.alert_id[slot] = alert_id  # its resolution carries the same one
        else:
            self.alert_id.pop(slot, None)
        return event

    def sensors(self, slot: int) -> dict[str, SensorReading]:
        report = {}
        # A range only once the normal is learned: a few warm-up readings are not one yet.
        learned = self.scorer.count[slot] >= self.scorer.warm_up[slot]
        for i, name in enumerate(self.features):
            low, high = float(self.low[slot, i]), float(self.high[slot, i])
            known = learned and np.isfinite(low) and np.isfinite(high)
            report[name] = SensorReading(
                score=float(self.sensor_score[slot, i]),
                value=_number(float(self.value[slot, i])),
                expected_range=(round(low, 6), round(high, 6)) if known else None,
            )
        return report

    def firing_count(self, used: int, ours: NDArray[np.bool_] | bool) -> int:
        return int((self.state.firing[:used] & ours).sum())

    # -- operator and start-up -----------------------------------------------------------------

    def rebaseline(self, slot: int, reason: str) -> None:
        """Learn the slot's normal afresh; a firing alert resolves (published by the tick,
        with ``reason``)."""
        slots = np.array([slot], dtype=np.int64)
        if self.announced[slot]:
            self.rebaselined_why[slot] = reason
        self.scorer.reset(slots)
        self.state.reset(slots)
        self.peak[slot] = 0.0
        self.machine[slot] = 0.0
        self.rarity[slot] = 0.0
        self.sensor_score[slot] = 0.0

    def restore(self, slot: int, restored: RestoredAnomaly) -> None:
        """Resume a machine's retained anomaly state (its counters start afresh)."""
        self.ensure_capacity(slot + 1)
        self.state.firing[slot] = restored.firing
        self.announced[slot] = restored.firing
        self.seq[slot] = max(int(self.seq[slot]), restored.seq)
        self.told_at[restored.machine_id] = restored.ts
        if restored.firing:
            self.alert_id[slot] = restored.alert_id

    def _resume_alerts(
        self,
        slots: NDArray[np.int64],
        firing: NDArray[np.bool_],
        alert_ids: NDArray[np.str_],
        seqs: NDArray[np.int64],
        peaks: NDArray[np.float64],
        drivers: NDArray[np.int64],
    ) -> None:
        """Resume each machine's alert as it stood when the state was saved, which may differ
        from its retained message (the published state) when a change was held back (an
        overheat incident, a silence): the change is published once nothing holds it back. A
        retained message published after the save (a higher ``seq``: the file is written
        every few minutes, a crash leaves it older) says where the alert stands instead. A
        firing alert keeps its peak score and driver, which its message reports."""
        newer = self.seq[slots] > seqs
        self.seq[slots] = np.maximum(self.seq[slots], seqs)
        take = ~newer
        for slot, fires, alert_id in zip(
            slots[take].tolist(), firing[take].tolist(), alert_ids[take].tolist(), strict=True
        ):
            self.state.firing[slot] = fires
            if fires and slot not in self.alert_id and alert_id:
                self.alert_id[slot] = str(alert_id)
        resumed = self.state.firing[slots]
        self.peak[slots] = np.where(resumed, np.maximum(self.peak[slots], peaks), 0.0)
        self.driver[slots] = np.where(resumed, drivers, self.driver[slots])

    def save(self, directory: Path, slot_of: dict[str, int]) -> Path:
        """Write the learned state of every machine that learned to ``directory`` (atomically)."""
        return self.snapshot(directory, slot_of).write()

    def snapshot(self, directory: Path, slot_of: dict[str, int]) -> Snapshot:
        """The learned state of every machine that has learned anything, copied, for
        :meth:`Snapshot.write`: a machine known only from a retained message (another agent's,
        under sharding) is not this agent's to save, and would otherwise take a slot first at
        every start-up."""
        count = self.scorer.count
        ids = [m for m, slot in slot_of.items() if count[slot] > 0]
        slots = np.fromiter((slot_of[m] for m in ids), np.int64, len(ids))
        return Snapshot(
            directory / STATE_FILE,
            STATE_VERSION,
            ids,
            {name: a[slots] for name, a in self.scorer.state().items()},
            meta={
                "features": np.array(self.features),
                "rebaselined_at": np.array([self.rebaselined_at.get(m, np.nan) for m in ids]),
                # The alert's own state: what a retained message says is only what was
                # published, and a change held back (inhibited, silenced) would be lost.
                "firing": self.state.firing[slots].copy(),
                "alert_id": np.array([self.alert_id.get(s, "") for s in slots.tolist()], np.str_),
                "seq": self.seq[slots].copy(),
                "peak": self.peak[slots].copy(),
                "driver": self.driver[slots].copy(),
            },
            prefix=STATE_PREFIX,
        )

    def load(self, directory: Path, slot_for: Callable[[str], int | None]) -> int:
        """Load what ``save`` wrote; returns the machines loaded (0 with no file).

        ``slot_for`` is the window store's (machine id → slot, taking one). A file for other
        features, or unreadable, is logged and ignored: the machines learn afresh.
        """
        path = directory / STATE_FILE
        if not path.exists():
            return 0
        shapes = {name: a.shape[1:] for name, a in self.scorer.state().items()}
        try:
            ids, saved, meta = load_rows(
                path, STATE_VERSION, shapes, prefix=STATE_PREFIX, optional=ADDED_SINCE
            )
            features = tuple(str(f) for f in meta["features"])
            if features != self.features:
                raise StateFileError(f"learned for features {features}, not {self.features}")
            rebased = meta["rebaselined_at"]
            if rebased.shape != (len(ids),):
                raise StateFileError(f"rebaselined_at has shape {rebased.shape}")
            # Files written before the alert's state was kept: none fires.
            firing = meta.get("firing", np.zeros(len(ids), np.bool_)).astype(np.bool_)
            alert_ids = meta.get("alert_id", np.full(len(ids), "", np.str_))
            seqs = meta.get("seq", np.zeros(len(ids), np.int64)).astype(np.int64)
            peaks = np.clip(np.nan_to_num(meta.get("peak", np.zeros(len(ids)))), 0.0, 1.0)
            drivers = meta.get("driver", np.zeros(len(ids), np.int64)).astype(np.int64)
            alert_shapes = {a.shape for a in (firing, alert_ids, seqs, peaks, drivers)}
            if alert_shapes != {(len(ids),)}:
                raise StateFileError(f"the alert state's arrays have shapes {alert_shapes}")
            drivers = np.where((drivers >= 0) & (drivers < len(features)), drivers, 0)
        except (StateFileError, KeyError, TypeError, ValueError) as error:
            logger.warning(
                "ignoring the saved anomaly state %s (%s): every machine learns its normal "
                "afresh; delete the file to silence this warning",
                path,
                error,
            )
            return 0
        keep, slots = place(ids, slot_for)
        if len(slots):
            self.ensure_capacity(int(slots.max()) + 1)
            state = self.scorer.state()
            for name, array in saved.items():
                state[name][slots] = array[keep]
            try:
                self.scorer.load(state)
            except ValueError as error:
                logger.warning("ignoring the saved anomaly state %s (%s)", path, error)
                return 0
            self._resume_alerts(
                slots, firing[keep], alert_ids[keep], seqs[keep], peaks[keep], drivers[keep]
            )
        for machine_id, at in zip(ids, rebased.tolist(), strict=True):
            if np.isfinite(at):
                self.rebaselined_at[machine_id] = float(at)
        return int(keep.sum())
