"""The overheat alert policy's thresholds, timings and anomaly score."""

from __future__ import annotations

from pydantic import Field, field_validator

from config.base import Section


class AlertSettings(Section):
    """The overheat alert policy."""

    threshold_c: float = Field(95.0, description="Overheat threshold in °C.")
    warning_confirm_ticks: int = Field(
        3, ge=1, description="Consecutive ticks the forecast must cross before a warning fires."
    )
    critical_confirm_readings: int = Field(
        3,
        ge=1,
        description="Consecutive readings at or over the threshold before a critical fires "
        "(rides out single-reading spikes).",
    )
    clear_margin_c: float = Field(
        2.0, ge=0, description="Hysteresis: an alert resolves only below threshold - margin."
    )
    clear_confirm_ticks: int = Field(
        4, ge=1, description="Consecutive clear ticks before an alert resolves."
    )
    keep_firing_for_s: float = Field(
        120.0,
        ge=0,
        description="Hold an incident this many seconds (of the machine's reading timestamps) "
        "after it was last hot before it resolves, and a critical as long before it steps down "
        "to warning, like Alertmanager's keep_firing_for: a reading that a cycle carries back "
        "and forth across the threshold is one incident, paged once. 0: resolve after "
        "clear_confirm_ticks alone.",
    )
    keep_firing_cycles: float = Field(
        1.5,
        ge=0,
        description="Learned per machine: hold an incident at least this many of the machine's "
        "own cycles (found in its readings; see agent.trend) when that is longer than "
        "keep_firing_for_s, so that the next peak of a slow cycle still continues it. 0: "
        "keep_firing_for_s alone.",
    )
    overrides: dict[str, float] = Field(
        default_factory=dict,
        description="Per-machine thresholds in °C by machine id or shell pattern, e.g. "
        '{"oven-*": 190, "bearing-7": 60}; an exact id wins over patterns.',
    )
    warning_sigma: float = Field(
        2.0,
        ge=0,
        description="Widen the warning: it fires when forecast + this many standard deviations "
        "of the machine's own recent forecast error reaches the threshold (0: the forecast "
        "alone). The widening stands for the sensor noise that takes a reading over the "
        "threshold before the machine's temperature itself gets there.",
    )
    warning_margin_max_c: float = Field(
        3.0, ge=0, description="Cap on that widening, so a noisy sensor cannot warn on its own."
    )
    warning_noise_ratio_max: float = Field(
        1.5,
        ge=0,
        description="Forecasts made while a machine's forecast error is more than this many "
        "times its usual one (a sensor turned noisy) do not count towards a warning; 0: no "
        "such check.",
    )

    warning_level_rise_c: float = Field(
        1.25,
        ge=0,
        description="The level gate: a forecast opens a warning only on a machine whose mean "
        "over about its last 100 readings is at least this much above its mean over about its "
        "last 500 (both over whole cycles of the machine once its cycle is known; a ramp lifts "
        "it, a cycle's peak does not), whose readings are already "
        "warning_above_usual_peak_c over its usual peak, whose usual peak is within "
        "clear_margin_c of the threshold, or that the slow path sees trending; a machine with "
        "fewer than 100 readings is not gated. It never holds back a critical or an incident "
        "already open. 0 turns the gate off, as does turning the slow path off "
        "(trend_horizon_readings 0), which measures the level.",
    )
    warning_above_usual_peak_c: float = Field(
        4.0,
        ge=0,
        description="The level gate lets a forecast open a warning when the median of the "
        "machine's last three readings is this much over its usual peak (its mean over 100 "
        "readings plus the excursion its cycle and noise add at a peak; see agent.trend).",
    )

    trend_horizon_readings: int = Field(
        5000,
        ge=0,
        le=20_000,
        description="The slow path (agent.trend): warn when a machine's long-term trend, its "
        "own peak excursion on top, reaches the threshold within this many readings; 0 turns "
        "the slow path off.",
    )
    trend_confirm: int = Field(
        3,
        ge=1,
        description="Consecutive slow-path verdicts (one per 10 readings) that must predict a "
        "crossing before it counts towards a warning.",
    )
    trend_sigma: float = Field(
        0.0,
        ge=0,
        description="The slow path extrapolates each trend with its slope minus this many "
        "standard errors, so a slope the readings barely support predicts nothing.",
    )
    trend_save_interval_s: float = Field(
        300.0,
        gt=0,
        description="How often the slow path's trends of every machine are written to "
        "agent.state_dir (and once at stop), so that a restart does not leave it blind for "
        "up to 20,000 readings.",
    )

    @field_validator("warning_noise_ratio_max")
    @classmethod
    def _ratio_off_or_above_usual(cls, value: float) -> float:
        # A machine behaving as usual has a ratio of about 1 (exactly 1 while warming up), so a
        # limit below 1 would silently discard every forecast: no warning could ever fire.
        if 0 < value < 1:
            raise ValueError(
                f"warning_noise_ratio_max {value} would hold back every warning (a machine's "
                "usual ratio is 1): use 0 to turn the check off, or a value of 1.2 or more"
            )
        return value
