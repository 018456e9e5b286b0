"""What every settings section shares: unknown keys are errors, and the env var grammar."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict

ENV_PREFIX = "FOREWARN_"
ENV_NESTED_DELIMITER = "__"


class Section(BaseModel):
    """A settings section: a typo in a key stops start-up instead of being ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def split_list(value: Any, what: str) -> Any:
    """A list setting read raw (``NoDecode``), so that its env var may be a JSON list or
    comma-separated; spaces around commas and empty items (a trailing comma) are typing, not
    items. ``what`` names the items in the error for a broken JSON list."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as error:
                raise ValueError(f"not a JSON list of {what} ({error})") from None
        else:
            value = text.split(",")
    if isinstance(value, list | tuple):
        value = [item.strip() if isinstance(item, str) else item for item in value]
        value = [item for item in value if item != ""]
    return value
