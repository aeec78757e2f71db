"""Batched prediction shared by the ONNX runtime and PyTorch evaluation."""

from __future__ import annotations

from typing import Any, Callable, Hashable, Sequence

import numpy as np

Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def row_size(row: dict[str, Any]) -> int:
    """A cheap length proxy used to group rows of similar length into a batch."""
    return sum(len(v) if isinstance(v, (str, list)) else 1 for v in row.values())


def by_length(lengths: Sequence[int]) -> list[int]:
    """Positions of ``lengths`` from the shortest to the longest (equal lengths keep their
    order): how rows are grouped into batches of similar length everywhere."""
    return sorted(range(len(lengths)), key=lengths.__getitem__)


def batch_groups(task: Any, rows: Sequence[dict]) -> list[list[int]]:
    """Positions of ``rows`` grouped by ``task.batch_key`` (groups in the order of their first
    row, positions in input order). Rows of different groups are never encoded together."""
    groups: dict[Hashable, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(task.batch_key(row), []).append(i)
    return list(groups.values())


def batch_order(task: Any, rows: Sequence[dict],
                lengths: Sequence[int] | None = None) -> list[int]:
    """The order ``predict_rows`` runs ``rows`` in: grouped by the task's batch key, each
    group from the shortest row to the longest (``lengths``, default ``row_size``)."""
    sizes = [row_size(r) for r in rows] if lengths is None else lengths
    return [group[k] for group in batch_groups(task, rows)
            for k in by_length([sizes[i] for i in group])]


def predict_rows(task: Any, tokenizer: Any, run: Runner, rows: Sequence[dict],
                 batch_size: int = 32, sort_by_length: bool = True) -> list[dict]:
    """Encode rows in batches, run the model, postprocess; results in input order.

    A batch holds rows of one ``task.batch_key`` only, so a row's prediction does not
    depend on the other rows. Rows run in ``batch_order`` (``sort_by_length``) or grouped
    by key in their given order; a caller that keeps the runner's outputs finds them in
    that order.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    results: list[dict | None] = [None] * len(rows)
    for group in batch_groups(task, rows):
        if sort_by_length:
            group = [group[k] for k in by_length([row_size(rows[i]) for i in group])]
        for start in range(0, len(group), batch_size):
            index = group[start:start + batch_size]
            batch = [rows[i] for i in index]
            features = task.encode(batch, tokenizer)
            # The task sees its own features too (window-to-row maps, offsets, masked
            # positions); a model output of the same name wins.
            outputs = {**features, **run(features)}
            for i, prediction in zip(index, task.postprocess(outputs, batch)):
                results[i] = prediction
    return results  # type: ignore[return-value]
