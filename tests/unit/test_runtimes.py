"""Every network kind on every runtime computes what the numpy reference computes.

The reference (models/reference.py) is the networks' forward pass written out step by step
from torch's documented cell equations. torch, the numpy runtime and the ONNX graph must each
match it to 1e-5 in model units (the forecast before it is mapped back to degrees, i.e. in
units of the window's noise scale) on random and on simulated windows, for random weights of
every kind and normalisation, for freshly trained models and for the shipped one; and the lean
runtimes' forecasts must equal torch's to 1e-4 °C on the seed split.

Then the serving file itself: export round trip, files that are corrupt, stale or missing,
and the rule that picks a runtime.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from config.model import CheckpointModelSettings
from forewarn.cli import main
from models import reference, serving
from models.base import NETWORK_KINDS
from models.checkpoint import Checkpoint, TorchForecaster, default_checkpoint_path, export
from models.data import make_windows
from models.fitting import FitOptions
from models.numpy_runtime import NumpyForecaster
from models.onnx_graph import build_graph
from models.onnx_runtime import OnnxForecaster
from models.scaling import FeatureScaler
from models.serving import (
    CheckpointError,
    ServingModel,
    ServingPaths,
    choose_runtime,
    default_serving_path,
    forecaster_from_settings,
)
from simulator.fleet import Fleet
from simulator.signal import seed_series

MODEL_UNITS_TOLERANCE = 1e-5
DEGREES_TOLERANCE = 1e-4
VARIANTS = [("window", False), ("window", True), ("global", False)]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def real_windows() -> np.ndarray:
    """Simulated machines, overheats and spikes included, at their own levels."""
    fleet = Fleet(24, seed=11, overheat=6, overheat_within_ticks=80)
    windows, _ = make_windows(fleet.history(0, 140), 20, 1, stride=9)
    return windows


def random_windows(count: int, seed: int = 0) -> np.ndarray:
    """Windows of noise at random levels and ranges, one with a flat (stuck) feature."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(-50, 300, size=(count, 1, 4))
    spread = rng.uniform(0.01, 20, size=(count, 1, 4))
    windows = level + spread * rng.normal(size=(count, 20, 4))
    windows[0, :, 1] = windows[0, 0, 1]
    return windows.astype(np.float32)


def random_network(
    kind: str, normalisation: str, despike: bool, windows: np.ndarray, layers: int = 2
) -> Checkpoint:
    """A network of ``kind`` with random weights about twice torch's initial ones: large
    enough that every gate matters, small enough that float32 rounding does not grow chaotic."""
    forecaster = TorchForecaster.new(
        kind=kind,
        horizon=4,
        hidden=12,
        layers=layers,
        dropout=0.0,
        normalisation=normalisation,
        despike=despike,
        scaler=FeatureScaler.fit(windows) if normalisation == "global" else None,
        seed=3,
        device="cpu",
        threads=1,
    )
    generator = torch.Generator().manual_seed(hash((kind, normalisation, despike)) % 2**31)
    checkpoint = forecaster.checkpoint
    checkpoint.state_dict = {
        name: 0.3 * torch.randn(tensor.shape, generator=generator)
        for name, tensor in checkpoint.state_dict.items()
    }
    return checkpoint


def torch_model_units(checkpoint: Checkpoint, windows: np.ndarray) -> np.ndarray:
    module = checkpoint.build_module()
    with torch.inference_mode():
        inputs, _, _ = module.normalise(torch.from_numpy(windows))
        return module.forward_normalised(inputs).double().numpy()


def numpy_model_units(serving: ServingModel, windows: np.ndarray) -> np.ndarray:
    forecaster = NumpyForecaster(serving, threads=1)
    inputs, _, _ = forecaster.normalise(windows)
    return forecaster.forward_normalised(inputs).astype(np.float64)


def onnx_model_units(serving: ServingModel, windows: np.ndarray) -> np.ndarray:
    if serving.onnx_graph is None:
        serving.onnx_graph = build_graph(serving)
    return OnnxForecaster(serving, threads=1).forecast_model_units(windows).astype(np.float64)


RUNTIMES = {"torch": None, "numpy": numpy_model_units, "onnx": onnx_model_units}


def assert_all_match_the_reference(checkpoint: Checkpoint, windows: np.ndarray) -> None:
    serving = checkpoint.to_serving()
    expected, _, _ = reference.forecast_normalised(serving, windows)
    for runtime, model_units in RUNTIMES.items():
        got = (
            torch_model_units(checkpoint, windows)
            if model_units is None
            else model_units(serving, windows)
        )
        assert got.shape == expected.shape
        worst = float(np.abs(got - expected).max())
        assert worst < MODEL_UNITS_TOLERANCE, (checkpoint.kind, runtime, worst)


@pytest.mark.parametrize(("normalisation", "despike"), VARIANTS)
@pytest.mark.parametrize("kind", NETWORK_KINDS)
def test_every_runtime_matches_the_reference_on_random_weights(
    kind: str, normalisation: str, despike: bool, real_windows: np.ndarray
) -> None:
    windows = np.concatenate([real_windows[:60], random_windows(40)])
    assert_all_match_the_reference(random_network(kind, normalisation, despike, windows), windows)


def test_one_layer_networks_match_too(real_windows: np.ndarray) -> None:
    for kind in NETWORK_KINDS:
        checkpoint = random_network(kind, "window", False, real_windows, layers=1)
        assert_all_match_the_reference(checkpoint, real_windows[:50])


def test_the_reference_is_torch_in_float64(real_windows: np.ndarray) -> None:
    """In float64 torch and the reference agree to rounding: the oracle is torch's equations."""
    for kind in NETWORK_KINDS:
        checkpoint = random_network(kind, "window", True, real_windows)
        module = checkpoint.build_module().double()
        with torch.inference_mode():
            got = module(torch.from_numpy(real_windows).double()).numpy()
        expected = reference.forecast(checkpoint.to_serving(), real_windows)
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


def test_the_seed_simple_rnn_is_what_the_reference_computes() -> None:
    """The seed's SimpleRNN: h = tanh(x·W_xh + h·W_hh + b_h) from a zero state, step by step."""
    rng = np.random.default_rng(5)
    w_xh, w_hh, b_h = rng.normal(size=(4, 6)), rng.normal(size=(6, 6)) * 0.3, rng.normal(size=6)
    x = rng.normal(size=(3, 7, 4))
    h = np.zeros((3, 6))
    for t in range(7):
        h = np.tanh(x[:, t] @ w_xh + h @ w_hh + b_h)
    weights = {
        "ih": w_xh.T,
        "hh": w_hh.T,
        "b_ih": b_h,
        "b_hh": np.zeros(6),
    }
    state = np.zeros((3, 6))
    for t in range(7):
        state, _ = reference.rnn_cell(x[:, t], state, state, weights)
    np.testing.assert_allclose(state, h, rtol=1e-12)


@pytest.fixture(scope="module")
def trained() -> dict[str, Checkpoint]:
    """Freshly trained (briefly) networks of every kind."""
    fleet = Fleet(6, seed=5, overheat=2, overheat_within_ticks=120)
    x, y = make_windows(fleet.history(0, 160), 20, 5, stride=3)
    out = {}
    for kind in NETWORK_KINDS:
        forecaster = TorchForecaster.new(
            kind=kind, horizon=5, hidden=16, layers=2, seed=1, device="cpu", threads=1
        )
        forecaster.fit(x, y, options=FitOptions(epochs=2, batch_size=32, seed=0))
        out[kind] = forecaster.checkpoint
    return out


@pytest.mark.parametrize("kind", NETWORK_KINDS)
def test_freshly_trained_networks_match_the_reference(
    kind: str, trained: dict[str, Checkpoint], real_windows: np.ndarray
) -> None:
    windows = np.concatenate([real_windows, random_windows(30, seed=2)])
    assert_all_match_the_reference(trained[kind], windows)


def test_the_shipped_model_matches_the_reference_on_every_runtime(
    real_windows: np.ndarray,
) -> None:
    checkpoint = Checkpoint.load(default_checkpoint_path())
    assert_all_match_the_reference(checkpoint, np.concatenate([real_windows, random_windows(50)]))


def seed_split_windows() -> np.ndarray:
    x, _ = make_windows(seed_series().readings, 20, 1)
    return x[int(len(x) * 0.8) :]


def test_the_shipped_serving_file_forecasts_what_torch_does_on_the_seed_split() -> None:
    """The lean runtimes, from the shipped serving file, to 1e-4 °C of the torch agent path."""
    windows = seed_split_windows()
    torch_forecasts = TorchForecaster(
        Checkpoint.load(default_checkpoint_path()), device="cpu", threads=1
    ).forecast(windows)
    serving = ServingModel.load(default_serving_path(), with_graph=True)
    for forecaster in (NumpyForecaster(serving, threads=1), OnnxForecaster(serving, threads=1)):
        got = forecaster.forecast(windows)
        assert got.dtype == np.float32 and got.shape == torch_forecasts.shape
        worst = float(np.abs(got - torch_forecasts).max())
        assert worst < DEGREES_TOLERANCE, (forecaster.runtime, worst)


def test_the_shipped_serving_file_is_the_shipped_checkpoint() -> None:
    """models/default.json was exported from models/default.pt as it is (`make train` and
    `forewarn export models/default.pt` keep them together)."""
    checkpoint = Checkpoint.load(default_checkpoint_path())
    serving = ServingModel.load(default_serving_path())
    assert serving.source is not None
    from models.serving import sha256_of

    assert serving.source["sha256"] == sha256_of(default_checkpoint_path())
    assert serving.facts() == checkpoint.to_serving().facts()
    for name, tensor in checkpoint.state_dict.items():
        np.testing.assert_array_equal(serving.weights[name], tensor.numpy())


@pytest.mark.parametrize("runtime", ["numpy", "onnx"])
@pytest.mark.parametrize("batch", [0, 1, 129, 600])
def test_lean_runtimes_chunk_pad_and_thread_without_changing_forecasts(
    runtime: str, batch: int, real_windows: np.ndarray
) -> None:
    serving = ServingModel.load(default_serving_path(), with_graph=True)
    windows = np.resize(real_windows, (batch, 20, 4)).astype(np.float32)
    expected = reference.forecast(serving, windows)
    runtime_class = NumpyForecaster if runtime == "numpy" else OnnxForecaster
    for threads, chunk in ((1, 1000), (2, 100), (2, 7)):
        got = runtime_class(serving, threads=threads, chunk_size=chunk).forecast(windows)
        assert got.shape == (batch, serving.horizon)
        np.testing.assert_allclose(got, expected, rtol=0, atol=DEGREES_TOLERANCE)


@pytest.mark.parametrize("runtime", ["numpy", "onnx"])
def test_lean_runtimes_refuse_windows_of_the_wrong_shape(runtime: str) -> None:
    serving = ServingModel.load(default_serving_path(), with_graph=True)
    forecaster = (NumpyForecaster if runtime == "numpy" else OnnxForecaster)(serving)
    for shape in [(3, 19, 4), (3, 20, 3), (20, 4)]:
        with pytest.raises(ValueError, match="windows must have shape"):
            forecaster.forecast(np.zeros(shape, dtype=np.float32))


# ---------------------------------------------------------------- the serving file


def test_export_round_trip(trained: dict[str, Checkpoint], tmp_path: Path) -> None:
    for kind, checkpoint in trained.items():
        pt = tmp_path / f"{kind}.pt"
        checkpoint.save(pt)
        paths = export(pt)
        assert paths == ServingPaths.beside(pt)
        assert paths.json.exists() and paths.npz.exists() and paths.onnx.exists()
        loaded = ServingModel.load(paths.json, with_graph=True)
        assert loaded.facts() == checkpoint.to_serving().facts()
        back = Checkpoint.load(paths.json)  # the torch runtime reads a serving file too
        for name, tensor in checkpoint.state_dict.items():
            assert torch.equal(back.state_dict[name], tensor), name
        windows = seed_split_windows()[:200]
        np.testing.assert_allclose(
            OnnxForecaster(loaded).forecast(windows),
            TorchForecaster(back, device="cpu", threads=1).forecast(windows),
            rtol=0,
            atol=DEGREES_TOLERANCE,
        )


def test_a_ridge_model_exports_and_serves_without_a_graph(tmp_path: Path) -> None:
    from models.baselines import RidgeForecaster

    x, y = make_windows(Fleet(3, seed=2).history(0, 80), 20, 6)
    ridge = RidgeForecaster(horizon=6).fit(x, y)
    pt = tmp_path / "ridge.pt"
    ridge.save(pt)
    paths = export(pt)
    assert not paths.onnx.exists()
    served = forecaster_from_settings(
        CheckpointModelSettings(kind="ridge", checkpoint=paths.json, runtime="numpy")
    )
    np.testing.assert_allclose(served.forecast(x), ridge.forecast(x), rtol=1e-6, atol=1e-5)


@pytest.fixture
def exported(tmp_path: Path) -> ServingPaths:
    pt = tmp_path / "model.pt"
    shutil.copy(default_checkpoint_path(), pt)
    return export(pt)


def rewrite(path: Path, change: Any) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.json.write_text("{not json"), "cannot be read as JSON"),
        (lambda p: p.json.write_text("[]"), "not a forewarn serving file"),
        (
            lambda p: rewrite(p.json, lambda d: d.update(format_version=99)),
            "format_version 99",
        ),
        (lambda p: rewrite(p.json, lambda d: d.pop("window")), "'window'"),
        (lambda p: rewrite(p.json, lambda d: d.update(kind="transformer")), "'transformer'"),
        (lambda p: rewrite(p.json, lambda d: d.update(hidden=32)), "needs (128, 4)"),
        (lambda p: p.npz.write_bytes(b"PK\x03\x04 not the weights"), "not the file"),
        (lambda p: p.npz.unlink(), "cannot be read"),
        (lambda p: p.onnx.write_bytes(b"tampered"), "not the file"),
    ],
)
def test_a_bad_serving_file_is_refused_with_the_file_named(
    exported: ServingPaths, damage: Any, message: str
) -> None:
    damage(exported)
    with pytest.raises(CheckpointError, match=r"model\.(json|npz|onnx)") as caught:
        ServingModel.load(exported.json, with_graph=True)
    assert message in str(caught.value)


def test_a_serving_file_with_missing_weights_names_them(exported: ServingPaths) -> None:
    from models.serving import sha256_of

    with np.load(exported.npz) as arrays:
        kept = {name: arrays[name] for name in arrays.files if name != "head.bias"}
    np.savez(exported.npz, **kept)
    rewrite(exported.json, lambda d: d["weights"].update(sha256=sha256_of(exported.npz)))
    with pytest.raises(CheckpointError, match=r"no weight 'head\.bias'"):
        ServingModel.load(exported.json)


def settings(**model: Any) -> CheckpointModelSettings:
    return CheckpointModelSettings(**{"device": "cpu", "threads": 1, **model})


def test_auto_takes_torch_where_it_is_installed(exported: ServingPaths) -> None:
    assert choose_runtime(settings()).runtime == "torch"
    assert choose_runtime(settings()).path == default_checkpoint_path()
    assert choose_runtime(settings(checkpoint=exported.json)).path == exported.json


def test_auto_without_torch_takes_onnx_and_a_bare_checkpoint_names_export(
    exported: ServingPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serving, "torch_installed", lambda: False)
    assert choose_runtime(settings()).runtime == "onnx"
    assert choose_runtime(settings()).path == default_serving_path()
    assert choose_runtime(settings(checkpoint=exported.json)).runtime == "onnx"
    pt = exported.json.with_suffix(".pt")
    assert choose_runtime(settings(checkpoint=pt)).path == exported.json  # exported from it
    alone = tmp_path / "alone.pt"
    shutil.copy(default_checkpoint_path(), alone)
    with pytest.raises(CheckpointError, match=f"forewarn export {alone}"):
        choose_runtime(settings(checkpoint=alone))
    monkeypatch.setattr(serving, "torch_installed", lambda: True)
    assert choose_runtime(settings(checkpoint=alone)).runtime == "torch"
    assert choose_runtime(settings(runtime="torch")).path == default_checkpoint_path()


def test_a_serving_file_left_beside_a_retrained_checkpoint_is_not_served(
    exported: ServingPaths, trained: dict[str, Checkpoint]
) -> None:
    pt = exported.json.with_suffix(".pt")
    trained["lstm"].save(pt)  # retrained; model.json is now stale
    assert choose_runtime(settings(checkpoint=pt)).runtime == "torch"
    with pytest.raises(CheckpointError, match=f"forewarn export {pt}"):
        choose_runtime(settings(checkpoint=pt, runtime="numpy"))


def test_runtime_settings_that_cannot_work_say_what_to_do(
    exported: ServingPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(CheckpointError, match="FOREWARN_MODEL__RUNTIME=torch"):
        choose_runtime(settings(device="cuda", runtime="onnx"))
    exported.onnx.unlink()
    rewrite(exported.json, lambda d: d.update(onnx=None))
    monkeypatch.setattr(serving, "torch_installed", lambda: False)  # a gateway without torch
    assert choose_runtime(settings(checkpoint=exported.json)).runtime == "numpy"
    with pytest.raises(CheckpointError, match="FOREWARN_MODEL__RUNTIME=numpy"):
        forecaster_from_settings(settings(checkpoint=exported.json, runtime="onnx"))


@pytest.mark.parametrize("runtime", ["auto", "torch", "onnx", "numpy"])
def test_every_runtime_serves_the_shipped_model_alike(runtime: str) -> None:
    forecaster = forecaster_from_settings(settings(runtime=runtime))
    assert (forecaster.kind, forecaster.horizon) == ("lstm", 15)
    assert getattr(forecaster, "runtime", "torch") == ("torch" if runtime == "auto" else runtime)
    windows = seed_split_windows()[:64]
    expected = reference.forecast(ServingModel.load(default_serving_path()), windows)
    np.testing.assert_allclose(forecaster.forecast(windows), expected, atol=DEGREES_TOLERANCE)


def test_a_kind_that_does_not_match_the_serving_file_is_refused(exported: ServingPaths) -> None:
    with pytest.raises(CheckpointError, match="holds a lstm"):
        forecaster_from_settings(settings(kind="gru", checkpoint=exported.json))


# ---------------------------------------------------------------- the command line


def test_export_command_writes_the_serving_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pt = tmp_path / "m.pt"
    shutil.copy(default_checkpoint_path(), pt)
    assert main(["export", str(pt)]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written == {
        "serving_file": str(tmp_path / "m.json"),
        "weights": str(tmp_path / "m.npz"),
        "onnx_graph": str(tmp_path / "m.onnx"),
    }
    out = tmp_path / "elsewhere" / "served.json"
    assert main(["export", str(pt), "--output", str(out), "--no-onnx"]) == 0
    assert out.exists() and not out.with_suffix(".onnx").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["export", "missing.pt"], "missing.pt does not exist"),
        (["export", "model.json"], "is not a torch checkpoint"),
        (["export", "m.pt", "--output", "x.npz"], "must name the serving file's .json"),
    ],
)
def test_export_command_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_train_an_rnn_writes_checkpoint_and_serving_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "rnn.pt"
    argv = ["train", "--kind", "rnn", "--output", str(output), "--episodes", "3"]
    argv += ["--machines", "4", "--ticks", "120", "--epochs", "1", "--horizon", "5"]
    assert main([*argv, "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["serving_file"] == str(tmp_path / "rnn.json")
    checkpoint = Checkpoint.load(output)
    assert checkpoint.kind == "rnn"
    assert isinstance(checkpoint.build_module().rnn, torch.nn.RNN)
    served = forecaster_from_settings(settings(kind="rnn", checkpoint=output, runtime="onnx"))
    assert getattr(served, "runtime", None) == "onnx"
    assert_all_match_the_reference(checkpoint, seed_split_windows()[:100])
