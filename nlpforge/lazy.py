"""References to objects as ``"module:attr"`` strings, imported on first use.

The tables that name code by reference — the CLI's commands, what each model family implies
(``families.py``), the tiny test models — keep ``import nlpforge`` light and torch-free, and
let a table name code that imports the table's module without an import cycle.
"""

from __future__ import annotations

import importlib
from typing import Any


class Unavailable(LookupError):
    """The module a reference names is not installed, or lacks the attribute."""


def import_object(ref: str) -> Any:
    """The object ``ref`` (``"package.module:name"``) names. An ImportError raised *inside* that
    module (a missing dependency) propagates unchanged; a missing module or attribute is
    ``Unavailable``."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not attr:
        raise ValueError(f"expected 'module:attr', got {ref!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise Unavailable(f"{module_name} is not installed") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise Unavailable(f"{module_name} has no {attr}") from None
