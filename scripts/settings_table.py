"""Prints the settings table of docs/settings.md from the settings classes (one source of truth)."""

from __future__ import annotations

from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel

from config.base import ENV_NESTED_DELIMITER, ENV_PREFIX
from config.settings import Settings


def union_members(annotation: Any) -> list[type[BaseModel]]:
    """The section classes of a union of sections (``model``: one per kind), else []."""
    members = []
    for arg in get_args(annotation):
        while get_origin(arg) is Annotated:
            arg = get_args(arg)[0]
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            members.append(arg)
        else:
            members += union_members(arg)
    return members


def rows(model: type[BaseModel], path: tuple[str, ...] = ()) -> list[tuple[str, str, str, str]]:
    out = []
    for name, field in model.model_fields.items():
        annotation: Any = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out += rows(annotation, (*path, name))
            continue
        members = union_members(annotation)
        if members:
            # One row per setting of any member, first occurrence wins: a member's own
            # settings (``horizon`` of the baselines) say in their description where they apply.
            merged: dict[str, tuple[str, str, str, str]] = {}
            for member in members:
                for row in rows(member, (*path, name)):
                    merged.setdefault(row[0], row)
            kind = ".".join((*path, name, "kind"))  # the discriminator leads
            out += sorted(merged.values(), key=lambda row: row[0] != kind)
            continue
        key = ".".join((*path, name))
        env = ENV_PREFIX + ENV_NESTED_DELIMITER.join(p.upper() for p in (*path, name))
        default = field.get_default(call_default_factory=True)
        shown = "unset" if default is None else f"`{default}`"
        if isinstance(default, tuple):
            shown = f"`{list(default)}`"
        out.append((key, env, shown, (field.description or "").replace("|", "\\|")))
    return out


def table() -> str:
    lines = ["| setting | env var | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{k}` | `{e}` | {d} | {m} |" for k, e, d, m in rows(Settings)]
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
