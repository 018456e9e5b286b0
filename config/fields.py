"""What a reading carries: forewarn's features, its envelope fields and the units each accepts.

Names only, at the ground floor: the settings check a plant's field mapping against them, the
wire decodes and converts with them, the simulator produces them and the models learn them.
"""

from __future__ import annotations

FEATURES: tuple[str, ...] = ("temperature_c", "vibration_hz", "pressure_psi", "rpm")
"""Feature order everywhere in forewarn: payload fields, window columns, model inputs."""

ENVELOPE = ("machine_id", "ts", "seq")
"""Reading fields that are not features but may be renamed too (ts may be scaled: ms → s)."""

UNITS: dict[str, dict[str, tuple[float, float]]] = {
    # feature -> unit (lower case) -> (factor, offset) with feature_value = value*factor + offset
    "temperature_c": {
        "c": (1.0, 0.0),
        "degc": (1.0, 0.0),
        "°c": (1.0, 0.0),
        "f": (5.0 / 9.0, -32.0 * 5.0 / 9.0),
        "degf": (5.0 / 9.0, -32.0 * 5.0 / 9.0),
        "°f": (5.0 / 9.0, -32.0 * 5.0 / 9.0),
        "k": (1.0, -273.15),
    },
    "pressure_psi": {
        "psi": (1.0, 0.0),
        "bar": (14.503773773, 0.0),
        "kpa": (0.14503773773, 0.0),
        "mpa": (145.03773773, 0.0),
        "pa": (0.00014503773773, 0.0),
    },
    "vibration_hz": {"hz": (1.0, 0.0), "cpm": (1.0 / 60.0, 0.0)},
    "rpm": {"rpm": (1.0, 0.0), "hz": (60.0, 0.0)},
}


def units_for(feature: str) -> list[str]:
    """The units a feature's values may arrive in (for messages and docs/plant.md)."""
    return sorted(UNITS.get(feature, {}))
