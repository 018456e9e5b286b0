"""Every topic forewarn reads or writes: templates, its own topics and the filter rules.

Pure text rules with no MQTT client behind them, at the ground floor, so that the settings can
check a topic at start-up (naming its variable) and the wire, the agent and the simulator
build the same topics from one place.

Topic templates: where a plant publishes its readings and where forewarn puts its alerts.

A template is a topic whose levels are fixed text or one whole-level placeholder, e.g.
``plant/{line}/{machine_id}/sensors``. Plants do not rename their topic trees for us, so the
agent subscribes to the template with every placeholder turned into ``+`` and takes the
machine id from the ``{machine_id}`` level (or, for a template without one, from the payload).
Placeholders must fill a whole level: MQTT wildcards only match whole levels, so a partial one
(``line-{n}``) could not become a subscription filter.

Gateway batch topics: where a gateway publishes many machines' readings in one message.

A gateway that forwards a whole line's sensors pays the MQTT and broker cost per message, so
it sends them as one batch (``{"readings": [...]}``, decoded by
:meth:`wire.reading.ReadingDecoder.decode_batch`). Batches arrive on their own subscription,
by default ``<prefix>/_gateway/+/telemetry`` (the ``+`` level is the gateway's id). Levels that
start with ``_`` are forewarn's own, like ``<prefix>/_agents/...``; the default batch topic has
one level more than the default per-machine topic ``<prefix>/<machine_id>/telemetry``, so a
machine that happens to be called ``_gateway`` still publishes single readings as any other.
Any configured batch topic is checked against the agent's other subscriptions and its own
topics at start-up: a message that matched two of them would be read twice, or read as the
wrong thing.
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


def anomaly_template(text: str) -> TopicTemplate:
    """A template for publishing anomaly alerts: the rule of :func:`alerts_template`."""
    template = TopicTemplate.parse(text)
    if template.names != (MACHINE_ID,):
        raise TemplateError(
            f"{text!r}: an anomaly topic needs exactly one placeholder, {{machine_id}}, "
            "and fixed text otherwise (e.g. 'plant/{machine_id}/forewarn/anomaly')"
        )
    return template


def default_telemetry_topic(prefix: str) -> str:
    return f"{prefix}/{{{MACHINE_ID}}}/telemetry"


def default_alerts_topic(prefix: str) -> str:
    return f"{prefix}/{{{MACHINE_ID}}}/alerts"


def default_anomaly_topic(prefix: str) -> str:
    """Anomaly alerts have a topic of their own, so that they never overwrite the retained
    overheat state on the alerts topic."""
    return f"{prefix}/{{{MACHINE_ID}}}/anomaly"


# Forewarn's own topics under a prefix.


def telemetry_topic(prefix: str, machine_id: str) -> str:
    return f"{prefix}/{machine_id}/telemetry"


def alerts_topic(prefix: str, machine_id: str) -> str:
    return f"{prefix}/{machine_id}/alerts"


def telemetry_filter(prefix: str) -> str:
    """The subscription that matches every machine's readings under ``prefix``."""
    return f"{prefix}/+/telemetry"


def status_topic(prefix: str, client_id: str) -> str:
    """Where an agent keeps its retained online/offline status (and its last will)."""
    return f"{prefix}/_agents/{client_id}/status"


def alerts_filter(prefix: str) -> str:
    """The subscription that matches every machine's alerts topic under ``prefix``."""
    return f"{prefix}/+/alerts"


def restore_marker_topic(prefix: str, client_id: str) -> str:
    """Where the agent's start-up restore client sends itself the end-of-retained marker."""
    return f"{prefix}/_agents/{client_id}/restore"


def model_command_topic(prefix: str, client_id: str) -> str:
    """Where an agent's model commands are kept, retained: which model to serve or shadow."""
    return f"{prefix}/_agents/{client_id}/model"


def silence_topic(prefix: str, machine_id: str) -> str:
    """Where a machine's maintenance silence is kept, retained."""
    return f"{prefix}/{machine_id}/silence"


def silence_filter(prefix: str) -> str:
    """The subscription that matches every machine's silence under ``prefix``."""
    return f"{prefix}/+/silence"


def rebaseline_topic(prefix: str, machine_id: str) -> str:
    """Where an operator asks, retained, for a machine's learned normal to be learned afresh
    (after maintenance); the same place in the tree, and so the same ACL story, as silences."""
    return f"{prefix}/{machine_id}/rebaseline"


def rebaseline_filter(prefix: str) -> str:
    """The subscription that matches every machine's re-baseline command under ``prefix``."""
    return f"{prefix}/+/rebaseline"


def own_topics_problem(
    telemetry: TopicTemplate, alerts: TopicTemplate, anomaly: TopicTemplate
) -> str | None:
    """Why the anomaly topic cannot sit beside the telemetry and alerts topics (None: it can).

    On the telemetry topic the agent would read its anomaly alerts back as readings; on the
    alerts topic an anomaly alert would overwrite the retained overheat state.
    """
    sample = anomaly.render("x")
    if telemetry.match(sample) is not None:
        return f"anomaly topic {anomaly.text!r} matches the telemetry topic {telemetry.text!r}"
    if alerts.match(sample) is not None:
        return (
            f"anomaly topic {anomaly.text!r} matches the alerts topic {alerts.text!r}: an "
            "anomaly alert would overwrite the machine's retained overheat state"
        )
    return None


SPARKPLUG_NAMESPACE = "spBv1.0"
"""The first level of every Sparkplug B topic."""


# Reading subscriptions: which filters may replace the telemetry template's.

SHARE_PREFIX = "$share/"
"""Start of an MQTT 5 shared subscription: ``$share/<group>/<filter>``."""


def shared(group: str | None, topic_filter: str) -> str:
    """``topic_filter`` as a subscription of the shared-subscription ``group`` (None: itself)."""
    return topic_filter if group is None else f"{SHARE_PREFIX}{group}/{topic_filter}"


def narrowing_problem(template: TopicTemplate, topic_filter: str) -> str | None:
    """Why ``topic_filter`` cannot replace ``template``'s filter for readings (None: it can).

    The agent reads a reading's machine id from the template's ``{machine_id}`` level, so a
    filter must only narrow the template: the same levels, each the template's fixed text, or
    ``+`` or a fixed value where the template has a placeholder. A ``#``, a level too many or
    too few, or a ``+`` over fixed text would bring topics the template does not describe.
    """
    levels = topic_filter.split("/")
    if topic_filter.startswith(SHARE_PREFIX):
        return "a shared subscription belongs in FOREWARN_MQTT__SHARED_GROUP, not in the filter"
    if "#" in levels:
        return "# matches any number of levels, so the machine id could not be read: use +"
    if len(levels) != len(template.levels):
        return (
            f"it has {len(levels)} levels, the telemetry template {template.text!r} has "
            f"{len(template.levels)}"
        )
    for position, (level, (is_placeholder, text)) in enumerate(
        zip(levels, template.levels, strict=True), start=1
    ):
        problem = _level_problem(level, is_placeholder, text)
        if problem is not None:
            return f"level {position} {level!r} {problem}"
    return None


def _level_problem(level: str, is_placeholder: bool, text: str) -> str | None:
    """Why one level of a reading filter does not narrow the template's level (None: it does)."""
    if not is_placeholder:
        return None if level == text else f"must be the template's fixed text {text!r}"
    if level == "+" or _FIXED_LEVEL.match(level):
        return None
    return (
        f"must be + or a fixed value (no wildcards, braces or spaces) for the template's {{{text}}}"
    )


def reading_filters_problem(template: TopicTemplate, filters: list[str]) -> str | None:
    """Why ``filters`` cannot be the agent's reading subscriptions (None: they can).

    Each must narrow the template (:func:`narrowing_problem`), and no two may overlap: MQTT
    lets a broker deliver a message once per matching subscription, and in a shared group each
    shared filter picks its own agent, so a reading on both could reach two agents.
    """
    for topic_filter in filters:
        problem = narrowing_problem(template, topic_filter)
        if problem is not None:
            return f"{topic_filter!r}: {problem}"
    for index, first in enumerate(filters):
        for second in filters[index + 1 :]:
            if filters_overlap(first, second):
                return f"{first!r} and {second!r} overlap: a reading on both could arrive twice"
    return None


# Gateway batch topics.

GATEWAY_LEVEL = "_gateway"
DISABLED = ("", "off")
"""Values of ``mqtt.batch_topic`` that switch batches off (compared without case or spaces)."""

_BATCH_FIXED_LEVEL = re.compile(r"^[^#+\s\x00]+$")
_TOPIC_LEVEL = re.compile(r"^[^#+/\s\x00]+$")


def default_batch_topic(prefix: str) -> str:
    return f"{prefix}/{GATEWAY_LEVEL}/+/telemetry"


def is_disabled(value: str) -> bool:
    return value.strip().lower() in DISABLED


def check_batch_filter(text: str) -> str:
    """``text`` if it is a subscription filter a batch topic may be, else ValueError.

    Levels are fixed text or a ``+``; a ``#`` may end it. No empty levels and no ``$`` at the
    start: those are the broker's own topics, which wildcards never match.
    """
    levels = text.split("/")
    for index, level in enumerate(levels):
        if level == "+" or (level == "#" and index == len(levels) - 1):
            continue
        if not _BATCH_FIXED_LEVEL.match(level):
            raise ValueError(
                f"{text!r}: level {level!r} must be fixed text without spaces, a whole-level "
                "+, or a # at the end, e.g. 'factory/_gateway/+/telemetry' (or 'off')"
            )
    if text.startswith("$"):
        raise ValueError(f"{text!r}: topics starting with $ are the broker's own")
    return text


def filters_overlap(first: str, second: str) -> bool:
    """Whether some topic matches both MQTT subscription filters.

    ``#`` matches the rest of a topic, including nothing (``a/#`` matches ``a``); ``+`` matches
    exactly one level.
    """
    a, b = first.split("/"), second.split("/")
    for index in range(max(len(a), len(b))):
        x = a[index] if index < len(a) else None
        y = b[index] if index < len(b) else None
        if x == "#" or y == "#":
            return True
        if x is None or y is None:
            return False
        if x != y and "+" not in (x, y):
            return False
    return True


def gateway_topic(batch_filter: str, gateway_id: str) -> str:
    """The topic a gateway called ``gateway_id`` publishes its batches on.

    Every wildcard level of the filter becomes the id: ``factory/_gateway/+/telemetry`` gives
    ``factory/_gateway/<gateway_id>/telemetry``.
    """
    if not _TOPIC_LEVEL.match(gateway_id):
        raise ValueError(
            f"gateway id {gateway_id!r} must be one topic level without '/', '+', '#' or spaces"
        )
    return "/".join(
        gateway_id if level in ("+", "#") else level for level in batch_filter.split("/")
    )
