"""PyTorch → ONNX: the export wrapper and torch.onnx's dynamo exporter, quietly."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from nlpforge.export import files
from nlpforge.export.logs import quiet
from nlpforge.tasks import Signature


class ExportWrapper(torch.nn.Module):
    """Positional tensors in, the task's named outputs out, in signature order."""

    def __init__(self, task: Any, model: torch.nn.Module, signature: Signature):
        super().__init__()
        self.task, self.model, self.signature = task, model, signature

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.task.forward(self.model, dict(zip(self.signature.inputs, inputs)))
        return tuple(outputs[name] for name in self.signature.outputs)


def quiet_exporter() -> contextlib.AbstractContextManager:
    """The exporter prints progress and warnings meant for its developers; keep them out."""
    return quiet("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "torch.fx")


def to_onnx(wrapper: ExportWrapper, dummy: dict[str, np.ndarray], path: Path,
            opset: int | None, external_data: bool = False) -> int:
    """Export with torch.onnx's dynamo exporter; returns the opset used.

    With ``external_data`` the weights go to ``<file>.data`` next to the model file.
    """
    signature = wrapper.signature
    dims: dict[str, Any] = {}
    shapes = []
    for name in signature.inputs:
        axes = signature.dynamic_axes.get(name, {})
        shapes.append({axis: dims.setdefault(label, torch.export.Dim(label, min=1, max=1 << 20))
                       for axis, label in axes.items()})
    args = tuple(torch.from_numpy(dummy[name]) for name in signature.inputs)
    with quiet_exporter():
        program = torch.onnx.export(
            wrapper, args, dynamo=True, input_names=list(signature.inputs),
            output_names=list(signature.outputs), dynamic_shapes=(tuple(shapes),),
            opset_version=opset, external_data=external_data, verbose=False,
        )
        program.save(str(path), external_data=external_data)
    # External tensors (if any) keep pointing at the data file the exporter wrote.
    model = onnx.load(str(path), load_external_data=False)
    onnx.save_model(files.tidy(model), str(path))
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def eager_attention(model: Any) -> None:
    """Export the plain attention code path: it gives ONNX Runtime the simplest graph.

    Applied to every Hugging Face model inside ``model``, so custom ``nn.Module`` heads
    wrapping an ``AutoModel`` get it too.
    """
    for module in model.modules():
        setter = getattr(module, "set_attn_implementation", None)
        config = getattr(module, "config", None)
        if setter is not None:
            try:
                setter("eager")
                continue
            except Exception:
                pass
        if config is not None and hasattr(config, "_attn_implementation"):
            config._attn_implementation = "eager"


def vocab_size(model: Any, default: int = 100) -> int:
    """The vocabulary size of the (first) Hugging Face model inside ``model``."""
    for module in model.modules():
        size = getattr(getattr(module, "config", None), "vocab_size", None)
        if isinstance(size, int) and size > 0:
            return size
    return default


def exporter_error(exc: BaseException) -> str:
    """The informative line of an exporter error (its summary, not its advice)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "Exception summary" in line and i + 1 < len(lines):
            return lines[i + 1]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"
