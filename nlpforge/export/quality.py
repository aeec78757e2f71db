"""Task-level quality check of a lossy variant: the task's metric before and after.

An int8 model cannot match PyTorch within the fp32 tolerance, so it is judged the way users
judge it: by the task's primary metric on labelled rows, compared with the fp32 graph.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from nlpforge.errors import ExportError, UsageError
from nlpforge.manifest import Manifest


def quality_data(path: str | None, manifest: Manifest, task: Any) -> tuple[str, list[dict]]:
    """Labelled rows for the check: ``path``, else the validation file the run was trained with."""
    from nlpforge.data import read_dataset

    if path is None:
        path = run_validation_file(manifest)
        if path is None:
            raise UsageError("--quantize int8 checks the task metric before and after "
                             "quantization and needs labelled data: pass --calibration-data FILE "
                             "(the run's validation file is not recorded or not found), or --force "
                             "to skip the check")
    rows = read_dataset(path, task, training=True).rows
    if not rows:
        raise UsageError(f"{path}: no rows for the quality check")
    return str(path), rows


def run_validation_file(manifest: Manifest) -> str | None:
    """The validation file the run was trained with, when it is still there."""
    for path in ((manifest.get("provenance") or {}).get("validation_file"),
                 (manifest.get("training") or {}).get("validation")):
        if path and os.path.isfile(path):
            return str(path)
    return None


def evaluate(path: Path, task: Any, tokenizer: Any, rows: Sequence[dict],
             batch_size: int = 32) -> dict[str, Any]:
    """The task's metrics of the ONNX model at ``path`` on ``rows`` (CPU, torch-free runtime)."""
    from nlpforge.export.validate import onnx_runner
    from nlpforge.runtime.batching import predict_rows

    signature = task.export_signature(_inputs(path))
    run = onnx_runner(path, signature.outputs)
    predictions = predict_rows(task, tokenizer, run, rows, batch_size)
    return task.metrics(predictions, rows)


def _inputs(path: Path) -> list[str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return [i.name for i in model.graph.input]


def drop_points(task: Any, metric: str, before: dict, after: dict) -> float:
    """How much worse ``after`` is, in points (100 x the metric's unit; negative = better)."""
    sign = 1.0 if task.greater_is_better else -1.0
    return round(100.0 * sign * (float(before[metric]) - float(after[metric])), 4)


def quality_check(variant: str, task: Any, before: dict, after: dict, data: str, rows: int,
                  max_drop: float, force: bool) -> dict[str, Any]:
    """The manifest record of the check; ExportError when the drop exceeds ``max_drop``
    unless ``force``."""
    metric = task.primary_metric
    if metric not in before or metric not in after:
        raise ExportError(f"the task's primary metric '{metric}' is not among its metrics "
                          f"({', '.join(sorted(before))}); cannot check the {variant} variant")
    drop = drop_points(task, metric, before, after)
    passed = drop <= max_drop
    record = {"data": data, "rows": rows, "metric": metric, "before": _scalars(before),
              "after": _scalars(after), "drop_points": drop, "max_drop_points": max_drop,
              "passed": passed, "forced": bool(force and not passed)}
    if not passed and not force:
        raise ExportError(
            f"the {variant} model loses {drop:.2f} points of {metric} on {data} "
            f"({float(before[metric]):.4f} -> {float(after[metric]):.4f}), more than "
            f"--max-metric-drop {max_drop:g}; export without --quantize, raise "
            f"--max-metric-drop, or pass --force to keep it anyway")
    return record


def int8_validation(task: Any, tokenizer: Any, source: Path, int8: Path,
                    data: tuple[str, list[dict]] | None, max_drop: float, force: bool,
                    max_abs_diff: dict[str, float]) -> dict[str, Any]:
    """The int8 variant's validation: the task metric of ``source`` and ``int8`` on ``data``
    (``None``: skipped under --force); ``max_abs_diff`` from PyTorch is kept for information."""
    record: dict[str, Any] = {
        "mode": "task-metric",
        "note": "int8 outputs cannot match PyTorch within the fp32 tolerance; the variant is "
                "validated by the task's metric on labelled data, before and after quantization",
        "max_abs_diff": max_abs_diff,
    }
    if data is None:
        record["quality"] = {"skipped": "no labelled data (--force)", "forced": True}
        return record
    path, rows = data
    before = evaluate(source, task, tokenizer, rows)
    after = evaluate(int8, task, tokenizer, rows)
    record["quality"] = quality_check("int8", task, before, after, path, len(rows), max_drop,
                                      force)
    return record


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in metrics.items() if isinstance(v, (int, float))}
