"""Swapping the served model while the agent runs, and keeping a shadow candidate beside it.

Three things ask for a model load, none of them a restart:

* SIGHUP (``systemctl reload``): the served and the shadow model are read again from their
  files;
* a change of one of those files on disk, noticed by a cheap poll of sizes and modification
  times every ``model.watch_interval_s`` (a change is loaded once the files stayed the same
  for one more poll, so a copy in progress is not read half-written);
* a retained command on ``<prefix>/_agents/<client_id>/model`` (:func:`parse_command`), naming
  a model by a path inside ``model.directory``.

Every load runs on this module's own thread: the file is read, the forecaster built and warmed
up, and checked against the one serving (:func:`mismatch`), then a forward pass on recent
windows must give finite values. Only then is it installed, between two ticks
(:meth:`agent.tick.Ticker.install`); windows, alert states and the hand-off are never touched.
A model that fails is refused: the one serving keeps serving, a log line says why and
``forewarn_model_reload_failures_total{reason}`` counts it.

What a swap accepts: any kind (an lstm may replace a Ridge); the same features in the same
order and the same window (the windows the agent holds are kept, so a model must read them as
they are); the same horizon (what a warning promises, the lead time before the threshold, and
the anomaly score's pending forecasts depend on it; changing it is a restart).

The served and the shadow model are recorded in ``agent.state_dir`` (:class:`ModelRecord`) at
each change, and read back at start-up, where the record wins over ``model.checkpoint`` and
``model.shadow`` unless those settings changed since it was written.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from agent.metrics import AgentMetrics
from agent.shadow import ShadowScore
from agent.statedir import state_dir
from agent.tick import Ticker
from config.settings import Settings
from models.base import Forecaster
from models.candidate import LoadedModel, load_model, signature
from models.serving import ServingPaths

logger = logging.getLogger(__name__)

RECORD_NAME = "model.json"


class Refused(Exception):
    """A model that may not replace the one serving; ``reason`` labels the failure metric."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def mismatch(serving: Forecaster, candidate: Forecaster) -> Refused | None:
    """Why ``candidate`` cannot replace (or shadow) ``serving`` on the windows kept, or None."""
    if tuple(candidate.features) != tuple(serving.features):
        return Refused(
            "features",
            f"it reads features {list(candidate.features)}, the windows hold "
            f"{list(serving.features)} (same names in the same order; restart to change them)",
        )
    if candidate.window != serving.window:
        return Refused(
            "window",
            f"its window is {candidate.window} readings, the windows kept hold {serving.window} "
            "(restart to change the window)",
        )
    if candidate.horizon != serving.horizon:
        return Refused(
            "horizon",
            f"it forecasts {candidate.horizon} steps, the one serving {serving.horizon} (a "
            "horizon is what a warning promises; restart to change it)",
        )
    return None


def check_forward(candidate: Forecaster, windows: np.ndarray | None) -> None:
    """Raise :class:`Refused` unless ``candidate`` gives finite forecasts of the right shape on
    ``windows`` (recent windows of the agent; None: one window of plausible constant values)."""
    if windows is None or not len(windows):
        windows = np.full((1, candidate.window, len(candidate.features)), 1.0, np.float32)
        windows[:, :, 0] = 60.0
    try:
        with np.errstate(all="ignore"):  # an overflow is reported below, as a refusal
            forecasts = np.asarray(candidate.forecast(windows))
    except Exception as error:
        raise Refused("forecast", f"its forward pass failed: {error!r}") from error
    if forecasts.shape != (len(windows), candidate.horizon):
        raise Refused("forecast", f"its forecasts have shape {forecasts.shape}")
    bad = int((~np.isfinite(forecasts)).any(axis=1).sum())
    if bad:
        raise Refused(
            "forecast", f"it forecast non-finite values for {bad} of {len(windows)} windows"
        )


@dataclass(frozen=True)
class Command:
    """A parsed model command: which model to serve and which to shadow.

    ``live``/``shadow`` are paths inside the model directory; ``shadow_set`` says whether the
    command names a shadow at all (a ``null`` one drops the shadow); ``promote`` makes the
    shadow the served model.
    """

    live: Path | None = None
    shadow: Path | None = None
    shadow_set: bool = False
    promote: bool = False
    digest: str = ""


def resolve_inside(directory: Path | None, name: object) -> Path:
    """The file ``name`` names inside ``directory``; :class:`Refused` for anything else.

    Only a relative path of plain levels is taken (no absolute path, no ``..``), and the file
    it resolves to, symbolic links followed, must still lie inside the directory; so must the
    files read beside it (a serving file's ``.npz`` and ``.onnx``), or a link among them would
    load weights from outside.
    """
    if directory is None:
        raise Refused(
            "path",
            "no model directory is configured (FOREWARN_MODEL__DIRECTORY): commands cannot name "
            "a model",
        )
    if not isinstance(name, str) or not name.strip():
        raise Refused("command", f"a model must be named by a path string, not {name!r}")
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts or "\x00" in name:
        raise Refused("path", f"{name!r} must be a relative path inside {directory}, without '..'")
    root = directory.resolve()
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        raise Refused("path", f"{name!r} leads outside {directory} (a symbolic link?)")
    beside = ServingPaths.beside(target)
    for sibling in (beside.json, beside.npz, beside.onnx):
        if os.path.lexists(sibling) and not sibling.resolve().is_relative_to(root):
            raise Refused(
                "path",
                f"{sibling.name}, read with {name!r}, leads outside {directory} (a symbolic link?)",
            )
    return target


def parse_command(payload: bytes, directory: Path | None) -> Command | None:
    """The command in a payload; None for an empty one (a cleared retained command).

    ``{"live": "PATH"}`` serves a model, ``{"shadow": "PATH"}`` shadows one (``null`` drops
    the shadow), ``{"promote": "shadow"}`` serves the shadow; ``live`` and ``shadow`` may come
    together. ``"at"`` (the sender's clock) makes a command sent again differ from the one
    applied last, which the digest would otherwise skip as already applied. Raises
    :class:`Refused` for anything else.
    """
    if not payload.strip():
        return None
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        raise Refused("command", f"not JSON: {error}") from error
    actions = {"live", "shadow", "promote"}
    if (
        not isinstance(body, dict)
        or not set(body) & actions
        or set(body) - actions - {"at"}
        or not isinstance(body.get("at", 0.0), int | float)
    ):
        raise Refused(
            "command",
            'a model command is a JSON object of "live": PATH, "shadow": PATH or null, or '
            '"promote": "shadow", with an optional "at" (Unix time, so that the same command '
            f"sent again is a new one); got {payload[:200]!r}",
        )
    promote = "promote" in body
    if promote and (body["promote"] != "shadow" or "live" in body):
        raise Refused("command", '"promote" takes "shadow" and comes without "live"')
    live = resolve_inside(directory, body["live"]) if "live" in body else None
    shadow_set = "shadow" in body
    shadow = None
    if shadow_set and body["shadow"] is not None:
        shadow = resolve_inside(directory, body["shadow"])
    digest = hashlib.sha256(payload).hexdigest()
    return Command(live, shadow, shadow_set, promote, digest)


class ModelRecord:
    """What the agent served and shadowed last, kept in ``state_dir`` across restarts.

    ``configured`` holds the ``model.checkpoint`` and ``model.shadow`` settings in force when
    it was written: a record written under other settings is not used (an operator who names
    another checkpoint means it). ``command`` is the digest of the last command applied, so a
    retained command read again at a restart is not applied a second time.
    """

    def __init__(self, state_dir: Path | None) -> None:
        self.path = None if state_dir is None else state_dir / RECORD_NAME
        self.data: dict[str, Any] = {}
        if self.path is not None and self.path.exists():
            try:
                loaded = orjson.loads(self.path.read_bytes())
                if not isinstance(loaded, dict) or any(
                    not isinstance(loaded.get(key), str | None) for key in ("live", "shadow")
                ):
                    raise ValueError("not a record of model paths (live, shadow)")
                self.data = loaded
            except (OSError, ValueError) as error:  # orjson.JSONDecodeError is a ValueError
                logger.warning(
                    "ignoring the unreadable model record %s: %s; serving the configured "
                    "model (delete the file to silence this warning)",
                    self.path,
                    error,
                )

    def applies(self, configured: dict[str, str | None]) -> bool:
        return bool(self.data) and self.data.get("configured") == configured

    def write(self, **fields: Any) -> None:
        if self.path is None:
            return
        self.data.update(fields)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            with tmp.open("wb") as file:
                file.write(orjson.dumps(self.data, option=orjson.OPT_INDENT_2))
                file.flush()
                os.fsync(file.fileno())  # a power loss leaves the old record or the new
            os.replace(tmp, self.path)
        except OSError as error:
            logger.error("could not record the served model in %s: %s", self.path, error)


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


class ModelKeeper:
    """Loads, checks and installs the served and shadow models on a thread of its own."""

    def __init__(self, settings: Settings, metrics: AgentMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._model = settings.model
        self.directory = getattr(settings.model, "directory", None)
        self.record = ModelRecord(state_dir(settings))
        self._configured = {
            "checkpoint": _text(getattr(settings.model, "checkpoint", None)),
            "shadow": _text(getattr(settings.model, "shadow", None)),
        }
        self.live: LoadedModel | None = None
        self.shadow: LoadedModel | None = None
        self.score = ShadowScore(metrics)
        self.ticker: Ticker | None = None
        self.on_version: Callable[[str], None] = lambda version: None
        self._requests: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._seen: dict[str, tuple[Any, ...]] = {}
        self._refused_signature: dict[str, tuple[Any, ...]] = {}
        """Per role, the signature of a changed file that was refused: not tried again."""
        self.thread: threading.Thread | None = None
        self.swaps = 0
        """Models installed (live or shadow) since start, for tests and tools."""
        self.refusals = 0
        self.last_load: tuple[float, float] = (0.0, 0.0)
        """When the last load began and ended (monotonic): reading, checks and install."""

    # --- start-up ----------------------------------------------------------------------------

    def initial(self) -> LoadedModel:
        """The model to serve at start-up: the recorded one when the record applies (and it
        still loads), else the configured one; the shadow likewise."""
        live: LoadedModel | None = None
        shadow_path = self._settings.model.shadow
        if self.record.applies(self._configured):
            recorded = self.record.data.get("live")
            if recorded:
                try:
                    live = load_model(self._model, Path(recorded))
                    logger.info("serving %s, recorded in %s", recorded, self.record.path)
                except Exception as error:
                    logger.error(
                        "the recorded model %s cannot be served (%s); serving the configured one",
                        recorded,
                        error,
                    )
            shadow_path = self.record.data.get("shadow") and Path(self.record.data["shadow"])
        if live is None:
            live = load_model(self._model, None)
        self.live = live
        self._initial_shadow(shadow_path)
        return live

    def adopt(self, forecaster: Forecaster) -> None:
        """Serve a forecaster built by the caller (tests, tools): its file is not watched."""
        self.live = LoadedModel(forecaster, None, "", ())
        self._initial_shadow(self._settings.model.shadow)

    def _initial_shadow(self, path: Path | None) -> None:
        if not path:
            return
        try:
            try:
                candidate = load_model(self._model, Path(path))
            except Exception as error:
                raise Refused("load", str(error)) from error
            self._check(candidate, None)
            self.shadow = candidate
        except Refused as refused:
            self._refuse("shadow", refused, f"{path} (start-up)")

    def attach(self, ticker: Ticker) -> None:
        """Give the ticker the shadow, hang the shadow score on its forecasts, export info."""
        self.ticker = ticker
        ticker.forecast_listeners.append(self.score)
        ticker.eviction_listeners.append(self.score.forget)
        ticker.shadow = None if self.shadow is None else self.shadow.forecaster
        self._export()

    # --- requests, from any thread -------------------------------------------------------------

    def request_reload(self, why: str = "SIGHUP") -> None:
        """Read the served and the shadow model again from their files (SIGHUP)."""
        self._requests.put(("reload", why))

    def handle_command(self, topic: str, payload: bytes) -> None:
        """A message on the model command topic (network thread): queued, not acted on here."""
        self._requests.put(("command", payload))

    def start(self, stop_event: threading.Event) -> None:
        self.thread = threading.Thread(
            target=self._loop, args=(stop_event,), name="forewarn-models", daemon=True
        )
        self.thread.start()

    def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """Wait until every request so far was handled (tests, tools)."""
        done = threading.Event()
        self._requests.put(("marker", done))
        return done.wait(timeout_s)

    # --- the thread ----------------------------------------------------------------------------

    def _loop(self, stop_event: threading.Event) -> None:
        interval = self._model.watch_interval_s
        while not stop_event.is_set():
            try:
                kind, value = self._requests.get(timeout=interval if interval > 0 else 1.0)
            except queue.Empty:
                if interval > 0:
                    self._guarded(self._watch)
                continue
            if kind == "marker":
                value.set()
            elif kind == "reload":
                self._guarded(self._reload, str(value))
            elif kind == "command":
                self._guarded(self._command, value)

    def _guarded(self, action: Callable[..., None], *args: Any) -> None:
        try:
            action(*args)
        except Exception:
            logger.exception("error in the model thread; the served model is unchanged")

    def _watch(self) -> None:
        """Load a served or shadow file whose signature changed and then held for one poll."""
        for role, model in (("live", self.live), ("shadow", self.shadow)):
            if model is None or model.path is None:
                continue
            now = signature(model.path)
            if now == model.signature or now == self._refused_signature.get(role):
                # Unchanged, or changed into a file refused already: not loaded (and refused,
                # and logged) again at every poll until it changes once more.
                self._seen.pop(role, None)
                continue
            if self._seen.get(role) != now:
                self._seen[role] = now  # changed: load it once it holds still for a poll
                continue
            self._seen.pop(role, None)
            logger.info("the %s model file %s changed; loading it", role, model.path)
            if self._load(role, model.path, f"{model.path} changed"):
                self._refused_signature.pop(role, None)
            else:
                self._refused_signature[role] = now

    def _reload(self, why: str) -> None:
        logger.info("%s: reading the served and the shadow model again", why)
        for role, model in (("live", self.live), ("shadow", self.shadow)):
            if model is not None and model.path is not None:
                self._load(role, model.path, why)

    def _command(self, payload: bytes) -> None:
        try:
            command = parse_command(payload, self.directory)
        except Refused as refused:
            self._refuse("live", refused, f"model command {payload[:200]!r}")
            return
        if command is None:
            return
        if command.digest == self.record.data.get("command"):
            logger.info("the retained model command was applied before; not again")
            return
        applied = True
        if command.promote:
            applied = self._promote()
        if command.live is not None:
            applied = self._load("live", command.live, "model command") and applied
        if command.shadow_set:
            if command.shadow is None:
                self._drop_shadow()
            else:
                applied = self._load("shadow", command.shadow, "model command") and applied
        if applied:
            self.record.write(command=command.digest)

    # --- loading and installing ----------------------------------------------------------------

    def _check(self, candidate: LoadedModel, windows: np.ndarray | None) -> None:
        assert self.live is not None
        problem = mismatch(self.live.forecaster, candidate.forecaster)
        if problem is not None:
            raise problem
        check_forward(candidate.forecaster, windows)

    def _load(self, role: str, path: Path, why: str) -> bool:
        """Load ``path`` as the ``role`` model; True when it serves (or already did)."""
        started = time.monotonic()
        try:
            return self._load_checked(role, path, why)
        finally:
            self.last_load = (started, time.monotonic())

    def _load_checked(self, role: str, path: Path, why: str) -> bool:
        try:
            try:
                candidate = load_model(self._model, path)
            except Exception as error:
                raise Refused("load", str(error)) from error
            current = self.live if role == "live" else self._live_shadow()
            if current is not None and current.digest == candidate.digest and current.path == path:
                current.signature = candidate.signature
                self._metrics.model_reloads.labels(role=role, result="unchanged").inc()
                logger.info("%s model %s is unchanged (%s)", role, path, candidate.version)
                return True
            assert self.live is not None
            problem = mismatch(self.live.forecaster, candidate.forecaster)
            if problem is not None:  # before any forward pass: a refusal costs the tick nothing
                raise problem
            # The candidate's first forward passes run between two ticks, not beside one: two
            # runtimes' thread pools on the same cores slow both far more than taking turns.
            if self.ticker is None:
                self._try_forward(candidate.forecaster, None)
            else:
                ticker = self.ticker
                forecaster = candidate.forecaster
                ticker.install(lambda: self._try_forward(forecaster, ticker.sample_windows))
        except Refused as refused:
            self._refuse(role, refused, f"{path} ({why})")
            return False
        self._install(role, candidate, why)
        return True

    @staticmethod
    def _try_forward(forecaster: Forecaster, windows: np.ndarray | None) -> None:
        """Warm the candidate up and check its forecasts on ``windows`` (:class:`Refused`)."""
        warm_up = getattr(forecaster, "warm_up", None)
        if callable(warm_up):
            try:
                with np.errstate(all="ignore"):  # judged by the forward check below
                    warm_up()
            except Exception as error:
                raise Refused("forecast", f"its warm-up failed: {error!r}") from error
        check_forward(forecaster, windows)

    def _refuse(self, role: str, refused: Refused, what: str) -> None:
        self.refusals += 1
        self._metrics.model_reloads.labels(role=role, result="refused").inc()
        self._metrics.model_reload_failures.labels(reason=refused.reason).inc()
        serving = self.live.version if self.live is not None else "nothing"
        logger.error(
            "refused %s as the %s model (%s): %s; still serving %s",
            what,
            role,
            refused.reason,
            refused,
            serving,
        )

    def _install(self, role: str, candidate: LoadedModel, why: str) -> None:
        ticker = self.ticker
        if role == "live":
            before = self.live.version if self.live is not None else "nothing"

            def apply() -> None:
                if ticker is not None:
                    ticker.forecaster = candidate.forecaster
                self.live = candidate
                self.score.reset()  # under the tick lock: the tick is the score's other user
                self.on_version(candidate.version)

            logger.warning(
                "swapping the served model %s for %s (%s)", before, candidate.version, why
            )
        else:

            def apply() -> None:
                if ticker is not None:
                    ticker.shadow = candidate.forecaster
                self.shadow = candidate
                self.score.reset()

            logger.info("shadowing %s (%s)", candidate.version, why)
        if ticker is not None:
            ticker.install(apply)
        else:
            apply()
        self.swaps += 1
        self._metrics.model_reloads.labels(role=role, result="swapped").inc()
        self._export()
        self._record()

    def _live_shadow(self) -> LoadedModel | None:
        """The shadow model, unless the tick dropped it since (it failed to forecast): such a
        model is never promoted, and shadowing it again loads it afresh."""
        shadow = self.shadow
        ticker = self.ticker
        if shadow is not None and ticker is not None and ticker.shadow is not shadow.forecaster:
            logger.warning("the shadow model %s was dropped by the tick", shadow.version)
            self.shadow = None
            self._export()
            self._record()
            return None
        return shadow

    def _promote(self) -> bool:
        shadow = self._live_shadow()
        if shadow is None:
            self._refuse(
                "live",
                Refused("command", "there is no shadow model (none, or it failed to forecast)"),
                "promote",
            )
            return False
        ticker = self.ticker

        def apply() -> None:
            if ticker is not None:
                ticker.forecaster = shadow.forecaster
                ticker.shadow = None
            self.live, self.shadow = shadow, None
            self.score.reset()
            self.on_version(shadow.version)

        logger.warning("promoting the shadow model %s to serve", shadow.version)
        if ticker is not None:
            ticker.install(apply)
        else:
            apply()
        self.swaps += 1
        self._metrics.model_reloads.labels(role="live", result="swapped").inc()
        self._export()
        self._record()
        return True

    def _drop_shadow(self) -> None:
        ticker = self.ticker

        def apply() -> None:
            if ticker is not None:
                ticker.shadow = None
            self.shadow = None

        if ticker is not None:
            ticker.install(apply)
        else:
            apply()
        logger.info("shadow model dropped")
        self._export()
        self._record()

    def _record(self) -> None:
        self.record.write(
            configured=self._configured,
            live=_text(self.live.path if self.live is not None else None),
            live_version=self.live.version if self.live is not None else None,
            shadow=_text(self.shadow.path if self.shadow is not None else None),
        )

    def _export(self) -> None:
        live = self.live
        if live is not None:
            forecaster = live.forecaster
            self._metrics.model_info.info(
                {
                    "kind": forecaster.kind,
                    "version": forecaster.version,
                    "window": str(forecaster.window),
                    "horizon": str(forecaster.horizon),
                    "device": str(getattr(forecaster, "device", "cpu")),
                    "path": self._shown(live.path),
                }
            )
        shadow = self.shadow
        self._metrics.shadow_active.set(0 if shadow is None else 1)
        self._metrics.shadow_info.info(
            {}
            if shadow is None
            else {
                "kind": shadow.forecaster.kind,
                "version": shadow.version,
                "path": self._shown(shadow.path),
            }
        )

    def _shown(self, path: Path | None) -> str:
        """A model's path for the metrics: relative to the model directory when inside it."""
        if path is None:
            return ""
        if self.directory is not None:
            try:
                return str(path.resolve().relative_to(self.directory.resolve()))
            except ValueError:
                pass
        return str(path)
