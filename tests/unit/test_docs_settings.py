"""The settings table in docs/settings.md is generated from the code; keep the two in step."""

from __future__ import annotations

from pathlib import Path

from scripts.settings_table import table

SETTINGS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def test_settings_page_lists_every_setting_as_the_code_defines_it() -> None:
    assert table() in SETTINGS_PAGE.read_text(encoding="utf-8"), (
        "the settings table in docs/settings.md is stale: regenerate it with "
        "`python scripts/settings_table.py`"
    )
