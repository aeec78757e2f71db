"""What the KV-cache exports (``decoder.py``, ``seq2seq.py``) share: option checks, tracing with
a fallback exporter, the special token ids generation needs, and writing the export dir.

Both trace with torch.onnx's TorchScript exporter (``dynamo=False``), as optimum does: on these
graphs it is an order of magnitude faster than the dynamo exporter with the same numbers, and
it takes a zero-length cache without special casing. When it fails on an architecture, the
dynamo exporter is tried before giving up; the manifest records which one wrote each graph.
"""

from __future__ import annotations

import errno
import json
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import onnx
import torch

from nlpforge.atomic import atomic_dir
from nlpforge.errors import ExportError, UsageError
from nlpforge.export import files
from nlpforge.export.convert import exporter_error, quiet_exporter
from nlpforge.export.optimize import Check, Pass, optimize
from nlpforge.export.timing import faster
from nlpforge.manifest import Manifest, write_manifest

DEFAULT_OPSET = 17


def check_options(opts: Any, kind: str) -> None:
    """Refuse the encoder export's variants and formats not made for cached graphs yet."""
    asked = [flag for flag, on in (("--quantize", opts.quantize != "none"),
                                   ("--fp16", opts.fp16),
                                   ("--format triton", opts.format != "onnx")) if on]
    if asked:
        raise UsageError(f"{', '.join(asked)}: not available for {kind} exports yet; "
                         f"export without {'them' if len(asked) > 1 else 'it'}")


def _repeat_interleave(g: Any, self: Any, repeats: Any, dim: Any = None,
                       output_size: Any = None) -> Any:
    """``x.repeat_interleave(r, dim)`` with a constant ``r`` as Unsqueeze → Expand → Reshape.

    torch.onnx's own symbolic builds a ``Concat`` of tensors of different ranks when the
    repeated axis is dynamic, which fails the trace ("All tensors must have the same rank"):
    the interleaved rotary of Cohere, Helium, GLM-like models repeats its cos/sin tables this
    way. Other forms (tensor repeats, no dim) go to torch.onnx's symbolic."""
    from torch.onnx import symbolic_helper as helper
    from torch.onnx._internal.torchscript_exporter import symbolic_opset13

    times = helper._maybe_get_const(repeats, "i")
    axis = helper._maybe_get_const(dim, "i") if dim is not None else None
    rank = helper._get_tensor_rank(self)
    if not isinstance(times, int) or not isinstance(axis, int) or rank is None:
        return symbolic_opset13.repeat_interleave(g, self, repeats, dim, output_size)
    axis %= rank

    def const(*values: int) -> Any:
        return g.op("Constant", value_t=torch.tensor(values, dtype=torch.int64))

    shape = g.op("Shape", self)

    def dims(start: int, end: int) -> Any:
        return g.op("Slice", shape, const(start), const(end))

    spread = g.op("Expand", g.op("Unsqueeze", self, const(axis + 1)),
                  g.op("Concat", dims(0, axis + 1), const(times), dims(axis + 1, rank), axis_i=0))
    return g.op("Reshape", spread,
                g.op("Concat", dims(0, axis), const(-1), dims(axis + 1, rank), axis_i=0))


@contextmanager
def _traceable_ops(opset: int) -> Iterator[None]:
    """Symbolics the TorchScript exporter needs for the generative graphs, registered for one
    export only."""
    torch.onnx.register_custom_op_symbolic("aten::repeat_interleave", _repeat_interleave, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::repeat_interleave", opset)


def trace(wrapper: torch.nn.Module, args: tuple, path: Path, opts: Any, run_dir: str,
          names: tuple[list[str], list[str], dict[str, dict[int, str]]],
          dynamo: Callable[[Path, int, bool], None]) -> tuple[str, int]:
    """Write ``wrapper`` traced on ``args`` to ``path`` (TorchScript exporter, then
    ``dynamo(path, opset, external_data)`` if that fails); returns the exporter and opset."""
    inputs, outputs, axes = names
    opset = opts.opset or DEFAULT_OPSET
    size = sum(p.numel() * p.element_size() for p in wrapper.parameters())
    external = size >= opts.external_data_threshold
    errors = []
    for exporter in ("torchscript", "dynamo"):
        try:
            with quiet_exporter(), torch.no_grad(), _traceable_ops(opset):
                if exporter == "torchscript":
                    torch.onnx.export(wrapper, args, str(path), dynamo=False,
                                      input_names=list(inputs), output_names=list(outputs),
                                      dynamic_axes=axes, opset_version=opset,
                                      do_constant_folding=True)
                else:
                    dynamo(path, opset, external)
            break
        except Exception as exc:
            errors.append(f"{exporter}: {exporter_error(exc)}")
    else:
        raise ExportError(f"torch.onnx could not export {path.name} of {run_dir}: "
                          f"{'; '.join(errors)}")
    model = onnx.load(str(path), load_external_data=True)
    files.save(files.tidy(model), path, opts.external_data_threshold)
    return exporter, next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def special_ids(run_dir: Path, config: Any, tokenizer: Any) -> dict[str, Any]:
    """EOS, pad, BOS, decoder-start and forced-BOS ids as ``generate()`` uses them:
    generation_config.json first, then the model config; pad falls back to the tokenizer's
    pad id, then to the first EOS."""
    generation: dict[str, Any] = {}
    path = run_dir / "generation_config.json"
    if path.is_file():
        try:
            generation = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            generation = {}

    def pick(name: str) -> int | None:
        value = generation.get(name)
        value = value if value is not None else getattr(config, name, None)
        return int(value) if value is not None and not isinstance(value, list) else value

    eos = pick("eos_token_id")
    eos_ids = [int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None]
    pad = pick("pad_token_id")
    if pad is None:
        pad = getattr(tokenizer, "pad_id", None)
    if pad is None and eos_ids:
        pad = eos_ids[0]
    return {"eos_token_ids": eos_ids, "pad_token_id": int(pad) if pad is not None else 0,
            "bos_token_id": pick("bos_token_id"),
            "decoder_start_token_id": pick("decoder_start_token_id"),
            "forced_bos_token_id": pick("forced_bos_token_id")}


def write_export(output: str, opts: Any, run_dir: str,
                 build: Callable[[Path], dict[str, Any]],
                 smoke: Callable[[Path, dict[str, Any]], None]) -> dict[str, Any]:
    """Make the export dir atomically: ``build(target)`` writes and validates the graphs and
    returns the manifest; the run's tokenizer and config files are copied, the manifest
    written, ``smoke(target, manifest)`` loads the result torch-free. Nothing is left behind
    when any step fails."""
    start = time.perf_counter()
    try:
        with atomic_dir(output, opts.overwrite) as target:
            record = build(target)
            files.copy_model_files(run_dir, target)
            record["export_seconds"] = round(time.perf_counter() - start, 3)
            write_manifest(target, record)
            smoke(target, record)
            if "optimized" in record["variants"]:
                record["default_choice"] = faster_default(target)
                record["default_variant"] = record["default_choice"]["variant"]
                write_manifest(target, record)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT):
            raise ExportError(f"cannot write {output}: {exc.strerror}; nothing was written")
        raise
    return record


def optimize_graphs(target: Path, checks: dict[str, Check], opts: Any,
                    fusions: Pass) -> tuple[dict[str, Any], dict[str, str]]:
    """``--optimize``: run the level's passes on each graph of the export dir (file name →
    ``check(path)``, which validates that graph against PyTorch and raises ExportError on a
    mismatch). Writes ``<stem>.optimized.onnx`` next to each graph; returns the manifest's
    ``optimization`` record and ``{graph file: optimized file}``."""
    records, names = {}, {}
    with tempfile.TemporaryDirectory(prefix=".optimize-", dir=target) as work:
        for name, check in checks.items():
            optimized = f"{Path(name).stem}.optimized.onnx"
            records[name], _ = optimize(target / name, target / optimized, opts.optimize, check,
                                        Path(work), opts.external_data_threshold, fusions)
            names[name] = optimized
    return {"level": opts.optimize, "portable": opts.optimize != "all", "graphs": records}, names


def faster_default(target: Path) -> dict[str, Any]:
    """``--optimize`` on a generative export: the fused graphs stay the default only if they
    generate faster than the fp32 graphs here (``timing.faster``); both give the same greedy
    tokens (each was validated against PyTorch)."""
    from nlpforge.runtime.generation.generator import Generator

    generators = {v: Generator.load(target, device="cpu", variant=v)
                  for v in ("fp32", "optimized")}
    prompt = generators["fp32"].task.example_request()

    def run(generator: Any) -> Callable[[], Any]:
        return lambda: [generator.generate([prompt] * batch, max_new_tokens=16,
                                           min_new_tokens=16) for batch in (1, 4)]

    return faster({v: run(g) for v, g in generators.items()},
                  "greedy, batch 1 and 4, 16 new tokens each")


def with_optimized(record: dict[str, Any], optimization: dict[str, Any],
                   names: dict[str, str], target: Path) -> dict[str, Any]:
    """Add the ``optimized`` variant, the default until ``faster_default`` measures it, to an
    export record."""
    model_files = [f for name in names.values() for f in files.model_files(target / name)]
    record["variants"]["optimized"] = {"file": next(iter(names.values())), "files": model_files,
                                       "graphs": names, "precision": "fp32",
                                       "validation": "optimization"}
    record["default_variant"] = "optimized"
    record["optimization"] = optimization
    return record


def smoke_test(open_export: Callable[[], tuple[Any, dict[str, Any]]]) -> None:
    """Generate from a finished export, torch-free: ``open_export()`` loads its stepper and
    encodes two prompts (``input_ids``, ``attention_mask``); the first step and one more must
    give finite logits. ExportError otherwise."""
    import numpy as np

    try:
        stepper, features = open_export()
        logits, state = stepper.start(features["input_ids"], features["attention_mask"])
        logits, _ = stepper.step(state, logits.argmax(-1))
        if not np.isfinite(logits).all():
            raise ValueError("non-finite logits")
    except Exception as exc:
        raise ExportError(f"the export loads but cannot generate: {type(exc).__name__}: {exc}")


def export_record(manifest: Manifest, run_dir: str, io: dict[str, Any],
                  model_files: list[str], first_file: str, exporter: Any, opset: int | None,
                  report: dict[str, Any]) -> Manifest:
    """The export manifest of a cached export: one fp32 variant made of ``model_files``."""
    fp32 = {"file": first_file, "files": model_files, "precision": "fp32",
            "validation": "validation"}
    return files.export_manifest(manifest, run_dir, io=io, opset=opset, exporter=exporter,
                                 validation=report, variants={"fp32": fp32}, default_variant="fp32",
                                 optimization=None, quantization=None)
