"""`forewarn model`: see which model an agent serves and shadows, and change them.

``status`` reads a running agent's ``/metrics`` over HTTP (what it serves, its shadow, their
rolling 1-step-ahead RMSE on the same readings, refusals, and the served model's drift).
``serve``, ``shadow`` and ``promote`` publish a retained command on
``<prefix>/_agents/<client_id>/model``: the agent loads and checks the named model (a path
inside its ``model.directory``) on its own, so the command says what is wanted and the agent's
log and metrics say what happened.
"""

from __future__ import annotations

import math
import time
import urllib.request
from dataclasses import dataclass, field

import orjson
from prometheus_client.parser import text_string_to_metric_families

from config.settings import Settings
from config.topics import model_command_topic
from wire.mqtt import make_client


@dataclass
class ModelStatus:
    """What an agent's metrics say about its models."""

    live: dict[str, str] = field(default_factory=dict)
    shadow: dict[str, str] = field(default_factory=dict)
    rmse: dict[str, float] = field(default_factory=dict)
    compared: float = 0.0
    reloads: dict[tuple[str, str], float] = field(default_factory=dict)
    failures: dict[str, float] = field(default_factory=dict)
    test_skill: float = math.nan
    drift: dict[str, float] = field(default_factory=dict)
    """Quantiles of the fleet's drift ratios, by quantile label ("0.5", "1")."""
    drift_machines: float = 0.0


def read_status(text: str) -> ModelStatus:
    """Parse the agent's /metrics text into a :class:`ModelStatus`."""
    status = ModelStatus()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "forewarn_model_info":
                status.live = dict(labels)
            elif sample.name == "forewarn_shadow_info":
                status.shadow = dict(labels)
            elif sample.name == "forewarn_shadow_rmse_celsius":
                status.rmse[labels["model"]] = sample.value
            elif sample.name == "forewarn_shadow_compared_readings_total":
                status.compared = sample.value
            elif sample.name == "forewarn_model_reloads_total":
                status.reloads[(labels["role"], labels["result"])] = sample.value
            elif sample.name == "forewarn_model_reload_failures_total" and sample.value:
                status.failures[labels["reason"]] = sample.value
            elif sample.name == "forewarn_model_test_skill":
                status.test_skill = sample.value
            elif sample.name == "forewarn_model_drift_ratio":
                status.drift[labels["quantile"]] = sample.value
            elif sample.name == "forewarn_model_drift_machines":
                status.drift_machines = sample.value
    return status


def fetch_status(url: str, timeout_s: float = 5.0) -> ModelStatus:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return read_status(response.read().decode())


def _rmse(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f} °C"


def format_status(status: ModelStatus) -> str:
    """The lines ``forewarn model status`` prints."""
    live, shadow = status.live, status.shadow
    lines = [
        f"live    {live.get('version', '?')}  kind {live.get('kind', '?')}  "
        f"path {live.get('path') or '-'}  1-step RMSE {_rmse(status.rmse.get('live'))}"
    ]
    if shadow:
        lines.append(
            f"shadow  {shadow.get('version', '?')}  kind {shadow.get('kind', '?')}  "
            f"path {shadow.get('path') or '-'}  1-step RMSE {_rmse(status.rmse.get('shadow'))}"
        )
        lines.append(f"compared on the same {int(status.compared)} readings")
        live_rmse, shadow_rmse = status.rmse.get("live"), status.rmse.get("shadow")
        if live_rmse and shadow_rmse and not math.isnan(live_rmse + shadow_rmse):
            better = "shadow" if shadow_rmse < live_rmse else "live"
            ratio = shadow_rmse / live_rmse
            lines.append(f"{better} forecasts better (shadow/live RMSE {ratio:.3f})")
    else:
        lines.append("shadow  none")
    lines.append(_drift_line(status))
    swapped = sum(v for (_, result), v in status.reloads.items() if result == "swapped")
    refused = sum(v for (_, result), v in status.reloads.items() if result == "refused")
    lines.append(f"swaps {int(swapped)}, refused {int(refused)}")
    for reason, count in sorted(status.failures.items()):
        lines.append(f"  refused for {reason}: {int(count)}")
    return "\n".join(lines)


def _drift_line(status: ModelStatus) -> str:
    """The served model's drift: its test skill and the fleet's ratios against it."""
    if math.isnan(status.test_skill):
        return "drift   none (drift.enabled is off, or the model carries no test skill)"
    head = f"drift   test skill {status.test_skill:.3f}; "
    median, worst = status.drift.get("0.5"), status.drift.get("1")
    if not status.drift_machines or median is None or worst is None:
        return head + "no machine has a ratio yet (warming up)"
    return (
        head + f"ratio over {int(status.drift_machines)} machines: median {median:.2f}, "
        f"worst {worst:.2f}"
    )


def command_payload(action: str, path: str | None, at: float | None = None) -> bytes:
    """The command for ``serve PATH``, ``shadow PATH``, ``shadow`` without one (drop it) and
    ``promote``, stamped with ``at`` (now by default): the agent skips a retained command it
    applied before, and the stamp makes the same command sent again a new one."""
    stamp = time.time() if at is None else at
    if action == "serve":
        return orjson.dumps({"live": path, "at": stamp})
    if action == "shadow":
        return orjson.dumps({"shadow": path, "at": stamp})
    if action == "promote":
        return orjson.dumps({"promote": "shadow", "at": stamp})
    raise ValueError(f"unknown model action {action!r}")


def publish_command(settings: Settings, client_id: str, payload: bytes) -> str | None:
    """Publish the retained command to agent ``client_id``; an error message, or None."""
    m = settings.mqtt
    client = make_client(m, f"{m.client_id}-model-{int(time.time())}")
    try:
        client.connect(m.host, m.port, m.keepalive_s)
    except OSError as error:
        return f"cannot reach the broker at {m.host}:{m.port}: {error}"
    client.loop_start()
    info = client.publish(model_command_topic(m.topic_prefix, client_id), payload, 1, True)
    try:
        info.wait_for_publish(timeout=10)
    except (RuntimeError, ValueError) as error:
        return f"the broker refused the command: {error}"
    finally:
        client.disconnect()
        client.loop_stop()
    if not info.is_published():
        return "the broker did not confirm the command"
    return None
