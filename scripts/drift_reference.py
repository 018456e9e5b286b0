"""Recomputes the shipped models' drift reference on the test split their training used.

    python -m scripts.drift_reference          # every shipped serving file
    python -m scripts.drift_reference PATH.json ...

The agent's drift ratio divides by the model's next-step skill on its own test split
(models.skill). Models trained before ``forewarn train`` stored ``drift_reference`` carry the
same figures as ``test_next_step`` and ``persistence_next_step``, written by the training run
itself. This script regenerates that test split from the ``config`` in each model's report
(the same seeds, so the same simulated episodes: ``models.train.generate_episodes``), forecasts
it with the torch-free runtime, and checks the stored figures against what it measures, so
that the shipped files need not be retrained nor rewritten. Exit status 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from models.serving import ServingModel, serving_forecaster
from models.skill import measure_reference, reference_from_report
from models.train import TrainConfig, generate_episodes, windows_of

MODELS = Path(__file__).resolve().parents[1] / "models"
TOLERANCE = 0.005
"""Relative: the numpy runtime's float arithmetic is not torch's, to a few parts in 10,000."""


def check(path: Path) -> tuple[bool, str]:
    model = ServingModel.load(path)
    stored = reference_from_report(model.report)
    known = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in model.report.get("config", {}).items() if k in known})
    test = generate_episodes(config).test
    x, y = windows_of(test, config, 1, model.target_index)
    forecaster = serving_forecaster(model, "numpy")
    measured = measure_reference(forecaster.forecast(x), x, y, model.target_index)
    if stored is None:
        return False, f"{path.name}: no stored figures; measured {measured}"
    ok = all(
        abs(a - b) <= TOLERANCE * b
        for a, b in (
            (measured.model_rmse_c, stored.model_rmse_c),
            (measured.persistence_rmse_c, stored.persistence_rmse_c),
        )
    )
    line = (
        f"{path.relative_to(MODELS.parent) if path.is_relative_to(MODELS.parent) else path}: "
        f"{len(x):,} test windows; model RMSE {measured.model_rmse_c:.4f} °C "
        f"(stored {stored.model_rmse_c:.4f}), persistence {measured.persistence_rmse_c:.4f} °C "
        f"(stored {stored.persistence_rmse_c:.4f}), skill {measured.skill:.4f} "
        f"(stored {stored.skill:.4f}) {'ok' if ok else 'MISMATCH'}"
    )
    return ok, line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="serving files (default: shipped)")
    args = parser.parse_args(argv)
    paths = args.paths or [MODELS / "default.json", *sorted((MODELS / "shipped").glob("*.json"))]
    good = True
    for path in paths:
        ok, line = check(path)
        good &= ok
        print(line, flush=True)
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
