"""Batched prediction shared by the ONNX runtime and PyTorch evaluation."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def row_size(row: dict[str, Any]) -> int:
    """A cheap length proxy used to group rows of similar length into a batch."""
    return sum(len(v) if isinstance(v, (str, list)) else 1 for v in row.values())


def by_length(lengths: Sequence[int]) -> list[int]:
    """Positions of ``lengths`` from the shortest to the longest (equal lengths keep their
    order): how rows are grouped into batches of similar length everywhere."""
    return sorted(range(len(lengths)), key=lengths.__getitem__)


def predict_rows(task: Any, tokenizer: Any, run: Runner, rows: Sequence[dict],
                 batch_size: int = 32, sort_by_length: bool = True) -> list[dict]:
    """Encode rows in batches of similar length, run the model, postprocess; keep input order."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    order = by_length([row_size(r) for r in rows]) if sort_by_length else range(len(rows))
    results: list[dict | None] = [None] * len(rows)
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        batch = [rows[i] for i in index]
        features = task.encode(batch, tokenizer)
        # The task sees its own features too (window-to-row maps, offsets, masked positions);
        # a model output of the same name wins.
        outputs = {**features, **run(features)}
        for i, prediction in zip(index, task.postprocess(outputs, batch)):
            results[i] = prediction
    return results  # type: ignore[return-value]
