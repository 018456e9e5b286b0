"""`forewarn evaluate --compare`: the rows, their JSON, and the gradient ratio's arithmetic."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from forewarn.cli import main
from models.checkpoint import TorchForecaster, load_forecaster
from models.compare import (
    forward_flops,
    gradient_ratios,
    memory,
    parse_checkpoint_overrides,
    recurrent_readout,
    shipped_path,
)
from models.zoo import RecurrentForecaster

ROW_KEYS = {
    "parameters",
    "windows_per_s",
    "seed_rmse_c",
    "fleet_rmse_c",
    "recall",
    "median_lead_ticks",
    "false_warnings_per_10k",
    "gradient_ratio",
}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def linear_recurrence(a: float, w: torch.Tensor) -> object:
    """h_t = a·h_{t-1} + w·x_t from h_0 = 0, output h_T: ∂y/∂x_t = a^(T-t)·w, so the ratio of
    the first step's gradient norm to the last's is |a|^(T-1) exactly."""

    def readout(inputs: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(inputs.shape[0], dtype=inputs.dtype)
        for t in range(inputs.shape[1]):
            h = a * h + inputs[:, t, :] @ w
        return h

    return readout


@pytest.mark.parametrize(("a", "steps"), [(0.5, 20), (0.9, 50), (-0.8, 10), (1.0, 30)])
def test_the_gradient_ratio_of_a_linear_recurrence_is_its_weight_to_the_steps(
    a: float, steps: int
) -> None:
    w = torch.tensor([0.3, -1.2, 0.7], dtype=torch.float64)
    inputs = torch.randn(5, steps, 3, dtype=torch.float64)
    ratios = gradient_ratios(linear_recurrence(a, w), inputs)  # type: ignore[arg-type]
    assert ratios.shape == (5,)
    np.testing.assert_allclose(ratios, abs(a) ** (steps - 1), rtol=1e-12)


def test_the_readout_of_a_one_unit_tanh_network_in_its_linear_range_gives_the_same_ratio() -> None:
    """A one-unit Elman network fed tiny inputs stays where tanh(z) ≈ z: its state is the
    linear recurrence above, so the ratio measured through the module is |W_hh|^(T-1)."""
    module = RecurrentForecaster(
        n_features=4, hidden=1, layers=1, dropout=0.0, horizon=3, cell="rnn"
    ).double()
    with torch.no_grad():
        module.rnn.weight_ih_l0.copy_(torch.tensor([[0.5, -0.2, 0.1, 0.3]]))
        module.rnn.weight_hh_l0.fill_(0.7)
        module.rnn.bias_ih_l0.zero_()
        module.rnn.bias_hh_l0.zero_()
        module.head.weight.fill_(2.0)
    inputs = 1e-6 * torch.randn(4, 40, 4, dtype=torch.float64)
    ratios = gradient_ratios(recurrent_readout(module), inputs)
    np.testing.assert_allclose(ratios, 0.7**39, rtol=1e-6)


def test_a_readout_that_mixes_windows_is_refused() -> None:
    with pytest.raises(ValueError, match="one output per window"):
        gradient_ratios(lambda x: x.sum(), torch.ones(2, 5, 1))


def test_the_simple_rnn_forgets_the_window_s_start_faster_than_the_lstm() -> None:
    """Measured on the shipped models (docs/model.md): at 50 and 100 steps the simple RNN's
    gradient ratio was 25 and ~2,000 times below the LSTM's; asserted with room to spare."""
    rnn = memory(load_forecaster(shipped_path("rnn"), device="cpu", threads=1), count=64)
    lstm = memory(load_forecaster(shipped_path("lstm"), device="cpu", threads=1), count=64)
    for length in ("50", "100"):
        simple, gated = rnn[length], lstm[length]
        assert simple is not None and gated is not None
        assert simple["mean"] * 5 < gated["mean"], (length, simple, gated)
    for ratios in (rnn, lstm):
        means = [r["mean"] for r in ratios.values() if r is not None]
        assert means == sorted(means, reverse=True), ratios  # longer windows, less memory


def test_checkpoint_overrides_name_a_kind_and_a_path() -> None:
    assert parse_checkpoint_overrides(["gru=a/b.pt", "rnn=c.pt"]) == {
        "gru": Path("a/b.pt"),
        "rnn": Path("c.pt"),
    }
    with pytest.raises(ValueError, match="must be KIND=PATH"):
        parse_checkpoint_overrides(["models/gru.pt"])
    with pytest.raises(ValueError, match="'transformer' is not one of"):
        parse_checkpoint_overrides(["transformer=x.pt"])


def test_every_kind_ships_where_the_comparison_looks() -> None:
    for kind in ("rnn", "lstm", "gru", "bilstm", "ridge"):
        assert shipped_path(kind).exists(), kind
        assert load_forecaster(shipped_path(kind), device="cpu", threads=1).kind == kind


@pytest.fixture(scope="module")
def tiny_rnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compare") / "rnn.pt"
    TorchForecaster.new(
        kind="rnn", horizon=15, window=20, hidden=4, layers=1, dropout=0.0, device="cpu"
    ).save(path)
    return path


@pytest.mark.slow
def test_the_compare_command_prints_one_json_row_per_kind(
    tiny_rnn: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "evaluate",
            "--compare",
            "--json",
            "--checkpoint",
            f"rnn={tiny_rnn}",
            "--kinds",
            "rnn,persistence,ridge",
            "--alert-machines",
            "14",
            "--alert-ticks",
            "400",
            "--seconds",
            "0.02",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["kinds"]) == ["rnn", "persistence", "ridge"]
    for name, row in report["kinds"].items():
        assert set(row) >= ROW_KEYS, name
        assert set(row["gradient_ratio"]) == {"20", "50", "100"}
        assert row["seed_rmse_c"] > 0 and row["fleet_rmse_c"] > 0
        assert 0.0 <= row["recall"] <= 1.0 and row["false_warnings_per_10k"] >= 0
        assert all(rate > 0 for rate in row["windows_per_s"].values())
    rnn = report["kinds"]["rnn"]
    assert rnn["parameters"] == 4 * 4 + 4 * 4 + 2 * 4 + (4 + 1) * 15 + (20 + 1) * 15
    assert set(rnn["windows_per_s"]) >= {"torch", "numpy"}
    assert all(math.isfinite(r) and r > 0 for r in rnn["gradient_ratio"].values())
    assert report["kinds"]["persistence"]["parameters"] == 0
    assert set(report["kinds"]["persistence"]["windows_per_s"]) == {"numpy"}
    assert report["kinds"]["persistence"]["gradient_ratio"] == dict.fromkeys(("20", "50", "100"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--kinds", "rnn,transformer"], "transformer not among"),
        (["--checkpoint", "models/default.pt"], "must be KIND=PATH"),
        (["--checkpoint", "gru=/nonexistent/gru.pt", "--kinds", "gru"], "/nonexistent/gru.pt"),
        (["--seconds", "0"], "--seconds 0.0 must be above 0"),
        (["--alert-machines", "3", "--kinds", "persistence"], "at least 14 machines"),
    ],
)
def test_bad_compare_arguments_exit_2_naming_the_value(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", "--compare", *argv]) == 2
    assert message in capsys.readouterr().err


def test_two_checkpoints_without_compare_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(shipped_path("lstm"))
    assert main(["evaluate", "--checkpoint", path, "--checkpoint", path]) == 2
    assert "--checkpoint was given 2 times" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru", "bilstm"])
def test_forward_flops_count_two_per_weight_of_every_matrix_product(kind: str) -> None:
    """Each step multiplies the input and the state by every recurrent weight matrix once (a
    multiply and an add per weight); the head and the window's linear path run once."""
    module = RecurrentForecaster(
        n_features=4,
        hidden=8,
        layers=2,
        dropout=0.0,
        horizon=5,
        cell=kind,
        window=12,
        normalisation="window",
    )
    recurrent = sum(p.numel() for name, p in module.rnn.named_parameters() if "weight" in name)
    assert module.skip is not None
    expected = 2 * 12 * recurrent + 2 * module.head.weight.numel() + 2 * module.skip.weight.numel()
    assert forward_flops(kind, 4, 8, 2, 12, 5) == expected


def test_peak_shares_set_each_runtime_s_rate_against_the_peak() -> None:
    from bench.inference import peak_shares

    forecaster = load_forecaster(shipped_path("lstm"), device="cpu", threads=1)
    assert isinstance(forecaster, TorchForecaster)
    c = forecaster.checkpoint
    flops = forward_flops(c.kind, len(c.features), c.hidden, c.layers, c.window, c.horizon)
    batches = {
        "1000": {"agent_per_s": 1000.0, "serving": {"numpy_per_s": 2000.0, "numpy_vs_agent": 2.0}}
    }
    shares = peak_shares(batches, forecaster, peak_gflops=flops * 4000 / 1e9)
    assert shares == {"1000": {"torch": 0.25, "numpy": 0.5}}
