"""What a task puts in an evaluation report (``Task.report``): no matplotlib needed to describe
one, only to draw its figure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class ReportSection:
    """One part of a report: a title, an optional figure, table and note.

    ``draw`` gets ``nlpforge.report.plots`` and returns a matplotlib figure (drawn only when
    the report is written); ``table`` is a list of rows (dicts with the same keys), shown
    as an HTML table; ``note`` is a sentence under the title."""

    title: str
    draw: Callable[[Any], Any] | None = None
    table: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""
