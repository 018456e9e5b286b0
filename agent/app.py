"""The agent: constructs its parts, starts them, runs until told to stop, and stops them.

Threads, each with one job, each in the module that holds it:

* paho's network thread runs the MQTT callbacks of :mod:`agent.ingest`, which append each
  single reading's message, undecoded, to a bounded hand-off (a deque; a full one drops and
  counts ``overload``), and decode a gateway's batch or a Sparkplug B message and append its
  readings;
* the tick thread (:mod:`agent.tick`) decodes the single messages of the hand-off together
  (rejections counted by reason), stores every reading in the window store, runs one batched
  forecast over every machine with a full window and a new reading, advances the alert policy
  and publishes the changes (:mod:`agent.publish`);
* the HTTP thread (:mod:`agent.health`) serves /metrics and /healthz;
* a restore thread (:mod:`agent.restore`) reads the retained alert states back once at
  start-up (ticks wait for it);
* the watchdog thread (:mod:`agent.watchdog`) ends the agent (``failure`` set, exit status 1)
  when the network thread or the tick thread dies or stalls, so the agent is never a zombie
  that looks connected.

* the model thread (:mod:`agent.modelswap`) loads, checks and installs a new served or
  shadow model (SIGHUP, a changed file, a command) between two ticks.

One stop event ends them all; SIGINT/SIGTERM set it, SIGHUP reloads the model (see
``forewarn.cli``).
"""

from __future__ import annotations

import logging
import threading
import time

from agent import __version__
from agent.alerts import AlertEvent, AlertPolicy
from agent.anomaly import AnomalyScorer
from agent.anomaly_alert import AnomalyRule
from agent.anomaly_events import AnomalyAlerts
from agent.anomaly_sensors import ScorerParams, SensorScorer
from agent.drift import DriftWatch
from agent.health import MetricsServer
from agent.ingest import Ingest, batch_subscription
from agent.metrics import AgentMetrics
from agent.modelswap import ModelKeeper
from agent.publish import AlertPublisher, status_payload
from agent.rebaseline import RebaselineQueue
from agent.recording import Recorder
from agent.restore import AlertRestore
from agent.silence import SilenceBook
from agent.tick import AlertListener, MachineView, Ticker, TickListener
from agent.watchdog import Watchdog
from agent.window import WindowStore
from config.settings import Settings
from config.topics import model_command_topic, status_topic
from models.base import Forecaster
from models.skill import skill_reference
from wire.mapping import FieldMapping
from wire.mqtt import connect_options, make_client, network_thread
from wire.reading import Batch, Reading, ReadingDecoder
from wire.tls import check_broker

# The listener types and the rows a tick listener gets are part of the Agent's surface.
__all__ = ["Agent", "AlertListener", "MachineView", "TickListener"]

logger = logging.getLogger(__name__)


def _where(forecaster: object) -> str:
    """Where the model runs, for the start-up log: the device, and the CPU's thread count."""
    device = str(getattr(forecaster, "device", "cpu"))
    threads = getattr(forecaster, "threads", None)
    return f"{device} ({threads} thread(s))" if device == "cpu" and threads else device


class Agent:
    """The forewarn daemon. ``start`` returns once its threads run; ``stop`` ends them."""

    def __init__(
        self,
        settings: Settings,
        forecaster: Forecaster | None = None,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or AgentMetrics(
            max_machine_series=settings.metrics.max_machine_series
        )
        # The served model: the recorded promotion or the configured one (agent.modelswap).
        self.models = ModelKeeper(settings, self.metrics)
        if forecaster is None:
            forecaster = self.models.initial().forecaster
        else:
            self.models.adopt(forecaster)
        self.forecaster: Forecaster = forecaster
        features = len(self.forecaster.features)
        self.store = WindowStore(
            self.forecaster.window,
            features,
            settings.agent.max_machines,
            max_missing_readings=settings.agent.max_missing_readings,
            stale_after_s=settings.agent.stale_after_s,
            max_future_s=settings.agent.max_future_s,
        )
        self.policy = AlertPolicy(settings.alerts, self.store.capacity)
        self.anomaly = AnomalyScorer(self.forecaster.horizon, self.store.capacity)
        self.anomaly_alerts = anomaly_alerts(
            settings, tuple(self.forecaster.features), self.store.capacity
        )
        self.drift = drift_watch(settings, self.forecaster, self.store.capacity)
        self.recorder = (
            Recorder(settings.recording, self.forecaster.features, self.metrics)
            if settings.recording.enabled
            else None
        )
        # A mapping naming a feature this model lacks raises ConfigError: start-up stops.
        self.decoder = ReadingDecoder(
            settings.limits,
            self.forecaster.features,
            FieldMapping(settings.mapping.field_maps(), self.forecaster.features),
        )
        self.stop_event = threading.Event()
        self.alert_listeners: list[AlertListener] = []
        self.tick_listeners: list[TickListener] = []
        # Gateway batches (mqtt.batch_topic): many machines' readings per message, own callback.
        batch_filter = batch_subscription(settings.mqtt)

        mqtt_settings = settings.mqtt
        prefix = mqtt_settings.topic_prefix
        self.client = make_client(
            mqtt_settings, mqtt_settings.client_id, persistent=mqtt_settings.persistent_session
        )
        self.client.will_set(
            status_topic(prefix, mqtt_settings.client_id),
            status_payload("offline", mqtt_settings.client_id, __version__, "connection lost"),
            qos=1,
            retain=True,
        )
        self.silences = SilenceBook(prefix)
        self.publisher = AlertPublisher(
            self.client,
            prefix,
            self.forecaster.version,
            self.metrics,
            max_queued=mqtt_settings.max_queued_alerts,
            alerts=mqtt_settings.alerts_template,
            anomaly=mqtt_settings.anomaly_template,
        )
        self.rebaselines = RebaselineQueue(prefix) if self.anomaly_alerts is not None else None
        self.ingest = Ingest(
            settings,
            self.client,
            self.decoder,
            self.publisher,
            self.silences,
            self.metrics,
            self.stop_event,
            batch_filter,
            self.rebaselines,
        )
        self.sparkplug = self.ingest.sparkplug
        self.ingest.add_command(
            model_command_topic(prefix, mqtt_settings.client_id),
            "model",
            self.models.handle_command,
        )
        self.restore = AlertRestore(settings, self.stop_event)
        self.ticker = Ticker(
            settings,
            forecaster=self.forecaster,
            store=self.store,
            policy=self.policy,
            anomaly=self.anomaly,
            anomaly_alerts=self.anomaly_alerts,
            rebaselines=self.rebaselines,
            ingest=self.ingest,
            restore=self.restore,
            publisher=self.publisher,
            silences=self.silences,
            metrics=self.metrics,
            stop_event=self.stop_event,
            alert_listeners=self.alert_listeners,
            tick_listeners=self.tick_listeners,
            drift=self.drift,
            recorder=self.recorder,
        )
        self.watchdog = Watchdog(
            settings,
            ingest=self.ingest,
            ticker=self.ticker,
            restore=self.restore,
            publisher=self.publisher,
            metrics=self.metrics,
            stop_event=self.stop_event,
        )
        self.http = MetricsServer(
            settings.metrics.host, settings.metrics.port, self.metrics.registry, self.health
        )
        self.metrics.build_info.info({"version": __version__})
        self.metrics.threshold.set(settings.alerts.threshold_c)
        self.models.on_version = self._serve_version
        self.models.attach(self.ticker)
        self._export_test_skill()

    def _serve_version(self, version: str) -> None:
        """After a swap (between two ticks): alerts carry the new model's version."""
        self.forecaster = self.ticker.forecaster
        self.publisher.set_model_version(version)
        if self.drift is not None:
            # Every machine's ratio starts afresh against the new model's own test skill.
            reference = skill_reference(self.forecaster)
            if reference is None:
                logger.warning(
                    "model %s carries no test-split RMSE (drift_reference): no drift ratio is "
                    "exported while it serves",
                    version,
                )
            self.drift.use_model(reference)
            self._export_test_skill()

    def reload_model(self, why: str = "SIGHUP") -> None:
        """Read the served and the shadow model again from their files, off the tick thread."""
        self.models.request_reload(why)

    def _export_test_skill(self) -> None:
        reference = None if self.drift is None else self.drift.reference
        self.metrics.model_test_skill.set(float("nan") if reference is None else reference.skill)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        check_broker(self.settings.mqtt)  # a wrong CA or password stops start-up, loudly
        warm_up = getattr(self.forecaster, "warm_up", None)
        if callable(warm_up):
            warm_up()
        self.http.start()
        m = self.settings.mqtt
        logger.info(
            "agent %s serving %s (window %d, horizon %d) on %s; metrics on http://%s:%d/metrics",
            m.client_id,
            self.forecaster.version,
            self.forecaster.window,
            self.forecaster.horizon,
            _where(self.forecaster),
            self.settings.metrics.host,
            self.http.port,
        )
        if self.recorder is not None:
            self.recorder.start()
        self.restore.start()
        self.client.connect_async(
            m.host, m.port, m.keepalive_s, **connect_options(m, m.persistent_session)
        )
        self.client.loop_start()
        self.watchdog.network = network_thread(self.client)
        self.ticker.start()
        self.models.start(self.stop_event)
        self.watchdog.start()

    def run(self) -> int:
        """Start, block until the stop event is set, then stop; returns the exit status.

        1 when the watchdog stopped the agent (a service manager should restart it), else 0.
        """
        self.start()
        try:
            self.stop_event.wait()
        finally:
            self.stop()
        return 0 if self.failure is None else 1

    def stop(self, flush_timeout_s: float | None = None) -> None:
        """Finish the running tick, flush QoS 1 alerts, say offline, disconnect.

        The flush waits at most ``mqtt.flush_timeout_s`` (or ``flush_timeout_s``) for the
        broker's acknowledgements; what it did not get is logged and counted as dropped.
        """
        m = self.settings.mqtt
        timeout = m.flush_timeout_s if flush_timeout_s is None else flush_timeout_s
        self.stop_event.set()
        self.ticker.join(30 if self.failure is None else 1)
        if self.recorder is not None:
            self.recorder.stop()
        deadline = time.monotonic() + timeout
        if self.watchdog.network_alive(time.monotonic()):
            self.publisher.flush(timeout)
            if self.ingest.connected.is_set():
                info = self.publisher.publish_status(m.client_id, "offline", __version__, "stopped")
                try:
                    info.wait_for_publish(timeout=max(0.1, deadline - time.monotonic()))
                    confirmed = info.is_published()
                except (RuntimeError, ValueError):
                    confirmed = False
                if not confirmed:
                    logger.warning("could not confirm the offline status before disconnecting")
            self.client.disconnect()
            self.client.loop_stop()
        else:
            # A dead or stuck network thread sends nothing more; joining it could hang.
            self.publisher.flush(0)
        self.http.stop()
        logger.info("agent stopped%s", "" if self.failure is None else f" ({self.failure})")

    # --- what tools, tests and the command line ask of the running agent ---------------------

    @property
    def failure(self) -> str | None:
        """Why the watchdog ended the agent; None while it has not."""
        return self.watchdog.failure

    def health(self) -> tuple[bool, dict[str, object]]:
        """Healthy while connected, both threads alive and not stalled, alert states restored."""
        return self.watchdog.health()

    def tick(self) -> list[AlertEvent]:
        """Drain, forecast every ready machine in one batch, alert; returns the events.

        One tick at a time: the tick thread runs them, and a tool or test may run one too."""
        return self.ticker.tick()

    def hand_off(self, reading: Reading) -> None:
        """Queue a valid reading for the next tick, or drop and count it when overloaded."""
        self.ingest.hand_off(reading)

    def hand_off_batch(self, batch: Batch, topic: str) -> None:
        """Queue a batch's valid readings and count its rejections, one update per reason."""
        self.ingest.hand_off_batch(batch, topic)

    def reject_tally(self, tally: Batch, where: str = "") -> None:
        """Count a tally's rejections, one counter update and one log line per reason."""
        self.ingest.reject_tally(tally, where)

    def reject(self, reason: str, detail: str, count: int = 1) -> None:
        self.ingest.reject(reason, detail, count)

    @property
    def session_resumed(self) -> bool:
        """Whether the broker still had the agent's session at the last connect."""
        return self.ingest.session_resumed

    @property
    def connected(self) -> bool:
        return self.ingest.connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        """Wait until the agent is connected and has resumed its alert states (ready)."""
        deadline = time.monotonic() + timeout_s
        return self.restore.done.wait(timeout_s) and self.ingest.connected.wait(
            max(0.0, deadline - time.monotonic())
        )


def anomaly_alerts(
    settings: Settings, features: tuple[str, ...], capacity: int
) -> AnomalyAlerts | None:
    """The calibrated per-sensor scorer and its alert lifecycle, when ``anomaly.enabled``."""
    section = settings.anomaly
    if not section.enabled:
        return None
    params = ScorerParams(warm_up=section.warm_up_readings, memory=section.memory_readings)
    rule = AnomalyRule(
        fire_score=section.fire_score,
        confirm_rows=section.confirm_readings,
        clear_score=section.clear_score,
        clear_rows=section.clear_readings,
    )
    return AnomalyAlerts(SensorScorer(len(features), capacity, params), rule, features, capacity)


def drift_watch(settings: Settings, forecaster: Forecaster, capacity: int) -> DriftWatch | None:
    """The drift watch, when ``drift.enabled``; a model without the test figures of its
    training gets one that exports no ratio (said once in the log)."""
    if not settings.drift.enabled:
        return None
    reference = skill_reference(forecaster)
    if reference is None:
        logger.warning(
            "model %s carries no test-split RMSE (drift_reference): no drift ratio is exported; "
            "train it again with this version of forewarn train",
            forecaster.version,
        )
    section = settings.drift
    return DriftWatch(reference, section.memory_readings, section.warm_up_readings, capacity)
