"""nlpforge export: run dir → validated ONNX export dir (or a Triton model repository entry).

The orchestrator: convert (``convert.py``), validate (``validate.py``), then the variants the
user asked for — optimized (``optimize.py``), int8 (``quantize.py`` + ``quality.py``), fp16
(``fp16.py``) — each validated, then the files, the manifest, a smoke test through the
torch-free runtime, and for ``--format triton`` the ``config.pbtxt`` (``triton.py``). Everything
is built in a temp dir that is renamed into place only when all of it passed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import onnxruntime  # noqa: F401  (loaded before any file is written: see cli/export.py)
import torch

from nlpforge.atomic import atomic_dir, check_output
from nlpforge.errors import ExportError, NlpforgeError, UsageError
from nlpforge.export import checkpoint, files
from nlpforge.export.convert import (ExportWrapper, eager_attention, exporter_error, to_onnx,
                                     vocab_size)
from nlpforge.export.decoder_arch import prepare_model
from nlpforge.export.fp16 import RELATIVE_TOLERANCE, convert_fp16, validate_fp16
from nlpforge.export.optimize import LEVELS, optimize
from nlpforge.export.quality import int8_validation, quality_data, run_validation_file
from nlpforge.export.quantize import quantize_int8
from nlpforge.export.run_checks import check_run
from nlpforge.export.timing import faster
from nlpforge.export.triton import VERSION, TritonOptions, write_config
from nlpforge.export.validate import (Features, Runner, compare, differences, encoder_cases,
                                      encoder_features, memoized, onnx_runner)
from nlpforge.families import family
from nlpforge.manifest import MANIFEST_NAME, Manifest, write_manifest
from nlpforge.tasks import Signature
from nlpforge.training.loading import load_run
from nlpforge.training.steps import model_inputs

MODEL_FILE = "model.onnx"
#: Variant name → file; ``fp32`` is the exported graph itself.
VARIANT_FILES = {"fp32": MODEL_FILE, "optimized": "model.optimized.onnx",
                 "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
FORMATS = ("onnx", "triton")
QUANTIZE = ("none", "int8")
TWO_GB = files.TWO_GB


@dataclass
class ExportOptions:
    """What ``nlpforge export`` makes; the CLI options map one to one."""

    opset: int | None = None
    atol: float = 1e-4
    overwrite: bool = False
    optimize: str = "none"
    quantize: str = "none"
    calibration_data: str | None = None
    max_metric_drop: float = 1.0
    force: bool = False
    fp16: bool = False
    format: str = "onnx"
    triton: TritonOptions = field(default_factory=TritonOptions)
    external_data_threshold: int = TWO_GB

    def check(self) -> None:
        if self.atol <= 0:
            raise UsageError(f"--atol must be positive, got {self.atol}")
        if self.opset is not None and not 14 <= self.opset <= 23:
            raise UsageError(f"--opset must be between 14 and 23, got {self.opset}")
        for name, value, allowed in (("--optimize", self.optimize, (*LEVELS, "auto")),
                                     ("--quantize", self.quantize, QUANTIZE),
                                     ("--format", self.format, FORMATS)):
            if value not in allowed:
                raise UsageError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.max_metric_drop < 0:
            raise UsageError(f"--max-metric-drop must be 0 or more, got {self.max_metric_drop}")
        if self.external_data_threshold < 1:
            raise UsageError("--external-data-threshold must be at least 1 byte")
        if self.calibration_data is not None and self.quantize == "none" \
                and self.optimize != "auto":
            raise UsageError("--calibration-data is used by --quantize int8 and --optimize "
                             "auto; add one of them")
        self.triton.check()
        if self.optimize == "auto" and self.format == "triton":
            raise UsageError("--optimize auto tunes session settings that a Triton model "
                             "config does not carry; use --optimize extended with --format "
                             "triton")
        if self.triton.variant is not None and self.triton.variant not in self.variants():
            raise UsageError(f"--triton-variant {self.triton.variant}: this export makes "
                             f"{', '.join(self.variants())}")

    def built(self) -> "ExportOptions":
        """The options the family exporters build with: ``--optimize auto`` builds the
        ``extended`` graphs, then ``tuned`` measures them on this machine."""
        if self.optimize != "auto":
            return self
        return dataclasses.replace(self, optimize="extended")

    def variants(self) -> list[str]:
        """The variants this export writes, in the order they are made."""
        made = {"fp32": True, "optimized": self.optimize != "none",
                "int8": self.quantize == "int8", "fp16": self.fp16}
        return [name for name, on in made.items() if on]


@dataclass
class Validator:
    """Checks ONNX files against PyTorch on shapes the trace never saw (the reference is
    computed once and shared by every check)."""

    cases: list[tuple[str, Features]]
    reference: Runner
    outputs: tuple[str, ...]

    def check(self, path: Path, atol: float, runner: Runner | None = None) -> dict[str, Any]:
        """The validation report; ExportError when an output is off by more than ``atol``."""
        return compare(self.cases, self.reference, runner or onnx_runner(path, self.outputs), atol)

    def measure(self, path: Path) -> dict[str, float]:
        """Max abs difference per output, without a verdict (for lossy variants)."""
        worst, _, _ = differences(self.cases, self.reference, onnx_runner(path, self.outputs))
        return {k: round(v, 6) for k, v in worst.items()}

    def scale(self) -> float:
        """The largest magnitude of any reference output."""
        return max(float(np.max(np.abs(v))) if v.size else 0.0
                   for _, f in self.cases for v in self.reference(f).values())


def export_run(run_dir: str, output: str, **options: Any) -> dict[str, Any]:
    """Export ``run_dir`` to ``output`` (keywords: ExportOptions' fields); nothing is written
    unless every model file passes its validation. Returns the export manifest."""
    opts = ExportOptions(**options)
    opts.check()
    kind = "Triton model dir" if opts.format == "triton" else "export dir"
    check_output(output, opts.overwrite, kind)
    manifest, task, model, tokenizer = load_run(run_dir)
    check_run(Path(run_dir), manifest, model)
    export = family(manifest["family"]).load("exporter")
    return tuned(export(run_dir, output, opts.built(), manifest, task, model, tokenizer),
                 output, opts)


def tuned(record: dict[str, Any], output: str, opts: ExportOptions) -> dict[str, Any]:
    """``--optimize auto``: the finished encoder export measured on this machine
    (``tune.py``); its manifest afterwards. A generative export made with ``auto`` has the
    extended graphs, the default where they generated faster (``timing.py``)."""
    if opts.optimize != "auto" or record["family"] != "encoder":
        return record  # generative: the fused graphs, the default only where faster (timing.py)
    from nlpforge.export.tune import tune
    from nlpforge.manifest import read_manifest

    tune(output, opts.calibration_data, max_metric_drop=opts.max_metric_drop, force=opts.force)
    return read_manifest(output)


def export_model(model: str, output: str, task: str | None = None, *,
                 revision: str | None = None, trust_remote_code: bool = False,
                 max_length: int | None = None, task_options: dict[str, Any] | None = None,
                 **options: Any) -> dict[str, Any]:
    """Export ``model`` — an nlpforge run dir, a ``save_pretrained`` dir or a Hugging Face Hub
    id — to ``output`` (keywords: ExportOptions' fields). A checkpoint's task comes from
    ``task`` or its config (``checkpoint.py``); the export is validated and written as one of
    a trained run, and its manifest's ``source`` says where the model came from."""
    # a run dir, finished or not (read_manifest tells how to finish one)
    if any((Path(model) / name).is_file() for name in (MANIFEST_NAME, "train_config.json")):
        for name, value in (("--task", task), ("--revision", revision),
                            ("--max-length", max_length), ("--task-option", task_options)):
            if value:
                raise UsageError(f"{name}: {model} is an nlpforge run dir, whose task and "
                                 f"settings are its own; {name} is for checkpoints")
        return export_run(model, output, **options)
    opts = ExportOptions(**options)
    opts.check()
    check_output(output, opts.overwrite,
                 "Triton model dir" if opts.format == "triton" else "export dir")
    with checkpoint.open_checkpoint(model, task, revision=revision,
                                    trust_remote_code=trust_remote_code, max_length=max_length,
                                    task_options=task_options) as found:
        stage = str(found.stage)
        try:
            torch_model = checkpoint.load_model(found)
            manifest = found.manifest(model_inputs(torch_model))
            export = family(manifest["family"]).load("exporter")
            return tuned(export(stage, output, opts.built(), manifest, found.task,
                                torch_model, found.tokenizer), output, opts)
        except NlpforgeError as exc:  # name the checkpoint, not its staged view
            exc.args = tuple(a.replace(stage, str(found.source.path)) if isinstance(a, str)
                             else a for a in exc.args)
            raise


#: Encoder model types the encoder export refuses, and why (checked before tracing): those
#: torch.onnx cannot trace into a graph that holds for every text length, and those whose
#: forward needs inputs a text task's tokenizer does not make.
UNTRACEABLE_ENCODERS = {
    "longformer": "its forward picks the global-attention path from the data "
                  "(attention_mask == 2, read with .item()), which a traced graph cannot keep",
    "led": "its encoder (Longformer's) picks the global-attention path from the data "
           "(global_attention_mask, read with .item()), which a traced graph cannot keep",
    "canine": "its character-level local attention loops in Python over the text in chunks "
              "of local_transformer_stride characters (and repeats the downsampled molecules "
              "by the length's remainder), so a traced graph holds for one text length only",
    "funnel": "its relative-position attention builds its position tables from Python lists "
              "over the text length (range(seq_len), kept static on purpose) and pools them "
              "with Python strides, so a traced graph holds for one text length only",
    "nystromformer": "its Nystrom attention reshapes every text into num_landmarks segments "
                     "of segment_means_seq_len // num_landmarks tokens (a length fixed by the "
                     "config), so it runs on texts of exactly segment_means_seq_len tokens only",
    # Document and web-page models: without their layout inputs they run on all-zero boxes
    # (or empty XPaths), which no checkpoint of theirs was trained on.
    "layoutlm": "needs inputs a text task does not make (bbox: each token's box on the page)",
    "layoutlmv3": "needs inputs a text task does not make (bbox: each token's box on the "
                  "page, and pixel_values: the page's image)",
    "lilt": "needs inputs a text task does not make (bbox: each token's box on the page)",
    "markuplm": "needs inputs a text task does not make (xpath_tags_seq and xpath_subs_seq: "
                "each token's XPath in the HTML page)",
}


def export_encoder(run_dir: str, output: str, opts: ExportOptions, manifest: Manifest,
                   task: Any, model: Any, tokenizer: Any) -> dict[str, Any]:
    """The encoder family's exporter: one ``model.onnx`` and its variants."""
    for module in model.modules():
        kind = getattr(getattr(module, "config", None), "model_type", None)
        if kind in UNTRACEABLE_ENCODERS:
            raise ExportError(f"{run_dir}: {kind} cannot be exported to ONNX: "
                              f"{UNTRACEABLE_ENCODERS[kind]}")
    triton = opts.format == "triton"
    data = None
    if opts.quantize == "int8" and not (opts.force and opts.calibration_data is None
                                        and not run_validation_file(manifest)):
        data = quality_data(opts.calibration_data, manifest, task)
    eager_attention(model)
    prepare_model(model)  # mixture-of-experts layers: experts gathered by index, not looped
    model.eval()
    signature = task.export_signature(manifest.get("model_inputs", []))
    wrapper = ExportWrapper(task, model, signature).eval()
    start = time.perf_counter()
    try:
        with atomic_dir(output, opts.overwrite) as root:
            target = root / VERSION if triton else root
            work = root / ".work"
            target.mkdir(exist_ok=True)
            work.mkdir()
            record = _build(run_dir, manifest, task, model, tokenizer, wrapper, signature,
                            opts, target, work, data)
            record["export_seconds"] = round(time.perf_counter() - start, 3)
            if triton:
                variant = opts.triton.variant or record["default_variant"]
                record["triton"] = write_config(
                    root, Path(output).name, target / record["variants"][variant]["file"],
                    opts.triton, {"nlpforge.task": task.id, "nlpforge.variant": variant})
            write_manifest(target, record)
            for name, variant in record["variants"].items():
                check = variant["validation"]
                if not (isinstance(check, dict) and check["mode"] == "structural"):
                    _smoke_test(target, name)  # a structurally checked model cannot run here
            if "optimized" in record["variants"] and not triton:
                record["default_choice"] = _faster_default(target, signature, tokenizer)
                record["default_variant"] = record["default_choice"]["variant"]
                write_manifest(target, record)
            shutil.rmtree(work)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT):
            raise ExportError(f"cannot write {output}: {exc.strerror}; nothing was written")
        raise
    return record


def _build(run_dir: str, manifest: Manifest, task: Any, model: Any, tokenizer: Any,
           wrapper: ExportWrapper, signature: Signature, opts: ExportOptions, target: Path,
           work: Path, data: tuple[str, list[dict]] | None) -> dict[str, Any]:
    """Write the model files into ``target``; returns the export manifest (not written yet)."""
    threshold = opts.external_data_threshold
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    vocab = vocab_size(model)
    end = _end_token(model)
    dummy = encoder_features(signature.inputs, 2, 8, vocab, padded=True, seed=1234, end_id=end)
    try:
        with _traceable_shift(model):
            used_opset = to_onnx(wrapper, dummy, target / MODEL_FILE, opts.opset,
                                 external_data=size >= threshold)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"torch.onnx could not export {run_dir}: {exporter_error(exc)}")
    wrapper.eval()
    model.eval()  # the exporter restores training flags; references need eval mode
    validator = Validator(encoder_cases(signature.inputs, vocab, tokenizer.max_length, end),
                          memoized(_torch_reference(wrapper, signature)), signature.outputs)
    report = validator.check(target / MODEL_FILE, opts.atol)
    variants = {"fp32": _variant(target / MODEL_FILE, "fp32", "validation")}
    optimization = quantization = None
    portable = target / MODEL_FILE  # the graph fp16 is made from
    if opts.optimize != "none":
        optimization, portable = optimize(
            target / MODEL_FILE, target / VARIANT_FILES["optimized"], opts.optimize,
            lambda path: _brief(validator.check(path, opts.atol)), work, threshold)
        variants["optimized"] = _variant(target / VARIANT_FILES["optimized"], "fp32",
                                         "optimization")
    if opts.quantize == "int8":
        # From the exported graph, not the fused one: see quantize.py.
        int8 = target / VARIANT_FILES["int8"]
        quantization = {**quantize_int8(target / MODEL_FILE, int8, work, threshold),
                        "source": MODEL_FILE}
        quantization["validation"] = int8_validation(
            task, tokenizer, target / MODEL_FILE, int8, data, opts.max_metric_drop, opts.force,
            validator.measure(int8))
        variants["int8"] = _variant(int8, "int8", "quantization")
    if opts.fp16:
        fp16 = target / VARIANT_FILES["fp16"]
        convert_fp16(portable, fp16, threshold)
        atol = max(opts.atol, RELATIVE_TOLERANCE * max(1.0, validator.scale()))
        check = validate_fp16(fp16, lambda runner: _brief(validator.check(fp16, atol, runner)),
                              validator.outputs)
        source = portable.name if portable.parent == target else \
            f"{VARIANT_FILES['optimized']} before the CPU-only pass"
        variants["fp16"] = {**_variant(fp16, "fp16", check), "source": source,
                            "io_types": "as fp32 (inputs and outputs keep their types)"}
    files.copy_model_files(run_dir, target)
    default = "optimized" if "optimized" in variants else "fp32"
    return files.export_manifest(
        manifest, run_dir,
        io={"model": MODEL_FILE, "inputs": list(signature.inputs),
            "outputs": list(signature.outputs),
            "dynamic_axes": {k: {str(a): n for a, n in v.items()}
                             for k, v in signature.dynamic_axes.items()}},
        opset=used_opset, validation=report, variants=variants, default_variant=default,
        optimization=optimization, quantization=quantization)


#: transformers modules whose ``shift_tokens_right`` (the decoder inputs of a one-pass
#: encoder-decoder head) ends with ``gather(...).squeeze()``: traced, that squeezes the batch
#: axis away on a batch of one. Exported with ``_shift_tokens_right``, the same computation.
_SQUEEZING_SHIFT = ("transformers.models.mbart.modeling_mbart",
                    "transformers.models.plbart.modeling_plbart")


def _shift_tokens_right(input_ids: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """MBart's ``shift_tokens_right`` (the last real token first), batch axis kept."""
    tokens = input_ids.clone()
    tokens.masked_fill_(tokens == -100, pad_token_id)
    last = (tokens.ne(pad_token_id).sum(dim=1) - 1).unsqueeze(-1)
    start = tokens.gather(1, last).squeeze(-1)
    tokens[:, 1:] = tokens[:, :-1].clone()
    tokens[:, 0] = start
    return tokens


@contextlib.contextmanager
def _traceable_shift(model: Any) -> Iterator[None]:
    """``_SQUEEZING_SHIFT`` modules of ``model`` trace ``_shift_tokens_right`` instead."""
    import sys

    swapped = []
    for name in {type(m).__module__ for m in model.modules()} & set(_SQUEEZING_SHIFT):
        module = sys.modules[name]
        swapped.append((module, module.shift_tokens_right))
        module.shift_tokens_right = _shift_tokens_right
    try:
        yield
    finally:
        for module, original in swapped:
            module.shift_tokens_right = original


def _end_token(model: Any) -> int | None:
    """The end-of-sequence id an encoder-decoder's head pools at (BART's classification head
    reads the decoder's state at each row's last one and needs as many per row), or None:
    validation inputs then end each row with it, as a tokenizer does."""
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None:
            end = getattr(config, "eos_token_id", None)
            return end if getattr(config, "is_encoder_decoder", False) and \
                isinstance(end, int) else None
    return None


def _variant(path: Path, precision: str, validation: str | dict) -> dict[str, Any]:
    """A ``variants`` entry; ``validation`` is its report or the manifest field that holds it."""
    return {"file": path.name, "files": files.model_files(path), "precision": precision,
            "validation": validation}


def _brief(report: dict[str, Any]) -> dict[str, Any]:
    """A validation report without the list of shapes (the same for every check)."""
    return {k: v for k, v in report.items() if k != "cases"}


def _torch_reference(wrapper: ExportWrapper, signature: Signature) -> Runner:
    def reference(features: Features) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = wrapper(*(torch.from_numpy(features[n]) for n in signature.inputs))
        return {n: t.float().numpy() for n, t in zip(signature.outputs, out)}

    return reference


def _faster_default(target: Path, signature: Signature, tokenizer: Any) -> dict[str, Any]:
    """``--optimize``: the fused graph stays the default only if it runs faster than the fp32
    one on this machine (``timing.faster``), at batch 1 and 32 of 64 tokens."""
    from nlpforge.runtime.providers import make_session

    vocab = max(tokenizer.backend.get_vocab_size(), 2)
    shapes = [encoder_features(signature.inputs, batch, min(64, tokenizer.max_length), vocab,
                               padded=batch > 1, seed=5) for batch in (1, 32)]

    def run(path: Path) -> Any:
        session = make_session(str(path), device="cpu")
        return lambda: [session.run(None, features) for features in shapes]

    return faster({name: run(target / VARIANT_FILES[name]) for name in ("fp32", "optimized")},
                  "batch 1 and 32 of 64 tokens")


def _smoke_test(directory: Path, variant: str) -> None:
    """Load the finished export dir with the torch-free runtime and run one request."""
    from nlpforge.runtime.predictor import Predictor

    predictor = Predictor.load(directory, device="cpu", variant=variant)
    try:
        predictor.predict([predictor.task.example_request()])
    except Exception as exc:
        raise ExportError(f"the export loads but its {variant} model cannot predict: "
                          f"{type(exc).__name__}: {exc}")
