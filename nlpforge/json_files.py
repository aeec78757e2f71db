"""Reading the JSON files of a model dir (config.json, tokenizer_config.json, …). No torch."""

from __future__ import annotations

import json
import os
from typing import Any

from nlpforge.errors import ModelDirError


def read_json_object(path: str | os.PathLike, strict: bool = False) -> dict[str, Any]:
    """The JSON object in ``path``; ``{}`` when the file holds another JSON value. A missing,
    unreadable or corrupt file gives ``{}``, or with ``strict`` a ModelDirError naming it."""
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except (OSError, ValueError) as exc:
        if strict:
            raise ModelDirError(f"{path}: cannot read: {exc}") from None
        return {}
    return data if isinstance(data, dict) else {}
