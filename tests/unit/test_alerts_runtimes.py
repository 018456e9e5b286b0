"""bench.alerts --runtimes: forewarn's policy on each torch-free runtime, event by event
against torch's, on the alert bench's fleet replayed tick by tick."""

from __future__ import annotations

from typing import Any

import pytest

import bench.inference
from bench.alerts import compare_runtimes
from forewarn.alert_quality import Outcome, alert_fleet, bench_settings, run_policy
from models.baselines import PersistenceForecaster
from models.checkpoint import TorchForecaster


@pytest.fixture(scope="module")
def alert_bench() -> dict[str, Any]:
    """A small fleet of the bench's, the shipped model, and torch's outcome on it."""
    machines, history = alert_fleet(16, 400, 11)
    settings = bench_settings()
    model = TorchForecaster.from_path(None, device="cpu")
    torch = run_policy(model, machines, history, settings)
    assert torch.events, "the fleet raised no alert: nothing would be compared"
    return {
        "fleet": machines,
        "history": history,
        "settings": settings,
        "model": model,
        "torch": torch,
    }


def _compare(
    alert_bench: dict[str, Any], runtimes: str
) -> tuple[dict[str, Any], dict[str, Outcome]]:
    b = alert_bench
    outcomes = {"forewarn": b["torch"]}
    verdicts = compare_runtimes(
        b["model"], b["fleet"], b["history"], b["settings"], runtimes, outcomes
    )
    return verdicts, outcomes


def test_every_runtime_raises_torch_s_alerts(alert_bench: dict[str, Any]) -> None:
    verdicts, outcomes = _compare(alert_bench, "onnx,numpy")
    assert set(verdicts) == {"onnx", "numpy"}
    for runtime, verdict in verdicts.items():
        assert verdict["identical"] is True, (runtime, verdict)
        assert outcomes[f"forewarn_{runtime}"].events == alert_bench["torch"].events


def test_a_runtime_with_other_alerts_is_reported(
    alert_bench: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The comparison can fail: a "runtime" that holds the last reading (no forecast) warns
    later than the network, and is reported as differing, with its first difference."""
    model = alert_bench["model"]
    flat = PersistenceForecaster(
        horizon=model.horizon, window=model.window, features=model.features
    )
    monkeypatch.setattr(bench.inference, "serving_forecasters", lambda _: {"numpy": flat})
    verdicts, _ = _compare(alert_bench, "numpy")
    assert verdicts["numpy"]["identical"] is False
    assert verdicts["numpy"]["differing"] > 0
    assert verdicts["numpy"]["first_difference"] is not None
