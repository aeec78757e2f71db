"""nlpforge export."""

from __future__ import annotations

import contextlib
import json
import signal
from typing import Any, Iterator

import click

from nlpforge.cli.options import parse_task_options
from nlpforge.manifest import Manifest

VARIANTS = ("fp32", "optimized", "int8", "fp16")


def checkpoint_options(func: Any) -> Any:
    """The options of a checkpoint trained elsewhere (export and inspect)."""
    for flag, kwargs in reversed([
        ("--task", {"help": "The task (default: from the checkpoint's config.json)."}),
        ("--revision", {"help": "A Hub model's branch, tag or commit."}),
        ("--trust-remote-code", {"is_flag": True,
                                 "help": "Run the model code a checkpoint ships (recorded "
                                         "in nlpforge.json)."}),
        ("--max-length", {"type": int, "help": "Tokens per text (default: the tokenizer's "
                                               "or sentence-transformers' maximum)."}),
        ("--option", {"multiple": True, "metavar": "NAME=VALUE",
                      "help": "A task option, e.g. threshold=0.3 (repeatable)."}),
    ]):
        func = click.option(flag, **kwargs)(func)
    return func


@click.command()
@click.argument("model")
@click.option("--output", required=True,
              help="Export dir to write (with --format triton: REPO/NAME, the model's folder in "
                   "a Triton model repository).")
@click.option("--format", "format_", type=click.Choice(["onnx", "triton"]), default="onnx",
              show_default=True, help="An nlpforge/optimum export dir, or a Triton model "
                                      "repository entry (config.pbtxt + 1/).")
@click.option("--optimize", type=click.Choice(["none", "basic", "extended", "all", "auto"]),
              default="none", show_default=True,
              help="Also write model.optimized.onnx: ONNX Runtime graph rewrites (basic), + "
                   "transformer fusions (extended), + ONNX Runtime's CPU-only rewrites (all); "
                   "auto: extended, then nlpforge tune measures every candidate on this CPU "
                   "and keeps the fastest as the 'tuned' variant.")
@click.option("--quantize", type=click.Choice(["none", "int8"]), default="none",
              show_default=True, help="Also write model.int8.onnx (dynamic int8), checked by "
                                      "the task metric before and after.")
@click.option("--calibration-data", metavar="FILE",
              help="Labelled data for the int8 quality check and --optimize auto's shapes "
                   "and int8 gate (default: the run's validation file).")
@click.option("--max-metric-drop", type=float, default=1.0, show_default=True,
              help="Most points of the task's primary metric int8 may lose.")
@click.option("--force", is_flag=True,
              help="Keep an int8 model that fails the quality check (recorded in nlpforge.json).")
@click.option("--fp16", is_flag=True, help="Also write model.fp16.onnx (for GPU serving).")
@click.option("--opset", type=int, default=None, help="ONNX opset, 14-23 (default: the "
                                                      "exporter's).")
@click.option("--atol", type=float, default=1e-4, show_default=True,
              help="Largest absolute difference from PyTorch accepted in validation.")
@click.option("--external-data-threshold", type=int, default=2 * 1024**3, show_default=True,
              metavar="BYTES", help="Weights of this size or more go to a MODEL.onnx.data file.")
@click.option("--max-batch-size", type=int, default=32, show_default=True,
              help="Triton: max_batch_size (0: no batching).")
@click.option("--instances", type=int, default=1, show_default=True,
              help="Triton: model instances.")
@click.option("--instance-kind", type=click.Choice(["auto", "cpu", "gpu"]), default="auto",
              show_default=True, help="Triton: where the instances run.")
@click.option("--max-queue-delay-us", type=int, default=100, show_default=True,
              help="Triton: how long dynamic batching waits to fill a batch.")
@click.option("--triton-variant", type=click.Choice(VARIANTS),
              help="Triton: the model file served (default: optimized if made, else fp32; nothing "
                   "is timed for a Triton entry).")
@click.option("--overwrite", is_flag=True, help="Replace an existing export dir.")
@checkpoint_options
def export(model: str, output: str, format_: str, optimize: str, quantize: str,
           calibration_data: str | None, max_metric_drop: float, force: bool, fp16: bool,
           opset: int | None, atol: float, external_data_threshold: int, max_batch_size: int,
           instances: int, instance_kind: str, max_queue_delay_us: int,
           triton_variant: str | None, overwrite: bool, task: str | None,
           revision: str | None, trust_remote_code: bool, max_length: int | None,
           option: tuple[str, ...]) -> None:
    """Export MODEL to ONNX, validated against PyTorch; optionally optimized, int8, fp16.

    MODEL is a run dir of nlpforge train, a transformers model dir (save_pretrained) or a
    Hugging Face Hub id; a model's task comes from --task or its config.json.
    """
    from nlpforge.export.onnx import export_model
    from nlpforge.export.triton import TritonOptions

    triton = TritonOptions(max_batch_size, instances, instance_kind, max_queue_delay_us,
                           triton_variant)
    with _terminate_as_interrupt():
        manifest = export_model(
            model, output, task, revision=revision, trust_remote_code=trust_remote_code,
            max_length=max_length, task_options=parse_task_options(option) or None,
            opset=opset, atol=atol, overwrite=overwrite, optimize=optimize,
            quantize=quantize, calibration_data=calibration_data,
            max_metric_drop=max_metric_drop, force=force, fp16=fp16, format=format_,
            triton=triton, external_data_threshold=external_data_threshold)
    click.echo(json.dumps(summary(output, manifest), indent=2))


def _graphs(record: dict[str, Any]) -> dict[str, Any]:
    """A report or record per graph: ``graphs`` of an encoder-decoder export, else itself."""
    return record.get("graphs") or {"": record}


def _diffs(report: dict[str, Any]) -> dict[str, Any]:
    """The largest difference per output kind (every layer's cache as one), per graph."""
    out = {}
    for name, graph in _graphs(report).items():
        worst: dict[str, float] = {}
        for output, diff in graph["max_abs_diff"].items():
            kind = "present.*" if output.startswith("present.") else output
            worst[kind] = max(worst.get(kind, 0.0), diff)
        out[name] = worst
    return out.get("", out)


def _optimized(record: dict[str, Any]) -> dict[str, Any]:
    """The fused ops and the final check of an optimization record (one per graph for the
    encoder-decoder exports)."""
    applied: dict[str, int] = {}
    finals = {}
    for name, graph in _graphs(record).items():
        for step in graph["steps"]:
            for op, count in step["applied"].items():
                applied[op.split(".")[-1]] = applied.get(op.split(".")[-1], 0) + count
        finals[name] = graph["steps"][-1]["validation"]
    return {"applied": applied, "max_abs_diff": _diffs({"graphs": finals})}


def summary(output: str, manifest: Manifest) -> dict[str, Any]:
    """What the command prints: validation, and per variant its file and check."""
    validation = manifest["validation"]
    out: dict[str, Any] = {
        "output": output, "opset": manifest["opset"], "passed": validation["passed"],
        "max_abs_diff": _diffs(validation), "atol": validation["atol"],
        "shapes_validated": sum(len(r["cases"]) for r in _graphs(validation).values()),
        "seconds": manifest["export_seconds"],
        "default_variant": manifest["default_variant"],
    }
    variants = {name: {"file": v["file"]} for name, v in manifest["variants"].items()}
    if manifest.get("optimization"):
        variants["optimized"].update(_optimized(manifest["optimization"]))
    if manifest.get("quantization"):
        quality = manifest["quantization"]["validation"]["quality"]
        metric = quality.get("metric")
        variants["int8"].update({k: quality[k] for k in ("metric", "drop_points", "passed",
                                                         "forced", "skipped") if k in quality})
        if metric:
            variants["int8"].update(before=quality["before"][metric],
                                    after=quality["after"][metric])
    if "fp16" in variants:
        check = manifest["variants"]["fp16"]["validation"]
        variants["fp16"].update({k: check[k] for k in ("mode", "max_abs_diff", "atol")
                                 if k in check})
    out["variants"] = variants
    if "triton" in manifest:
        out["triton"] = {k: manifest["triton"][k] for k in ("name", "model_file", "checked_with")}
    return out


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a killed job) unwinds like Ctrl-C, so the half-built export is removed.

    An interrupt that a library turned into another error (onnxruntime's import does) is
    reported as the interrupt it was.
    """
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    except Exception as exc:
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, KeyboardInterrupt):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
