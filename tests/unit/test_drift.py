"""The drift watch: each machine's next-step skill against the model's test skill."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import generate_latest

from agent.drift import DriftWatch, export_drift
from agent.metrics import AgentMetrics
from forewarn.modelcmd import format_status, read_status
from models.skill import (
    DRIFT_REFERENCE_KEY,
    SkillReference,
    measure_reference,
    reference_from_report,
    skill_reference,
)

REFERENCE = SkillReference(model_rmse_c=1.0, persistence_rmse_c=2.0)  # test skill 0.5


def feed(
    watch: DriftWatch,
    actual: np.ndarray,
    predicted_next: np.ndarray,
    *,
    seq_step: int = 1,
    restarts: np.ndarray | None = None,
) -> None:
    """Feed (machines, steps) readings one tick at a time; ``predicted_next[:, t]`` is the
    1-step forecast made at step t for step t + 1."""
    machines, steps = actual.shape
    slots = np.arange(machines)
    restarts = np.zeros(machines, dtype=np.int64) if restarts is None else restarts
    for t in range(steps):
        forecasts = np.repeat(predicted_next[:, t : t + 1], 3, axis=1)
        watch.update(slots, actual[:, t], np.full(machines, t * seq_step), restarts, forecasts)


def test_ratio_is_live_skill_over_test_skill() -> None:
    rng = np.random.default_rng(0)
    steps = 4000
    walk = np.cumsum(rng.normal(0.0, 1.0, (2, steps)), axis=1)  # persistence RMSE 1
    # Machine 0's forecast of t+1 is off by N(0, 0.5): skill 0.5, as on the test split.
    # Machine 1's by N(0, 1.5): skill 1.5, three times worse.
    noise = rng.normal(0.0, 1.0, (2, steps)) * np.array([[0.5], [1.5]])
    predicted = np.roll(walk, -1, axis=1) + noise
    watch = DriftWatch(REFERENCE, memory_readings=1000, warm_up_readings=100, capacity=2)
    feed(watch, walk, predicted)
    ratio = watch.ratio(np.arange(2))
    assert ratio[0] == pytest.approx(1.0, abs=0.1)
    assert ratio[1] == pytest.approx(3.0, abs=0.3)


def test_no_ratio_before_warm_up_or_without_a_reference() -> None:
    actual = np.arange(50, dtype=np.float64)[np.newaxis]
    watch = DriftWatch(REFERENCE, memory_readings=100, warm_up_readings=50, capacity=1)
    feed(watch, actual, actual + 1)
    assert np.isnan(watch.ratio(np.array([0])))[0]  # 49 compared, 50 needed
    feed(watch, actual + 50, actual + 51)
    assert not np.isnan(watch.ratio(np.array([0])))[0]
    blind = DriftWatch(None, memory_readings=100, warm_up_readings=1, capacity=1)
    feed(blind, actual, actual + 1)
    assert np.isnan(blind.ratio(np.array([0])))[0]


def test_readings_not_one_step_after_the_forecast_are_not_compared() -> None:
    actual = np.arange(40, dtype=np.float64)[np.newaxis]
    skipping = DriftWatch(REFERENCE, 100, 1, capacity=1)
    feed(skipping, actual, actual + 1, seq_step=2)  # readings faster than ticks
    assert skipping.count[0] == 0
    restarted = DriftWatch(REFERENCE, 100, 1, capacity=1)
    slots, forecasts = np.array([0]), np.zeros((1, 3))
    restarted.update(slots, np.array([1.0]), np.array([5]), np.array([0]), forecasts)
    restarted.update(slots, np.array([1.0]), np.array([6]), np.array([1]), forecasts)  # gap
    assert restarted.count[0] == 0
    restarted.update(slots, np.array([1.0]), np.array([7]), np.array([1]), forecasts)
    assert restarted.count[0] == 1


def test_reset_forgets_a_reused_slot() -> None:
    actual = np.arange(40, dtype=np.float64)[np.newaxis].repeat(2, axis=0)
    watch = DriftWatch(REFERENCE, 100, 10, capacity=2)
    feed(watch, actual, actual + 1)
    watch.reset(np.array([1]))
    assert watch.count.tolist() == [39, 0]
    assert np.isnan(watch.ratio(np.array([1])))[0]
    assert watch.forecast_seq[1] == -1


def test_a_new_model_starts_every_machine_afresh_against_its_own_reference() -> None:
    actual = np.arange(40, dtype=np.float64)[np.newaxis]
    watch = DriftWatch(REFERENCE, 100, 10, capacity=1)
    feed(watch, actual, actual)
    assert watch.ratio(np.array([0]))[0] == pytest.approx(2.0)
    other = SkillReference(model_rmse_c=1.0, persistence_rmse_c=1.0)
    watch.use_model(other)
    assert watch.reference is other and watch.count[0] == 0
    feed(watch, actual + 40, actual + 40)
    assert watch.ratio(np.array([0]))[0] == pytest.approx(1.0)


def test_capacity_grows_keeping_state() -> None:
    actual = np.arange(30, dtype=np.float64)[np.newaxis]
    watch = DriftWatch(REFERENCE, 100, 10, capacity=1)
    feed(watch, actual, actual + 1)
    watch.ensure_capacity(4)
    assert watch.count.tolist() == [29, 0, 0, 0]


def test_export_sets_bounded_per_machine_gauges_and_fleet_quantiles() -> None:
    metrics = AgentMetrics(max_machine_series=1)
    for machine_id in ("a", "b"):
        metrics.set_machine(machine_id, 70.0, 71.0)  # "b" is over the cap: no series
    actual = np.arange(30, dtype=np.float64)[np.newaxis].repeat(2, axis=0)
    watch = DriftWatch(REFERENCE, 100, 10, capacity=2)
    # Forecast errors 1 and 2, persistence errors 1: live skills 1 and 2, ratios 2 and 4.
    feed(watch, actual, actual + np.array([[0.0], [-1.0]]))
    export_drift(watch, metrics, ["a", "b"], {"a": 0, "b": 1}, now=100.0)
    value = metrics.registry.get_sample_value
    assert value("forewarn_machine_model_drift_ratio", {"machine_id": "a"}) == pytest.approx(2.0)
    assert value("forewarn_machine_model_drift_ratio", {"machine_id": "b"}) is None
    assert value("forewarn_model_drift_ratio", {"quantile": "1"}) == pytest.approx(4.0)
    assert value("forewarn_model_drift_ratio", {"quantile": "0.5"}) == pytest.approx(3.0)
    assert value("forewarn_model_drift_machines") == 2
    metrics.drop_machine("a")
    assert value("forewarn_machine_model_drift_ratio", {"machine_id": "a"}) is None


def test_after_a_new_model_the_old_ratios_leave_the_metrics_until_the_new_ones_warm_up() -> None:
    metrics = AgentMetrics()
    metrics.set_machine("a", 70.0, 71.0)
    actual = np.arange(30, dtype=np.float64)[np.newaxis]
    watch = DriftWatch(REFERENCE, 100, 10, capacity=1)
    feed(watch, actual, actual)
    export_drift(watch, metrics, ["a"], {"a": 0}, now=100.0)
    value = metrics.registry.get_sample_value
    assert value("forewarn_machine_model_drift_ratio", {"machine_id": "a"}) == pytest.approx(2.0)
    watch.use_model(SkillReference(model_rmse_c=1.0, persistence_rmse_c=1.0))
    feed(watch, actual[:, :5] + 30, actual[:, :5] + 30)
    export_drift(watch, metrics, ["a"], {"a": 0}, now=100.5)  # not a second later: at once
    assert value("forewarn_machine_model_drift_ratio", {"machine_id": "a"}) is None
    assert value("forewarn_model_drift_ratio", {"quantile": "1"}) is None
    assert value("forewarn_model_drift_machines") == 0
    feed(watch, actual + 35, actual + 35)
    export_drift(watch, metrics, ["a"], {"a": 0}, now=102.0)
    assert value("forewarn_machine_model_drift_ratio", {"machine_id": "a"}) == pytest.approx(1.0)
    assert value("forewarn_model_drift_ratio", {"quantile": "1"}) == pytest.approx(1.0)


def test_reference_from_training_report_and_older_reports() -> None:
    windows = np.zeros((3, 4, 2), dtype=np.float32)
    windows[:, -1, 0] = [0.0, 0.0, 0.0]
    targets = np.array([[1.0, 9.0], [1.0, 9.0], [1.0, 9.0]])
    predicted = np.array([[0.5, 0.0], [0.5, 0.0], [0.5, 0.0]])
    measured = measure_reference(predicted, windows, targets)
    assert (measured.model_rmse_c, measured.persistence_rmse_c) == (0.5, 1.0)
    new = reference_from_report({DRIFT_REFERENCE_KEY: measured.as_report()})
    assert new == measured
    old = reference_from_report(
        {"test_next_step": {"rmse_c": 3.0}, "persistence_next_step": {"rmse_c": 4.0}}
    )
    assert old is not None and old.skill == pytest.approx(0.75)
    assert reference_from_report({"test_next_step": {"rmse_c": 3.0}}) is None
    assert reference_from_report({DRIFT_REFERENCE_KEY: {"model_rmse_c": float("nan")}}) is None


@pytest.mark.parametrize("name", ["default", "shipped/ridge", "shipped/gru"])
def test_shipped_models_carry_their_test_skill(name: str) -> None:
    from pathlib import Path

    from models.serving import ServingModel

    model = ServingModel.load(Path(__file__).resolve().parents[2] / "models" / f"{name}.json")

    class Served:
        report = model.report

    reference = skill_reference(Served())
    assert reference is not None
    assert 0.5 < reference.skill < 1.0  # they beat persistence on their test split


def test_forewarn_model_status_shows_the_served_models_drift() -> None:
    """`forewarn model status` reads the test skill and the fleet's ratios from /metrics."""
    metrics = AgentMetrics()

    def drift_line() -> str:
        text = generate_latest(metrics.registry).decode()
        (line,) = [s for s in format_status(read_status(text)).splitlines() if s[:5] == "drift"]
        return line

    metrics.model_test_skill.set(float("nan"))
    assert drift_line() == "drift   none (drift.enabled is off, or the model carries no test skill)"
    metrics.model_test_skill.set(REFERENCE.skill)
    assert drift_line() == "drift   test skill 0.500; no machine has a ratio yet (warming up)"
    actual = np.arange(30, dtype=np.float64)[np.newaxis].repeat(2, axis=0)
    watch = DriftWatch(REFERENCE, 100, 10, capacity=2)
    feed(watch, actual, actual + np.array([[0.0], [-1.0]]))  # ratios 2 and 4
    export_drift(watch, metrics, ["a", "b"], {"a": 0, "b": 1}, now=100.0)
    assert drift_line() == (
        "drift   test skill 0.500; ratio over 2 machines: median 3.00, worst 4.00"
    )
