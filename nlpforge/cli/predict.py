"""nlpforge predict and the model loading it shares with evaluate."""

from __future__ import annotations

import json
from typing import Any, Callable

import click

from nlpforge.cli.batch_options import with_batch_options
from nlpforge.cli.ray_engine import engine_options, run_ray, with_ray_options
from nlpforge.errors import UsageError
from nlpforge.manifest import Manifest

Predict = Callable[[list[dict]], list[dict]]


def open_model(path: str, device: str, threads: int | None, batch_size: int,
               variant: str | None = None, for_metrics: bool = False,
               report: Callable[[str], Any] | None = None) -> tuple[Any, Predict]:
    """Task and predict function of an export dir (ONNX) or a run dir (PyTorch).

    A generative export predicts by generating text, except for metrics of a task that
    evaluates teacher-forced (``evaluate_by = "forward"``, the default: perplexity).
    ``report`` receives a line saying what runs (variant and why, providers, threads).
    """
    from nlpforge.manifest import read_manifest

    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be at least 1, got {threads}")
    manifest = read_manifest(path)
    if manifest["kind"] == "export":
        runtime = _runtime(manifest, path, for_metrics)
        model = runtime.load(path, device=device, threads=threads, batch_size=batch_size,
                             variant=variant)
        if report is not None:
            report(_what_runs(model, manifest, variant))
        # Both commands check their rows themselves (evaluate's as labelled rows).
        return model.task, lambda rows: model.predict(rows, checked=True)
    if variant is not None:
        raise UsageError(f"--variant {variant}: {path} is a run dir (PyTorch); variants belong "
                         f"to export dirs")
    from nlpforge.runtime.batching import predict_rows
    from nlpforge.training.loading import load_run, torch_runner

    if threads:
        import torch

        torch.set_num_threads(threads)
    _, task, model, tokenizer = load_run(path)
    inputs = [n for n in ("input_ids", "attention_mask", "token_type_ids")
              if n in read_manifest(path).get("model_inputs", [])]
    run = torch_runner(task, model, inputs)
    if report is not None:
        report(f"{path}: PyTorch run dir on {next(model.parameters()).device}")
    return task, lambda rows: predict_rows(task, tokenizer, run, rows, batch_size)


def _what_runs(model: Any, manifest: Manifest, variant: str | None) -> str:
    """``variant int8 (model.int8.onnx): tuned on this CPU: 2.10x fp32 (…); providers …``"""
    from nlpforge.runtime.variants import choose_variant

    name, why = choose_variant(manifest, variant)
    entry = (manifest.get("variants") or {}).get(name, {})
    session = getattr(model, "session", None)
    providers = session.get_providers()[0] if session is not None else "onnxruntime"
    settings = entry.get("session") or {}
    extra = f"; session settings {json.dumps(settings)}" if settings else ""
    return f"variant {name} ({entry.get('file', '?')}): {why}; {providers}{extra}"


def _runtime(manifest: Manifest, path: str, for_metrics: bool) -> Any:
    """The runtime class of an export: its family's, or for metrics of a task that evaluates
    teacher-forced (``evaluate_by = "forward"``) its family's scorer."""
    from nlpforge.families import family
    from nlpforge.manifest import task_from_manifest

    spec = family(manifest["family"])
    if for_metrics and spec.generates and \
            task_from_manifest(manifest, path).evaluate_by == "forward":
        return spec.load("scorer")
    return spec.load("runtime")


model_options = [
    click.option("--batch-size", type=int, default=32, show_default=True),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
    click.option("--threads", type=int, help="CPU threads (default: all cores)."),
    click.option("--variant", type=click.Choice(["fp32", "optimized", "int8", "fp16", "tuned"]),
                 help="Export dirs: the model file to run (default: the tuned variant when "
                      "nlpforge tune measured it on this CPU, else the export's default)."),
]


def with_model_options(func: Callable) -> Callable:
    for option in reversed(model_options):
        func = option(func)
    return func


@click.command()
@click.argument("model_dir")
@click.argument("texts", nargs=-1)
@with_batch_options
@with_ray_options
@click.option("-v", "--verbose", is_flag=True,
              help="Say on stderr which variant runs and why, and where.")
@with_model_options
def predict(model_dir: str, texts: tuple[str, ...], verbose: bool, batch_size: int,
            device: str, threads: int | None, variant: str | None, **options: Any) -> None:
    """Predict with an export dir (or a run dir): TEXTs, or every row of --input.

    \b
    nlpforge predict EXPORT "a fine film"                 one JSON object per text on stdout
    nlpforge predict EXPORT --input reviews.parquet --output scores.parquet
    nlpforge predict EXPORT --input big.jsonl.zst --output out.jsonl --resume --shard 0/4

    Rows stream through in chunks (--chunk-size): memory does not grow with the input.
    --engine ray predicts them on a Ray cluster's workers instead (docs/batch.md).
    """
    from nlpforge.cli.batch_options import run_batch

    engine = engine_options(options)
    if engine is not None:
        run_ray(engine, model_dir, texts, options, batch_size, device, threads, variant)
        return

    task, run = open_model(model_dir, device, threads, batch_size, variant,
                           report=(lambda line: click.echo(line, err=True)) if verbose else None)
    fields = [f.name for f in task.request_fields]
    run_batch(options, model_dir, fields, run,
              lambda row, file, line: task.check_row(row, file, line, training=False),
              extra=[{fields[0]: text} for text in texts])
