"""The simulator as a Sparkplug B edge node (``forewarn simulate --format sparkplug``).

One edge node (the simulator's client id) with one device per machine: NBIRTH and a DBIRTH per
device first, DDATA per reading, NDEATH at the end (and as the MQTT will, for a crash), as a
plant gateway would, so that the agent's Sparkplug ingest is tested end to end.
"""

from __future__ import annotations

import numpy as np

from config.fields import FEATURES
from config.topics import SPARKPLUG_NAMESPACE as NAMESPACE
from wire.mapping import FieldMapping
from wire.sparkplug import encode

DEFAULT_GROUP = "forewarn"


class SparkplugEdge:
    """Topics and payloads of one simulated edge node; ``mapping`` names the metrics."""

    def __init__(self, group: str | None, edge: str, mapping: FieldMapping | None) -> None:
        self.group = group if group not in (None, "+") else DEFAULT_GROUP
        self.edge = edge
        self.mapping = mapping
        self._seq = 0

    def topic(self, kind: str, device: str | None = None) -> str:
        tail = "" if device is None else f"/{device}"
        return f"{NAMESPACE}/{self.group}/{kind}/{self.edge}{tail}"

    def _payload(self, metrics: dict[str, float], ts: float, birth: bool = False) -> bytes:
        payload = encode(metrics, int(ts * 1000), self._seq, birth=birth)
        self._seq = (self._seq + 1) % 256
        return payload

    def metrics(self, values: np.ndarray) -> dict[str, float]:
        """A reading's features, by the plant's metric names when a mapping is given."""
        native: dict[str, object] = dict(zip(FEATURES, values.tolist(), strict=True))
        named = self.mapping.unapply(native) if self.mapping is not None else native
        return {name: float(value) for name, value in named.items()}  # type: ignore[arg-type]

    def births(
        self, machine_ids: list[str], readings: np.ndarray, ts: float
    ) -> list[tuple[str, bytes]]:
        out = [(self.topic("NBIRTH"), self._payload({}, ts, birth=True))]
        for machine_id, values in zip(machine_ids, readings, strict=True):
            out.append(
                (self.topic("DBIRTH", machine_id), self._payload(self.metrics(values), ts, True))
            )
        return out

    def data(self, machine_id: str, values: np.ndarray, ts: float) -> tuple[str, bytes]:
        return self.topic("DDATA", machine_id), self._payload(self.metrics(values), ts)

    def death(self, ts: float) -> tuple[str, bytes]:
        return self.topic("NDEATH"), encode({}, int(ts * 1000), 0)
