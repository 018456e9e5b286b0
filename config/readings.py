"""What a valid reading is (limits) and how a plant's fields map to forewarn's."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from config.base import Section
from config.fields import ENVELOPE, FEATURES, units_for


class ReadingLimits(Section):
    """Physically plausible ranges; a reading outside is rejected as reason=out_of_range."""

    temperature_c: tuple[float, float] = Field((-60.0, 600.0), description="°C range.")
    vibration_hz: tuple[float, float] = Field((-1000.0, 10_000.0), description="Hz range.")
    pressure_psi: tuple[float, float] = Field((-100.0, 20_000.0), description="psi range.")
    rpm: tuple[float, float] = Field((-100_000.0, 100_000.0), description="rpm range.")
    max_payload_bytes: int = Field(4096, ge=64, description="Larger payloads are rejected.")
    max_batch_bytes: int = Field(
        2_097_152,
        ge=64,
        description="Larger gateway batch payloads are rejected whole, as one reason=too_large; "
        "a batch is parsed in one go, so this bounds the memory one message takes (the default "
        "fits max_batch_readings readings of 200 bytes).",
    )
    max_batch_readings: int = Field(
        10_000,
        ge=1,
        description="A gateway batch with more readings is rejected whole, as one "
        "reason=too_large.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> ReadingLimits:
        for name in ("temperature_c", "vibration_hz", "pressure_psi", "rpm"):
            low, high = getattr(self, name)
            if not low < high:
                raise ValueError(f"{name} range must be (low, high) with low < high")
        return self


class FieldMap(Section):
    """One plant payload field: the forewarn field it becomes, its unit, a scale for raw counts.

    The value becomes ``(raw * scale + offset)`` converted from ``unit`` into the feature's own
    unit (°C, psi, Hz, rpm), before the limits check it.
    """

    feature: str = Field(
        description="The forewarn field: a feature (temperature_c, vibration_hz, pressure_psi, "
        "rpm), or machine_id, ts or seq."
    )
    unit: str | None = Field(
        None, description="The field's unit, e.g. degF, K, bar, kPa, MPa, Pa, Hz, cpm."
    )
    scale: float = Field(1.0, description="Raw counts to engineering units: raw * scale + offset.")
    offset: float = Field(0.0, description="Added after scale.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # {"temp": "temperature_c"}: a rename without conversion.
        return {"feature": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _known(self) -> FieldMap:

        if self.feature not in (*FEATURES, *ENVELOPE):
            raise ValueError(
                f"{self.feature!r} is not a forewarn field; use one of "
                f"{', '.join((*FEATURES, *ENVELOPE))}"
            )
        if self.unit is not None and self.unit.lower() not in units_for(self.feature):
            raise ValueError(
                f"unit {self.unit!r} does not fit {self.feature!r}; use one of "
                f"{', '.join(units_for(self.feature)) or 'none'}"
            )
        return self


class MappingSettings(Section):
    """How a plant's payload fields become forewarn's (see docs/plant.md)."""

    fields: dict[str, str | dict[str, Any]] = Field(
        default_factory=dict,
        description="Plant field name -> forewarn field, as JSON, e.g. "
        '{"temp": {"feature": "temperature_c", "unit": "degF"}, "asset": "machine_id"}; a '
        "feature the served model lacks stops start-up. Unset: the payload uses forewarn's names.",
    )

    @field_validator("fields")
    @classmethod
    def _each(cls, value: dict[str, str | dict[str, Any]]) -> dict[str, str | dict[str, Any]]:
        # Kept as plain data (one settings-table row), checked here field by field, so that the
        # error names the plant's field.
        for source, spec in value.items():
            try:
                FieldMap.model_validate(spec)
            except ValidationError as error:
                problems = "; ".join(
                    f"{'.'.join(map(str, p['loc'])) or 'value'}: "
                    + p["msg"].removeprefix("Value error, ")
                    for p in error.errors()
                )
                raise ValueError(f"field {source!r}: {problems}") from None
        return value

    def field_maps(self) -> dict[str, FieldMap]:
        """``fields`` as checked :class:`FieldMap` objects."""
        return {source: FieldMap.model_validate(spec) for source, spec in self.fields.items()}
