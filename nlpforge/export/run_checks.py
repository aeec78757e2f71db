"""Checks that a run dir's Hugging Face files belong to the task its nlpforge.json names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nlpforge.errors import ModelDirError
from nlpforge.json_files import read_json_object
from nlpforge.manifest import Manifest


def check_run(directory: Path, manifest: Manifest, model: Any) -> None:
    """Refuse a run dir whose Hugging Face model does not belong to its nlpforge.json's task.

    (A task that loads another head class than the one saved would silently get a freshly
    initialised head: the export would validate, and predict noise.)
    """
    if not (hasattr(model, "config") and hasattr(model, "save_pretrained")):
        return  # a custom nn.Module head: its task loads and checks its own weights
    config = read_json_object(directory / "config.json", strict=True)
    cls = type(model).__name__
    architectures = config.get("architectures") or []
    if architectures and cls not in architectures:
        raise ModelDirError(f"{directory}: config.json is for {', '.join(architectures)} but "
                            f"the task '{manifest['task']['id']}' loads a {cls}: the weights "
                            f"come from another task. Train this task again with nlpforge train")
    labels = (manifest["task"].get("state") or {}).get("labels")
    id2label = config.get("id2label")
    names = sorted(map(str, id2label.values())) if isinstance(id2label, dict) else []
    generic = all(n.startswith("LABEL_") for n in names)  # transformers' defaults: not set
    if labels and names and not generic and names != sorted(map(str, labels)):
        raise ModelDirError(f"{directory}: config.json has the labels {names} but nlpforge.json "
                            f"has {sorted(map(str, labels))}: the weights come from another run. "
                            f"Train again with nlpforge train")
