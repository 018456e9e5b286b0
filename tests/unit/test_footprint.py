"""What a serving agent loads: only what serving needs.

scikit-learn pulls in SciPy, about 70 MB of resident memory and over a second of start-up. The
agent only reads fitted arrays out of a checkpoint, so it must never import either; training,
evaluation and `forewarn detect` import scikit-learn where they fit.

torch takes ~190 MB more. An agent serving a network with the onnx or numpy runtime, or any
baseline, never imports it, and works where torch is not installed at all (simulated here by
an import hook that makes `import torch` fail, as it does on a gateway installed without the
``train`` extra).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("sklearn", "scipy")

NO_TORCH = """
import sys


class NoTorch:
    \"\"\"Makes `import torch` fail, as on an install without forewarn's train extra.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"No module named {name!r}")
        return None


sys.meta_path.insert(0, NoTorch())
"""

SERVE = """
import json, sys
import numpy as np
from agent.app import Agent
from forewarn.cli import main  # noqa: F401  (the command line's own imports)
from wire.reading import Reading
from config.settings import load_settings

TYPICAL = [60.0, 35.0, 120.0, 1650.0]
settings = load_settings(_env_file=None)
settings.metrics.host = "127.0.0.1"
settings.metrics.port = 0
agent = Agent(settings)
for step in range(agent.forecaster.window):
    agent.hand_off(Reading("m-1", 1000.0 + step, step, np.array(TYPICAL, dtype=np.float32)))
agent.tick()
forecasts = agent.metrics.registry.get_sample_value("forewarn_forecasts_total")
print(json.dumps({
    "forecasts": forecasts,
    "loaded": sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[1:])),
}))
"""


def _serve(
    *modules: str, env: dict[str, str] | None = None, without_torch: bool = False
) -> dict[str, object]:
    completed = subprocess.run(
        [sys.executable, "-c", (NO_TORCH if without_torch else "") + SERVE, *modules],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=120,
        env={**_clean_env(), **(env or {})},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result: dict[str, object] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def test_a_serving_agent_imports_neither_scikit_learn_nor_scipy() -> None:
    result = _serve(*HEAVY)
    assert result["forecasts"] == 1  # the agent really loaded its model and forecast
    assert result["loaded"] == []


def _clean_env() -> dict[str, str]:
    """This process's environment without forewarn's settings, which would steer the agent."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FOREWARN_")}


def test_the_probe_sees_a_module_that_is_loaded() -> None:
    """The checks here can fail: the same probe reports numpy and torch when the torch runtime
    serves."""
    loaded = _serve("numpy", "torch", env={"FOREWARN_MODEL__RUNTIME": "torch"})["loaded"]
    assert loaded == ["numpy", "torch"]


@pytest.mark.parametrize(
    "model",
    [
        {"FOREWARN_MODEL__RUNTIME": "onnx"},
        {"FOREWARN_MODEL__RUNTIME": "numpy"},
        {"FOREWARN_MODEL__KIND": "persistence"},
        {"FOREWARN_MODEL__KIND": "linear_extrapolation"},
    ],
    ids=["onnx", "numpy", "persistence", "linear_extrapolation"],
)
def test_a_lean_agent_never_imports_torch(model: dict[str, str]) -> None:
    result = _serve("torch", *HEAVY, env=model)
    assert result["forecasts"] == 1
    assert result["loaded"] == []


@pytest.mark.parametrize("runtime", ["auto", "onnx", "numpy"])
def test_an_agent_serves_where_torch_is_not_installed(runtime: str) -> None:
    result = _serve("torch", env={"FOREWARN_MODEL__RUNTIME": runtime}, without_torch=True)
    assert result == {"forecasts": 1, "loaded": []}


def test_a_ridge_serving_file_serves_without_torch(tmp_path: Path) -> None:
    code = (
        "import numpy as np\n"
        "from pathlib import Path\n"
        "from models.baselines import RidgeForecaster\n"
        "from models.checkpoint import export\n"
        "from models.data import make_windows\n"
        "from simulator.fleet import Fleet\n"
        "x, y = make_windows(Fleet(3, seed=2).history(0, 80), 20, 15)\n"
        f"path = Path({str(tmp_path / 'ridge.pt')!r})\n"
        "RidgeForecaster(horizon=15).fit(x, y).save(path)\n"
        "export(path)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)
    env = {
        "FOREWARN_MODEL__KIND": "ridge",
        "FOREWARN_MODEL__CHECKPOINT": str(tmp_path / "ridge.pt"),
    }
    assert _serve("torch", *HEAVY, env=env, without_torch=True) == {"forecasts": 1, "loaded": []}


def test_a_torch_checkpoint_given_to_an_agent_without_torch_exits_2_naming_export(
    tmp_path: Path,
) -> None:
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes((REPO / "models" / "default.pt").read_bytes())
    code = NO_TORCH + (
        "from forewarn.cli import main\n"
        "sys.exit(main(['agent', '--metrics-port', '0', '--checkpoint', sys.argv[1]]))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code, str(checkpoint)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=120,
        env=_clean_env(),
    )
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert f"forewarn export {checkpoint}" in completed.stderr
    assert "torch is not installed" in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.parametrize("fit", ["scaler", "ridge"])
def test_fitting_still_uses_scikit_learn(fit: str) -> None:
    """The lazy imports are real: fitting works and loads scikit-learn when it runs."""
    code = (
        "import sys, numpy as np\n"
        "from models.scaling import FeatureScaler\n"
        "from models.baselines import RidgeForecaster\n"
        "assert 'sklearn' not in sys.modules\n"
        "rng = np.random.default_rng(0)\n"
        "w = rng.normal(size=(64, 20, 4)).astype(np.float32)\n"
        f"if {fit!r} == 'scaler':\n"
        "    s = FeatureScaler.fit(w)\n"
        "    assert np.allclose(s.minimum, w.reshape(-1, 4).min(0))\n"
        "else:\n"
        "    RidgeForecaster(horizon=3).fit(w, rng.normal(size=(64, 3)).astype(np.float32))\n"
        "assert 'sklearn' in sys.modules\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert completed.returncode == 0, completed.stderr[-3000:]


def test_an_agent_imports_protobuf_only_to_speak_sparkplug_b() -> None:
    """protobuf (the ``google`` package) is among the largest imports of an agent's start-up
    (``python -m bench.startup``), and only Sparkplug B payloads need it."""
    numpy_runtime = {"FOREWARN_MODEL__RUNTIME": "numpy"}
    assert _serve("google", env=numpy_runtime)["loaded"] == []
    sparkplug = {**numpy_runtime, "FOREWARN_MQTT__SPARKPLUG_GROUP": "plant-1"}
    assert _serve("google", env=sparkplug)["loaded"] == ["google"]
