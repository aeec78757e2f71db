"""Files of an export dir: ONNX files on disk (one file, or a file plus its external data when
the weights are large), and the config and tokenizer files copied from the run dir."""

from __future__ import annotations

import collections
import json
import shutil
import time
from pathlib import Path
from typing import Any

import onnx
import torch

from nlpforge.manifest import Manifest

#: Protobuf cannot hold a model of 2 GB or more; bigger weights go to an external data file.
TWO_GB = 2 * 1024**3


def tensor_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the model's initializers, inline or external."""
    total = 0
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            total += int({e.key: e.value for e in tensor.external_data}.get("length", 0))
        else:
            total += len(tensor.raw_data) or onnx.numpy_helper.to_array(tensor).nbytes
    return total


def tidy(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop shape annotations on initializers: the dynamo exporter writes some that onnx's
    shape inference (and so ONNX Runtime's quantizer) rejects once a tool rewrites the weights."""
    weights = {t.name for t in model.graph.initializer}
    keep = [v for v in model.graph.value_info if v.name not in weights]
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)
    return model


def save(model: onnx.ModelProto, path: Path, threshold: int = TWO_GB) -> list[str]:
    """Write ``model`` to ``path``; weights of ``threshold`` bytes or more go to ``<name>.data``.

    Returns the names of the files written, the model file first.
    """
    path = Path(path)
    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()
    if tensor_bytes(model) >= threshold:
        onnx.save_model(model, str(path), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=data.name)
        return [path.name, data.name]
    onnx.save_model(model, str(path))
    return [path.name]


def load(path: Path) -> onnx.ModelProto:
    """The model with its external data loaded."""
    return onnx.load(str(path), load_external_data=True)


def model_files(path: Path) -> list[str]:
    """The model file and the external data files it refers to, relative to its folder."""
    model = onnx.load(str(path), load_external_data=False)
    external = {e.value for t in model.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL
                for e in t.external_data if e.key == "location"}
    return [Path(path).name, *sorted(external)]


def op_counts(path: Path) -> dict[str, int]:
    """How many nodes of each type the graph has (contrib ops as ``com.microsoft.Name``)."""
    model = onnx.load(str(path), load_external_data=False)
    counts = collections.Counter(
        f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
        for n in model.graph.node)
    return dict(sorted(counts.items()))


#: Files copied from the run dir so the export dir is self-contained (and loadable by optimum).
COPIED = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
          "special_tokens_map.json", "added_tokens.json", "vocab.txt", "vocab.json",
          "merges.txt", "spiece.model", "sentencepiece.bpe.model", "chat_template.jinja")


def copy_model_files(run_dir: str | Path, target: Path) -> None:
    """Copy the run dir's config and tokenizer files into the export dir.

    ``tokenizer_config.json`` is made readable by transformers 4 as well as 5 (what optimum-onnx
    runs on): transformers 5 writes ``tokenizer_class: TokenizersBackend``, a class 4.x lacks
    (``PreTrainedTokenizerFast`` loads the same ``tokenizer.json`` in both), and a list of
    ``extra_special_tokens`` where 4.x expects ``additional_special_tokens``."""
    for name in COPIED:
        source = Path(run_dir) / name
        if not source.is_file():
            continue
        if name != "tokenizer_config.json":
            shutil.copy2(source, target / name)
            continue
        config = json.loads(source.read_text(encoding="utf-8"))
        if config.get("tokenizer_class") == "TokenizersBackend":
            config["tokenizer_class"] = "PreTrainedTokenizerFast"
        extra = config.get("extra_special_tokens")
        if isinstance(extra, list) and "additional_special_tokens" not in config:
            config["additional_special_tokens"] = config.pop("extra_special_tokens")
        (target / name).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                                   encoding="utf-8")


def export_manifest(run: Manifest, run_dir: str, **fields: Any) -> Manifest:
    """The run dir's manifest made an export's: ``fields`` (io, opset, validation, variants,
    …) added, the source run and the export's time and torch version recorded."""
    return {**run, "kind": "export", **fields,  # type: ignore[typeddict-item]
            # a checkpoint's export names the checkpoint, not its staged view (checkpoint.py)
            "source_run": (run.get("source") or {}).get("path") or str(Path(run_dir).absolute()),
            "provenance": {**run.get("provenance", {}),
                           "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "torch_export": torch.__version__}}
