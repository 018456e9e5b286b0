"""Topic templates: where a plant publishes its readings and where forewarn puts its alerts.

A template is a topic whose levels are fixed text or one whole-level placeholder, e.g.
``plant/{line}/{machine_id}/sensors``. Plants do not rename their topic trees for us, so the
agent subscribes to the template with every placeholder turned into ``+`` and takes the
machine id from the ``{machine_id}`` level (or, for a template without one, from the payload).
Placeholders must fill a whole level: MQTT wildcards only match whole levels, so a partial one
(``line-{n}``) could not become a subscription filter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MACHINE_ID = "machine_id"
_PLACEHOLDER = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_FIXED_LEVEL = re.compile(r"^[^#+{}\s\x00]+$")


class TemplateError(ValueError):
    """A template that cannot work; the message names the template and the fix."""


@dataclass(frozen=True)
class TopicTemplate:
    """A parsed template: each level is ``(is_placeholder, text)``."""

    text: str
    levels: tuple[tuple[bool, str], ...]

    @classmethod
    def parse(cls, text: str) -> TopicTemplate:
        if not text:
            raise TemplateError("a topic template must not be empty")
        levels: list[tuple[bool, str]] = []
        seen: set[str] = set()
        for level in text.split("/"):
            placeholder = _PLACEHOLDER.match(level)
            if placeholder is not None:
                name = placeholder.group(1)
                if name in seen:
                    raise TemplateError(f"{text!r} names {{{name}}} twice")
                seen.add(name)
                levels.append((True, name))
            elif _FIXED_LEVEL.match(level):
                levels.append((False, level))
            elif not level:
                raise TemplateError(f"{text!r} has an empty topic level ('//' or a '/' at an end)")
            else:
                raise TemplateError(
                    f"{text!r}: level {level!r} must be fixed text without wildcards (+, #), "
                    "braces or spaces, or one whole-level placeholder such as {machine_id}"
                )
        return cls(text, tuple(levels))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(text for is_placeholder, text in self.levels if is_placeholder)

    @property
    def has_machine_id(self) -> bool:
        return MACHINE_ID in self.names

    @property
    def filter(self) -> str:
        """The subscription filter: every placeholder becomes ``+``."""
        return "/".join("+" if is_placeholder else text for is_placeholder, text in self.levels)

    def match(self, topic: str) -> dict[str, str] | None:
        """The placeholders' values in ``topic``, or None when the topic does not fit."""
        parts = topic.split("/")
        if len(parts) != len(self.levels):
            return None
        values: dict[str, str] = {}
        for part, (is_placeholder, text) in zip(parts, self.levels, strict=True):
            if is_placeholder:
                values[text] = part
            elif part != text:
                return None
        return values

    def machine_id(self, topic: str) -> str | None:
        """The machine id level of ``topic`` (None: not in the template, or no match)."""
        values = self.match(topic)
        return None if values is None else values.get(MACHINE_ID)

    def render(self, machine_id: str) -> str:
        """The topic for ``machine_id``; only for templates whose one placeholder it is."""
        return "/".join(
            machine_id if is_placeholder else text for is_placeholder, text in self.levels
        )

    def fill(self, values: dict[str, str]) -> str:
        """The topic with every placeholder replaced by its value (KeyError: one is missing)."""
        return "/".join(values[text] if placeholder else text for placeholder, text in self.levels)


def alerts_template(text: str) -> TopicTemplate:
    """A template for publishing alerts: fixed text and exactly one ``{machine_id}``.

    Alerts are published per machine, so any other placeholder would have no value to fill.
    """
    template = TopicTemplate.parse(text)
    if template.names != (MACHINE_ID,):
        raise TemplateError(
            f"{text!r}: an alerts topic needs exactly one placeholder, {{machine_id}}, "
            "and fixed text otherwise (e.g. 'plant/{machine_id}/forewarn/alerts')"
        )
    return template


def default_telemetry_topic(prefix: str) -> str:
    return f"{prefix}/{{{MACHINE_ID}}}/telemetry"


def default_alerts_topic(prefix: str) -> str:
    return f"{prefix}/{{{MACHINE_ID}}}/alerts"
