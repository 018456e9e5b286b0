"""Model files for swap tests: copies of the shipped serving files, and Ridge files derived
from the shipped one, each changed in one way a swap must accept or refuse."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import orjson

from models.serving import ServingModel

SHIPPED = Path(__file__).resolve().parents[1] / "models"
RIDGE = SHIPPED / "shipped" / "ridge.json"
LSTM = SHIPPED / "default.json"


def copy_model(source: Path, folder: Path, name: str) -> Path:
    """Copy a serving file (JSON and the files beside it) into ``folder`` as ``name``."""
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".json", ".npz", ".onnx"):
        if source.with_suffix(suffix).exists():
            shutil.copy(source.with_suffix(suffix), folder / f"{name}{suffix}")
    document = orjson.loads((folder / f"{name}.json").read_bytes())
    document["weights"]["file"] = f"{name}.npz"
    if document.get("onnx"):
        document["onnx"]["file"] = f"{name}.onnx"
    (folder / f"{name}.json").write_bytes(orjson.dumps(document))
    return folder / f"{name}.json"


def derived_ridge(folder: Path, name: str, change: str) -> Path:
    """A Ridge serving file derived from the shipped one, changed in one way."""
    model = ServingModel.load(RIDGE)
    coef = model.weights["coef"].astype(np.float64)
    if change == "horizon":
        model.horizon = 10
        intercept = model.array("intercept")[:10]
        model.weights = {**model.weights, "coef": coef[:10], "intercept": intercept}
    elif change == "window":
        model.window = 10
        shaped = coef.reshape(model.horizon, 20, len(model.features))[:, 10:, :]
        model.weights = {**model.weights, "coef": shaped.reshape(model.horizon, -1)}
    elif change == "order":
        order = [0, 2, 1, 3]
        model.features = tuple(model.features[i] for i in order)
        shaped = coef.reshape(model.horizon, 20, 4)[:, :, order]
        model.weights = {**model.weights, "coef": shaped.reshape(model.horizon, -1)}
    elif change == "nan":
        coef = coef.copy()
        coef[0, 0] = np.nan
        model.weights = {**model.weights, "coef": coef}
    elif change == "overflow":
        # finite weights whose forecasts overflow float32: +-inf on any window
        intercept = model.array("intercept") + 1.0
        model.weights = {**model.weights, "coef": coef * 1e60, "intercept": intercept * 1e60}
    elif change == "retrained":
        model.weights = {**model.weights, "coef": coef * 0.99}
    model.path = None
    return model.save(folder / f"{name}.json").json
