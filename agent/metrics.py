"""The agent's Prometheus metrics, all under the ``forewarn_`` prefix and in base units.

Every labelled counter is pre-initialised over its fixed label set, so a dashboard shows zeros
instead of gaps. Per-machine series exist only for a few gauges and only for at most
``max_machine_series`` machines, and are removed when a machine goes stale or is evicted.
"""

from __future__ import annotations

import contextlib

import numpy as np
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from agent.alerts import SEVERITIES
from agent.bulk_histogram import BulkHistogram
from wire.reading import REJECT_REASONS

TICK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
"""Reading to forecast: a reading waits for the next tick (up to ``agent.tick_interval_s``,
0.25 s by default) and then for the tick's forecast, so the buckets are finest below a second."""


RELOAD_REASONS = ("load", "features", "window", "horizon", "forecast", "path", "command")
"""Why a model was refused while running (forewarn_model_reload_failures_total)."""


class AgentMetrics:
    """Owns one registry; tests build their own instance so nothing leaks between them."""

    def __init__(self, registry: CollectorRegistry | None = None, max_machine_series: int = 500):
        self.registry = registry or CollectorRegistry()
        self.max_machine_series = max_machine_series
        r = self.registry
        self.readings = Counter(
            "forewarn_readings", "Readings accepted into a machine's window.", registry=r
        )
        self.rejected = Counter(
            "forewarn_readings_rejected",
            "Readings rejected, by reason.",
            ["reason"],
            registry=r,
        )
        for reason in REJECT_REASONS:
            self.rejected.labels(reason=reason)
        self.forecasts = Counter(
            "forewarn_forecasts", "Machine forecasts made (one per machine per tick).", registry=r
        )
        self.ticks = Counter("forewarn_ticks", "Forecast ticks run.", registry=r)
        self.forecast_failures = Counter(
            "forewarn_forecast_failures",
            "Ticks whose batched forecast raised: their machines got no forecast (readings "
            "over the threshold still paged a critical; stale and anomaly alerts went on).",
            registry=r,
        )
        self.tick_duration = Histogram(
            "forewarn_tick_duration_seconds",
            "Wall time of one tick: drain, gather, forecast, alert policy, publish.",
            buckets=TICK_BUCKETS,
            registry=r,
        )
        self.forecast_duration = Histogram(
            "forewarn_forecast_duration_seconds",
            "Wall time of the batched model forward of one tick.",
            buckets=TICK_BUCKETS,
            registry=r,
        )
        self.batch_size = Gauge(
            "forewarn_batch_size", "Machines forecast in the last tick's batch.", registry=r
        )
        self.machines = Gauge("forewarn_machines", "Machines tracked.", registry=r)
        self.machines_evicted = Counter(
            "forewarn_machines_evicted",
            "Machines evicted, least recently seen first, to make room for new ones "
            "(agent.max_machines reached).",
            registry=r,
        )
        self.alerts = Counter(
            "forewarn_alerts",
            "Alerts raised (firing), by severity.",
            ["severity"],
            registry=r,
        )
        self.alerts_resolved = Counter(
            "forewarn_alerts_resolved", "Alerts resolved, by severity.", ["severity"], registry=r
        )
        self.alerts_silenced = Counter(
            "forewarn_alerts_silenced",
            "Alert changes computed but not published: the machine was silenced.",
            ["severity"],
            registry=r,
        )
        self.machines_silenced = Gauge(
            "forewarn_machines_silenced", "Machines under a maintenance silence now.", registry=r
        )
        self.alerts_firing = Gauge(
            "forewarn_alerts_firing", "Machines in each alert state now.", ["severity"], registry=r
        )
        for severity in SEVERITIES:
            self.alerts.labels(severity=severity)
            self.alerts_resolved.labels(severity=severity)
            self.alerts_silenced.labels(severity=severity)
            self.alerts_firing.labels(severity=severity)
        self.alerts_publish_failed = Counter(
            "forewarn_alert_publish_failures",
            "Alert messages the MQTT client refused to queue.",
            registry=r,
        )
        self.pending = Gauge(
            "forewarn_pending_readings",
            "Readings waiting in the hand-off for the next tick, as the last tick left it "
            "(single messages are decoded by the tick, so these include any it will reject).",
            registry=r,
        )
        self.pending_oldest_age = Gauge(
            "forewarn_pending_oldest_age_seconds",
            "Age of the oldest reading the last tick took from the hand-off (0: it took none): "
            "above the tick interval, readings queue faster than ticks take them.",
            registry=r,
        )
        self.reading_to_forecast = BulkHistogram(
            "forewarn_reading_to_forecast_seconds",
            "From a reading's arrival (paho handing the message to the agent) to the end of "
            "the forecast that used it: the wait for a tick, the decoding and the forecast; "
            "readings of a machine whose window is not full yet are not counted.",
            LATENCY_BUCKETS,
            registry=r,
        )
        self.mqtt_connected = Gauge(
            "forewarn_mqtt_connected", "1 while connected to the broker, else 0.", registry=r
        )
        # Faults: what the agent rode out, and what it could not deliver.
        self.mqtt_disconnects = Counter(
            "forewarn_mqtt_disconnects", "Times the connection to the broker was lost.", registry=r
        )
        self.mqtt_sessions_lost = Counter(
            "forewarn_mqtt_sessions_lost",
            "Reconnections to a broker that had kept no session for the agent: readings "
            "published while it was away were not queued for it.",
            registry=r,
        )
        self.alerts_queued = Gauge(
            "forewarn_alerts_queued",
            "Alert messages not yet acknowledged by the broker (held while it is unreachable, "
            "or in flight).",
            registry=r,
        )
        self.alerts_dropped = Counter(
            "forewarn_alerts_dropped",
            "Alert messages given up: the queue was full, or the agent stopped before the "
            "broker acknowledged them.",
            registry=r,
        )
        self.ticks_skipped = Counter(
            "forewarn_ticks_skipped",
            "Ticks skipped because the previous tick overran the tick interval.",
            registry=r,
        )
        self.callback_errors = Counter(
            "forewarn_callback_errors",
            "Exceptions caught in MQTT callbacks, by callback.",
            ["callback"],
            registry=r,
        )
        for callback in ("connect", "disconnect", "message", "silence", "sparkplug", "model"):
            self.callback_errors.labels(callback=callback)
        self.last_tick = Gauge(
            "forewarn_last_tick_timestamp_seconds",
            "Unix time of the last finished tick.",
            registry=r,
        )
        self.model_info = Info("forewarn_model", "The model being served.", registry=r)
        self.build_info = Info("forewarn_build", "forewarn's version.", registry=r)
        self.model_reloads = Counter(
            "forewarn_model_reloads",
            "Model loads asked for while running (SIGHUP, a changed file, a command), by role "
            "(live, shadow) and result (swapped, unchanged, refused).",
            ["role", "result"],
            registry=r,
        )
        self.model_reload_failures = Counter(
            "forewarn_model_reload_failures",
            "Models refused while running, by reason (load, features, window, horizon, "
            "forecast, path, command); the model serving before keeps serving.",
            ["reason"],
            registry=r,
        )
        for reason in RELOAD_REASONS:
            self.model_reload_failures.labels(reason=reason)
        self.shadow_info = Info(
            "forewarn_shadow", "The shadow model forecast beside the served one.", registry=r
        )
        self.shadow_active = Gauge(
            "forewarn_shadow_active", "1 while a shadow model is loaded.", registry=r
        )
        self.shadow_compared = Counter(
            "forewarn_shadow_compared_readings",
            "Readings that both the served and the shadow model forecast one step ahead.",
            registry=r,
        )
        self.shadow_squared_error = Counter(
            "forewarn_shadow_squared_error_celsius2",
            "Sum of squared 1-step-ahead forecast errors over the compared readings, by model "
            "(live, shadow): sqrt(rate(this)/rate(forewarn_shadow_compared_readings_total)) is "
            "each model's RMSE over any range.",
            ["model"],
            registry=r,
        )
        self.shadow_rmse = Gauge(
            "forewarn_shadow_rmse_celsius",
            "Rolling RMSE of the 1-step-ahead forecast over about the last "
            "10,000 compared readings, by model (live, shadow), on the same readings.",
            ["model"],
            registry=r,
        )
        self.machine_temperature = Gauge(
            "forewarn_machine_temperature_celsius",
            "Latest temperature reading per machine (capped number of machines).",
            ["machine_id"],
            registry=r,
        )
        self.machine_forecast = Gauge(
            "forewarn_machine_forecast_celsius",
            "Highest forecast temperature within the horizon per machine (capped).",
            ["machine_id"],
            registry=r,
        )
        self.threshold = Gauge(
            "forewarn_alert_threshold_celsius",
            "The default overheat threshold of the alert policy.",
            registry=r,
        )
        self.machine_anomaly = Gauge(
            "forewarn_machine_anomaly_score",
            "Anomaly score in [0, 1] per machine, from its own forecast residuals (capped).",
            ["machine_id"],
            registry=r,
        )
        self.machine_sensor_anomaly = Gauge(
            "forewarn_machine_sensor_anomaly_score",
            "Calibrated anomaly score in [0, 1] per machine over all its sensors and their "
            "relation, as rare as its last reading is (anomaly.enabled; capped).",
            ["machine_id"],
            registry=r,
        )
        self.anomaly_alerts_firing = Gauge(
            "forewarn_anomaly_alerts_firing",
            "Machines whose anomaly alert is firing (anomaly.enabled).",
            registry=r,
        )
        self.anomaly_alerts = Counter(
            "forewarn_anomaly_alerts",
            "Anomaly alerts published firing on the anomaly topic (anomaly.enabled).",
            registry=r,
        )
        self.anomaly_alerts_resolved = Counter(
            "forewarn_anomaly_alerts_resolved",
            "Anomaly alerts published resolved (anomaly.enabled).",
            registry=r,
        )
        self.anomaly_alerts_inhibited = Counter(
            "forewarn_anomaly_alerts_inhibited",
            "Anomaly alert changes held back, not published: an overheat incident was open "
            "for the machine (its current anomaly state is published once it closes).",
            registry=r,
        )
        self.anomaly_alerts_silenced = Counter(
            "forewarn_anomaly_alerts_silenced",
            "Anomaly alert changes computed but not published: the machine was silenced.",
            registry=r,
        )
        self.anomaly_rebaselines = Counter(
            "forewarn_anomaly_rebaselines",
            "Machines whose learned normal was re-baselined by an operator's command.",
            registry=r,
        )
        self.machine_sensor_score = Gauge(
            "forewarn_machine_sensor_score",
            "Calibrated anomaly score in [0, 1] per machine and sensor (anomaly.sensor_metrics; "
            "capped like the per-machine series).",
            ["machine_id", "sensor"],
            registry=r,
        )
        self.machine_alert_state = Gauge(
            "forewarn_machine_alert_state",
            "Alert state per machine: 0 ok, 1 warning, 2 critical (capped).",
            ["machine_id"],
            registry=r,
        )
        self.machine_time_to_threshold = Gauge(
            "forewarn_machine_time_to_threshold_seconds",
            "Seconds until a machine's reading is predicted to reach its threshold (capped): "
            'bound="estimate", and "low" and "high" its 10-90 % interval; NaN when no crossing '
            "is predicted (or the interval is open).",
            ["machine_id", "bound"],
            registry=r,
        )
        self.machine_model_drift = Gauge(
            "forewarn_machine_model_drift_ratio",
            "Drift ratio per machine: its rolling next-step forecast RMSE over persistence's, "
            "divided by the same on the model's test split; about 1 while the model fits the "
            "machine (capped; drift.enabled).",
            ["machine_id"],
            registry=r,
        )
        self.model_drift_ratio = Gauge(
            "forewarn_model_drift_ratio",
            "Quantiles of the drift ratio over the machines that have one (quantile 1: the "
            "worst machine); absent while none has.",
            ["quantile"],
            registry=r,
        )
        self.model_drift_machines = Gauge(
            "forewarn_model_drift_machines",
            "Machines with a drift ratio (enough readings compared with their forecasts).",
            registry=r,
        )
        self.model_test_skill = Gauge(
            "forewarn_model_test_skill",
            "The served model's next-step RMSE over persistence's on its test split, the drift "
            "ratio's reference (NaN: the model carries none, and no ratio is exported).",
            registry=r,
        )
        self.recording_readings = Counter(
            "forewarn_recording_readings", "Readings written to the recording.", registry=r
        )
        self.recording_bytes = Counter(
            "forewarn_recording_bytes", "Bytes written to the recording's files.", registry=r
        )
        self.recording_files_dropped = Counter(
            "forewarn_recording_files_dropped",
            "Recording files deleted, oldest first, to keep the folder under recording.max_bytes.",
            registry=r,
        )
        self.recording_dropped = Counter(
            "forewarn_recording_readings_dropped",
            "Accepted readings not recorded, by reason: backlog (the writer fell behind), "
            "error (a file could not be written), too_big (one tick's block is larger than "
            "recording.max_bytes).",
            ["reason"],
            registry=r,
        )
        for reason in ("backlog", "error", "too_big"):
            self.recording_dropped.labels(reason=reason)
        self.recording_folder_bytes = Gauge(
            "forewarn_recording_folder_bytes",
            "Bytes the recording's files take in its folder now.",
            registry=r,
        )
        self._per_machine = (
            self.machine_temperature,
            self.machine_forecast,
            self.machine_anomaly,
            self.machine_alert_state,
        )
        self._machine_series: set[str] = set()
        self._sensor_series: set[str] = set()
        self._drift_series: set[str] = set()
        self._per_sensor: dict[str, tuple[str, ...]] = {}

    def set_machine(
        self,
        machine_id: str,
        temperature: float,
        forecast: float,
        anomaly_score: float = 0.0,
        alert_state: int = 0,
    ) -> None:
        """Update one machine's gauges, unless the cap on per-machine series is reached."""
        if machine_id not in self._machine_series:
            if len(self._machine_series) >= self.max_machine_series:
                return
            self._machine_series.add(machine_id)
        self.machine_temperature.labels(machine_id=machine_id).set(temperature)
        self.machine_forecast.labels(machine_id=machine_id).set(forecast)
        self.machine_anomaly.labels(machine_id=machine_id).set(anomaly_score)
        self.machine_alert_state.labels(machine_id=machine_id).set(alert_state)

    def set_machine_sensor_anomaly(self, machine_id: str, score: float) -> None:
        """One machine's calibrated score, only for machines that already have series."""
        if machine_id in self._machine_series:
            self._sensor_series.add(machine_id)
            self.machine_sensor_anomaly.labels(machine_id=machine_id).set(score)

    def set_times_to_threshold(
        self,
        machine_ids: list[str],
        slots: NDArray[np.int64],
        low_s: NDArray[np.float64],
        estimate_s: NDArray[np.float64],
        high_s: NDArray[np.float64],
    ) -> None:
        """The time to threshold of the machines at ``slots`` that have series (per-slot
        arrays, NaN for none); like :meth:`set_machine`, nothing beyond the series cap."""
        gauge = self.machine_time_to_threshold
        for slot in slots.tolist():
            machine_id = machine_ids[slot]
            if machine_id in self._machine_series:
                gauge.labels(machine_id, "low").set(low_s[slot])
                gauge.labels(machine_id, "estimate").set(estimate_s[slot])
                gauge.labels(machine_id, "high").set(high_s[slot])

    def set_machine_drift(self, machine_id: str, ratio: float) -> None:
        """One machine's drift ratio, only for machines that already have series."""
        if machine_id in self._machine_series:
            self._drift_series.add(machine_id)
            self.machine_model_drift.labels(machine_id=machine_id).set(ratio)

    def clear_machine_drift(self, machine_id: str) -> None:
        """Remove a machine's drift ratio (it has none now: a new model is warming up)."""
        if machine_id in self._drift_series:
            self._drift_series.discard(machine_id)
            self.machine_model_drift.remove(machine_id)

    def set_machine_sensor_scores(self, machine_id: str, scores: dict[str, float]) -> None:
        """One machine's per-sensor scores, only for machines that already have series."""
        if machine_id in self._machine_series:
            self._sensor_series.add(machine_id)
            self._per_sensor[machine_id] = tuple(scores)
            for sensor, score in scores.items():
                self.machine_sensor_score.labels(machine_id=machine_id, sensor=sensor).set(score)

    def series_machines(self) -> list[str]:
        """Machines that have per-machine series now (at most ``max_machine_series``)."""
        return list(self._machine_series)

    def drop_machine(self, machine_id: str) -> None:
        """Remove a machine's series (it went stale or was evicted), freeing room under the cap."""
        if machine_id in self._machine_series:
            self._machine_series.discard(machine_id)
            for gauge in self._per_machine:
                gauge.remove(machine_id)
            if machine_id in self._sensor_series:
                self._sensor_series.discard(machine_id)
                self.machine_sensor_anomaly.remove(machine_id)
                for sensor in self._per_sensor.pop(machine_id, ()):
                    self.machine_sensor_score.remove(machine_id, sensor)
            for bound in ("low", "estimate", "high"):
                # KeyError: never set, the machine had no forecast yet.
                with contextlib.suppress(KeyError):
                    self.machine_time_to_threshold.remove(machine_id, bound)
            self.clear_machine_drift(machine_id)
