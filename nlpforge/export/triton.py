"""A Triton Inference Server model repository entry: ``NAME/config.pbtxt`` + ``NAME/1/``.

The version folder ``1/`` is a complete nlpforge export dir (``model.onnx``, tokenizer,
``nlpforge.json``...), so clients tokenize with the very files the model was exported with and
``nlpforge.load("REPO/NAME/1")`` works too. ``config.pbtxt`` is written in protobuf text format
for Triton's ``ModelConfig``; where ``tritonclient`` is installed the export parses it back with
Triton's own message definitions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from nlpforge.errors import ExportError, UsageError

VERSION = "1"
KINDS = {"auto": "KIND_AUTO", "cpu": "KIND_CPU", "gpu": "KIND_GPU"}
_TYPES = {
    onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.BFLOAT16: "TYPE_BF16", onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.INT64: "TYPE_INT64", onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.INT16: "TYPE_INT16", onnx.TensorProto.INT8: "TYPE_INT8",
    onnx.TensorProto.UINT8: "TYPE_UINT8", onnx.TensorProto.BOOL: "TYPE_BOOL",
    onnx.TensorProto.STRING: "TYPE_STRING",
}


@dataclass
class TritonOptions:
    """How Triton should serve the model."""

    max_batch_size: int = 32
    instances: int = 1
    instance_kind: str = "auto"
    max_queue_delay_us: int = 100
    variant: str | None = None  # None: the export's default variant

    def check(self) -> None:
        if self.max_batch_size < 0:
            raise UsageError(f"--max-batch-size must be 0 or more, got {self.max_batch_size}")
        if self.instances < 1:
            raise UsageError(f"--instances must be at least 1, got {self.instances}")
        if self.instance_kind not in KINDS:
            raise UsageError(f"--instance-kind must be one of {', '.join(KINDS)}, "
                             f"got {self.instance_kind!r}")
        if self.max_queue_delay_us < 0:
            raise UsageError(f"--max-queue-delay-us must be 0 or more, "
                             f"got {self.max_queue_delay_us}")


def model_config(name: str, model_file: Path, options: TritonOptions,
                 parameters: dict[str, str]) -> str:
    """``config.pbtxt`` for the ONNX model at ``model_file`` (inputs and outputs read from it)."""
    graph = onnx.load(str(model_file), load_external_data=False).graph
    batched = options.max_batch_size > 0
    lines = [f"name: {_quote(name)}", 'backend: "onnxruntime"',
             f"max_batch_size: {options.max_batch_size}",
             f"default_model_filename: {_quote(model_file.name)}"]
    for section, values in (("input", graph.input), ("output", graph.output)):
        lines.append(f"{section} [")
        lines.append(",\n".join(_tensor(v, batched) for v in values))
        lines.append("]")
    if batched:
        lines += ["dynamic_batching {",
                  f"  max_queue_delay_microseconds: {options.max_queue_delay_us}", "}"]
    lines += ["instance_group [", "  {", f"    count: {options.instances}",
              f"    kind: {KINDS[options.instance_kind]}", "  }", "]"]
    for key, value in parameters.items():
        lines.append(f"parameters {{ key: {_quote(key)} "
                     f"value {{ string_value: {_quote(value)} }} }}")
    return "\n".join(lines) + "\n"


def _tensor(value: onnx.ValueInfoProto, batched: bool) -> str:
    tensor = value.type.tensor_type
    if tensor.elem_type not in _TYPES:
        raise ExportError(f"Triton has no data type for the ONNX type "
                          f"{onnx.TensorProto.DataType.Name(tensor.elem_type)} of '{value.name}'")
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    if batched:
        dims = dims[1:]  # Triton adds the batch dimension itself
    return (f"  {{\n    name: {_quote(value.name)}\n    data_type: {_TYPES[tensor.elem_type]}"
            f"\n    dims: [ {', '.join(str(d) for d in dims)} ]\n  }}")


def write_config(directory: Path, name: str, model_file: Path, options: TritonOptions,
                 parameters: dict[str, str]) -> dict[str, Any]:
    """Write ``directory/config.pbtxt`` and check it; returns the manifest's ``triton`` record."""
    text = model_config(name, model_file, options, parameters)
    (directory / "config.pbtxt").write_text(text, encoding="utf-8")
    return {"name": name, "config": "config.pbtxt", "version": VERSION,
            "model_file": model_file.name, "max_batch_size": options.max_batch_size,
            "instances": options.instances, "instance_kind": options.instance_kind,
            "max_queue_delay_us": options.max_queue_delay_us,
            "checked_with": check_config(text)}


def check_config(text: str) -> str | None:
    """Parse ``text`` as Triton's ModelConfig; returns what checked it (None: no tritonclient)."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        return None
    try:
        text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise ExportError(f"the Triton config.pbtxt does not parse as ModelConfig: {exc}")
    return "tritonclient.grpc.model_config_pb2.ModelConfig"


def _quote(text: str) -> str:
    """A protobuf text-format string literal."""
    return json.dumps(text, ensure_ascii=False)
