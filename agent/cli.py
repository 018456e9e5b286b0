"""The `forewarn` command: agent, simulate, train, demo, config check.

Flags override settings from the environment and ``.env``; a bad value from any source stops
the command with exit status 2 and a message naming the setting, the value and what is allowed.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from agent import __version__
from config.settings import (
    ConfigError,
    Settings,
    env_name,
    load_settings,
    masked_settings,
)

logger = logging.getLogger("forewarn")

EXIT_CONFIG = 2


def _broker(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT (e.g. localhost:1883)")
    return host, int(port)


def _add_broker(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker",
        type=_broker,
        metavar="HOST:PORT",
        help="MQTT broker (default: FOREWARN_MQTT__HOST / FOREWARN_MQTT__PORT, localhost:1883)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forewarn",
        description="Streaming predictive maintenance: forecasts machine temperatures from "
        "MQTT sensor readings and raises overheat alerts before machines overheat.",
        epilog="Every setting can also be set by environment variable (FOREWARN_ prefix, __ "
        "for nesting, e.g. FOREWARN_MQTT__HOST) or a .env file; see `forewarn config check`.",
    )
    parser.add_argument("--version", action="version", version=f"forewarn {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    agent = commands.add_parser(
        "agent", help="subscribe, forecast, alert and serve metrics until SIGINT/SIGTERM"
    )
    _add_broker(agent)
    agent.add_argument("--client-id", help="MQTT client id (FOREWARN_MQTT__CLIENT_ID)")
    agent.add_argument("--metrics-port", type=int, help="port of /metrics and /healthz")
    agent.add_argument("--checkpoint", type=Path, help="model checkpoint to serve")
    agent.add_argument("--device", choices=["auto", "cpu", "cuda"], help="inference device")

    simulate = commands.add_parser("simulate", help="publish a simulated fleet's readings")
    _add_simulation(simulate)
    _add_broker(simulate)
    simulate.add_argument("--qos", type=int, choices=[0, 1], help="QoS of readings (default 0)")

    train = commands.add_parser("train", help="train the forecaster and write a checkpoint")
    train.add_argument(
        "--output", type=Path, default=Path("checkpoints/forewarn.pt"), help="checkpoint path"
    )
    train.add_argument("--epochs", type=int, default=12, help="most epochs (early stopping)")
    train.add_argument("--horizon", type=int, default=30, help="steps forecast ahead")
    train.add_argument("--episodes", type=int, default=12, help="simulated fleets to train on")
    train.add_argument("--machines", type=int, default=32, help="machines per fleet")
    train.add_argument("--ticks", type=int, default=600, help="readings per machine per fleet")
    train.add_argument("--seed", type=int, default=2024, help="seed of data and training")
    train.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")

    demo = commands.add_parser(
        "demo", help="broker, simulated fleet and agent in one process, shown live"
    )
    _add_simulation(demo, machines=12, rate=2.0, overheat=2)
    demo.add_argument(
        "--broker",
        type=_broker,
        metavar="HOST:PORT",
        help="use this broker instead of the embedded one",
    )

    config = commands.add_parser("config", help="configuration tools")
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    config_commands.add_parser(
        "check", help="validate the configuration and print it, secrets masked"
    )
    return parser


def _add_simulation(
    parser: argparse.ArgumentParser,
    machines: int | None = None,
    rate: float | None = None,
    overheat: int | None = None,
) -> None:
    parser.add_argument("--machines", type=int, default=machines, help="machines in the fleet")
    parser.add_argument("--rate", type=float, default=rate, help="readings per machine per s")
    parser.add_argument(
        "--duration", type=float, help="stop after this many seconds (default: run until stopped)"
    )
    parser.add_argument(
        "--overheat", type=int, default=overheat, help="machines that drift up until they overheat"
    )
    parser.add_argument("--seed", type=int, help="seed of the fleet (reproducible)")


def apply_overrides(settings: Settings, overrides: dict[str, Any]) -> Settings:
    """Apply flag values (``"section.field": value``, None = not given) with validation."""
    by_section: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        if value is not None:
            section, field = key.split(".")
            by_section.setdefault(section, {})[field] = value
    for section, changes in by_section.items():
        current: BaseModel = getattr(settings, section)
        try:
            updated = type(current).model_validate({**dict(current), **changes})
        except ValidationError as error:
            problems = []
            for problem in error.errors():
                location = (section, *problem["loc"])
                flag = "--" + str(problem["loc"][0]).replace("_", "-") if problem["loc"] else ""
                message = problem["msg"].removeprefix("Value error, ")
                value = problem.get("input")
                shown = value if isinstance(value, str) else repr(value)
                problems.append(f"  {env_name(location)} ({flag or 'flags'})={shown}: {message}")
            raise ConfigError("invalid configuration:\n" + "\n".join(problems)) from error
        setattr(settings, section, updated)
    return settings


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: object) -> None:
        logger.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _broker_overrides(broker: tuple[str, int] | None) -> dict[str, Any]:
    if broker is None:
        return {}
    return {"mqtt.host": broker[0], "mqtt.port": broker[1]}


def _simulation_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "simulator.machines": args.machines,
        "simulator.rate_hz": args.rate,
        "simulator.duration_s": args.duration,
        "simulator.overheat": args.overheat,
        "simulator.seed": args.seed,
    }


def _cmd_agent(args: argparse.Namespace, settings: Settings) -> int:
    from agent.app import Agent
    from models.checkpoint import CheckpointError

    apply_overrides(
        settings,
        {
            **_broker_overrides(args.broker),
            "mqtt.client_id": args.client_id,
            "metrics.port": args.metrics_port,
            "model.checkpoint": args.checkpoint,
            "model.device": args.device,
        },
    )
    try:
        agent = Agent(settings)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as error:
        print(
            f"error: cannot listen on {settings.metrics.host}:{settings.metrics.port} ({error}); "
            "set FOREWARN_METRICS__PORT or --metrics-port",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    _stop_on_signals(agent.stop_event)
    agent.run()
    return 0


def _cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from simulator.publish import SimulatorPublisher

    apply_overrides(
        settings,
        {
            **_broker_overrides(args.broker),
            **_simulation_overrides(args),
            "simulator.qos": args.qos,
        },
    )
    stop = threading.Event()
    _stop_on_signals(stop)
    try:
        publisher = SimulatorPublisher(
            settings.mqtt, settings.simulator, settings.alerts.threshold_c, stop=stop
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        publisher.run()
    except ConnectionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def _cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from models.train import TrainConfig, train

    try:
        config = TrainConfig(
            epochs=args.epochs,
            horizon=args.horizon,
            episodes=args.episodes,
            machines=args.machines,
            ticks=args.ticks,
            seed=args.seed,
            device=args.device,
            threshold_c=settings.alerts.threshold_c,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    checkpoint = train(config)
    checkpoint.save(args.output)
    report = checkpoint.report
    print(
        json.dumps(
            {k: report[k] for k in report if k != "config"} | {"checkpoint": str(args.output)},
            indent=2,
        )
    )
    model, baseline = report["test_next_step"], report["persistence_next_step"]
    print(
        f"test RMSE next step {model['rmse_c']:.2f} °C (persistence {baseline['rmse_c']:.2f} °C), "
        f"MAE {model['mae_c']:.2f} °C (persistence {baseline['mae_c']:.2f} °C); "
        f"wrote {args.output}",
        file=sys.stderr,
    )
    return 0


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from agent.demo import run_demo

    apply_overrides(settings, {**_broker_overrides(args.broker), **_simulation_overrides(args)})
    stop = threading.Event()
    _stop_on_signals(stop)
    interactive = sys.stdout.isatty()
    if interactive:
        logging.getLogger().setLevel(logging.WARNING)
    return run_demo(
        settings, stop, external_broker=args.broker is not None, interactive=interactive
    )


def _cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(masked_settings(settings), indent=2))
    print("configuration OK", file=sys.stderr)
    return 0


COMMANDS = {
    "agent": _cmd_agent,
    "simulate": _cmd_simulate,
    "train": _cmd_train,
    "demo": _cmd_demo,
    "config": _cmd_config,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        _configure_logging(settings.log_level)
        return COMMANDS[args.command](args, settings)
    except ConfigError as error:
        print(f"forewarn: {error}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
