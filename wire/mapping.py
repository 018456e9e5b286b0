"""Field and unit mapping: a plant's payload field names and units to forewarn's.

Plants publish what their gateways already publish (``temp`` in °F, ``press`` in bar, raw ADC
counts), and forewarn's model and limits speak ``temperature_c`` in °C and ``pressure_psi`` in
psi. The mapping renames and converts each configured field before the decoder validates the
reading, so everything after it (limits, windows, the model, alerts) sees native readings.

A value is first scaled (``raw * scale + offset``: raw counts to engineering units), then
converted from ``unit`` to the feature's own unit. Everything is checked at start-up: a mapping
that names a feature the served model does not have, or a unit that does not fit the feature,
stops the agent with a message naming the plant's field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from config.errors import ConfigError
from config.fields import ENVELOPE, UNITS, units_for
from config.readings import FieldMap


@dataclass(frozen=True, slots=True)
class _Rule:
    source: str
    target: str
    factor: float
    offset: float
    numeric: bool


class FieldMapping:
    """Renames and converts configured payload fields into forewarn's reading fields.

    Raises :class:`config.settings.ConfigError` for a mapping the served model cannot use.
    """

    def __init__(self, fields: Mapping[str, FieldMap], features: Sequence[str]) -> None:
        rules: list[_Rule] = []
        targets: dict[str, str] = {}
        for source, spec in fields.items():
            target = spec.feature
            where = f"FOREWARN_MAPPING__FIELDS: field {source!r}"
            if target not in features and target not in ENVELOPE:
                raise ConfigError(
                    f"{where} maps to {target!r}, which the served model does not have; "
                    f"its features are {', '.join(features)} (and {', '.join(ENVELOPE)})"
                )
            if target in targets:
                raise ConfigError(
                    f"{where} maps to {target!r}, as field {targets[target]!r} already does"
                )
            targets[target] = source
            factor, offset = spec.scale, spec.offset
            if target in ("machine_id", "seq") and (spec.unit or factor != 1.0 or offset != 0.0):
                raise ConfigError(f"{where} maps to {target!r}, which takes no unit or scale")
            if target == "ts" and spec.unit:
                raise ConfigError(
                    f"{where} maps to 'ts', which takes a scale (0.001 for ms), not a unit"
                )
            if spec.unit:
                units = UNITS.get(target, {})
                conversion = units.get(spec.unit.lower())
                if conversion is None:
                    raise ConfigError(
                        f"{where}: unit {spec.unit!r} does not fit {target!r}; use one of "
                        f"{', '.join(units_for(target))}"
                    )
                # raw*scale + offset, then into the feature's unit: one linear step.
                factor, offset = factor * conversion[0], offset * conversion[0] + conversion[1]
            rules.append(_Rule(source, target, factor, offset, target not in ("machine_id", "seq")))
        self._rules = tuple(rules)

    def __bool__(self) -> bool:
        return bool(self._rules)

    def apply(self, data: Mapping[str, object]) -> dict[str, object]:
        """``data`` with each mapped field renamed and converted (a new dict).

        A value that is not a finite number is passed on unconverted under the new name, so
        the decoder rejects it with its usual reason (``bad_type``, ``non_finite``).
        """
        out = dict(data)
        for rule in self._rules:
            if rule.source not in out:
                continue  # the decoder reports the missing field (by its forewarn name)
            value = out.pop(rule.source)
            if (
                rule.numeric
                and isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
            ):
                value = value * rule.factor + rule.offset
            out[rule.target] = value
        return out

    def unapply(self, data: Mapping[str, object]) -> dict[str, object]:
        """The inverse of :meth:`apply`: forewarn's fields in the plant's names and units.

        For the simulator, so that a plant-shaped stream can be published end to end.
        """
        out = dict(data)
        for rule in self._rules:
            if rule.target not in out:
                continue
            value = out.pop(rule.target)
            if rule.numeric and isinstance(value, int | float) and not isinstance(value, bool):
                value = (value - rule.offset) / rule.factor
            out[rule.source] = value
        return out

    def source_of(self, target: str) -> str | None:
        """The plant's name for ``target`` (for rejection messages), if it is mapped."""
        return next((rule.source for rule in self._rules if rule.target == target), None)
