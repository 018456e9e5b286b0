"""The house's floors hold: every package imports only the packages below it.

forewarn > agent > models > simulator > wire > config, and the agent never reaches the
simulator, not even through another package. The contracts live in pyproject.toml
(``[tool.importlinter]``); these tests run them as ``make lint`` does, and show that a contract
which does not hold is reported, so a passing run means something.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(config: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [str(LINT_IMPORTS), "--no-cache"]
    if config is not None:
        command += ["--config", str(config)]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)


def _contracts() -> dict[str, object]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]


def test_the_import_contracts_are_kept() -> None:
    completed = _lint()
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-2000:]
    assert "0 broken" in completed.stdout


def test_the_layers_name_every_package_and_the_house_order() -> None:
    settings = _contracts()
    layers = next(c for c in settings["contracts"] if c["type"] == "layers")  # type: ignore[union-attr]
    assert layers["layers"] == ["forewarn", "agent", "models", "simulator", "wire", "config"]
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests", "bench", "scripts"}
    assert packages == set(settings["root_packages"])  # type: ignore[arg-type]


def test_an_upside_down_house_is_reported(tmp_path: Path) -> None:
    """The same tool on the real code, with the floors reversed: every import now points up."""
    settings = _contracts()
    reversed_layers = list(reversed(["forewarn", "agent", "models", "simulator", "wire", "config"]))
    config = tmp_path / "upside-down.toml"
    config.write_text(
        f"[tool.importlinter]\nroot_packages = {settings['root_packages']!r}\n".replace("'", '"')
        + "[[tool.importlinter.contracts]]\n"
        'name = "upside down"\n'
        'type = "layers"\n'
        f"layers = {reversed_layers!r}\n".replace("'", '"')
    )
    completed = _lint(config)
    assert completed.returncode != 0
    assert "upside down BROKEN" in completed.stdout
