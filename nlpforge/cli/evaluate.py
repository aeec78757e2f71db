"""nlpforge evaluate."""

from __future__ import annotations

import json

import click

from nlpforge.cli.predict import open_model, with_model_options
from nlpforge.errors import UsageError


@click.command()
@click.argument("model_dir")
@click.option("--data", required=True, help="Labelled data: any input predict reads (JSON Lines, "
              "CSV, Parquet, datasets dirs, compressed or not).")
@click.option("--predictions", "predictions_file", help="Also write each prediction to this JSON Lines file.")
@click.option("--report", "report_dir", help="Also write DIR/report.html (self-contained: the "
              "metrics and the task's pictures, e.g. a confusion matrix) and DIR/metrics.json; "
              "needs matplotlib (nlpforge[plots]).")
@click.option("--compare", "compare_dir", help="A second model dir (e.g. the export of a run "
              "dir) evaluated on the same rows: its metrics beside MODEL_DIR's, the share of "
              "identical predictions, and in --report the two side by side.")
@with_model_options
def evaluate(model_dir: str, data: str, predictions_file: str | None, report_dir: str | None,
             compare_dir: str | None, batch_size: int, device: str, threads: int | None,
             variant: str | None) -> None:
    """Metrics of a run dir (PyTorch) or export dir (ONNX) on labelled data, as JSON."""
    from nlpforge.data import read_dataset

    if report_dir is not None:
        from nlpforge.report import plots

        plots.pyplot()  # a missing matplotlib stops here, before any work
    models = {model_dir: open_model(model_dir, device, threads, batch_size,
                                    _variant_for(model_dir, variant), for_metrics=True)}
    if compare_dir is not None:
        if compare_dir in models:
            raise UsageError("--compare names MODEL_DIR itself; give another model dir")
        models[compare_dir] = open_model(compare_dir, device, threads, batch_size,
                                         _variant_for(compare_dir, variant), for_metrics=True)
    task = models[model_dir][0]
    dataset = read_dataset(data, task, training=True)
    predictions = {name: run(dataset.rows) for name, (_, run) in models.items()}
    metrics = {name: models[name][0].metrics(predictions[name], dataset.rows)
               for name in models}
    if predictions_file:
        with open(predictions_file, "w", encoding="utf-8") as out:
            for p in predictions[model_dir]:
                out.write(json.dumps(p, ensure_ascii=False) + "\n")
    result = {"model": model_dir, "data": data, "rows": len(dataset),
              "metrics": metrics[model_dir]}
    if compare_dir is not None:
        same = sum(_close(a, b) for a, b in zip(*predictions.values()))
        result["compare"] = {"model": compare_dir, "metrics": metrics[compare_dir],
                             "identical_predictions": same / max(len(dataset), 1)}
    if report_dir is not None:
        from nlpforge.report.html import write_report

        meta = {"data": data, "rows": len(dataset), "task": task.id}
        if compare_dir is not None:
            meta["identical predictions"] = f"{result['compare']['identical_predictions']:.2%}"
        sections = {name: models[name][0].report(predictions[name], dataset.rows,
                                                  metrics[name]) for name in models}
        path = write_report(report_dir, f"Evaluation of {model_dir}", meta, metrics, sections)
        result["report"] = str(path)
    click.echo(json.dumps(result, indent=2))


def _variant_for(path: str, variant: str | None) -> str | None:
    """``--variant`` applies to export dirs; a run dir beside one runs as it is."""
    from nlpforge.manifest import read_manifest

    return variant if variant is None or read_manifest(path)["kind"] == "export" else None


def _close(a: object, b: object, tolerance: float = 1e-4) -> bool:
    """The same prediction: equal, numbers within ``tolerance`` (PyTorch and ONNX Runtime
    round differently)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tolerance) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y, tolerance) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        try:
            return abs(float(a) - float(b)) <= tolerance * max(1.0, abs(float(a)))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
    return a == b
