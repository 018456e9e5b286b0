"""The `forewarn` command: agent, simulate, train, export, evaluate, demo, config check.

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
from config.errors import ConfigError
from config.settings import Settings, env_name, load_settings, masked_settings

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
    agent.add_argument(
        "--runtime",
        choices=["auto", "torch", "onnx", "numpy"],
        help="what runs the network (FOREWARN_MODEL__RUNTIME; see docs/runtimes.md)",
    )

    simulate = commands.add_parser("simulate", help="publish a simulated fleet's readings")
    _add_simulation(simulate)
    _add_broker(simulate)
    simulate.add_argument("--qos", type=int, choices=[0, 1], help="QoS of readings (default 0)")
    simulate.add_argument(
        "--faults",
        type=_fault_mix,
        metavar="KIND=N,...",
        help="fault scenarios, e.g. overheat=3,cooling_failure=2,dropout=2 (kinds: "
        "overheat, cooling_failure, dropout, stuck_sensor, spikes, noisy_sensor, bad_payload)",
    )
    simulate.add_argument(
        "--slow-drifts",
        type=int,
        metavar="N",
        help="N machines per slow-drift shape (linear, exponential) and reach (mean at the "
        "threshold 2,000, 5,000, 20,000 readings after onset): 6 N drifting machines",
    )
    simulate.add_argument(
        "--ground-truth", type=Path, metavar="PATH", help="write the faults' ground truth (JSONL)"
    )
    simulate.add_argument(
        "--replay", type=Path, metavar="PATH.csv", help="publish a historical CSV as a live stream"
    )
    simulate.add_argument("--machine-column", metavar="C", help="replay: column of machine ids")
    simulate.add_argument("--speed", type=float, metavar="X", help="replay: speed-up factor")
    simulate.add_argument(
        "--topic-template",
        metavar="T",
        help="publish on this telemetry topic template, e.g. plant/{line}/{machine_id}/sensors "
        "(FOREWARN_MQTT__TELEMETRY_TOPIC)",
    )
    simulate.add_argument(
        "--format",
        choices=["json", "sparkplug"],
        help="payloads: json (default) or Sparkplug B (group FOREWARN_MQTT__SPARKPLUG_GROUP)",
    )
    simulate.add_argument(
        "--mapped",
        action="store_true",
        help="publish in the plant's field names and units of FOREWARN_MAPPING__FIELDS "
        "(the inverse of the agent's mapping)",
    )
    simulate.add_argument(
        "--gateway-batch",
        type=int,
        metavar="N",
        help="gateway mode: each tick's readings in batches of up to N on "
        "FOREWARN_MQTT__BATCH_TOPIC (FOREWARN_SIMULATOR__GATEWAY_BATCH; 0: one per message)",
    )

    _add_train(commands)
    _add_export(commands)
    _add_evaluate(commands)
    _add_detect(commands)
    _add_silence(commands)
    _add_model(commands)
    _add_anomaly(commands)

    demo = commands.add_parser(
        "demo", help="broker, simulated fleet and agent in one process, shown live"
    )
    # 1 Hz: the forecaster's 15 readings ahead are 15 s, room to warn 10 s before a critical.
    _add_simulation(demo, machines=12, rate=1.0, overheat=2)
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


def _add_train(commands: Any) -> None:
    from models.train import TRAINABLE_KINDS, TrainConfig

    defaults = TrainConfig()
    train = commands.add_parser(
        "train",
        help="train a forecaster and write a checkpoint",
        description="Train on simulated fleets (default) or on your own history (--csv), split "
        "in time into train / validation (early stopping) / test, and write a checkpoint with "
        "a short report. The defaults reproduce the shipped checkpoint.",
    )
    train.add_argument(
        "--output", type=Path, default=Path("checkpoints/forewarn.pt"), help="checkpoint path"
    )
    train.add_argument("--kind", choices=TRAINABLE_KINDS, default=defaults.kind, help="model kind")
    train.add_argument(
        "--normalisation",
        choices=["window", "global"],
        default=defaults.normalisation,
        help="window: each window scaled by its own statistics (serves machines at any level "
        "and range); global: one min-max scaler fitted on the training data (the seed's)",
    )
    train.add_argument(
        "--epochs", type=int, default=defaults.epochs, help="most epochs (early stopping)"
    )
    train.add_argument(
        "--horizon", type=int, default=defaults.horizon, help="steps forecast ahead (1: the seed)"
    )
    train.add_argument(
        "--episodes", type=int, default=defaults.episodes, help="simulated fleets to train on"
    )
    train.add_argument(
        "--machines", type=int, default=defaults.machines, help="machines per simulated fleet"
    )
    train.add_argument(
        "--ticks", type=int, default=defaults.ticks, help="readings per machine per fleet"
    )
    train.add_argument(
        "--seed", type=int, default=defaults.seed, help="seed of data and training (not 42)"
    )
    train.add_argument(
        "--faults",
        default=defaults.faults,
        help="fault scenarios in each simulated fleet besides its overheats, e.g. "
        "'noisy_sensor=4,cooling_failure=3' ('' for none)",
    )
    train.add_argument(
        "--despike",
        action="store_true",
        help="take isolated spikes out of the model's input windows (see docs/model.md)",
    )
    train.add_argument("--device", choices=["auto", "cpu", "cuda"], default=defaults.device)
    train.add_argument(
        "--threads",
        type=int,
        default=defaults.threads,
        help="CPU threads (0: one per core, at most 2); with the default 1, training again "
        "with the same seed gives identical weights",
    )
    train.add_argument(
        "--csv",
        type=Path,
        metavar="PATH",
        help="train on this history instead of simulated fleets (header row, rows in time order)",
    )
    train.add_argument(
        "--from-recording",
        type=Path,
        metavar="DIR",
        help="train on the readings an agent recorded in DIR (recording.directory): split in "
        "time per machine as --csv is, never a window across a missing reading or a gap",
    )
    train.add_argument(
        "--features",
        help="with --csv: comma-separated input columns, in order "
        "(default: temperature_c,vibration_hz,pressure_psi,rpm)",
    )
    train.add_argument(
        "--target", help="with --csv: the column to forecast, one of --features (default: first)"
    )
    train.add_argument(
        "--group", metavar="COLUMN", help="with --csv: the column naming each row's machine"
    )


def _add_export(commands: Any) -> None:
    export = commands.add_parser(
        "export",
        help="write a checkpoint's serving file, which serves without torch",
        description="Read a torch checkpoint (.pt) and write its serving file beside it: "
        "NAME.json (the model's facts), NAME.npz (its weights) and, for a network, NAME.onnx "
        "(its forward pass for ONNX Runtime). An agent serves it with FOREWARN_MODEL__RUNTIME "
        "onnx or numpy, without torch installed (see docs/runtimes.md). Reading the checkpoint "
        "needs torch; building the graph needs the onnx package.",
    )
    export.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="a .pt checkpoint")
    export.add_argument(
        "--output",
        type=Path,
        metavar="PATH.json",
        help="where to write the serving file (default: beside the checkpoint, NAME.json)",
    )
    export.add_argument(
        "--no-onnx", dest="onnx", action="store_false", help="write no ONNX graph (numpy only)"
    )


COMPARE_ROWS = ("rnn", "lstm", "gru", "bilstm", "persistence", "linear_extrapolation", "ridge")


def _add_evaluate(commands: Any) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="measure a checkpoint against baselines on the seed split and simulated fleets",
        description="RMSE and MAE (°C) on the seed's own test split next to persistence, Ridge, "
        "linear extrapolation and the noise floor; per horizon step on a held-out simulated "
        "fleet and on the same fleet shifted to other levels and ranges; the warning lead on "
        "its overheats.",
    )
    evaluate.add_argument(
        "--checkpoint",
        action="append",
        metavar="PATH | KIND=PATH",
        help="checkpoint to evaluate (default: FOREWARN_MODEL__CHECKPOINT, else the shipped one); "
        "with --compare, KIND=PATH replaces the shipped model of that kind (repeatable)",
    )
    evaluate.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout (logs on stderr)"
    )
    evaluate.add_argument("--plot", type=Path, metavar="PATH.png", help="write a PNG plot")
    compare = evaluate.add_argument_group(
        "--compare",
        "the seed's comparison table, measured: one row per network kind (the shipped model of "
        "each, see `make train`), then persistence, linear extrapolation and Ridge; parameters, "
        "windows/s at batch 1,000 per runtime, seed-split and held-out-fleet RMSE, the alert "
        "bench's recall, median lead and false warnings, and the gradient ratio (docs/model.md)",
    )
    compare.add_argument("--compare", action="store_true", help="print the comparison table")
    compare.add_argument(
        "--kinds",
        default=",".join(COMPARE_ROWS),
        help="comma-separated rows to measure (default: all)",
    )
    compare.add_argument(
        "--alert-machines", type=int, default=100, help="machines of the alert bench's fleet"
    )
    compare.add_argument(
        "--alert-ticks", type=int, default=1000, help="ticks of the alert bench's fleet"
    )
    compare.add_argument(
        "--alert-seed", type=int, default=11, help="seed of the alert bench's fleet"
    )
    compare.add_argument(
        "--seconds", type=float, default=1.0, help="timing per runtime and row (seconds)"
    )
    compare.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads of every runtime (default 1: on a shared machine, more threads measure "
        "the neighbours as much as the model)",
    )


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


def _fault_mix(text: str) -> dict[str, int]:
    from simulator.faults import parse_mix

    try:
        return parse_mix(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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
    from models.serving import CheckpointError

    apply_overrides(
        settings,
        {
            **_broker_overrides(args.broker),
            "mqtt.client_id": args.client_id,
            "metrics.port": args.metrics_port,
            "model.checkpoint": args.checkpoint,
            "model.device": args.device,
            "model.runtime": args.runtime,
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
    # SIGHUP (systemctl reload): read the model files again; never ends the agent.
    signal.signal(signal.SIGHUP, lambda signum, frame: agent.reload_model("SIGHUP"))
    return agent.run()  # 1 when the watchdog stopped it: let the service manager restart it


def _cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from config.fields import FEATURES
    from simulator.publish import SimulatorPublisher
    from wire.mapping import FieldMapping

    apply_overrides(
        settings,
        {
            **_broker_overrides(args.broker),
            **_simulation_overrides(args),
            "simulator.qos": args.qos,
            "simulator.faults": args.faults,
            "simulator.slow_drifts": args.slow_drifts,
            "simulator.ground_truth": args.ground_truth,
            "simulator.replay": args.replay,
            "simulator.machine_column": args.machine_column,
            "simulator.speed": args.speed,
            "mqtt.telemetry_topic": args.topic_template,
            "simulator.format": args.format,
            "simulator.gateway_batch": args.gateway_batch,
        },
    )
    stop = threading.Event()
    _stop_on_signals(stop)
    try:
        mapping = FieldMapping(settings.mapping.field_maps(), FEATURES) if args.mapped else None
        publisher = SimulatorPublisher(
            settings.mqtt,
            settings.simulator,
            settings.alerts.threshold_c,
            stop=stop,
            mapping=mapping,
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


def _needs_torch(command: str) -> bool:
    """Print why ``command`` cannot run and return True where torch is not installed."""
    from models.serving import torch_installed

    if torch_installed():
        return False
    print(
        f"error: `forewarn {command}` needs torch, which is not installed here: install "
        "forewarn with its train extra (`pip install 'forewarn[train]'`); an install without "
        "it serves models (see docs/runtimes.md)",
        file=sys.stderr,
    )
    return True


def _cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    if _needs_torch("train"):
        return EXIT_CONFIG
    from config.fields import FEATURES
    from models.checkpoint import CheckpointError, servable_features
    from models.data import DataError, read_csv
    from models.recording import machine_runs, read_recording
    from models.train import Split, TrainConfig, split_history, split_segments, train

    features = FEATURES
    target_index = 0
    split: Split | None = None
    try:
        config = TrainConfig(
            kind=args.kind,
            normalisation=args.normalisation,
            epochs=args.epochs,
            horizon=args.horizon,
            episodes=args.episodes,
            machines=args.machines,
            ticks=args.ticks,
            seed=args.seed,
            faults=args.faults,
            despike=args.despike,
            device=args.device,
            threads=args.threads,
            threshold_c=settings.alerts.threshold_c,
        )
        if args.csv is None and (args.features or args.target or args.group):
            raise ValueError("--features, --target and --group go with --csv")
        if args.from_recording is not None:
            if args.csv is not None:
                raise ValueError("--csv and --from-recording: train on one or the other")
            recording = read_recording(args.from_recording)
            features = recording.features
            split = split_segments(machine_runs(recording), config)
            print(
                f"recording {args.from_recording}: {recording.readings:,} readings of "
                f"{len(recording.machines)} machines in {recording.files} files"
                + (
                    f" ({recording.truncated_files} cut short)" if recording.truncated_files else ""
                ),
                file=sys.stderr,
            )
        elif args.csv is not None:
            if args.features:
                features = tuple(f.strip() for f in args.features.split(",") if f.strip())
            target = args.target or features[0]
            if target not in features:
                raise ValueError(
                    f"--target {target!r} must also be one of --features {list(features)}: the "
                    "forecaster reads the target's own past"
                )
            target_index = features.index(target)
            split = split_history(read_csv(args.csv, features, args.group), config)
    except (ValueError, DataError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        checkpoint = train(config, split=split, features=features, target_index=target_index)
    except CheckpointError as error:  # e.g. --device cuda without a CUDA device
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    checkpoint.save(args.output)
    serving = _write_serving(args.output)
    report = checkpoint.report
    print(
        json.dumps(
            {k: report[k] for k in report if k not in ("config", "history")}
            | {"checkpoint": str(args.output)}
            | serving,
            indent=2,
        )
    )
    model, baseline = report["test_next_step"], report["persistence_next_step"]
    print(
        f"test RMSE next step {model['rmse_c']:.2f} (persistence {baseline['rmse_c']:.2f}), "
        f"all {config.horizon} steps {report['test_all_steps']['rmse_c']:.2f} (persistence "
        f"{report['persistence_all_steps']['rmse_c']:.2f}); wrote {args.output}",
        file=sys.stderr,
    )
    if not servable_features(features) or target_index != 0:
        print(
            f"note: the agent serves windows of some of {', '.join(FEATURES)} (temperature_c "
            "first, the forecast target); this checkpoint can be evaluated on its own data but "
            "cannot be served",
            file=sys.stderr,
        )
    return 0


def _write_serving(
    checkpoint: Path, output: Path | None = None, onnx: bool = True
) -> dict[str, str]:
    """Write a checkpoint's serving file and say where (see ``forewarn export``)."""
    from models.checkpoint import export

    paths = export(checkpoint, output, onnx_graph=onnx)
    written = {"serving_file": str(paths.json), "weights": str(paths.npz)}
    if paths.onnx.exists():
        written["onnx_graph"] = str(paths.onnx)
    return written


def _cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from models.serving import CheckpointError, torch_installed

    if args.output is not None and args.output.suffix != ".json":
        print(
            f"error: --output {args.output} must name the serving file's .json (its .npz and "
            ".onnx are written beside it)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if args.checkpoint.suffix != ".pt":
        print(
            f"error: {args.checkpoint} is not a torch checkpoint (.pt); `forewarn export` reads "
            "one written by `forewarn train`",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if not torch_installed():
        print(
            f"error: reading checkpoint {args.checkpoint} needs torch, which is not installed: "
            "run `forewarn export` where forewarn was installed with its train extra "
            "(`pip install 'forewarn[train]'`), and copy the serving file it writes",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    try:
        written = _write_serving(args.checkpoint, args.output, args.onnx)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    print(json.dumps(written, indent=2))
    return 0


def _cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    if _needs_torch("evaluate"):
        return EXIT_CONFIG
    if args.compare:
        from forewarn.compare import run_compare

        return run_compare(args, settings)
    from models.checkpoint import CheckpointError, load_forecaster
    from models.evaluate import FleetSpec, evaluate, plot

    given = args.checkpoint or []
    if len(given) > 1:
        print(
            f"error: --checkpoint was given {len(given)} times; without --compare, evaluate "
            "measures one checkpoint",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    path = Path(given[0]) if given else getattr(settings.model, "checkpoint", None)
    try:
        forecaster = load_forecaster(path, device="cpu", threads=settings.model.threads)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    logger.info("evaluating %s (%s)", forecaster.version, path or "shipped default checkpoint")
    alerts = settings.alerts
    spec = FleetSpec(
        threshold_c=alerts.threshold_c,
        warning_confirm_ticks=alerts.warning_confirm_ticks,
        critical_confirm_readings=alerts.critical_confirm_readings,
    )
    report = evaluate(forecaster, spec)
    if args.plot is not None:
        plot(forecaster, report, args.plot)
        logger.info("wrote %s", args.plot)
    if args.json:
        print(json.dumps(report))
        return 0
    seed = report["seed_split"]
    print(f"{forecaster.kind} {forecaster.version}, horizon {forecaster.horizon}")
    print("seed split, next step (targets t = 804..999):")
    for name, errors in seed.items():
        print(f"  {name:<22} RMSE {errors['rmse_c']:.3f} °C   MAE {errors['mae_c']:.3f} °C")
    for part in ("fleet", "shifted_fleet"):
        block = report[part]
        print(f"{part.replace('_', ' ')} ({block['machines']} machines), all steps:")
        for name in ("checkpoint", "linear_extrapolation", "persistence"):
            errors = block[name]
            print(
                f"  {name:<22} RMSE {errors['rmse_c']:.3f} °C   MAE {errors['mae_c']:.3f} °C   "
                f"RMSE / machine range {errors['relative_rmse']:.4f}"
            )
    for key, rule in (
        ("warning_lead", "first forecast peak"),
        ("alert_warning_lead", "alert rules"),
    ):
        lead = report["fleet"][key]
        print(
            f"warning lead ({rule}) on {lead['overheats']} overheats: median "
            f"{lead['lead_ticks_median']} ticks, {lead['warned_before_crossing']} warned before "
            f"the crossing; {lead['false_alarm_machines']} of {lead['healthy_machines']} healthy "
            "machines warned about"
        )
    return 0


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from forewarn.demo import run_demo

    apply_overrides(
        settings,
        {
            **_broker_overrides(args.broker),
            **_simulation_overrides(args),
            "simulator.overheat_shape": "steady",
        },
    )
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


def _add_detect(commands: Any) -> None:
    detect = commands.add_parser(
        "detect",
        help="backtest: run forecast, anomaly score and alert policy causally over a CSV",
        description="Fits on the first rows of a CSV (or on a known-good --fit-input), then "
        "streams the rows one at a time through the agent's own window, forecast, per-sensor "
        "anomaly score and alert policy, and writes one output row per input row. Columns left "
        "unscored and cells read as gaps are named in notes on stderr; a file it cannot read "
        "stops with the line, the value and the fix.",
    )
    detect.add_argument("--input", type=Path, required=True, metavar="PATH.csv")
    detect.add_argument("--output", type=Path, required=True, metavar="OUT.csv")
    detect.add_argument(
        "--timestamp-column", metavar="T", help="copied verbatim to the output, not scored"
    )
    detect.add_argument(
        "--columns",
        metavar="a,b,c",
        help="columns to score, in this order; the first is the one forecast and checked "
        "against --threshold (default: every numeric column)",
    )
    detect.add_argument(
        "--fit-rows", type=int, metavar="N", help="rows to fit on (default: the first 10 %%)"
    )
    detect.add_argument("--horizon", type=int, default=30, help="rows forecast ahead (default 30)")
    detect.add_argument(
        "--threshold",
        type=float,
        help="threshold alert on the first column: warning when its forecast reaches this "
        "value, critical when 3 readings in a row do (default: none)",
    )
    detect.add_argument(
        "--anomaly-threshold",
        type=float,
        default=0.5,
        help="anomaly alert when the machine score stays at or above this for 3 rows "
        "(default 0.5: a 1-in-100,000 row for a normal machine)",
    )
    detect.add_argument(
        "--fit-input",
        type=Path,
        metavar="GOOD.csv",
        help="fit on this known-good file (same columns) instead of --fit-rows; every input "
        "row is then scored",
    )
    detect.add_argument(
        "--delimiter",
        help="field delimiter, '\\t' for a tab (default: sniffed among , ; tab |); with one "
        "other than ',' a decimal comma (21,5) reads as 21.5",
    )


def _add_silence(commands: Any) -> None:
    silence = commands.add_parser(
        "silence",
        help="silence a machine's alerts for maintenance (still computed and counted)",
    )
    silence.add_argument("machine", metavar="MACHINE", help="machine id")
    group = silence.add_mutually_exclusive_group(required=True)
    group.add_argument("--for", dest="duration", metavar="DURATION", help="e.g. 90s, 30m, 2h, 1d")
    group.add_argument("--clear", action="store_true", help="lift the machine's silence")
    silence.add_argument("--reason", default="maintenance", help="shown in the agent's log")
    _add_broker(silence)


def _cmd_silence(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from agent.silence import parse_duration, silence_payload
    from config.topics import silence_topic

    apply_overrides(settings, _broker_overrides(args.broker))
    payload = b""
    if not args.clear:
        try:
            seconds = parse_duration(args.duration)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_CONFIG
        payload = silence_payload(time.time() + seconds, args.reason)
    topic = silence_topic(settings.mqtt.topic_prefix, args.machine)
    if not _publish_retained(settings, topic, payload):
        return 1
    what = "lifted" if args.clear else f"set for {args.duration}"
    print(f"silence of {args.machine} {what}")
    return 0


def _add_model(commands: Any) -> None:
    model = commands.add_parser(
        "model",
        help="the model a running agent serves and shadows: status, serve, shadow, promote",
    )
    actions = model.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser(
        "status", help="live and shadow model and their errors, from the agent's /metrics"
    )
    status.add_argument(
        "--url",
        help="the agent's metrics (default: http://127.0.0.1:FOREWARN_METRICS__PORT/metrics)",
    )
    serve = actions.add_parser("serve", help="swap in a model of the agent's model directory")
    serve.add_argument("path", metavar="PATH", help="path inside FOREWARN_MODEL__DIRECTORY")
    shadow = actions.add_parser("shadow", help="forecast a candidate beside the served model")
    group = shadow.add_mutually_exclusive_group(required=True)
    group.add_argument("path", metavar="PATH", nargs="?", help="path inside the model directory")
    group.add_argument("--clear", action="store_true", help="drop the shadow model")
    actions.add_parser("promote", help="serve the shadow model (it stops being a shadow)")
    for parser in (serve, shadow, actions.choices["promote"]):
        parser.add_argument(
            "--agent",
            metavar="CLIENT_ID",
            help="the agent's client id (default: FOREWARN_MQTT__CLIENT_ID)",
        )
        _add_broker(parser)


def _cmd_model(args: argparse.Namespace, settings: Settings) -> int:
    from forewarn.modelcmd import command_payload, fetch_status, format_status, publish_command

    if args.action == "status":
        url = args.url or f"http://127.0.0.1:{settings.metrics.port}/metrics"
        try:
            print(format_status(fetch_status(url)))
        except OSError as error:
            print(f"error: cannot read the agent's metrics at {url}: {error}", file=sys.stderr)
            return 1
        return 0
    apply_overrides(settings, _broker_overrides(args.broker))
    client_id = args.agent or settings.mqtt.client_id
    path = None if args.action == "promote" or getattr(args, "clear", False) else args.path
    problem = publish_command(settings, client_id, command_payload(args.action, path))
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    what = {"serve": f"serve {path}", "promote": "promote the shadow model"}.get(
        args.action, "drop the shadow model" if path is None else f"shadow {path}"
    )
    print(
        f"asked agent {client_id} to {what}; `forewarn model status` and its log say whether it did"
    )
    return 0


def _add_anomaly(commands: Any) -> None:
    anomaly = commands.add_parser("anomaly", help="the anomaly alert's learned normal")
    actions = anomaly.add_subparsers(dest="action", metavar="ACTION", required=True)
    rebaseline = actions.add_parser(
        "rebaseline",
        help="forget a machine's learned normal and learn it afresh (after maintenance); "
        "a firing anomaly alert resolves",
    )
    rebaseline.add_argument("machine", metavar="MACHINE_ID", help="machine id")
    rebaseline.add_argument("--reason", default="maintenance", help="shown in the agent's log")
    _add_broker(rebaseline)


def _cmd_anomaly(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from agent.rebaseline import rebaseline_payload
    from config.topics import rebaseline_topic

    apply_overrides(settings, _broker_overrides(args.broker))
    m = settings.mqtt
    topic = rebaseline_topic(m.topic_prefix, args.machine)
    if not _publish_retained(settings, topic, rebaseline_payload(time.time(), args.reason)):
        return 1
    print(f"re-baseline of {args.machine} sent: the agent learns its normal afresh")
    return 0


def _publish_retained(settings: Settings, topic: str, payload: bytes) -> bool:
    """Publish one retained QoS 1 message and wait for the broker's acknowledgement."""
    import time

    from wire.mqtt import make_client

    m = settings.mqtt
    client = make_client(m, f"{m.client_id}-command-{int(time.time())}")
    try:
        client.connect(m.host, m.port, m.keepalive_s)
    except OSError as error:
        print(f"error: cannot reach the broker at {m.host}:{m.port}: {error}", file=sys.stderr)
        return False
    client.loop_start()
    info = client.publish(topic, payload, qos=1, retain=True)
    try:
        info.wait_for_publish(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()
    if not info.is_published():
        print(f"error: the broker did not confirm the message on {topic}", file=sys.stderr)
        return False
    return True


def _cmd_detect(args: argparse.Namespace, settings: Settings) -> int:
    from forewarn.detect import DetectError, run_detect

    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    try:
        summary = run_detect(
            args.input,
            args.output,
            timestamp_column=args.timestamp_column,
            columns=columns,
            fit_rows=args.fit_rows,
            horizon=args.horizon,
            threshold=args.threshold,
            anomaly_threshold=args.anomaly_threshold,
            delimiter=args.delimiter,
            fit_input=args.fit_input,
        )
    except DetectError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    for note in summary.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"forewarn detect: {summary.line()}; wrote {args.output}")
    return 0


COMMANDS = {
    "agent": _cmd_agent,
    "simulate": _cmd_simulate,
    "train": _cmd_train,
    "export": _cmd_export,
    "evaluate": _cmd_evaluate,
    "demo": _cmd_demo,
    "detect": _cmd_detect,
    "silence": _cmd_silence,
    "model": _cmd_model,
    "anomaly": _cmd_anomaly,
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
