"""fp16 variant for GPU serving: float weights and compute in half precision, fp32 inputs/outputs.

Inputs and outputs keep their types (``keep_io_types``), so clients and the runtime feed and read
the same tensors as with the fp32 model. ONNX Runtime's CPU provider runs such a graph too
(it computes in fp32 where it has no fp16 kernel), which lets the export validate it numerically
with a tolerance that fits half precision; where it cannot load it, the check is structural.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx

from nlpforge.errors import ExportError
from nlpforge.export import files

#: fp16 keeps about 3 significant digits: outputs may differ by 1% of their largest magnitude.
RELATIVE_TOLERANCE = 1e-2


def convert_fp16(source: Path, target: Path, threshold: int = files.TWO_GB) -> list[str]:
    """Write the fp16 version of ``source`` to ``target``; returns the files written."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        model = files.tidy(files.load(source))
        large = files.tensor_bytes(model) >= files.TWO_GB  # shape inference cannot load it
        model = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=large)
    except Exception as exc:
        raise ExportError(f"--fp16 failed on {source.name}: {type(exc).__name__}: {exc}")
    return files.save(model, target, threshold)


def validate_fp16(path: Path, check: Callable[[Any], dict[str, Any]],
                  outputs: Sequence[str]) -> dict[str, Any]:
    """Numerically (``check(runner)``) where ONNX Runtime can run the model here, else
    structurally."""
    from nlpforge.export.validate import onnx_runner

    try:
        runner = onnx_runner(path, outputs)
    except Exception as exc:
        return {**structural_check(path), "why": f"ONNX Runtime cannot run it here: {exc}"}
    try:
        return {"mode": "numerical", **check(runner)}
    except ExportError as exc:
        raise ExportError(f"--fp16: {exc}")


def structural_check(path: Path) -> dict[str, Any]:
    """A valid ONNX model whose float weights are (nearly all) fp16, for when it cannot run here."""
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the fp16 model is not valid ONNX: {exc}")
    model = onnx.load(str(path), load_external_data=False)
    sizes = {onnx.TensorProto.FLOAT: 0, onnx.TensorProto.FLOAT16: 0}
    for tensor in model.graph.initializer:
        if tensor.data_type in sizes:
            sizes[tensor.data_type] += int(np.prod(tensor.dims, dtype=np.int64))
    share = sizes[onnx.TensorProto.FLOAT16] / max(1, sum(sizes.values()))
    if share < 0.9:
        raise ExportError(f"the fp16 model keeps {100 * (1 - share):.0f}% of its weights in fp32")
    return {"mode": "structural", "fp16_weight_share": round(share, 4), "passed": True}
