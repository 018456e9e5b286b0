"""What ships: the wheel and the image carry every package of the house and its data files.

A package added to the tree but not to pyproject.toml's list would run from a checkout and
fail once installed, so these read the lists from the one place that names the packages (the
import contract's ``root_packages``) and build a real wheel.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PACKAGES: list[str] = PYPROJECT["tool"]["importlinter"]["root_packages"]


def test_the_wheel_holds_every_package_and_its_data(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("forewarn-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in PACKAGES:
        assert f"{package}/__init__.py" in names, package
        sources = {p.relative_to(REPO).as_posix() for p in (REPO / package).rglob("*.py")}
        assert sources <= names, sorted(sources - names)
    for name in ("default.pt", "default.json", "default.npz", "default.onnx"):
        assert f"models/{name}" in names, name
    # Every other kind `make train` ships, for `forewarn evaluate --compare`: a network with
    # its ONNX graph, Ridge without one (it has no graph to export).
    for kind in ("rnn", "gru", "bilstm", "ridge"):
        suffixes = (".pt", ".json", ".npz") + ((".onnx",) if kind != "ridge" else ())
        for suffix in suffixes:
            assert f"models/shipped/{kind}{suffix}" in names, (kind, suffix)
    assert "wire/schemas/alert.schema.json" in names
    assert "wire/schemas/anomaly.schema.json" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "forewarn = forewarn.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_image_copies_every_package() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    dockerignore = (REPO / ".dockerignore").read_text().splitlines()
    for package in PACKAGES:
        assert f"COPY {package}/ {package}/" in dockerfile, package
        assert f"!{package}/" in dockerignore, package
