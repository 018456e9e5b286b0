"""Windows, scaling, networks, checkpoints, serving and training."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from config.errors import ConfigError
from config.fields import FEATURES
from config.model import CheckpointModelSettings, LinearExtrapolationModelSettings
from config.settings import load_settings
from models.base import Forecaster
from models.baselines import RidgeForecaster
from models.checkpoint import (
    Checkpoint,
    CheckpointError,
    TorchForecaster,
    default_checkpoint_path,
    forecaster_from_settings,
    resolve_device,
)
from models.data import make_windows
from models.normalise import despike_torch, window_stats_np, window_stats_torch
from models.scaling import FeatureScaler
from models.train import (
    TrainConfig,
    episode_faults,
    errors_c,
    generate_episodes,
    train,
    windows_of,
)
from models.zoo import RecurrentForecaster
from simulator.fleet import Fleet
from simulator.signal import readings_from_temperature, seed_series

TINY = TrainConfig(episodes=3, machines=4, ticks=120, epochs=1, horizon=5, device="cpu")


def quiet(message: str) -> None:
    pass


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def serve(checkpoint: Checkpoint, chunk_size: int = 1000) -> TorchForecaster:
    return TorchForecaster(checkpoint, device="cpu", threads=1, chunk_size=chunk_size)


@pytest.fixture(scope="module")
def tiny_checkpoint() -> Checkpoint:
    return train(TINY, progress=quiet)


@pytest.fixture(scope="module")
def default_checkpoint() -> Checkpoint:
    return Checkpoint.load(default_checkpoint_path())


def coded_series(machines: int, ticks: int, features: int) -> np.ndarray:
    """value = machine * 10000 + tick * 10 + feature: every cell says where it came from."""
    m = np.arange(machines)[:, None, None]
    t = np.arange(ticks)[None, :, None]
    f = np.arange(features)[None, None, :]
    return (m * 10000 + t * 10 + f).astype(np.float64)


# ---------------------------------------------------------------- make_windows


def test_make_windows_shapes_and_alignment() -> None:
    machines, ticks, features, window, horizon = 3, 50, 4, 20, 5
    x, y = make_windows(coded_series(machines, ticks, features), window, horizon)
    per_machine = ticks - window - horizon + 1
    assert x.shape == (machines * per_machine, window, features)
    assert y.shape == (machines * per_machine, horizon)
    assert x.dtype == np.float32
    assert y.dtype == np.float32
    for i in range(len(x)):
        machine, start = divmod(i, per_machine)
        expected_ticks = np.arange(start, start + window)
        np.testing.assert_array_equal(
            x[i], machine * 10000 + expected_ticks[:, None] * 10 + np.arange(features)
        )
        # Targets: exactly the next `horizon` temperatures (feature 0) after the window.
        next_ticks = np.arange(start + window, start + window + horizon)
        np.testing.assert_array_equal(y[i], machine * 10000 + next_ticks * 10)


def test_windows_never_span_machines() -> None:
    x, y = make_windows(coded_series(4, 30, 2), window=10, horizon=3)
    machine_of_x = (x // 10000).reshape(len(x), -1)
    machine_of_y = y // 10000
    assert np.all(machine_of_x == machine_of_x[:, :1])
    assert np.all(machine_of_y == machine_of_x[:, :1])


def test_make_windows_target_index_and_stride() -> None:
    series = coded_series(2, 40, 3)
    x1, y1 = make_windows(series, window=10, horizon=2, target_index=2)
    assert y1[0].tolist() == [10 * 10 + 2, 11 * 10 + 2]
    x3, y3 = make_windows(series, window=10, horizon=2, target_index=2, stride=3)
    per_machine = 40 - 10 - 2 + 1
    starts = list(range(0, per_machine, 3))
    assert len(x3) == 2 * len(starts)
    np.testing.assert_array_equal(x3[: len(starts)], x1[starts])
    np.testing.assert_array_equal(y3[len(starts) :], y1[[per_machine + s for s in starts]])


def test_make_windows_accepts_a_single_series() -> None:
    x, y = make_windows(coded_series(1, 30, 4)[0], window=20, horizon=1)
    assert x.shape == (10, 20, 4)
    assert y[:, 0].tolist() == [t * 10 for t in range(20, 30)]


def test_make_windows_rejects_too_short_series() -> None:
    x, _ = make_windows(coded_series(1, 25, 4), window=20, horizon=5)  # exactly one fits
    assert len(x) == 1
    with pytest.raises(ValueError, match="too short"):
        make_windows(coded_series(1, 25, 4), window=20, horizon=6)


# ---------------------------------------------------------------- FeatureScaler


def test_scaler_fit_transform_inverse_round_trip() -> None:
    rng = np.random.default_rng(0)
    readings = rng.normal([70, 35, 120, 1640], [10, 5, 3, 50], size=(3, 200, 4))
    scaler = FeatureScaler.fit(readings)
    np.testing.assert_allclose(scaler.minimum, readings.reshape(-1, 4).min(axis=0), rtol=1e-6)
    span = readings.reshape(-1, 4).max(axis=0) - readings.reshape(-1, 4).min(axis=0)
    np.testing.assert_allclose(scaler.span, span, rtol=1e-6)
    scaled = scaler.transform(readings)
    assert scaled.dtype == np.float32
    assert scaled.min() == pytest.approx(0.0, abs=1e-6)
    assert scaled.max() == pytest.approx(1.0, abs=1e-6)
    for column in range(4):
        back = scaler.inverse_column(scaled[..., column], column)
        np.testing.assert_allclose(back, readings[..., column], rtol=1e-5, atol=1e-3)


def test_scaler_zero_span_feature_is_finite() -> None:
    readings = np.stack([np.linspace(60, 90, 50), np.full(50, 7.0)], axis=1)
    scaler = FeatureScaler.fit(readings)
    assert scaler.span[1] == 1.0
    scaled = scaler.transform(readings)
    assert np.all(np.isfinite(scaled))
    np.testing.assert_array_equal(scaled[:, 1], 0.0)
    np.testing.assert_allclose(scaler.inverse_column(scaled[:, 1], 1), 7.0)


def test_scaler_lists_round_trip() -> None:
    scaler = FeatureScaler.fit(np.random.default_rng(1).normal(size=(100, 4)))
    again = FeatureScaler.from_lists(scaler.to_lists())
    np.testing.assert_array_equal(again.minimum, scaler.minimum)
    np.testing.assert_array_equal(again.span, scaler.span)
    assert again.minimum.dtype == np.float32


# ---------------------------------------------------------------- RecurrentForecaster


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("horizon", [1, 30])
def test_recurrent_forecaster_output_shape(cell: str, horizon: int) -> None:
    torch.manual_seed(0)
    module = RecurrentForecaster(hidden=8, layers=2, horizon=horizon, cell=cell).eval()
    out = module(torch.randn(7, 20, 4))
    assert out.shape == (7, horizon)
    assert torch.isfinite(out).all()


def test_recurrent_forecaster_predicts_offsets_from_last_observed() -> None:
    module = RecurrentForecaster(hidden=8, layers=1, horizon=3, target_index=1).eval()
    with torch.no_grad():
        module.head.weight.zero_()
        module.head.bias.zero_()
    windows = torch.randn(5, 10, 4)
    expected = windows[:, -1, 1:2].expand(5, 3)
    torch.testing.assert_close(module(windows), expected)


def test_recurrent_forecaster_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="cell"):
        RecurrentForecaster(cell="transformer")
    with pytest.raises(ValueError, match="horizon"):
        RecurrentForecaster(horizon=0)


# ---------------------------------------------------------------- Checkpoint


def sample_windows(count: int, seed: int = 0) -> np.ndarray:
    fleet = Fleet(count, seed=seed, overheat=min(2, count))
    return np.ascontiguousarray(fleet.history(0, 20).astype(np.float32))


def test_checkpoint_round_trip_gives_identical_forecasts(
    tiny_checkpoint: Checkpoint, tmp_path: Path
) -> None:
    path = tmp_path / "nested" / "tiny.pt"
    tiny_checkpoint.save(path)
    assert path.exists()
    assert not path.with_suffix(".pt.tmp").exists()
    loaded = Checkpoint.load(path)
    for name in ("kind", "version", "features", "window", "horizon", "hidden", "layers"):
        assert getattr(loaded, name) == getattr(tiny_checkpoint, name)
    assert loaded.despike is tiny_checkpoint.despike is False
    assert loaded.dropout == pytest.approx(tiny_checkpoint.dropout)
    assert loaded.report["test_next_step"] == tiny_checkpoint.report["test_next_step"]
    assert loaded.state_dict.keys() == tiny_checkpoint.state_dict.keys()
    windows = sample_windows(9)
    before = serve(tiny_checkpoint).forecast(windows)
    after = serve(loaded).forecast(windows)
    np.testing.assert_array_equal(before, after)


def test_checkpoint_load_refuses_pickled_objects(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.mkdir, (str(marker),))

    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "kind": "lstm", "evil": Payload()}, path)
    with pytest.raises(CheckpointError, match="cannot be read") as caught:
        Checkpoint.load(path)
    assert str(path) in str(caught.value)
    assert not marker.exists(), "loading a checkpoint ran code from the file"
    # The payload is live: an unsafe load would have run it.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_checkpoint_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "missing.pt"
    with pytest.raises(CheckpointError, match="does not exist") as caught:
        Checkpoint.load(path)
    assert str(path) in str(caught.value)


def test_checkpoint_rejects_foreign_and_incomplete_files(
    tiny_checkpoint: Checkpoint, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot be read"):
        Checkpoint.load(garbage)
    other_format = tmp_path / "v99.pt"
    torch.save({"format": 99}, other_format)
    with pytest.raises(CheckpointError, match="format"):
        Checkpoint.load(other_format)
    incomplete = tmp_path / "incomplete.pt"
    tiny_checkpoint.save(incomplete)
    payload = torch.load(incomplete, weights_only=True)
    del payload["window"]
    torch.save(payload, incomplete)
    with pytest.raises(CheckpointError, match="window"):
        Checkpoint.load(incomplete)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"hidden": 32}, "servable model"),  # the state dict is for 64 hidden units
        ({"layers": 3}, "servable model"),
        ({"kind": "transformer"}, "kind"),
        ({"normalisation": "minmax"}, "normalisation"),
        ({"features": ["temperature_c", "vibration_hz", "pressure_psi", "torque"]}, "features"),
        ({"features": ["vibration_hz", "temperature_c", "pressure_psi", "rpm"]}, "features"),
        ({"target_index": 1}, "not the temperature"),
        ({"target_index": 9}, "target_index"),
        ({"window": 0}, "window"),
        (
            {
                "normalisation": "global",
                "scaler": {"minimum": [0.0, 0.0, 0.0, 0.0], "span": [1.0, 0.0, 1.0, 1.0]},
            },
            "scaler",
        ),
        ({"normalisation": "global", "scaler": {"minimum": [0.0], "span": [1.0]}}, "scaler"),
        ({"normalisation": "global", "scaler": None}, "scaler"),
        ({"state_dict": {}}, "servable model"),
        ({"state_dict": [1, 2]}, "servable model"),
    ],
)
def test_checkpoint_load_rejects_what_cannot_be_served(
    tiny_checkpoint: Checkpoint, tmp_path: Path, changes: dict[str, object], match: str
) -> None:
    path = tmp_path / "bad.pt"
    tiny_checkpoint.save(path)
    payload = torch.load(path, weights_only=True)
    payload.update(changes)
    torch.save(payload, path)
    # A plain CheckpointError naming the file, never a RuntimeError from deep inside torch.
    with pytest.raises(CheckpointError, match=match) as caught:
        TorchForecaster.from_path(path, device="cpu", threads=1)
    assert str(path) in str(caught.value)


# ---------------------------------------------------------------- TorchForecaster


def test_torch_forecaster_shape_and_protocol(tiny_checkpoint: Checkpoint) -> None:
    forecaster = serve(tiny_checkpoint)
    assert isinstance(forecaster, Forecaster)
    assert forecaster.horizon == TINY.horizon
    assert forecaster.window == TINY.window
    assert forecaster.features == FEATURES
    out = forecaster.forecast(sample_windows(6))
    assert out.shape == (6, TINY.horizon)
    assert out.dtype == np.float32
    assert np.all(np.isfinite(out))
    forecaster.warm_up()


def test_forecast_is_in_degrees_not_scaled_units(tiny_checkpoint: Checkpoint) -> None:
    forecaster = serve(tiny_checkpoint)
    windows = sample_windows(20)
    out = forecaster.forecast(windows)
    # Healthy-ish machines around 60..100 °C; scaled units would sit near 0..1.
    assert 40.0 < float(np.median(out)) < 120.0


def test_chunking_gives_the_same_result(tiny_checkpoint: Checkpoint) -> None:
    windows = sample_windows(11, seed=3)
    chunked = serve(tiny_checkpoint, chunk_size=3).forecast(windows)
    whole = serve(tiny_checkpoint, chunk_size=1000).forecast(windows)
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-4)
    # Each row depends on its own window only: forecasting one row alone gives the same.
    single = serve(tiny_checkpoint).forecast(windows[4:5])
    np.testing.assert_allclose(single[0], whole[4], rtol=0, atol=1e-4)


@pytest.mark.parametrize("shape", [(2, 19, 4), (2, 20, 3), (20, 4), (1, 2, 20, 4)])
def test_wrong_window_shape_raises(tiny_checkpoint: Checkpoint, shape: tuple[int, ...]) -> None:
    forecaster = serve(tiny_checkpoint)
    with pytest.raises(ValueError, match="shape"):
        forecaster.forecast(np.zeros(shape, dtype=np.float32))


def test_empty_batch(tiny_checkpoint: Checkpoint) -> None:
    out = serve(tiny_checkpoint).forecast(np.zeros((0, 20, 4), dtype=np.float32))
    assert out.shape == (0, TINY.horizon)


# ---------------------------------------------------------------- the shipped checkpoint


def test_default_checkpoint_loads(default_checkpoint: Checkpoint) -> None:
    assert default_checkpoint_path().name == "default.pt"
    assert default_checkpoint.window == 20
    assert default_checkpoint.features == FEATURES
    assert default_checkpoint.horizon >= 1
    assert default_checkpoint.kind in ("lstm", "gru")
    forecaster = TorchForecaster.from_path(None, device="cpu", threads=1)
    assert forecaster.version == default_checkpoint.version


def test_default_checkpoint_beats_persistence_on_the_seed_split(
    default_checkpoint: Checkpoint,
) -> None:
    seed = seed_series()
    x, y = make_windows(seed.readings, window=20, horizon=1)
    test_from = int(len(x) * 0.8)  # targets t = 804..999, as in the seed
    t = np.arange(804, 1000)
    temperature = seed.readings[:, 0].astype(np.float32)
    np.testing.assert_array_equal(y[test_from:, 0], temperature[t])  # the seed's targets
    forecaster = serve(default_checkpoint)
    predicted = forecaster.forecast(x[test_from:])[:, 0]
    model = errors_c(predicted, y[test_from:, 0])
    persistence = errors_c(temperature[t - 1], temperature[t])
    floor = errors_c(seed.clean_temperature[t], temperature[t])  # the noise-free signal's
    assert model["rmse_c"] < persistence["rmse_c"]
    # Nobody beats the noise floor by much (an average over 196 targets may dip a little).
    assert model["rmse_c"] > 0.85 * floor["rmse_c"]


def test_default_checkpoint_beats_persistence_over_its_horizon(
    default_checkpoint: Checkpoint,
) -> None:
    fleet = Fleet(16, seed=99, overheat=6, overheat_within_ticks=300)
    x, y = make_windows(fleet.history(0, 400), 20, default_checkpoint.horizon, stride=5)
    predicted = serve(default_checkpoint).forecast(x)
    persistence = np.repeat(x[:, -1, :1], default_checkpoint.horizon, axis=1)
    assert errors_c(predicted, y)["rmse_c"] < errors_c(persistence, y)["rmse_c"]


# ---------------------------------------------------------------- training


def test_train_is_deterministic_and_reports_errors(tiny_checkpoint: Checkpoint) -> None:
    again = train(TINY, progress=quiet)
    assert again.state_dict.keys() == tiny_checkpoint.state_dict.keys()
    for name, tensor in tiny_checkpoint.state_dict.items():
        assert torch.equal(tensor, again.state_dict[name]), name
    report = tiny_checkpoint.report
    for key in ("test_next_step", "persistence_next_step", "test_all_steps"):
        assert set(report[key]) == {"rmse_c", "mae_c"}
        assert 0.0 < report[key]["mae_c"] <= report[key]["rmse_c"]
    assert report["test_next_step"] == again.report["test_next_step"]
    assert report["config"]["seed"] == TINY.seed
    assert tiny_checkpoint.horizon == TINY.horizon
    assert tiny_checkpoint.version == f"lstm-h{TINY.horizon}-s{TINY.seed}"


def test_train_persistence_baseline_matches_an_independent_computation(
    tiny_checkpoint: Checkpoint,
) -> None:
    split = generate_episodes(TINY)
    assert len(split.train) + len(split.validation) + len(split.test) == TINY.episodes
    previous, actual = [], []
    for episode in split.test:
        temperature = episode[:, :, 0]
        # Targets of the test windows: ticks window .. ticks - horizon, every machine.
        for t in range(TINY.window, TINY.ticks - TINY.horizon + 1):
            previous.append(temperature[:, t - 1])
            actual.append(temperature[:, t])
    expected = errors_c(np.concatenate(previous), np.concatenate(actual))
    got = tiny_checkpoint.report["persistence_next_step"]
    assert got["rmse_c"] == pytest.approx(expected["rmse_c"], rel=1e-5)
    assert got["mae_c"] == pytest.approx(expected["mae_c"], rel=1e-5)
    assert tiny_checkpoint.report["test_windows"] == len(actual) * TINY.machines


def test_train_scaler_is_fitted_on_training_episodes_only() -> None:
    config = dataclasses.replace(TINY, normalisation="global")
    checkpoint = train(config, progress=quiet)
    assert checkpoint.scaler is not None
    split = generate_episodes(config)
    x_train, _ = windows_of(split.train, config, config.stride)
    train_readings = x_train.reshape(-1, 4)
    np.testing.assert_allclose(checkpoint.scaler.minimum, train_readings.min(axis=0))
    span = train_readings.max(axis=0) - train_readings.min(axis=0)
    np.testing.assert_allclose(checkpoint.scaler.span, span, rtol=1e-5)
    # The held-out episodes reach beyond the training range: they did not shape the scaler.
    held_out = np.concatenate([e.reshape(-1, 4) for e in (*split.validation, *split.test)])
    assert np.any(held_out.max(axis=0) > checkpoint.scaler.minimum + checkpoint.scaler.span)


def test_window_normalised_training_has_no_global_scaler(tiny_checkpoint: Checkpoint) -> None:
    assert tiny_checkpoint.normalisation == "window"
    assert tiny_checkpoint.scaler is None


def test_different_seeds_train_different_models(tiny_checkpoint: Checkpoint) -> None:
    other = train(dataclasses.replace(TINY, seed=1), progress=quiet)
    assert any(
        not torch.equal(tensor, other.state_dict[name])
        for name, tensor in tiny_checkpoint.state_dict.items()
    )


@pytest.mark.parametrize("seed", range(12))
def test_generate_episodes_at_the_shortest_allowed_ticks(seed: int) -> None:
    # ticks = window + horizon + 40 is accepted by TrainConfig, so data generation must work
    # for it whatever the seed draws for each episode's overheat span.
    config = dataclasses.replace(TINY, ticks=TINY.window + TINY.horizon + 40, seed=seed)
    split = generate_episodes(config)
    episodes = [*split.train, *split.validation, *split.test]
    assert len(episodes) == config.episodes
    assert all(e.shape == (config.machines, config.ticks, len(FEATURES)) for e in episodes)


@pytest.mark.parametrize(
    "changes",
    [
        {"episodes": 2},
        {"ticks": 60},
        {"overheat_fraction": 1.5},
        {"epochs": 0},  # would end in an AssertionError after "training"
        {"horizon": 0},
        {"window": 0},
        {"machines": 0},
        {"batch_size": 0},
        {"stride": 0},
        {"kind": "transformer"},
        {"kind": "persistence"},  # nothing to train
        {"normalisation": "minmax"},
        {"seed": 42},  # the seed series' own seed
        {"learning_rate": 0.0},
    ],
)
def test_train_config_validation(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(TINY, **changes)


def test_errors_c() -> None:
    result = errors_c(np.array([1.0, -3.0]), np.array([0.0, 0.0]))
    assert result["rmse_c"] == pytest.approx(np.sqrt(5.0))
    assert result["mae_c"] == pytest.approx(2.0)


# ---------------------------------------------------------------- devices


def test_resolve_device_cuda_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(CheckpointError, match="FOREWARN_MODEL__DEVICE"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_checkpoint_loads_onto_the_cpu_whatever_device_saved_it(
    tiny_checkpoint: Checkpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tensors saved from a GPU are mapped to the CPU on load (no CUDA device is needed)."""
    path = tmp_path / "gpu.pt"
    tiny_checkpoint.save(path)
    calls: list[dict[str, object]] = []
    real_load = torch.load

    def spying_load(*args: object, **kwargs: object) -> object:
        calls.append(kwargs)
        return real_load(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch, "load", spying_load)
    loaded = Checkpoint.load(path)
    assert calls and calls[0]["map_location"] == "cpu"
    assert calls[0]["weights_only"] is True
    assert all(t.device.type == "cpu" for t in loaded.state_dict.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_checkpoint_trained_on_cuda_serves_on_cpu(tmp_path: Path) -> None:
    config = dataclasses.replace(TINY, device="cuda")
    path = tmp_path / "cuda.pt"
    train(config, progress=quiet).save(path)
    forecaster = TorchForecaster.from_path(path, device="cpu", threads=1)
    assert forecaster.forecast(sample_windows(3)).shape == (3, TINY.horizon)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_forecasts_match_the_cpu_whatever_the_batch() -> None:
    """One copy in, chunks on the device, one copy out: the same forecasts as the CPU's for
    batches that pad, span several chunks, grow the pinned buffer and then reuse it."""
    cpu = TorchForecaster.from_path(None, device="cpu", threads=1)
    gpu = TorchForecaster.from_path(None, device="cuda", cuda_chunk_size=256)
    assert gpu.chunk_size == 256
    rng = np.random.default_rng(7)
    for rows in (1, 130, 700, 3, 0):
        windows = rng.normal(70.0, 8.0, size=(rows, cpu.window, len(cpu.features)))
        windows = windows.astype(np.float32)
        got = gpu.forecast(windows)
        assert got.shape == (rows, cpu.horizon)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, cpu.forecast(windows), rtol=0, atol=0.1)


# ---------------------------------------------------------------- model settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("FOREWARN_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("clean_env")
def test_model_settings_default_to_the_shipped_lstm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOREWARN_MODEL__DEVICE", "cpu")  # no kind given: still the lstm
    model = load_settings().model
    assert isinstance(model, CheckpointModelSettings)
    assert (model.kind, model.device, model.checkpoint) == ("lstm", "cpu", None)


@pytest.mark.usefixtures("clean_env")
def test_model_settings_pick_the_kinds_own_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOREWARN_MODEL__KIND", "linear_extrapolation")
    monkeypatch.setenv("FOREWARN_MODEL__HORIZON", "12")
    monkeypatch.setenv("FOREWARN_MODEL__CHUNK_SIZE", "50")
    model = load_settings().model
    assert isinstance(model, LinearExtrapolationModelSettings)
    forecaster = forecaster_from_settings(model)
    assert (forecaster.kind, forecaster.horizon) == ("linear_extrapolation", 12)


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FOREWARN_MODEL__KIND": "prophet"}, "persistence, linear_extrapolation, not 'prophet'"),
        (
            {"FOREWARN_MODEL__KIND": "persistence", "FOREWARN_MODEL__CHECKPOINT": "x.pt"},
            "FOREWARN_MODEL__CHECKPOINT=x.pt",
        ),
        ({"FOREWARN_MODEL__HORIZON": "5"}, "FOREWARN_MODEL__HORIZON=5"),  # lstm: in its file
        ({"FOREWARN_MODEL__KIND": "persistence", "FOREWARN_MODEL__HORIZON": "0"}, "HORIZON=0"),
    ],
)
def test_model_settings_errors_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert message in str(caught.value)
    assert "kind:" not in str(caught.value)  # the union's tags never leak into messages


def test_a_kind_without_its_checkpoint_says_how_to_make_one() -> None:
    with pytest.raises(CheckpointError, match="forewarn train --kind gru") as caught:
        forecaster_from_settings(CheckpointModelSettings(kind="gru", device="cpu", threads=1))
    assert "FOREWARN_MODEL__KIND=gru" in str(caught.value)


def test_a_checkpoint_of_another_kind_is_refused(tmp_path: Path) -> None:
    x, y = make_windows(Fleet(3, seed=2).history(0, 80), 20, 30)
    path = tmp_path / "ridge.pt"
    RidgeForecaster(horizon=30).fit(x, y).save(path)
    with pytest.raises(CheckpointError, match="holds a ridge"):
        forecaster_from_settings(CheckpointModelSettings(kind="lstm", checkpoint=path))
    served = forecaster_from_settings(CheckpointModelSettings(kind="ridge", checkpoint=path))
    assert served.kind == "ridge"


# ---------------------------------------------------------------- per-window normalisation


def test_window_stats_agree_between_numpy_and_torch() -> None:
    windows = sample_windows(16, seed=4).astype(np.float64)
    centre, scale = window_stats_np(windows)
    t_centre, t_scale = window_stats_torch(torch.from_numpy(windows))
    np.testing.assert_allclose(t_centre.numpy(), centre, rtol=1e-12)
    np.testing.assert_allclose(t_scale.numpy(), scale, rtol=1e-12)
    assert centre.shape == scale.shape == (16, 1, 4)


def test_window_scale_estimates_the_noise_and_shrugs_off_a_spike() -> None:
    rng = np.random.default_rng(0)
    ticks = np.arange(20)
    noisy = 70 + 0.5 * ticks + rng.normal(0, 2.0, (2000, 20))  # a ramp plus noise of 2 °C
    _, scale = window_stats_np(noisy[:, :, None])
    assert np.median(scale) == pytest.approx(2.0, rel=0.1)
    spiked = noisy.copy()
    spiked[:, 10] += 15.0
    _, spiked_scale = window_stats_np(spiked[:, :, None])
    assert np.median(spiked_scale / scale) < 1.2  # the standard deviation would grow ~1.5x


def test_a_flat_window_normalises_to_zeros() -> None:
    stuck = np.full((1, 20, 4), [81.5, 40.0, 124.0, 1663.0])
    centre, scale = window_stats_np(stuck)
    assert np.all(scale > 0)
    np.testing.assert_array_equal((stuck - centre) / scale, 0.0)
    module = RecurrentForecaster(hidden=4, layers=1, horizon=3, normalisation="window").eval()
    with torch.no_grad():
        out = module(torch.from_numpy(stuck.astype(np.float32)))
    assert torch.isfinite(out).all()


def test_despike_takes_out_isolated_spikes_anywhere_in_the_window() -> None:
    rng = np.random.default_rng(3)
    clean = 80.0 + rng.normal(0.0, 1.0, 20)
    spiked = clean.copy()
    spiked[[0, 7, 19]] += 12.0  # the oldest, one inside, and the reading that just arrived
    windows = torch.tensor(spiked, dtype=torch.float32).reshape(1, 20, 1)
    _, scale = window_stats_torch(windows)
    out = despike_torch(windows, scale).numpy().ravel()
    assert np.all(np.abs(out[[0, 7, 19]] - clean[[0, 7, 19]]) < 4.0), out
    untouched = np.setdiff1d(np.arange(20), [0, 1, 6, 7, 8, 18, 19])
    np.testing.assert_allclose(out[untouched], spiked[untouched], rtol=1e-6)


def test_despike_keeps_a_real_step_from_its_second_reading_on() -> None:
    series = np.r_[np.full(17, 60.0), np.full(3, 75.0)] + np.tile([0.0, 0.5], 10)
    windows = torch.tensor(series, dtype=torch.float32).reshape(1, 20, 1)
    _, scale = window_stats_torch(windows)
    np.testing.assert_allclose(despike_torch(windows, scale).numpy().ravel(), series, rtol=1e-6)
    # Only the newest reading of a step that has just begun waits one reading to count.
    just_begun = torch.tensor(np.r_[series[:19], 75.0], dtype=torch.float32).reshape(1, 20, 1)
    just_begun[0, 17:19, 0] = 60.0
    out = despike_torch(just_begun, window_stats_torch(just_begun)[1]).numpy().ravel()
    assert out[-1] == pytest.approx(60.0, abs=0.6)


def test_a_despiking_network_is_barely_moved_by_a_spike_that_just_arrived(
    tiny_checkpoint: Checkpoint, tmp_path: Path
) -> None:
    rng = np.random.default_rng(5)
    t = np.arange(20.0)
    temperature = 75.0 + 8.0 * np.sin(2 * np.pi * (t + 13.0 * np.arange(6)[:, None]) / 100.0)
    temperature += rng.normal(0.0, 1.0, temperature.shape)  # noise, no spikes
    windows = readings_from_temperature(temperature, rng).astype(np.float32)
    spiked = windows.copy()
    spiked[:, -1, 0] += 15.0
    despiking = dataclasses.replace(tiny_checkpoint, despike=True)
    despiking.save(tmp_path / "despiking.pt")
    assert Checkpoint.load(tmp_path / "despiking.pt").despike is True

    def moved(checkpoint: Checkpoint) -> float:
        forecaster = serve(checkpoint)
        return float(np.abs(forecaster.forecast(spiked) - forecaster.forecast(windows)).max())

    plain, despiked = moved(tiny_checkpoint), moved(despiking)
    assert plain > 5.0, plain  # without despiking the spike moves the forecast a lot
    assert despiked < 0.4 * plain, (despiked, plain)


def test_training_fleets_fit_their_fault_mix_to_small_configurations() -> None:
    assert episode_faults(TrainConfig()) == {"noisy_sensor": 4, "cooling_failure": 3}
    short = TrainConfig(ticks=120, machines=8)
    assert episode_faults(short) == {"noisy_sensor": 4}  # no ramp fits in 120 ticks
    assert episode_faults(TrainConfig(machines=5)) == {"noisy_sensor": 3}  # 2 overheat
    assert episode_faults(TrainConfig(faults="")) == {}
    with pytest.raises(ValueError, match="unknown fault"):
        TrainConfig(faults="meltdown=2")
