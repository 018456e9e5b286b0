"""The README's settings table is generated from the code; keep the two in step."""

from __future__ import annotations

from pathlib import Path

from scripts.settings_table import table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_lists_every_setting_as_the_code_defines_it() -> None:
    assert table() in README.read_text(encoding="utf-8"), (
        "README settings table is stale: regenerate it with `python scripts/settings_table.py`"
    )
