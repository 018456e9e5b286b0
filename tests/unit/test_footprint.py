"""What a serving agent loads: only what serving needs.

scikit-learn pulls in SciPy, about 70 MB of resident memory and over a second of start-up. The
agent only reads fitted arrays out of a checkpoint, so it must never import either; training,
evaluation and `forewarn detect` import scikit-learn where they fit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("sklearn", "scipy")

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


def _serve(*modules: str) -> dict[str, object]:
    completed = subprocess.run(
        [sys.executable, "-c", SERVE, *modules],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result: dict[str, object] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def test_a_serving_agent_imports_neither_scikit_learn_nor_scipy() -> None:
    result = _serve(*HEAVY)
    assert result["forecasts"] == 1  # the agent really loaded its model and forecast
    assert result["loaded"] == []


def test_the_probe_sees_a_module_that_is_loaded() -> None:
    """The check above can fail: the same probe reports numpy and torch, which serving loads."""
    assert _serve("numpy", "torch")["loaded"] == ["numpy", "torch"]


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
