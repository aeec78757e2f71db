"""nlpforge evaluate."""

from __future__ import annotations

import json

import click

from nlpforge.cli.predict import open_model, with_model_options


@click.command()
@click.argument("model_dir")
@click.option("--data", required=True, help="Labelled data: any input predict reads (JSON Lines, "
              "CSV, Parquet, datasets dirs, compressed or not).")
@click.option("--predictions", "predictions_file", help="Also write each prediction to this JSON Lines file.")
@with_model_options
def evaluate(model_dir: str, data: str, predictions_file: str | None, batch_size: int,
             device: str, threads: int | None, variant: str | None) -> None:
    """Metrics of a run dir (PyTorch) or export dir (ONNX) on labelled data, as JSON."""
    from nlpforge.data import read_dataset

    task, run = open_model(model_dir, device, threads, batch_size, variant, for_metrics=True)
    dataset = read_dataset(data, task, training=True)
    predictions = run(dataset.rows)
    metrics = task.metrics(predictions, dataset.rows)
    if predictions_file:
        with open(predictions_file, "w", encoding="utf-8") as out:
            for p in predictions:
                out.write(json.dumps(p, ensure_ascii=False) + "\n")
    click.echo(json.dumps({"model": model_dir, "data": data, "rows": len(dataset),
                           "metrics": metrics}, indent=2))
