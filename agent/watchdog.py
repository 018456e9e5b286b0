"""Liveness: whether the agent's threads still do their jobs, and ending it when they do not.

paho ends its network thread silently when a callback raises, and a tick can hang in the
forecaster; either would leave a zombie that still looks connected. So the agent is healthy
(``/healthz``) only while connected, with its alert states restored and both threads alive and
not stalled: the network thread not stuck in one of the agent's callbacks, the tick thread
ticking. The watchdog thread checks the same and, when a thread died or stalled, records the
``failure``, marks the agent disconnected and sets the stop event: the agent then stops with
exit status 1, so a service manager restarts it.
"""

from __future__ import annotations

import logging
import threading
import time

from agent.ingest import Ingest
from agent.metrics import AgentMetrics
from agent.publish import AlertPublisher
from agent.restore import AlertRestore
from agent.tick import Ticker
from config.settings import Settings

logger = logging.getLogger(__name__)


class Watchdog:
    """Judges the agent's health and, from its own thread (``start``), ends a failed agent.

    A thread counts as stalled after ``agent.stall_after_s`` plus one tick interval.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        ingest: Ingest,
        ticker: Ticker,
        restore: AlertRestore,
        publisher: AlertPublisher,
        metrics: AgentMetrics,
        stop_event: threading.Event,
    ) -> None:
        self._stall_after_s = settings.agent.stall_after_s
        self._stall_s = settings.agent.stall_after_s + settings.agent.tick_interval_s
        self._ingest = ingest
        self._ticker = ticker
        self._restore = restore
        self._publisher = publisher
        self._metrics = metrics
        self._stop_event = stop_event
        self.failure: str | None = None
        """Why the watchdog ended the agent; None while it has not."""
        self.network: threading.Thread | None = None
        """paho's network thread, once the client's loop runs."""

    def start(self) -> None:
        threading.Thread(target=self._watch, name="forewarn-watchdog", daemon=True).start()

    def health(self) -> tuple[bool, dict[str, object]]:
        """Healthy while connected, both threads alive and not stalled, alert states restored."""
        now = time.monotonic()
        tick_age = now - self._ticker.last_tick
        tick_thread = self._ticker.thread
        tick_alive = tick_thread is not None and tick_thread.is_alive() and tick_age < self._stall_s
        network_alive = self.network_alive(now)
        connected = self._ingest.connected.is_set()
        restored = self._restore.done.is_set()
        healthy = connected and tick_alive and network_alive and restored and not self.failure
        return healthy, {
            "mqtt_connected": connected,
            "tick_alive": tick_alive,
            "network_alive": network_alive,
            "alerts_restored": restored,
            "last_tick_age_s": round(tick_age, 3),
            "machines": len(self._ticker.store),
            "alerts_queued": self._publisher.pending(),
            "failure": self.failure,
        }

    def network_alive(self, now: float) -> bool:
        """paho's network thread runs and is not stuck in one of our callbacks."""
        since = self._ingest.callback_since
        return (
            self.network is not None
            and self.network.is_alive()
            and (since == 0.0 or now - since < self._stall_s)
        )

    def _watch(self) -> None:
        """Ends the agent when a thread it depends on died or stalled (see ``health``)."""
        period = min(0.5, self._stall_s / 4)
        while not self._stop_event.wait(period):
            now = time.monotonic()
            problem = None
            tick_thread = self._ticker.thread
            # Read once: the network thread sets it back to 0.0 when a callback returns, and a
            # second read could see 0.0 and take "now - 0" for a callback running for hours.
            since = self._ingest.callback_since
            if self.network is None or not self.network.is_alive():
                problem = "the MQTT network thread died"
            elif since and now - since >= self._stall_s:
                problem = f"an MQTT callback has run for {now - since:.0f} s"
            elif tick_thread is None or not tick_thread.is_alive():
                problem = "the tick thread died"
            elif now - self._ticker.last_tick >= self._stall_s:
                problem = f"no tick for {now - self._ticker.last_tick:.0f} s (stuck in a tick?)"
            if problem is not None and not self._stop_event.is_set():
                self.failure = problem
                self._ingest.connected.clear()
                self._metrics.mqtt_connected.set(0)
                logger.critical(
                    "watchdog: %s; stopping with exit status 1 (FOREWARN_AGENT__STALL_AFTER_S=%g)",
                    problem,
                    self._stall_after_s,
                )
                self._stop_event.set()
                return
