"""Graph optimization of an exported model: ONNX Runtime's passes and transformer fusions.

Levels (``nlpforge export --optimize``), each validated against PyTorch after every pass:

- ``basic``: ONNX Runtime's basic, provider-independent rewrites (constant folding, redundant
  node elimination), saved offline.
- ``extended``: ``basic`` + the transformer fusions for ONNX Runtime (fused ``Attention``,
  ``SkipLayerNormalization``, ``BiasGelu``). The result uses ``com.microsoft`` contrib ops that
  ONNX Runtime runs on the CPU and on CUDA.
- ``all``: ``extended`` + ONNX Runtime's full offline optimization for its CPU provider
  (its own fusions and layout changes); the file is meant for the CPU provider.

The fusions of encoder exports come from onnxscript's rewriter
(``onnxscript.rewriter.ort_fusions``), written for graphs of the dynamo exporter that the
encoder export uses: ONNX Runtime's older Python optimizer
(``onnxruntime.transformers.optimizer``) recognises TorchScript graphs only and finds nothing
to fuse in a dynamo graph. The KV-cache exports are TorchScript graphs, so they take that
optimizer's fusions instead (``ort_fusions``: layer norms, skip layer norms, GELU, bias
adds, and the shape arithmetic between them).
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
#: The same levels for TorchScript graphs (``ort_fusions``): ONNX Runtime's transformer
#: optimizer matches the exporter's own patterns, which the basic rewrites would disturb.
FUSIONS_FIRST = {
    "none": (),
    "basic": ("onnxruntime-basic",),
    "extended": ("transformer-fusions", "onnxruntime-basic"),
    "all": ("transformer-fusions", "onnxruntime-basic", "onnxruntime-all"),
}
#: The passes whose output runs on any ONNX Runtime provider (the source of int8/fp16 variants).
PORTABLE = ("onnxruntime-basic", "transformer-fusions")

Check = Callable[[Path], dict]
#: ``run(source, target, threshold) -> {fused op: count}``
Pass = Callable[[Path, Path, int], dict[str, int]]


def optimize(source: Path, target: Path, level: str, check: Check, work: Path,
             threshold: int = files.TWO_GB, fusions: Pass | None = None
             ) -> tuple[dict[str, Any], Path]:
    """Run the passes of ``level`` on ``source``, validating after each; write ``target``.

    ``check(path)`` validates a model file against PyTorch and returns its report (it raises
    ExportError on a mismatch). ``fusions`` replaces the ``transformer-fusions`` pass (see
    ``ort_fusions``) and runs it first (``FUSIONS_FIRST``). Returns the manifest's ``optimization`` record and the last
    provider-independent file (``target`` itself unless ``level`` is ``all``).
    """
    passes = {**_PASSES, **({"transformer-fusions": fusions} if fusions else {})}
    steps = []
    current = portable = source
    for i, name in enumerate((FUSIONS_FIRST if fusions else PASSES)[level]):
        out = work / f"optimize-{i}-{name}.onnx"
        start = time.perf_counter()
        try:
            applied = passes[name](current, out, threshold)
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


def _ort_pass(level: str) -> Pass:
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


def ort_fusions(model_type: str, num_heads: int, hidden_size: int) -> Pass:
    """The fusions of ONNX Runtime's transformer optimizer for a TorchScript graph of
    ``model_type`` (``gpt2``, ``t5``, ``bart``…); its own session passes are left to the
    ``onnxruntime-*`` passes around it (``opt_level=0``)."""

    def run(source: Path, target: Path, threshold: int) -> dict[str, int]:
        from onnxruntime.transformers.optimizer import optimize_model

        with quiet("", "onnxruntime.transformers", "onnxruntime"):
            model = optimize_model(str(source), model_type=model_type, num_heads=num_heads,
                                   hidden_size=hidden_size, opt_level=0)
        files.save(files.tidy(model.model), target, threshold)
        return _new_ops(source, target)

    return run


def _new_ops(source: Path, target: Path) -> dict[str, int]:
    """The fused (``com.microsoft``) ops the pass added, with their counts in the new graph."""
    before, after = files.op_counts(source), files.op_counts(target)
    return {op: n for op, n in after.items()
            if op.startswith("com.microsoft.") and n > before.get(op, 0)}


_PASSES: dict[str, Pass] = {
    "onnxruntime-basic": _ort_pass("basic"),
    "transformer-fusions": _transformer_fusions,
    "onnxruntime-all": _ort_pass("all"),
}
