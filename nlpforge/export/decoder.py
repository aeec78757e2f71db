"""nlpforge export for decoder-only models: one ``model.onnx`` with a KV cache.

The graph takes ``input_ids``, ``attention_mask`` (past + new tokens), ``position_ids`` and
``past_key_values.{i}.key/value`` and returns ``logits`` and ``present.{i}.key/value`` —
the layout optimum's ``ORTModelForCausalLM`` reads. The same graph serves the prompt (a
cache of length 0) and every new token.

Exporter: torch.onnx's TorchScript exporter (``dynamo=False``), as optimum does for
decoders. The dynamo exporter gives the same numbers here but takes ~15x longer per model,
and its symbolic shapes cannot express a cache length of 0 (it specializes 0 and 1); the
TorchScript graph handles the empty cache and is validated on it. Should TorchScript fail
on an architecture, the dynamo exporter is tried before giving up.

transformers 5 takes the cache as a ``Cache`` object: the wrapper builds one from flat
tensors and flattens the returned one (``decoder_arch.py``, which also holds what differs
between architectures). Positions are an input where the model takes them: a traced graph
would otherwise bake the dummy's past length into them. Models that derive positions from
the attention mask (BLOOM's alibi) get none, and the manifest says so.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from nlpforge.export import files, generative
from nlpforge.export.convert import eager_attention
from nlpforge.export.decoder_arch import (Architecture, DecoderShape, architecture, describe,
                                          prepare_model)
from nlpforge.export.decoder_cases import decoder_cases, empty_cache, position_ids
from nlpforge.export.optimize import ort_fusions
from nlpforge.export.validate import Features, compare, memoized, onnx_runner
from nlpforge.manifest import Manifest

MODEL_FILE = "model.onnx"


def past_names(num_layers: int) -> list[str]:
    return [f"past_key_values.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


def present_names(num_layers: int) -> list[str]:
    return [f"present.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


def takes_positions(model: Any) -> bool:
    """Whether the model's forward takes ``position_ids`` (``generate()`` passes them then)."""
    return "position_ids" in inspect.signature(model.forward).parameters


class DecoderWrapper(torch.nn.Module):
    """Flat tensors in (ids, mask, positions if the model takes them, past key/values),
    flat tensors out."""

    def __init__(self, model: torch.nn.Module, arch: Architecture):
        super().__init__()
        self.model, self.arch = model, arch
        # transformers ≥ 5.2x calls the cache argument ``cache``; earlier 5.x ``past_key_values``
        params = inspect.signature(model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        self.positions = takes_positions(model)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                *rest: torch.Tensor) -> tuple[torch.Tensor, ...]:
        extra = {"position_ids": rest[0]} if self.positions else {}
        past = rest[1:] if self.positions else rest
        cache = self.arch.build_cache(self.model.config, past)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True,
                         **extra, **{self.cache_arg: cache})
        returned = out.get("cache")
        if returned is None:
            returned = out.get("past_key_values")
        return (out.logits, *self.arch.flatten(returned))


def signature(num_layers: int, positions: bool = True
              ) -> tuple[list[str], list[str], dict[str, dict[int, str]]]:
    """Input names, output names and dynamic axes (optimum's names)."""
    inputs = ["input_ids", "attention_mask", *(["position_ids"] if positions else []),
              *past_names(num_layers)]
    outputs = ["logits", *present_names(num_layers)]
    token = {0: "batch_size", 1: "sequence_length"}
    axes: dict[str, dict[int, str]] = {
        "input_ids": token, "logits": token,
        "attention_mask": {0: "batch_size", 1: "total_sequence_length"}}
    if positions:
        axes["position_ids"] = token
    for name in past_names(num_layers):
        axes[name] = {0: "batch_size", 2: "past_sequence_length"}
    for name in present_names(num_layers):
        axes[name] = {0: "batch_size", 2: "total_sequence_length"}
    return inputs, outputs, axes


def export_decoder(run_dir: str, output: str, opts: Any, manifest: Manifest, task: Any,
                   model: Any, tokenizer: Any) -> dict[str, Any]:
    """Export a decoder run dir to ``output`` with a KV cache; nothing is written unless the
    graph matches PyTorch on every validation case. Returns the export manifest."""
    generative.check_options(opts, "decoder (text-generation)")
    arch = architecture(model.config)
    eager_attention(model)
    prepare_model(model)
    model.eval()
    wrapper = DecoderWrapper(model, arch).eval()
    sizes = model_sizes(model, arch, tokenizer)
    ids = generative.special_ids(Path(run_dir), model.config, tokenizer)
    special = {k: ids[k] for k in ("eos_token_ids", "pad_token_id", "bos_token_id")}

    def build(target: Path) -> dict[str, Any]:
        exporter, opset = _export(wrapper, sizes, target / MODEL_FILE, opts, run_dir)
        wrapper.eval()
        model.eval()  # the exporter restores training flags; references need eval mode
        report = validate(wrapper, sizes, target / MODEL_FILE, opts.atol)
        record = generative.export_record(manifest, run_dir, _io(sizes, special),
                                      files.model_files(target / MODEL_FILE), MODEL_FILE,
                                      exporter, opset, report)
        if opts.optimize == "none":
            return record

        def check(path: Path) -> dict[str, Any]:
            checked = validate(wrapper, sizes, path, opts.atol)
            return {k: v for k, v in checked.items() if k != "cases"}

        fusions = ort_fusions(arch.fusions, sizes["num_heads"], sizes["hidden_size"])
        optimization, names = generative.optimize_graphs(target, {MODEL_FILE: check}, opts, fusions)
        return generative.with_optimized(record, optimization, names, target)

    return generative.write_export(output, opts, run_dir, build, smoke_test)


def model_sizes(model: Any, arch: Architecture, tokenizer: Any) -> dict[str, Any]:
    """``DecoderShape``'s fields, whether the graph takes positions, and the pad id the
    validation pads with."""
    shape: DecoderShape = describe(model.config, arch)
    return {**shape.__dict__, "positions": takes_positions(model),
            "pad_token_id": int(getattr(tokenizer, "pad_id", None) or 0)}


def _dummy(sizes: dict[str, int]) -> list[torch.Tensor]:
    """Batch 2, 5 new tokens after a cache of 3, the second row left-padded: every dimension
    differs, so none is mistaken for a constant while tracing."""
    mask = np.ones((2, 8), dtype=np.int64)
    mask[1, :2] = 0
    rng = np.random.default_rng(0)
    ids = rng.integers(0, sizes["vocab_size"], size=(2, 5), dtype=np.int64)
    past = [rng.standard_normal((2, sizes["kv_heads"], 3, sizes[dim])).astype(np.float32)
            for _ in range(sizes["num_layers"]) for dim in ("head_dim", "value_head_dim")]
    positions = [position_ids(mask)[:, 3:]] if sizes["positions"] else []
    return [torch.from_numpy(a) for a in (ids, mask, *positions, *past)]


def _export(wrapper: DecoderWrapper, sizes: dict[str, int], path: Path, opts: Any,
            run_dir: str) -> tuple[str, int]:
    """Write the graph; returns the exporter that did it and the opset."""
    names = signature(sizes["num_layers"], sizes["positions"])
    args = tuple(_dummy(sizes))

    def dynamo(target: Path, opset: int, external: bool) -> None:
        _dynamo_export(wrapper, args, target, names[0], names[1], opset, external)

    return generative.trace(wrapper, args, path, opts, run_dir, names, dynamo)


def _dynamo_export(wrapper: DecoderWrapper, args: tuple, path: Path, inputs: list[str],
                   outputs: list[str], opset: int, external: bool) -> None:
    dim = torch.export.Dim
    batch, new = dim("batch_size", max=1 << 16), dim("sequence_length", max=1 << 20)
    past, total = dim("past_sequence_length", max=1 << 20), dim("total_sequence_length",
                                                                max=1 << 21)
    # the forward's structure: input_ids, attention_mask, *rest (positions, then the caches)
    positions = [{0: batch, 1: new}] if "position_ids" in inputs else []
    shapes = ({0: batch, 1: new}, {0: batch, 1: total},
              (*positions, *({0: batch, 2: past} for _ in args[2 + len(positions):])))
    program = torch.onnx.export(wrapper, args, dynamo=True, input_names=inputs,
                                output_names=outputs, dynamic_shapes=shapes,
                                opset_version=opset, external_data=external, verbose=False)
    program.save(str(path), external_data=external)


def validate(wrapper: DecoderWrapper, sizes: dict[str, int], path: Path,
             atol: float) -> dict[str, Any]:
    """Compare logits and presents with PyTorch; ExportError on any difference over ``atol``."""
    inputs, outputs, _ = signature(sizes["num_layers"], sizes["positions"])
    first_past = inputs.index("past_key_values.0.key")

    def reference(features: Features) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = wrapper(*(torch.from_numpy(np.ascontiguousarray(features[n])) for n in inputs))
        return {n: t.float().numpy() for n, t in zip(outputs, out)}

    cases = decoder_cases(reference, inputs[first_past:], outputs[1:], sizes)
    report = compare(cases, memoized(reference), onnx_runner(path, outputs), atol)
    report["cases"] = [_case_summary(label, f) for label, f in cases]
    return report


def _case_summary(label: str, features: Features) -> dict[str, Any]:
    return {"case": label, "input_ids": list(features["input_ids"].shape),
            "attention_mask": list(features["attention_mask"].shape),
            "past_key_values": list(features["past_key_values.0.key"].shape)}


def _io(sizes: dict[str, int], special: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``io``: what ``DecoderStepper`` needs to load and feed the graph."""
    inputs, outputs, axes = signature(sizes["num_layers"], sizes["positions"])
    return {"model": MODEL_FILE, "inputs": inputs, "outputs": outputs,
            "dynamic_axes": {k: {str(a): n for a, n in v.items()} for k, v in axes.items()},
            "num_layers": sizes["num_layers"], "num_kv_heads": sizes["kv_heads"],
            "head_dim": sizes["head_dim"], "value_head_dim": sizes["value_head_dim"],
            "vocab_size": sizes["vocab_size"],
            "position_ids": sizes["positions"], "sliding_window": sizes["sliding_window"],
            "architecture": sizes["model_type"], "cache_dtype": "float32", **special}


def smoke_test(directory: Path, manifest: Manifest,
               prompts: Sequence[str] = ("nlpforge export check", "ok")) -> None:
    """Load the finished export with the torch-free stepper; one prompt step and one token."""
    from nlpforge.runtime.generation.decoder import DecoderStepper
    from nlpforge.runtime.tokenizer import Tokenizer

    def open_export() -> tuple[Any, dict[str, np.ndarray]]:
        stepper = DecoderStepper.load(directory, manifest, device="cpu")
        tokenizer = Tokenizer.from_dir(directory, manifest["tokenizer"]["max_length"],
                                       manifest["tokenizer"].get("pad_id"))
        tokenizer.padding_side = "left"
        return stepper, tokenizer.pad(tokenizer.encode(list(prompts)),
                                      ("input_ids", "attention_mask"))

    generative.smoke_test(open_export)


__all__ = ["DecoderWrapper", "empty_cache", "export_decoder", "signature", "validate"]
