"""The agent's Prometheus metrics, each test on its own registry.

They check what forewarn decides — names, labels and their values made up front, base units,
the per-machine cap, what the agent exports about itself, the bulk histogram — not that
prometheus_client counts (``inc``, ``observe``, ``info`` are its own, and tested there).
"""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from agent.alerts import SEVERITIES
from agent.metrics import AgentMetrics
from wire.reading import REJECT_REASONS


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def label_values(registry: CollectorRegistry, sample_name: str, label: str) -> list[str]:
    """The values of ``label`` across a metric's samples, as exported (one per series)."""
    return [
        sample.labels[label]
        for family in registry.collect()
        for sample in family.samples
        if sample.name == sample_name
    ]


def test_rejected_counter_preinitialised_for_every_reason(registry: CollectorRegistry) -> None:
    """Every reason is a series at 0 from the start (a rate() over it works before the first
    rejection), and there is no other: the label set is bounded."""
    AgentMetrics(registry)
    assert len(REJECT_REASONS) == len(set(REJECT_REASONS)) == 11
    exported = label_values(registry, "forewarn_readings_rejected_total", "reason")
    assert sorted(exported) == sorted(REJECT_REASONS)
    for reason in REJECT_REASONS:
        assert value(registry, "forewarn_readings_rejected_total", reason=reason) == 0.0


def test_alert_counters_preinitialised_per_severity(registry: CollectorRegistry) -> None:
    AgentMetrics(registry)
    assert set(SEVERITIES) == {"warning", "critical", "stale"}
    names = ("forewarn_alerts_total", "forewarn_alerts_resolved_total", "forewarn_alerts_firing")
    for name in names:
        assert sorted(label_values(registry, name, "severity")) == sorted(SEVERITIES), name
        for severity in SEVERITIES:
            assert value(registry, name, severity=severity) == 0.0


def test_unlabelled_metrics_exist_with_base_units(registry: CollectorRegistry) -> None:
    AgentMetrics(registry)
    for name in (
        "forewarn_readings_total",
        "forewarn_forecasts_total",
        "forewarn_ticks_total",
        "forewarn_batch_size",
        "forewarn_machines",
        "forewarn_pending_readings",
        "forewarn_mqtt_connected",
        "forewarn_tick_duration_seconds_count",
        "forewarn_forecast_duration_seconds_count",
    ):
        assert value(registry, name) == 0.0, name
    # Seconds, not milliseconds: the tick's buckets resolve a few milliseconds and end within
    # a minute (a tick is stalled well before that).
    bounds = [
        float(le)
        for le in label_values(registry, "forewarn_tick_duration_seconds_bucket", "le")
        if le != "+Inf"
    ]
    assert bounds[0] <= 0.0025 and 1.0 <= bounds[-1] <= 60.0, bounds
    exposition = generate_latest(registry).decode()
    assert all(
        line.startswith(("#", "forewarn_")) for line in exposition.splitlines() if line.strip()
    )


def test_instances_do_not_share_state() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    AgentMetrics(first).readings.inc(5)
    AgentMetrics(second)
    assert value(first, "forewarn_readings_total") == 5.0
    assert value(second, "forewarn_readings_total") == 0.0


def test_the_agent_exports_what_it_serves() -> None:
    """forewarn_model_info names the served model as the agent built it: kind, version,
    window, horizon, device, path (none for a forecaster handed in); forewarn_build_info its
    own version."""
    from agent import __version__
    from agent.app import Agent
    from config.settings import load_settings
    from models.baselines import PersistenceForecaster

    settings = load_settings(_env_file=None, metrics={"host": "127.0.0.1", "port": 0})
    forecaster = PersistenceForecaster(horizon=7, window=12, version="held-7")
    agent = Agent(settings, forecaster=forecaster)
    labels = {"kind": "persistence", "version": "held-7", "window": "12", "horizon": "7"}
    assert (
        value(agent.metrics.registry, "forewarn_model_info", **labels, device="cpu", path="") == 1.0
    )
    assert value(agent.metrics.registry, "forewarn_build_info", version=__version__) == 1.0


def machine_series(registry: CollectorRegistry, machine_id: str) -> list[str]:
    """Every exported sample line labelled with ``machine_id``, whatever the gauge."""
    label = f'machine_id="{machine_id}"'
    return [line for line in generate_latest(registry).decode().splitlines() if label in line]


def set_machine(metrics: AgentMetrics, machine_id: str, temperature: float, forecast: float):
    metrics.set_machine(machine_id, temperature=temperature, forecast=forecast)


def test_machine_series_capped_and_dropped(registry: CollectorRegistry) -> None:
    metrics = AgentMetrics(registry, max_machine_series=3)
    for i in range(5):
        set_machine(metrics, f"m-{i}", 70.0 + i, 80.0 + i)
    temperature = "forewarn_machine_temperature_celsius"
    forecast = "forewarn_machine_forecast_celsius"
    for i in range(3):
        assert value(registry, temperature, machine_id=f"m-{i}") == 70.0 + i
        assert value(registry, forecast, machine_id=f"m-{i}") == 80.0 + i
    for i in (3, 4):
        assert machine_series(registry, f"m-{i}") == []
    # Machines already exported keep updating at the cap.
    set_machine(metrics, "m-1", 90.0, 91.0)
    assert value(registry, temperature, machine_id="m-1") == 90.0
    # Dropping one removes every series of it and frees a place for another.
    assert machine_series(registry, "m-0") != []
    metrics.drop_machine("m-0")
    assert machine_series(registry, "m-0") == []
    set_machine(metrics, "m-4", 74.0, 84.0)
    assert value(registry, temperature, machine_id="m-4") == 74.0
    set_machine(metrics, "m-3", 73.0, 83.0)
    assert machine_series(registry, "m-3") == []
    exported = generate_latest(registry).decode().count(f"{temperature}{{")
    assert exported == 3


def test_time_to_threshold_per_machine_within_the_cap_and_dropped(
    registry: CollectorRegistry,
) -> None:
    metrics = AgentMetrics(registry, max_machine_series=1)
    set_machine(metrics, "m-0", 90.0, 96.0)
    set_machine(metrics, "m-1", 90.0, 96.0)  # over the cap: no series
    ids = ["m-0", "m-1"]
    low, estimate, high = np.array([4.0, 1.0]), np.array([9.0, 2.0]), np.array([np.nan, 3.0])
    metrics.set_times_to_threshold(ids, np.array([0, 1]), low, estimate, high)
    name = "forewarn_machine_time_to_threshold_seconds"
    assert value(registry, name, machine_id="m-0", bound="low") == 4.0
    assert value(registry, name, machine_id="m-0", bound="estimate") == 9.0
    assert np.isnan(value(registry, name, machine_id="m-0", bound="high"))
    assert value(registry, name, machine_id="m-1", bound="estimate") is None
    metrics.drop_machine("m-0")
    assert value(registry, name, machine_id="m-0", bound="estimate") is None


def test_drop_unknown_machine_is_harmless(registry: CollectorRegistry) -> None:
    metrics = AgentMetrics(registry, max_machine_series=2)
    metrics.drop_machine("never-seen")
    set_machine(metrics, "m-9", 1.0, 2.0)
    metrics.drop_machine("m-9")
    metrics.drop_machine("m-9")
    assert machine_series(registry, "m-9") == []


def test_zero_machine_series(registry: CollectorRegistry) -> None:
    metrics = AgentMetrics(registry, max_machine_series=0)
    metrics.set_machine("m-1", 70.0, 80.0)
    assert "forewarn_machine_temperature_celsius{" not in generate_latest(registry).decode()


def test_bulk_histogram_matches_prometheus_clients_own(registry: CollectorRegistry) -> None:
    """Observing an array at once gives the exposition prometheus_client's Histogram gives for
    the same values one at a time — values on bucket bounds, past the last, and NaN aside."""
    from prometheus_client import Histogram

    from agent.bulk_histogram import BulkHistogram

    buckets = (0.01, 0.1, 0.5, 1.0, 2.5)
    bulk = BulkHistogram("bulk_seconds", "Bulk.", buckets, registry)
    reference_registry = CollectorRegistry()
    reference = Histogram("bulk_seconds", "Bulk.", buckets=buckets, registry=reference_registry)
    rng = np.random.default_rng(3)
    batches = [
        np.array([0.0, 0.01, 0.1, 0.5, 1.0, 2.5, 2.6, 100.0]),  # on the bounds and past them
        rng.exponential(0.6, size=1000),
        np.empty(0),
    ]
    for batch in batches:
        bulk.observe_many(batch)
        for v in batch:
            reference.observe(float(v))
    bulk.observe_many(np.array([np.nan, 0.2]))
    reference.observe(0.2)

    def samples(r: CollectorRegistry) -> dict[tuple[str, str], float]:
        return {
            (s.name, s.labels.get("le", "")): s.value
            for family in r.collect()
            for s in family.samples
            if not s.name.endswith("_created")
        }

    got, expected = samples(registry), samples(reference_registry)
    assert got.keys() == expected.keys()
    for key, number in expected.items():
        assert got[key] == pytest.approx(number), key
    assert got[("bulk_seconds_count", "")] == 1009


@pytest.mark.parametrize(
    "buckets",
    [(1.0, 0.5), (0.5, 0.5, 1.0), (), (0.5, float("inf")), (float("nan"), 1.0)],
    ids=["unordered", "repeated", "none", "infinite", "nan"],
)
def test_bulk_histogram_refuses_buckets_it_cannot_bin(
    registry: CollectorRegistry, buckets: tuple[float, ...]
) -> None:
    """BulkHistogram's own check (its searchsorted needs finite, strictly increasing bounds;
    +Inf is the bucket it adds itself), before it registers anything."""
    from agent.bulk_histogram import BulkHistogram

    with pytest.raises(ValueError, match="strictly increasing"):
        BulkHistogram("bad_seconds", "Bad.", buckets, registry)
    assert list(registry.collect()) == []
