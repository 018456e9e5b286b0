"""The tick: the agent's one thread that forecasts, decides alerts and publishes them.

Every ``tick_interval_s`` the tick thread takes the hand-off (decoding its single messages
together, rejections counted by reason), stores every reading in the window store, runs one
batched forecast over every machine with a full window and a new reading, advances the alert
policy and publishes the changes (:mod:`agent.publish`), except for silenced machines. With
``anomaly.enabled`` it scores every accepted reading on every feature and publishes anomaly
alert changes on their own topic, held back while a machine's overheat incident is open
(:mod:`agent.anomaly_events`). It also
marks machines that stopped reporting stale, republishes where a machine stands when its
silence ends, and drops the metric series of machines gone quiet.

It is the only writer of the window store, the alert policy and the anomaly scorer, so none
of them takes a lock; it resumes the restored alert states before its first tick (ticks wait
for them). A tick that overruns makes the loop skip ticks, not burst.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from agent.alerts import OK, STATE_NAMES, AlertEvent, AlertPolicy
from agent.anomaly import AnomalyScorer
from agent.anomaly_events import AnomalyAlerts, AnomalyEvent
from agent.drift import DriftWatch, export_drift
from agent.ingest import Ingest
from agent.learned import LearnedState
from agent.metrics import AgentMetrics
from agent.publish import AlertPublisher
from agent.rebaseline import RebaselineQueue
from agent.recording import Recorder
from agent.restore import AlertRestore, RestoredAlert, warn_no_room
from agent.silence import SilenceBook
from agent.statedir import state_dir
from agent.throttle import LogThrottle
from agent.window import Batch as ReadyBatch
from agent.window import WindowStore
from config.settings import Settings
from models.base import Forecaster
from wire.reading import Batch, Reading

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 1.0
"""Assumed reading interval of a machine until two of its readings show the real one."""


@dataclass(frozen=True)
class MachineView:
    """One machine's row in a tick snapshot (for the demo's live view)."""

    machine_id: str
    temperature_c: float
    forecast_c: float
    state: str


@dataclass(frozen=True)
class TickForecasts:
    """Every model's forecasts of one tick, on the same windows (for comparing models).

    ``forecasts`` maps a role to a (batch, horizon) array: always ``"live"`` (the served
    model, the one that alerts), and ``"shadow"`` while a shadow model is loaded. Row ``i`` of
    each is the forecast for ``windows[i]``, the window of slot ``slots[i]`` of machine
    ``machine_ids[slots[i]]`` whose newest reading has sequence number ``seq[i]``.
    """

    slots: NDArray[np.int64]
    windows: NDArray[np.float32]
    seq: NDArray[np.int64]
    forecasts: dict[str, NDArray[np.float32]]
    machine_ids: list[str]
    now: float


TickListener = Callable[[list[MachineView]], None]
AlertListener = Callable[[AlertEvent], None]
ForecastsListener = Callable[[TickForecasts], None]
"""Called on the tick thread with every model's forecasts of a tick; it must be quick."""
EvictionListener = Callable[[NDArray[np.int64]], None]
"""Called with the slots whose machines were evicted: per-slot state kept outside the ticker."""

SAMPLE_WINDOWS = 64
"""Recent windows kept for checking a model before it is swapped in."""


class _Job:
    """A function to run between two ticks, and its outcome."""

    def __init__(self, apply: Callable[[], None]) -> None:
        self.apply = apply
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self, lock: threading.Lock) -> None:
        try:
            with lock:
                self.apply()
        except Exception as error:
            self.error = error
        finally:
            self.done.set()


Heard = TypeVar("Heard", bool, np.bool_, NDArray[np.bool_])


class Ticker:
    """Runs the tick loop in its own thread (``start``); ``tick`` runs one tick.

    Every alert event goes to ``publisher`` (unless silenced) and to each of
    ``alert_listeners``; each tick that forecast calls ``tick_listeners`` with its machines.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        forecaster: Forecaster,
        store: WindowStore,
        policy: AlertPolicy,
        anomaly: AnomalyScorer,
        ingest: Ingest,
        restore: AlertRestore,
        publisher: AlertPublisher,
        silences: SilenceBook,
        metrics: AgentMetrics,
        stop_event: threading.Event,
        alert_listeners: list[AlertListener],
        tick_listeners: list[TickListener],
        anomaly_alerts: AnomalyAlerts | None = None,
        rebaselines: RebaselineQueue | None = None,
        drift: DriftWatch | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self._settings = settings
        self.drift = drift
        """Each machine's forecast skill against the model's own (``drift.enabled``)."""
        self.recorder = recorder
        """Writes the accepted readings to the recording (``recording.enabled``)."""
        self.anomaly_alerts = anomaly_alerts
        """The calibrated per-sensor scorer and its alert lifecycle (``anomaly.enabled``)."""
        self._rebaselines = rebaselines
        self._anomaly_changed: NDArray[np.int64] = np.empty(0, dtype=np.int64)
        self.learned = LearnedState(state_dir(settings))
        """The anomaly normal and the slow path's trends, kept across restarts."""
        if anomaly_alerts is not None:
            self.learned.add("learned normal", anomaly_alerts, settings.anomaly.save_interval_s)
        if settings.alerts.trend_horizon_readings > 0:
            self.learned.add("slow path", policy.trend, settings.alerts.trend_save_interval_s)
        self.forecaster = forecaster
        self.store = store
        self.policy = policy
        self.anomaly = anomaly
        self._ingest = ingest
        self._restore = restore
        self._publisher = publisher
        self._silences = silences
        self._metrics = metrics
        self._stop_event = stop_event
        self._alert_listeners = alert_listeners
        self._tick_listeners = tick_listeners
        self.shadow: Forecaster | None = None
        """A candidate forecast on the same windows as ``forecaster``, never alerting."""
        self.forecast_listeners: list[ForecastsListener] = []
        self.eviction_listeners: list[EvictionListener] = []
        """Called on the tick thread with the slots of evicted machines, before reuse."""
        self.sample_windows: NDArray[np.float32] | None = None
        """A copy of up to SAMPLE_WINDOWS windows of the last tick that forecast, for checks."""
        self._jobs: deque[_Job] = deque()
        """Work to run between two ticks (:meth:`install`)."""
        self.thread: threading.Thread | None = None
        self.last_tick = 0.0
        """When the loop last started or ended a tick (monotonic), for the watchdog."""
        self._lock = threading.Lock()
        # The readings the current tick took in, for forewarn_reading_to_forecast_seconds.
        self._received_slots: NDArray[np.int64] = np.empty(0, dtype=np.int64)
        self._received_at: NDArray[np.float64] = np.empty(0, dtype=np.float64)
        self._throttle = LogThrottle(logger)
        # With narrowed or shared subscriptions, other agents own some of the machines whose
        # retained alerts this one restores: it publishes and counts only the ones it hears.
        self._shares_fleet = bool(settings.mqtt.subscriptions) or bool(settings.mqtt.shared_group)
        self._next_stale_check = 0.0
        # What the eviction of a silenced machine would have published (its overheat "stale",
        # its anomaly "resolved"), held back until the silence ends; one of each per machine,
        # so bounded by the silences in force.
        self._held_alerts: dict[str, AlertEvent] = {}
        self._held_anomalies: dict[str, AnomalyEvent] = {}

    def install(self, apply: Callable[[], None]) -> None:
        """Run ``apply`` (which replaces ``forecaster`` or ``shadow``, or checks a candidate
        model) between two ticks, and return once it ran (raising what it raised).

        The tick loop runs it right after the tick in progress, so a tick runs wholly with the
        old models or wholly with the new ones, and a loop that is behind (ticking back to
        back) cannot starve it; windows, alert states and the hand-off are untouched. Without
        a running loop (tools, tests) it runs here, under the tick lock.
        """
        job = _Job(apply)
        self._jobs.append(job)
        while not job.done.wait(0.2):
            if self.thread is None or not self.thread.is_alive():
                try:
                    self._jobs.remove(job)
                except ValueError:
                    continue  # the loop took it: it is running now
                job.run(self._lock)
        if job.error is not None:
            raise job.error

    def _run_jobs(self) -> None:
        while self._jobs:
            try:
                job = self._jobs.popleft()
            except IndexError:
                return
            job.run(self._lock)

    def start(self) -> None:
        self.last_tick = time.monotonic()
        # A daemon thread: a tick stuck in the forecaster must not keep a failed agent alive.
        self.thread = threading.Thread(target=self._loop, name="forewarn-tick", daemon=True)
        self.thread.start()

    def join(self, timeout_s: float) -> None:
        """Wait at most ``timeout_s`` for the loop to end (after the stop event)."""
        if self.thread is not None:
            self.thread.join(timeout=timeout_s)

    def _loop(self) -> None:
        """Tick every ``tick_interval_s``; a tick that overruns makes the loop skip, not burst.

        A model slower than the readings thus costs skipped ticks (counted, logged) and, once
        the bounded hand-off is full, readings dropped as ``overload``; the network thread
        keeps reading and the keepalive keeps going. Ticks wait for the restored alert states.
        """
        interval = self._settings.agent.tick_interval_s
        next_at = time.monotonic()
        while not self._stop_event.is_set():
            self.last_tick = time.monotonic()
            try:
                if self._restore.done.is_set():
                    try:
                        self.tick()
                    finally:  # a failed tick must not stop what was learned being kept
                        self.learned.save(self.store, only_due=True)
                elif (restored := self._restore.result) is not None:
                    self.resume(restored)
                self._publisher.pump()
            except Exception:
                logger.exception("tick failed; the next tick starts afresh")
            self._run_jobs()
            now = self.last_tick = time.monotonic()
            next_at += interval
            delay = next_at - now
            if delay < 0:
                skipped = int(-delay // interval)
                if skipped:
                    self._metrics.ticks_skipped.inc(skipped)
                    self._throttle.warning(
                        "slow-tick",
                        "a tick took %.2f s, over the %.2f s tick interval: skipped %d tick(s) "
                        "(the model is slower than the readings; see forewarn_ticks_skipped_total)",
                        interval - delay,
                        interval,
                        skipped,
                    )
                next_at = now  # behind: skip the missed ticks instead of bursting
                delay = 0.0
            if self._stop_event.wait(delay):
                break
        if self._restore.done.is_set():
            try:
                self.tick()  # a last tick, so readings that arrived before the stop are forecast
            except Exception:
                logger.exception("the last tick failed; saving what was learned all the same")
            self.learned.save(self.store)

    def tick(self) -> list[AlertEvent]:
        """Drain, forecast every ready machine in one batch, alert; returns the events.

        One tick at a time: the tick thread runs them, and a tool or test may run one too."""
        with self._lock:
            return self._tick()

    def _tick(self) -> list[AlertEvent]:
        started = time.perf_counter()
        now = time.time()
        self._drain(now)
        for machine_id in self._ingest.take_deaths():  # stale now, not after stale_after_s
            slot = self.store.slot_of.get(machine_id)
            if slot is not None:
                self.store.last_seen[slot] = 0.0
        self.policy.ensure_capacity(self.store.capacity)
        self.anomaly.ensure_capacity(self.store.capacity)
        batch = self.store.take_ready()
        events: list[AlertEvent] = []
        forecasts = self._forecast(batch.windows) if len(batch) else None
        if len(batch) and forecasts is None:
            # No forecast (the model failed): the readings still decide a critical, and
            # nothing the forecast would decide changes (see AlertPolicy.update).
            unknown = np.full((len(batch), self.anomaly.horizon), np.nan, dtype=np.float32)
            events = self._decide(batch, unknown, self.anomaly.score[batch.slots], now)
            self._emit(events, now)
        if forecasts is not None:
            self.sample_windows = batch.windows[:SAMPLE_WINDOWS].copy()
            self._tell_forecasts(batch.slots, batch.windows, forecasts, now)
            self._time_forecasts(batch.slots)
            latest = batch.windows[:, -1, 0]
            scores = self.anomaly.update(
                batch.slots, latest, self.store.last_seq[batch.slots], forecasts
            )
            events = self._decide(batch, forecasts, scores, now)
            self._emit(events, now)
            self._metrics.forecasts.inc(len(batch))
            self._export_machines(batch.slots, latest, forecasts, scores)
            p = self.policy
            self._metrics.set_times_to_threshold(
                self.store.machine_ids, batch.slots, p.eta_low_s, p.eta_s, p.eta_high_s
            )
            self._watch_drift(batch.slots, latest, forecasts, now)
        # After the export: a machine's per-machine series exist from its first scored tick.
        anomaly_on = self._anomaly_tick(now)
        self._metrics.batch_size.set(len(batch))
        self._metrics.machines.set(len(self.store))
        self._metrics.pending.set(self._ingest.waiting())
        used = len(self.store)
        ours = self._ours(self.store.last_seq[:used] >= 0)
        for severity, count in self.policy.firing_counts(used, ours).items():
            self._metrics.alerts_firing.labels(severity=severity).set(count)
        events += self._track_staleness(now)
        events += self._end_silences(now)
        if anomaly_on:
            self._publish_anomalies(now)
        self._drop_stale(now)
        self._metrics.ticks.inc()
        self._metrics.last_tick.set(now)
        self._metrics.tick_duration.observe(time.perf_counter() - started)
        if self._tick_listeners and forecasts is not None:
            self._notify_tick(batch.slots, batch.windows[:, -1, 0], forecasts)
        return events

    def _decide(
        self,
        batch: ReadyBatch,
        forecasts: NDArray[np.float32],
        scores: NDArray[np.float64],
        now: float,
    ) -> list[AlertEvent]:
        """The alert policy's decisions for the batch's machines."""
        interval = self.store.interval_s[batch.slots]
        interval = np.where(np.isnan(interval), DEFAULT_INTERVAL_S, interval)
        return self.policy.update(
            batch.slots,
            self.store.machine_ids,
            batch.windows[:, :, 0],
            forecasts,
            interval,
            now,
            scores,
            self.anomaly.spread(batch.slots),
            self.anomaly.noise_ratio(batch.slots),
            reading_ts=self.store.last_ts[batch.slots],
            appended=self.store.count[batch.slots],
            last_seq=self.store.last_seq[batch.slots],
        )

    def _forecast(self, windows: NDArray[np.float32]) -> NDArray[np.float32] | None:
        """The batch's forecasts, or None when the model raised: the tick goes on without them
        (a critical, stale alerts, anomaly alerts and silences need no forecast), and the
        failure is counted and logged, at most once a minute."""
        started = time.perf_counter()
        try:
            forecasts = self.forecaster.forecast(windows)
        except Exception as error:
            self._metrics.forecast_failures.inc()
            self._throttle.warning(
                "forecast-failed",
                "the forecast of %d machines failed (%s: %s); the tick goes on without it "
                "(see forewarn_forecast_failures_total)",
                len(windows),
                type(error).__name__,
                error,
            )
            return None
        self._metrics.forecast_duration.observe(time.perf_counter() - started)
        return forecasts

    def _tell_forecasts(
        self,
        slots: NDArray[np.int64],
        windows: NDArray[np.float32],
        forecasts: NDArray[np.float32],
        now: float,
    ) -> None:
        """Forecast the shadow model on the same windows and hand every model's forecasts to
        the forecasts listeners. A failing shadow is dropped; it never touches alerting."""
        if self.shadow is None and not self.forecast_listeners:
            return
        models = {"live": forecasts}
        if self.shadow is not None:
            try:
                shadow = self.shadow.forecast(windows)
                if shadow.shape != forecasts.shape:
                    raise ValueError(f"shadow forecasts have shape {shadow.shape}")
                models["shadow"] = shadow
            except Exception:
                logger.exception("the shadow model failed to forecast; dropping it")
                self.shadow = None
                self._metrics.shadow_active.set(0)
        tick = TickForecasts(
            slots, windows, self.store.last_seq[slots], models, self.store.machine_ids, now
        )
        for listener in self.forecast_listeners:
            listener(tick)

    def _drain(self, now: float) -> None:
        """Move the hand-off into the window store, then clean up after evictions.

        A slot reused for a new machine starts with the policy's and the scorer's state reset,
        and the evicted machine's metric series go, so neither memory nor Prometheus
        cardinality grows with the number of machine ids ever seen.
        """
        store = self.store
        readings = self._ingest.take()
        appended = store.append_many(readings, now)
        accepted = appended.accepted
        self._metrics.readings.inc(int(accepted.sum()))
        if self.recorder is not None:
            self.recorder.record(readings, accepted)
        self._report_refused(readings, appended.rejected)
        received = np.fromiter((r.received for r in readings), np.float64, len(readings))
        # Timed: readings a forecast this tick can use (made here, by tests or tools: no time).
        timed = appended.in_window & (received > 0)
        self._received_slots = appended.slots[timed]
        self._received_at = received[timed]
        stamped = received[received > 0]
        oldest = time.monotonic() - float(stamped.min()) if len(stamped) else 0.0
        self._metrics.pending_oldest_age.set(oldest)
        evicted_ids, evicted_slots, evicted_heard = store.take_evicted()
        self._evict(evicted_ids, evicted_slots, evicted_heard, now)
        if self.anomaly_alerts is not None:
            self._score_sensors(readings, appended.slots, accepted)

    def _evict(
        self,
        evicted_ids: list[str],
        evicted_slots: NDArray[np.int64],
        evicted_heard: list[bool],
        now: float,
    ) -> None:
        """Retire evicted machines' alerts and forget their per-slot state and series."""
        store = self.store
        if evicted_ids:
            self.policy.ensure_capacity(store.capacity)
            self.anomaly.ensure_capacity(store.capacity)
            # An evicted machine that was alerting would otherwise stay "firing" in its
            # retained alert forever: say it is stale before its slot is handed over (held
            # back while the machine is silenced, and published when the silence ends). Not
            # for a machine this agent never heard (known only from a restored alert): under
            # topic sharding its alerts are another agent's to publish.
            self._emit(
                [
                    event
                    for machine_id, slot, heard in zip(
                        evicted_ids, evicted_slots.tolist(), evicted_heard, strict=True
                    )
                    if self._ours(heard)
                    and (event := self.policy.retire(slot, machine_id, now)) is not None
                ],
                now,
                retiring=True,
            )
            self.policy.reset(evicted_slots)
            self.anomaly.reset(evicted_slots)
            if self.drift is not None:
                self.drift.ensure_capacity(store.capacity)
                self.drift.reset(evicted_slots)
            if self.anomaly_alerts is not None:
                self._retire_anomalies(evicted_ids, evicted_slots, evicted_heard, now)
            for listener in self.eviction_listeners:
                listener(evicted_slots)
            for machine_id in evicted_ids:
                self._metrics.drop_machine(machine_id)
            self._metrics.machines_evicted.inc(len(evicted_ids))
            self._throttle.warning(
                "evicted",
                "evicted %d least recently seen machines (max_machines %d reached), e.g. %r",
                len(evicted_ids),
                store.max_machines,
                evicted_ids[0],
            )

    def _retire_anomalies(
        self,
        evicted_ids: list[str],
        evicted_slots: NDArray[np.int64],
        evicted_heard: list[bool],
        now: float,
    ) -> None:
        """Resolve the anomaly alert of each evicted machine whose subscribers were told it
        fires (else its retained message would say "firing" for ever), through the silence
        rules as the overheat alert's "stale": a silenced machine's resolution is counted and
        held back until the silence ends. Then forget the slots' anomaly state."""
        alerts = self.anomaly_alerts
        assert alerts is not None
        alerts.ensure_capacity(self.store.capacity)
        for machine_id, slot, heard in zip(
            evicted_ids, evicted_slots.tolist(), evicted_heard, strict=True
        ):
            if not (alerts.announced[slot] and self._ours(heard)):
                continue
            alerts.state.firing[slot] = False
            resolution = alerts.event(slot, machine_id, now, reason="evicted")
            if self._silences.silenced(machine_id, now):
                self._metrics.anomaly_alerts_silenced.inc()
                logger.info("silenced: %s", resolution.line())
                self._held_anomalies[machine_id] = resolution
            else:
                self._publisher.publish_anomaly(resolution)
        alerts.reset(evicted_slots)

    def _score_sensors(
        self, readings: list[Reading], slots: NDArray[np.int64], accepted: NDArray[np.bool_]
    ) -> None:
        """Score every feature of every reading this tick accepted, each machine's in order
        (not only its newest), and advance the anomaly alert state; a reading whose machine
        lost its slot later in the same drain is not scored."""
        alerts = self.anomaly_alerts
        assert alerts is not None
        alerts.ensure_capacity(self.store.capacity)
        ids = self.store.machine_ids
        index = [
            i for i in np.flatnonzero(accepted).tolist() if ids[slots[i]] == readings[i].machine_id
        ]
        if not index:
            return
        values = np.array([readings[i].values for i in index], dtype=np.float64)
        alerts.score_readings(slots[index], values)

    def _anomaly_tick(self, now: float) -> bool:
        """Apply re-baseline commands, export the scored machines' scores and count firing
        anomaly alerts; False when ``anomaly.enabled`` is off."""
        alerts = self.anomaly_alerts
        if alerts is None:
            return False
        if self._rebaselines is not None:
            self._apply_rebaselines(self._rebaselines.take())
        scored = alerts.take_scored()
        ids = self.store.machine_ids
        self._anomaly_changed = alerts.take_changed()
        alerts.open_ids(self._anomaly_changed, ids, now)
        per_sensor = self._settings.anomaly.sensor_metrics
        for slot, score in zip(scored.tolist(), alerts.rarity[scored].tolist(), strict=True):
            self._metrics.set_machine_sensor_anomaly(ids[slot], score)
            if per_sensor:
                self._metrics.set_machine_sensor_scores(
                    ids[slot],
                    dict(zip(alerts.features, alerts.sensor_score[slot].tolist(), strict=True)),
                )
        used = len(self.store)
        ours = self._ours(self.store.last_seq[:used] >= 0)
        self._metrics.anomaly_alerts_firing.set(alerts.firing_count(used, ours))
        return True

    def _publish_anomalies(self, now: float) -> list[AnomalyEvent]:
        """Tell subscribers each machine's anomaly state where it differs from what they were
        last told, unless an overheat incident is open for it (inhibited) or it is silenced:
        those changes are counted once, when they happen, and published once nothing holds
        them back. With a shared fleet, only machines this agent hears."""
        alerts = self.anomaly_alerts
        assert alerts is not None
        used = len(self.store)
        ids = self.store.machine_ids
        held = self.policy.state[:used] != OK
        heard = self.store.last_seq[:used] >= 0
        for slot in self._anomaly_changed.tolist():
            if held[slot]:
                self._metrics.anomaly_alerts_inhibited.inc()
            elif self._silences.silenced(ids[slot], now):
                self._metrics.anomaly_alerts_silenced.inc()
        events = []
        for slot in alerts.out_of_sync(used).tolist():
            if held[slot] or not self._ours(bool(heard[slot])):
                continue
            if self._silences.silenced(ids[slot], now):
                continue
            event = alerts.event(slot, ids[slot], now)
            self._publisher.publish_anomaly(event)
            logger.info("%s", event.line())
            events.append(event)
        return events

    def _apply_rebaselines(self, commands: list[tuple[str, float, str]]) -> None:
        """Re-baseline each commanded machine once per command (its ``at``)."""
        alerts = self.anomaly_alerts
        assert alerts is not None
        for machine_id, at, reason in commands:
            applied = max(
                alerts.rebaselined_at.get(machine_id, -np.inf),
                alerts.told_at.get(machine_id, -np.inf),
            )
            if at <= applied:
                continue  # applied before (a retained command read again after a restart)
            alerts.rebaselined_at[machine_id] = at
            slot = self.store.slot_of.get(machine_id)
            if slot is None:
                continue  # not known here: it learns its normal from scratch anyway
            alerts.ensure_capacity(self.store.capacity)
            alerts.rebaseline(slot, reason)
            self._metrics.anomaly_rebaselines.inc()
            logger.info("re-baselined %s: its normal is learned afresh (%s)", machine_id, reason)

    def resume(self, restored: list[RestoredAlert]) -> None:
        """Start-up, before the first tick: the machines of the saved state (this agent's own)
        take their slots first, then the retained alert states attach to those or fill the
        free ones, then the retained anomaly states, then what was learned per machine is read
        into its slot (:mod:`agent.learned`). Nothing evicts: under sharding most retained
        messages are other agents' machines, which must not take the place of this agent's."""
        placed = self.learned.reserve(self.store)
        if placed:
            logger.info("placed %d machine(s) of the saved state first", placed)
        self._restore.resume(
            restored, self.store, self.policy, self.anomaly, then=self._restore_learned
        )

    def _restore_learned(self) -> None:
        """After the alert states: the anomaly alerts' states, then what was learned per
        machine (:mod:`agent.learned`)."""
        self._resume_anomalies()
        self.learned.load(self.store)
        self.policy.ensure_capacity(self.store.capacity)
        self.anomaly.ensure_capacity(self.store.capacity)

    def _resume_anomalies(self) -> None:
        """Resume the retained anomaly alert states read back at start-up, each into its
        machine's slot or a free one (never evicting; one that finds none is not resumed)."""
        if self.anomaly_alerts is None:
            return
        no_room = 0
        for restored in self._restore.anomalies:
            slot = self.store.slot_if_room(restored.machine_id)
            if slot is None:
                no_room += 1
                continue
            self.anomaly_alerts.ensure_capacity(self.store.capacity)
            self.anomaly_alerts.restore(slot, restored)
        warn_no_room("anomaly alert", no_room, self.store.max_machines)
        self.policy.ensure_capacity(self.store.capacity)
        self.anomaly.ensure_capacity(self.store.capacity)

    def _watch_drift(
        self,
        slots: NDArray[np.int64],
        latest: NDArray[np.float32],
        forecasts: NDArray[np.float32],
        now: float,
    ) -> None:
        """Compare the machines' new readings with the forecasts made for them (agent.drift)."""
        if self.drift is None:
            return
        store = self.store
        self.drift.ensure_capacity(store.capacity)
        self.drift.update(slots, latest, store.last_seq[slots], store.restarts[slots], forecasts)
        export_drift(self.drift, self._metrics, store.machine_ids, store.slot_of, now)

    def _report_refused(self, readings: list[Reading], refused: list[tuple[int, str]]) -> None:
        """Count refused readings by reason, one counter update and one log line per reason."""
        tally = Batch()
        for index, reason in refused:
            r = readings[index]
            tally.reject(
                reason, "" if reason in tally.details else f"{r.machine_id} seq {r.seq} ts {r.ts}"
            )
        self._ingest.reject_tally(tally)

    def _time_forecasts(self, slots: NDArray[np.int64]) -> None:
        """Observe, for each reading this tick took in whose machine was forecast, the time
        from its arrival to now (the forecast's end)."""
        if not len(self._received_slots):
            return
        forecast = np.zeros(self.store.capacity, dtype=np.bool_)
        forecast[slots] = True
        used = forecast[self._received_slots]
        self._metrics.reading_to_forecast.observe_many(time.monotonic() - self._received_at[used])

    def _export_machines(
        self,
        slots: NDArray[np.int64],
        latest: NDArray[np.float32],
        forecasts: NDArray[np.float32],
        scores: NDArray[np.float64],
    ) -> None:
        peaks = forecasts.max(axis=1)
        ids = self.store.machine_ids
        states = self.policy.state[slots]
        for slot, temperature, peak, score, state in zip(
            slots.tolist(),
            latest.tolist(),
            peaks.tolist(),
            scores.tolist(),
            states.tolist(),
            strict=True,
        ):
            self._metrics.set_machine(ids[slot], temperature, peak, score, state)

    def _track_staleness(self, now: float) -> list[AlertEvent]:
        """Publish "stale" for machines that stopped reporting, and its end when they resume."""
        used = len(self.store)
        silent = self.store.stale(now)
        was_stale = self.policy.stale[:used]
        newly = silent[~was_stale[silent]]
        quiet = np.zeros(used, dtype=np.bool_)
        quiet[silent] = True
        # A slot that has not reported since it was restored as stale is still stale.
        reported = self.store.last_seq[:used] >= 0
        resumed = np.flatnonzero(was_stale & ~quiet & reported)
        ids = self.store.machine_ids
        events = self.policy.mark_stale(newly, ids, self.store.latest(newly)[:, 0], now)
        events += self.policy.mark_resumed(resumed, ids, self.store.latest(resumed)[:, 0], now)
        self._emit(events, now)
        return events

    def _emit(self, events: list[AlertEvent], now: float, retiring: bool = False) -> None:
        """Publish alert changes, except for silenced machines, whose changes are only counted.

        ``retiring``: the messages of machines leaving their slots (evicted). A silenced one's
        is held back and published when the silence ends (:meth:`_release_held`): its machine
        is gone from the store by then, and nothing else would correct its retained alert.
        """
        for event in events:
            if self._silences.silenced(event.machine_id, now):
                self._metrics.alerts_silenced.labels(severity=event.severity).inc()
                logger.info("silenced: %s", event.line())
                if retiring:
                    self._held_alerts[event.machine_id] = event
            else:
                self._publisher.publish(event)
            for listener in self._alert_listeners:
                listener(event)

    def _ours(self, heard: Heard) -> Heard:
        """Whether machines are this agent's to publish and count, from whether it has heard
        them (a bool or a boolean array): all of them for an agent that takes the whole fleet;
        with narrowed or shared subscriptions only the ones it hears, since a machine known
        only from a restored retained alert may report to another agent."""
        return heard | (not self._shares_fleet)

    def _release_held(self, now: float) -> None:
        """Publish the messages of evicted machines held back by a silence that has ended
        (lifted or run out), before anything the machine's current state says."""
        for held in (self._held_alerts, self._held_anomalies):
            for machine_id in [m for m in held if not self._silences.silenced(m, now)]:
                event = held.pop(machine_id)
                if isinstance(event, AnomalyEvent):
                    self._publisher.publish_anomaly(event)
                else:
                    self._publisher.publish(event)
                logger.info("silence over: %s", event.line())

    def _end_silences(self, now: float) -> list[AlertEvent]:
        """When a silence ends on an alerting machine, publish where the machine stands now
        (after what its eviction during the silence held back)."""
        if self._held_alerts or self._held_anomalies:
            self._release_held(now)
        events = []
        for machine_id in self._silences.ended(now):
            slot = self.store.slot_of.get(machine_id)
            # With a shared fleet, only machines this agent hears: a restored alert of a
            # machine that reports to another agent is that agent's to republish.
            if slot is not None and self._ours(self.store.last_seq[slot] >= 0):
                temperature = float(self.store.latest(np.array([slot]))[0, 0])
                event = self.policy.current_event(slot, machine_id, temperature, now)
                if event is not None:
                    events.append(event)
        self._emit(events, now)
        self._metrics.machines_silenced.set(self._silences.active_count(now))
        return events

    def _drop_stale(self, now: float) -> None:
        """Drop the series of machines that went stale (the window store's stale rule).

        Only machines that have series are looked at (at most ``max_machine_series``), so the
        check costs the same with a hundred thousand silent machines in the store.
        """
        if now < self._next_stale_check:
            return
        self._next_stale_check = now + min(5.0, self._settings.agent.stale_after_s / 2)
        store = self.store
        cutoff = now - store.stale_after_s
        for machine_id in self._metrics.series_machines():
            slot = store.slot_of.get(machine_id)
            if slot is None or store.last_seen[slot] < cutoff:
                self._metrics.drop_machine(machine_id)

    def _notify_tick(
        self, slots: NDArray[np.int64], latest: NDArray[np.float32], forecasts: NDArray[np.float32]
    ) -> None:
        ids = self.store.machine_ids
        peaks = forecasts.max(axis=1)
        rows = [
            MachineView(
                machine_id=ids[slot],
                temperature_c=float(latest[i]),
                forecast_c=float(peaks[i]),
                state=STATE_NAMES[int(self.policy.state[slot])],
            )
            for i, slot in enumerate(slots.tolist())
        ]
        for listener in self._tick_listeners:
            listener(rows)
