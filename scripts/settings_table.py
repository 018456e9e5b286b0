"""Prints the README's settings table from the settings classes (one source of truth)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from config.settings import ENV_NESTED_DELIMITER, ENV_PREFIX, Settings


def rows(model: type[BaseModel], path: tuple[str, ...] = ()) -> list[tuple[str, str, str, str]]:
    out = []
    for name, field in model.model_fields.items():
        annotation: Any = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out += rows(annotation, (*path, name))
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
