"""Graph optimization of an exported model: ONNX Runtime's passes and transformer fusions.

Levels (``nlpforge export --optimize``), each validated against PyTorch after every pass:

- ``basic``: ONNX Runtime's basic, provider-independent rewrites (constant folding, redundant
  node elimination), saved offline.
- ``extended``: ``basic`` + the transformer fusions for ONNX Runtime (fused ``Attention``,
  ``SkipLayerNormalization``, ``BiasGelu``). The result uses ``com.microsoft`` contrib ops that
  ONNX Runtime runs on the CPU and on CUDA.
- ``all``: ``extended`` + ONNX Runtime's full offline optimization for its CPU provider
  (its own fusions and layout changes); the file is meant for the CPU provider.

The fusions come from onnxscript's rewriter (``onnxscript.rewriter.ort_fusions``), which is
written for graphs of the dynamo exporter that nlpforge uses: ONNX Runtime's older Python
optimizer (``onnxruntime.transformers.optimizer``) recognises the attention of TorchScript
exports only and finds nothing to fuse in a dynamo graph.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import onnx

from nlpforge.errors import ExportError
from nlpforge.export import files
from nlpforge.export.logs import quiet

LEVELS = ("none", "basic", "extended", "all")
#: Passes run per level, in order.
PASSES = {
    "none": (),
    "basic": ("onnxruntime-basic",),
    "extended": ("onnxruntime-basic", "transformer-fusions"),
    "all": ("onnxruntime-basic", "transformer-fusions", "onnxruntime-all"),
}
#: The passes whose output runs on any ONNX Runtime provider (the source of int8/fp16 variants).
PORTABLE = ("onnxruntime-basic", "transformer-fusions")

Check = Callable[[Path], dict]


def optimize(source: Path, target: Path, level: str, check: Check, work: Path,
             threshold: int = files.TWO_GB) -> tuple[dict[str, Any], Path]:
    """Run the passes of ``level`` on ``source``, validating after each; write ``target``.

    ``check(path)`` validates a model file against PyTorch and returns its report (it raises
    ExportError on a mismatch). Returns the manifest's ``optimization`` record and the last
    provider-independent file (``target`` itself unless ``level`` is ``all``).
    """
    steps = []
    current = portable = source
    for i, name in enumerate(PASSES[level]):
        out = work / f"optimize-{i}-{name}.onnx"
        start = time.perf_counter()
        try:
            applied = _PASSES[name](current, out, threshold)
        except ExportError:
            raise
        except Exception as exc:
            first = (str(exc).splitlines() or [""])[0]
            raise ExportError(f"--optimize {level}: the pass '{name}' failed: "
                              f"{type(exc).__name__}: {first}")
        try:
            report = check(out)
        except ExportError as exc:
            raise ExportError(f"--optimize {level}: after the pass '{name}', {exc}")
        steps.append({"pass": name, "applied": applied, "nodes": sum(files.op_counts(out).values()),
                      "seconds": round(time.perf_counter() - start, 3), "validation": report})
        current = out
        if name in PORTABLE:
            portable = out
    names = files.save(files.load(current), target, threshold)
    if portable == current:
        portable = target
    record = {"level": level, "file": names[0], "files": names,
              "nodes_before": sum(files.op_counts(source).values()), "steps": steps,
              "portable": level != "all"}
    return record, portable


def _ort_pass(level: str) -> Callable[[Path, Path, int], dict[str, int]]:
    def run(source: Path, target: Path, threshold: int) -> dict[str, int]:
        import onnxruntime as ort

        levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = levels[level]
        options.optimized_model_filepath = str(target)
        if files.tensor_bytes(onnx.load(str(source), load_external_data=False)) >= threshold:
            options.add_session_config_entry(
                "session.optimized_model_external_initializers_file_name", target.name + ".data")
            options.add_session_config_entry(
                "session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        return _new_ops(source, target)

    return run


def _transformer_fusions(source: Path, target: Path, threshold: int) -> dict[str, int]:
    import onnx_ir as ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    with quiet("onnxscript"):
        model = ir.load(str(source))
        model, _ = optimize_for_ort(model)
        proto = ir.to_proto(model)
    files.save(files.tidy(proto), target, threshold)
    return _new_ops(source, target)


def _new_ops(source: Path, target: Path) -> dict[str, int]:
    """The fused (``com.microsoft``) ops the pass added, with their counts in the new graph."""
    before, after = files.op_counts(source), files.op_counts(target)
    return {op: n for op, n in after.items()
            if op.startswith("com.microsoft.") and n > before.get(op, 0)}


_PASSES: dict[str, Callable[[Path, Path, int], dict[str, int]]] = {
    "onnxruntime-basic": _ort_pass("basic"),
    "transformer-fusions": _transformer_fusions,
    "onnxruntime-all": _ort_pass("all"),
}
