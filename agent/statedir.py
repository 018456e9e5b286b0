"""Where the agent keeps what must survive a restart and the broker does not hold.

One folder for all of it (the served model's record, the anomaly scorer's learned normal):
``agent.state_dir`` when set, else the folder systemd names in ``$STATE_DIRECTORY``
(``StateDirectory=`` in the shipped unit), else none and nothing is kept.
"""

from __future__ import annotations

import os
from pathlib import Path

from config.settings import Settings


def state_dir(settings: Settings) -> Path | None:
    """``agent.state_dir``, else systemd's ``$STATE_DIRECTORY`` (its first entry), else None."""
    if settings.agent.state_dir is not None:
        return settings.agent.state_dir
    value = os.environ.get("STATE_DIRECTORY", "")
    return Path(value.split(":")[0]) if value else None
