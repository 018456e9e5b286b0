"""What every settings section shares: unknown keys are errors, and the env var grammar."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

ENV_PREFIX = "FOREWARN_"
ENV_NESTED_DELIMITER = "__"


class Section(BaseModel):
    """A settings section: a typo in a key stops start-up instead of being ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
