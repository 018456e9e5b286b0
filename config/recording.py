"""Recording the readings the agent accepts, for training on the plant's own history (see
docs/model-lifecycle.md): where, how much, and which machines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from config.base import Section, split_list

MIB = 1024 * 1024


class RecordingSettings(Section):
    """The agent's recording of accepted readings to rotating files in a bounded folder."""

    enabled: bool = Field(
        False,
        description="Write every accepted reading of the machines below to the recording, "
        "for `forewarn train --from-recording`.",
    )
    directory: Path = Field(
        Path("recordings"),
        description="Folder of the recording's *.fwrec files (created if missing); hold nothing "
        "else there: the oldest .fwrec files are deleted to keep it under max_bytes.",
    )
    max_bytes: int = Field(
        1024 * MIB,
        ge=MIB,
        description="Most bytes the recording's files take together: before a write would "
        "pass it, the oldest files are deleted (about 15 bytes a reading; see the manual).",
    )
    file_bytes: int = Field(
        64 * MIB,
        ge=64 * 1024,
        description="A file is closed, and the next one opened, before it would pass this "
        "size; the oldest whole file is what is dropped.",
    )
    machines: Annotated[list[str], NoDecode] = Field(
        ["*"],
        description="Machine ids recorded, as shell-style patterns (* ? [..]), a JSON list or "
        "comma-separated, e.g. press-*,oven-7. Default: every machine.",
    )
    max_backlog_ticks: int = Field(
        64,
        ge=1,
        description="Ticks of readings waiting for the writer thread; past it, a tick's "
        "readings are not recorded (counted as backlog).",
    )

    @field_validator("machines", mode="before")
    @classmethod
    def _pattern_list(cls, value: Any) -> Any:
        value = split_list(value, "machine id patterns")
        if isinstance(value, list) and not value:
            raise ValueError("no machine id pattern: give * to record every machine")
        return value

    @model_validator(mode="after")
    def _file_within_cap(self) -> RecordingSettings:
        if self.file_bytes > self.max_bytes:
            raise ValueError(
                f"recording file_bytes {self.file_bytes} is above max_bytes {self.max_bytes}: "
                "one file would not fit the folder; set file_bytes to at most max_bytes "
                "(a tenth of it or less keeps most of the history when the oldest is dropped)"
            )
        return self
