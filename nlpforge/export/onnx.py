"""nlpforge export: run dir → validated ONNX export dir."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from nlpforge.atomic import atomic_dir, check_output
from nlpforge.errors import ExportError, UsageError
from nlpforge.export.validate import compare, encoder_cases, encoder_features
from nlpforge.manifest import write_manifest
from nlpforge.tasks import Signature
from nlpforge.training.models import load_run

MODEL_FILE = "model.onnx"
#: Files copied from the run dir so the export dir is self-contained (and loadable by optimum).
COPIED = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
          "special_tokens_map.json", "added_tokens.json", "vocab.txt", "vocab.json",
          "merges.txt", "spiece.model", "sentencepiece.bpe.model", "chat_template.jinja")
TWO_GB = 2 * 1024**3


class ExportWrapper(torch.nn.Module):
    """Positional tensors in, the task's named outputs out, in signature order."""

    def __init__(self, task: Any, model: torch.nn.Module, signature: Signature):
        super().__init__()
        self.task, self.model, self.signature = task, model, signature

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.task.forward(self.model, dict(zip(self.signature.inputs, inputs)))
        return tuple(outputs[name] for name in self.signature.outputs)


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """The exporter prints progress and warnings meant for its developers; keep them out."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo",
                                              "onnxscript", "torch.fx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def to_onnx(wrapper: ExportWrapper, dummy: dict[str, np.ndarray], path: Path,
            opset: int | None, external_data: bool = False) -> int:
    """Export with torch.onnx's dynamo exporter; returns the opset used."""
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
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _eager_attention(model: Any) -> None:
    """Export the plain attention code path: it gives ONNX Runtime the simplest graph."""
    setter = getattr(model, "set_attn_implementation", None)
    if setter is not None:
        try:
            setter("eager")
            return
        except Exception:
            pass
    if hasattr(model, "config"):
        model.config._attn_implementation = "eager"


def export_run(run_dir: str, output: str, opset: int | None = None, atol: float = 1e-4,
               overwrite: bool = False) -> dict[str, Any]:
    """Export ``run_dir`` to ``output``; nothing is written unless validation passes."""
    if atol <= 0:
        raise UsageError(f"--atol must be positive, got {atol}")
    if opset is not None and not 14 <= opset <= 23:
        raise UsageError(f"--opset must be between 14 and 23, got {opset}")
    check_output(output, overwrite, "export dir")
    manifest, task, model, tokenizer = load_run(run_dir)
    _eager_attention(model)
    model.eval()
    signature = task.export_signature(manifest.get("model_inputs", []))
    vocab = int(getattr(model.config, "vocab_size", 100))
    wrapper = ExportWrapper(task, model, signature).eval()
    start = time.perf_counter()
    with atomic_dir(output, overwrite) as tmp:
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        dummy = encoder_features(signature.inputs, 2, 8, vocab, padded=True, seed=1234)
        try:
            used_opset = to_onnx(wrapper, dummy, tmp / MODEL_FILE, opset,
                                 external_data=size >= TWO_GB)
        except ExportError:
            raise
        except Exception as exc:
            raise ExportError(f"torch.onnx could not export {run_dir}: {_reason(exc)}")
        wrapper.eval()
        model.eval()  # the exporter restores training flags; references need eval mode
        report = _validate(wrapper, tmp / MODEL_FILE, signature, vocab,
                           tokenizer.max_length, atol)
        for name in COPIED:
            if (Path(run_dir) / name).is_file():
                shutil.copy2(Path(run_dir) / name, tmp / name)
        export_manifest = {
            **manifest,
            "kind": "export",
            "io": {"model": MODEL_FILE, "inputs": list(signature.inputs),
                   "outputs": list(signature.outputs),
                   "dynamic_axes": {k: {str(a): n for a, n in v.items()}
                                    for k, v in signature.dynamic_axes.items()}},
            "opset": used_opset,
            "validation": report,
            "optimization": None,
            "quantization": None,
            "export_seconds": round(time.perf_counter() - start, 3),
            "source_run": str(Path(run_dir).absolute()),
        }
        export_manifest["provenance"] = {**manifest.get("provenance", {}),
                                         "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                   time.gmtime()),
                                         "torch_export": torch.__version__}
        write_manifest(tmp, export_manifest)
        _smoke_test(tmp)
    return export_manifest


def _reason(exc: BaseException) -> str:
    """The informative line of an exporter error (its summary, not its advice)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "Exception summary" in line and i + 1 < len(lines):
            return lines[i + 1]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _validate(wrapper: ExportWrapper, path: Path, signature: Signature, vocab: int,
              max_length: int, atol: float) -> dict[str, Any]:
    from nlpforge.runtime.providers import make_session

    session = make_session(str(path), device="cpu")

    def reference(features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = wrapper(*(torch.from_numpy(features[n]) for n in signature.inputs))
        return {n: t.float().numpy() for n, t in zip(signature.outputs, out)}

    def candidate(features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = session.run(list(signature.outputs), features)
        return dict(zip(signature.outputs, values))

    return compare(encoder_cases(signature.inputs, vocab, max_length), reference, candidate, atol)


def _smoke_test(directory: Path) -> None:
    """Load the finished export dir with the torch-free runtime and run one request."""
    from nlpforge.runtime.predictor import Predictor

    predictor = Predictor.load(directory, device="cpu")
    try:
        predictor.predict([predictor.task.example_request()])
    except Exception as exc:
        raise ExportError(f"the export loads but cannot predict: {type(exc).__name__}: {exc}")
