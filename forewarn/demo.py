"""`forewarn demo`: broker, simulated fleet and agent in one process, shown live."""

from __future__ import annotations

import logging
import sys
import threading

from agent.app import Agent
from config.settings import Settings
from forewarn.broker import EmbeddedBroker, free_port
from forewarn.view import LiveView, PlainView
from simulator.publish import SimulatorPublisher

logger = logging.getLogger(__name__)


def run_demo(
    settings: Settings, stop: threading.Event, external_broker: bool, interactive: bool
) -> int:
    """Run until the simulator's duration ends or ``stop`` is set; returns the exit status."""
    broker: EmbeddedBroker | None = None
    if not external_broker:
        broker = EmbeddedBroker()
        broker.start()
        settings.mqtt = settings.mqtt.model_copy(
            update={"host": broker.host, "port": broker.port, "username": None, "password": None}
        )
    try:
        agent = Agent(settings)
    except OSError:
        # The metrics port is taken (another agent?): the demo takes any free one instead.
        settings.metrics = settings.metrics.model_copy(
            update={"host": "127.0.0.1", "port": free_port()}
        )
        agent = Agent(settings)
    sim = settings.simulator
    header = f"{sim.machines} machines at {sim.rate_hz:g} Hz, {sim.overheat} set to overheat"
    view: LiveView | PlainView = LiveView(header=header) if interactive else PlainView()
    agent.alert_listeners.append(view.on_alert)
    agent.tick_listeners.append(view.on_tick)
    publisher = SimulatorPublisher(settings.mqtt, sim, settings.alerts.threshold_c, stop=stop)
    status = 0
    agent.start()
    print(
        f"forewarn demo: broker {settings.mqtt.host}:{settings.mqtt.port}"
        f"{' (embedded)' if broker else ''}; metrics http://127.0.0.1:{agent.http.port}/metrics "
        f"and /healthz; {header}",
        flush=True,
    )
    try:
        if not agent.wait_connected(30):
            print("error: the agent could not connect to the broker", file=sys.stderr)
            return 1
        try:
            publisher.run()
        except ConnectionError as error:
            print(f"error: {error}", file=sys.stderr)
            status = 1
        # Let the last readings reach a forecast before closing.
        stop.wait(2 * settings.agent.tick_interval_s)
    except KeyboardInterrupt:
        stop.set()
    finally:
        agent.stop()
        if broker is not None:
            broker.stop()
    registry = agent.metrics.registry
    warnings = registry.get_sample_value("forewarn_alerts_total", {"severity": "warning"}) or 0
    criticals = registry.get_sample_value("forewarn_alerts_total", {"severity": "critical"}) or 0
    print(
        f"forewarn demo finished: {int(warnings)} warning(s), {int(criticals)} critical alert(s)",
        flush=True,
    )
    return status
