"""The forecaster contract, checked the same way for every model kind forewarn has.

Every kind fits on windows, forecasts a batch of raw windows in °C, saves and loads back to an
identical forecaster, is indifferent to a machine's level and range, and runs in the agent.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from agent.app import Agent
from config.fields import FEATURES
from config.settings import load_settings
from models.base import NETWORK_KINDS, Forecaster, TrainableForecaster
from models.baselines import (
    LinearExtrapolationForecaster,
    PersistenceForecaster,
    RidgeForecaster,
)
from models.checkpoint import TorchForecaster, load_forecaster
from models.data import make_windows
from models.fitting import FitOptions
from simulator.fleet import Fleet
from wire.reading import Reading

KINDS = ("rnn", "lstm", "gru", "bilstm", "ridge", "persistence", "linear_extrapolation")
HORIZON = 5
WINDOW = 20


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def untrained(kind: str) -> TrainableForecaster:
    if kind in NETWORK_KINDS:
        return TorchForecaster.new(
            kind=kind,
            horizon=HORIZON,
            hidden=8,
            layers=1,
            dropout=0.0,
            seed=0,
            device="cpu",
            threads=1,
        )
    if kind == "ridge":
        return RidgeForecaster(horizon=HORIZON)
    if kind == "persistence":
        return PersistenceForecaster(horizon=HORIZON)
    return LinearExtrapolationForecaster(horizon=HORIZON)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    fleet = Fleet(8, seed=5, overheat=3, overheat_within_ticks=150)
    return make_windows(fleet.history(0, 200), WINDOW, HORIZON, stride=2)


def fit(forecaster: TrainableForecaster, x: np.ndarray, y: np.ndarray) -> TrainableForecaster:
    if isinstance(forecaster, TorchForecaster):
        return forecaster.fit(x, y, options=FitOptions(epochs=3, batch_size=64, seed=0))
    return forecaster.fit(x, y)


@pytest.fixture(scope="module", params=KINDS)
def fitted(request: pytest.FixtureRequest, data: tuple[np.ndarray, np.ndarray]) -> Forecaster:
    return fit(untrained(request.param), *data)


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.sqrt(np.mean((predicted.astype(np.float64) - actual) ** 2)))


def test_is_a_forecaster_with_the_agents_facts(fitted: TrainableForecaster) -> None:
    assert isinstance(fitted, Forecaster)
    assert isinstance(fitted, TrainableForecaster)
    assert fitted.kind in KINDS
    assert fitted.features == FEATURES
    assert (fitted.window, fitted.horizon) == (WINDOW, HORIZON)
    assert isinstance(fitted.version, str) and fitted.version
    fitted.warm_up()  # type: ignore[attr-defined]  # optional in the protocol; all have it
    assert str(getattr(fitted, "device", "cpu")) == "cpu"


@pytest.mark.parametrize("batch", [1, 37])
def test_forecast_shape_dtype_and_values(
    fitted: Forecaster, data: tuple[np.ndarray, np.ndarray], batch: int
) -> None:
    out = fitted.forecast(data[0][:batch])
    assert out.shape == (batch, HORIZON)
    assert out.dtype == np.float32
    assert np.all(np.isfinite(out))
    # Degrees in, degrees out: forecasts sit among the machines' temperatures.
    assert np.all((out > 20.0) & (out < 200.0))


def test_forecast_rejects_windows_of_the_wrong_shape(fitted: Forecaster) -> None:
    for shape in [(3, WINDOW - 1, 4), (3, WINDOW, 3), (WINDOW, 4)]:
        with pytest.raises(ValueError, match="windows must have shape"):
            fitted.forecast(np.zeros(shape, dtype=np.float32))


def test_rows_are_forecast_independently(
    fitted: Forecaster, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x = data[0][:25]
    together = fitted.forecast(x)
    alone = np.concatenate([fitted.forecast(x[i : i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-3)


def test_chunked_forecast_equals_one_batch(
    fitted: TrainableForecaster, data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    path = tmp_path / "model.pt"
    fitted.save(path)
    chunked = load_forecaster(path, device="cpu", threads=1, chunk_size=7)
    np.testing.assert_allclose(
        chunked.forecast(data[0][:50]), fitted.forecast(data[0][:50]), rtol=1e-5, atol=1e-3
    )


def test_save_and_load_give_an_identical_forecaster(
    fitted: TrainableForecaster, data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    path = tmp_path / "nested" / f"{fitted.kind}.pt"
    fitted.save(path)
    loaded = load_forecaster(path, device="cpu", threads=1)
    for name in ("kind", "version", "features", "window", "horizon"):
        assert getattr(loaded, name) == getattr(fitted, name), name
    np.testing.assert_array_equal(loaded.forecast(data[0]), fitted.forecast(data[0]))


def test_level_and_range_do_not_matter(
    fitted: Forecaster, data: tuple[np.ndarray, np.ndarray]
) -> None:
    """A machine whose readings are a·x + b (per feature) gets the forecast a·f(x) + b.

    So a bearing at 45 °C or an oven at 180 °C is forecast as well, relative to its range, as
    the training fleet, without retraining.
    """
    x = data[0][:40].astype(np.float64)
    scale = np.array([2.5, 0.3, 4.0, 0.05])
    offset = np.array([5.0, -20.0, 300.0, -60.0])
    moved = (x * scale + offset).astype(np.float32)
    expected = fitted.forecast(x.astype(np.float32)) * scale[0] + offset[0]
    got = fitted.forecast(moved)
    span = np.ptp(x[:, :, 0]) * scale[0]
    assert np.max(np.abs(got - expected)) < 1e-4 * span


def straight_lines() -> tuple[np.ndarray, np.ndarray]:
    """Windows whose temperatures lie on straight lines, and each line's next HORIZON values.

    Levels and slopes are multiples of 1/8, so every value is exact in float32 and a forecast
    of the line can be checked to float precision. The other features are noise: a forecast
    of the temperature must not read them.
    """
    rng = np.random.default_rng(11)
    levels = np.array([64.0, 80.5, 95.25, 30.0])
    slopes = np.array([0.5, -0.375, 0.0, 2.125])
    steps = np.arange(WINDOW + HORIZON, dtype=np.float64)
    lines = levels[:, None] + slopes[:, None] * steps
    windows = rng.normal(100.0, 30.0, size=(len(levels), WINDOW, len(FEATURES)))
    windows[:, :, 0] = lines[:, :WINDOW]
    return windows.astype(np.float32), lines[:, WINDOW:]


def test_fitting_learns_from_the_windows(
    fitted: Forecaster, data: tuple[np.ndarray, np.ndarray]
) -> None:
    """Trainable kinds beat where they started; the baselines, with nothing to learn, give
    their definitions, checked against oracles computed here."""
    x, y = data
    if fitted.kind == "persistence":
        expected = np.repeat(x[:, -1:, 0], HORIZON, axis=1)  # the last reading, held
        np.testing.assert_array_equal(fitted.forecast(x), expected)
        return
    if fitted.kind == "linear_extrapolation":
        lines, ahead = straight_lines()
        np.testing.assert_allclose(fitted.forecast(lines), ahead, rtol=1e-6, atol=0)
        # On real windows: numpy's least-squares line through each window, carried on.
        steps = np.arange(WINDOW)
        slope, intercept = np.polyfit(steps, x[:, :, 0].T.astype(np.float64), 1)
        expected = slope[:, None] * np.arange(WINDOW, WINDOW + HORIZON) + intercept[:, None]
        np.testing.assert_allclose(fitted.forecast(x), expected, rtol=1e-5)
        return
    error = rmse(fitted.forecast(x), y)
    before = untrained(fitted.kind)
    baseline = (
        rmse(PersistenceForecaster(horizon=HORIZON).forecast(x), y)
        if fitted.kind == "ridge"
        else rmse(before.forecast(x), y)
    )
    assert error < baseline


@pytest.mark.parametrize("kind", ["lstm", "ridge"])
def test_fit_rejects_targets_that_do_not_match(
    kind: str, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = data
    with pytest.raises(ValueError, match="targets must have shape"):
        fit(untrained(kind), x, y[:, :2])
    with pytest.raises(ValueError, match="windows must have shape"):
        fit(untrained(kind), x[:, :10], y)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_works_in_the_agent(
    kind: str, data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    settings = load_settings(_env_file=None)
    settings.metrics = settings.metrics.model_copy(update={"host": "127.0.0.1", "port": 0})
    model: dict[str, object] = {"kind": kind, "device": "cpu", "threads": 1}
    if kind in ("persistence", "linear_extrapolation"):
        model["horizon"] = HORIZON
    else:
        path = tmp_path / f"{kind}.pt"
        fit(untrained(kind), *data).save(path)
        model["checkpoint"] = path
    settings.model = model  # type: ignore[assignment]  # validated into the kind's section
    assert settings.model.kind == kind
    agent = Agent(settings)
    agent.http.start()
    try:
        assert agent.forecaster.kind == kind
        assert agent.forecaster.horizon == HORIZON
        fleet = Fleet(3, seed=8)
        history = fleet.history(0, WINDOW + 1).astype(np.float32)
        now = time.time()
        for tick in range(WINDOW + 1):
            for machine, machine_id in enumerate(fleet.machine_ids):
                agent.hand_off(
                    Reading(machine_id, now - WINDOW + tick, tick, history[machine, tick])
                )
        agent.tick()
        assert agent.metrics.registry.get_sample_value("forewarn_forecasts_total") == 3
        forecasts = [
            agent.metrics.registry.get_sample_value(
                "forewarn_machine_forecast_celsius", {"machine_id": m}
            )
            for m in fleet.machine_ids
        ]
        assert all(f is not None and 40.0 < f < 140.0 for f in forecasts), forecasts
    finally:
        agent.http.stop()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_an_agent_on_cuda_forecasts_what_one_on_the_cpu_does() -> None:
    """The agent's whole tick on a GPU: gather, one copy in, chunks, one copy out."""
    fleet = Fleet(300, seed=9)
    history = fleet.history(0, WINDOW + 5).astype(np.float32)
    peaks = {}
    for device in ("cpu", "cuda"):
        settings = load_settings(_env_file=None)
        settings.metrics = settings.metrics.model_copy(update={"host": "127.0.0.1", "port": 0})
        settings.model = {  # type: ignore[assignment]
            "device": device,
            "threads": 1,
            "cuda_chunk_size": 128,
            "runtime": "torch",
        }
        agent = Agent(settings)
        assert agent.forecaster.device.type == device
        now = time.time()
        for tick in range(history.shape[1]):
            for machine, machine_id in enumerate(fleet.machine_ids):
                agent.hand_off(Reading(machine_id, now - 30 + tick, tick, history[machine, tick]))
        agent.tick()
        peaks[device] = np.array(
            [
                agent.metrics.registry.get_sample_value(
                    "forewarn_machine_forecast_celsius", {"machine_id": m}
                )
                for m in fleet.machine_ids
            ]
        )
    np.testing.assert_allclose(peaks["cuda"], peaks["cpu"], rtol=0, atol=0.1)
