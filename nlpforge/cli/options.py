"""Option parsing shared by commands."""

from __future__ import annotations

from typing import Any, Iterable

from nlpforge.errors import UsageError


def parse_task_options(values: Iterable[str]) -> dict[str, Any]:
    """``["multi_label=true", ...]`` → ``{"multi_label": "true"}`` (the task coerces types)."""
    options: dict[str, Any] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--option takes NAME=VALUE, got {item!r}")
        options[name.strip().replace("-", "_")] = value.strip()
    return options


def parse_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise UsageError("--labels needs a comma-separated list of labels")
    return items
