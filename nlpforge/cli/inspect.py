"""nlpforge inspect: what a model is, and what nlpforge export would make of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from nlpforge.cli.export import checkpoint_options
from nlpforge.cli.options import parse_task_options

#: The graphs each family's export writes.
GRAPHS = {"encoder": ["model.onnx"], "decoder": ["model.onnx"],
          "encoder-decoder": ["encoder_model.onnx", "decoder_model.onnx",
                              "decoder_with_past_model.onnx"]}


@click.command()
@click.argument("model")
@checkpoint_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def inspect(model: str, task: str | None, revision: str | None, trust_remote_code: bool,
            max_length: int | None, option: tuple[str, ...], as_json: bool) -> None:
    """What MODEL is (a checkpoint, a run or an export dir) and what export would write.

    Reads config.json and the tokenizer; loads no weights and writes nothing.
    """
    from nlpforge.manifest import MANIFEST_NAME

    if any((Path(model) / name).is_file() for name in (MANIFEST_NAME, "train_config.json")):
        report = _nlpforge_dir(model)
    else:
        report = _checkpoint(model, task, revision, trust_remote_code, max_length,
                             parse_task_options(option) or None)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    width = max(len(k) for k in report)
    for key, value in report.items():
        text = value if isinstance(value, str) else json.dumps(value)
        click.echo(f"{key:<{width}}  {text}")


def _nlpforge_dir(model: str) -> dict[str, Any]:
    from nlpforge.manifest import read_manifest

    manifest = read_manifest(model)
    report = {"model": model, "kind": manifest["kind"], "task": manifest["task"]["id"],
              "family": manifest["family"],
              "labels": (manifest["task"].get("state") or {}).get("labels"),
              "max_length": manifest["tokenizer"]["max_length"],
              "base_model": manifest.get("base_model")}
    if manifest.get("source"):
        report["source"] = manifest["source"]
    if manifest["kind"] == "export":
        report["variants"] = sorted(manifest.get("variants", {}))
        report["default_variant"] = manifest.get("default_variant")
    return report


def _checkpoint(model: str, task: str | None, revision: str | None, trust_remote_code: bool,
                max_length: int | None, task_options: dict[str, Any] | None) -> dict[str, Any]:
    from nlpforge.export.checkpoint import open_checkpoint
    from nlpforge.export.files import COPIED

    with open_checkpoint(model, task, revision=revision, trust_remote_code=trust_remote_code,
                         max_length=max_length, task_options=task_options) as found:
        family = found.task.family.value
        copied = sorted(n for n in COPIED if (found.stage / n).exists())
        report = {
            "model": model, "kind": "checkpoint", "path": str(found.source.path),
            "revision": found.source.revision, "architecture": found.architecture,
            "model_type": found.config.get("model_type"), "task": found.task.id,
            "picked_by": found.task_reason,
            "tasks_that_fit": sorted(t for t, s in found.candidates.items() if s > 0),
            "family": family, "labels": found.task.labels,
            "options": dict(found.task.settings),
            "tokenizer": found.tokenizer_file, "max_length": found.tokenizer.max_length,
            "pad_id": found.tokenizer.pad_id,
            "chat_template": found.tokenizer.chat_template is not None,
            "support": _support(found),
            "export_writes": GRAPHS.get(family, ["model.onnx"]) + copied + ["nlpforge.json"],
        }
    return report


def _support(found: Any) -> str:
    """Whether the family's exporter knows the architecture (decoders keep a table)."""
    if found.task.family.value != "decoder":
        return "exported by torch.onnx and validated against PyTorch when exported"
    from transformers import AutoConfig

    from nlpforge.errors import ExportError
    from nlpforge.export.decoder_arch import architecture

    try:
        architecture(AutoConfig.from_pretrained(str(found.stage),
                                                trust_remote_code=found.trust_remote_code))
    except ExportError as exc:
        return f"not supported: {exc}"
    return "supported (KV-cache decoder export)"
