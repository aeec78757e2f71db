"""Dynamic int8 quantization with ONNX Runtime's quantizer.

Weights are stored as int8, per output channel (on MiniLM/SST-2 per-tensor scales cost 0.7
points of accuracy, per-channel ones nothing); activations are quantized to uint8 at run time.
The embedding tables are quantized too (``Gather``): the file is about a third of the fp32 one.
The export quantizes the graph as exported, where every projection is a ``MatMul``: the
quantizer would turn a fused ``Attention`` into ``QAttention``, whose weights it always makes
7-bit, and that cost 0.6 points of accuracy on SST-2 where per-channel MatMuls cost none.
``reduce_range`` (7-bit weights, against the saturation of u8s8 kernels on CPUs without VNNI)
is off: on MiniLM it cost accuracy instead of saving it, and the task-level quality check
catches a model where saturation matters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nlpforge.errors import ExportError
from nlpforge.export import files
from nlpforge.export.logs import quiet

#: Node types quantized.
OPS = ("MatMul", "Gather")
PER_CHANNEL = True
REDUCE_RANGE = False


def quantize_int8(source: Path, target: Path, work: Path,
                  threshold: int = files.TWO_GB) -> dict[str, Any]:
    """Write the dynamic int8 version of ``source`` to ``target``; returns what was applied."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    prepared = work / "int8-input.onnx"
    out = work / "int8.onnx"
    model = files.tidy(files.load(source))
    large = files.tensor_bytes(model) >= threshold
    files.save(model, prepared, threshold)
    try:
        with quiet(""):  # the quantizer advises pre-processing on the root logger
            quantize_dynamic(prepared, out, op_types_to_quantize=list(OPS),
                             per_channel=PER_CHANNEL, reduce_range=REDUCE_RANGE,
                             weight_type=QuantType.QInt8, use_external_data_format=large,
                             extra_options={"MatMulConstBOnly": True})
    except Exception as exc:
        raise ExportError(f"--quantize int8 failed on {source.name}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}")
    names = files.save(files.load(out), target, threshold)
    return {"type": "dynamic-int8", "weights": "int8", "activations": "uint8 (dynamic)",
            "per_channel": PER_CHANNEL, "reduce_range": REDUCE_RANGE, "ops": list(OPS),
            "file": names[0], "files": names,
            "quantized_nodes": _quantized_nodes(target)}


def _quantized_nodes(path: Path) -> dict[str, int]:
    counts = files.op_counts(path)
    return {op: n for op, n in counts.items()
            if op in ("MatMulInteger", "DynamicQuantizeLinear", "DequantizeLinear")}
