"""nlpforge export for encoder-decoder models (T5, BART, Marian, …): three ONNX graphs.

``encoder_model.onnx``, ``decoder_model.onnx`` (first step, computes both caches) and
``decoder_with_past_model.onnx`` (later steps, self-attention cache growing, cross-attention
cache reused) — optimum's ``ORTModelForSeq2SeqLM`` layout and names (``seq2seq_graphs.py``).

Each graph is validated against PyTorch before the export dir appears: batch sizes 1 to 4,
encoder inputs short and long, right- and left-padded, decoder prompts of 1 and several
tokens, caches of several lengths built by the PyTorch decoder itself. An output off by more
than ``--atol`` passes only where float64 PyTorch shows float32 rounding reaches that far
(``validate.compare``; docs/export.md says why). The manifest's ``io``
records what ``EncoderDecoderStepper`` needs (files, cache sizes, special token ids).

Exporter: torch.onnx's TorchScript exporter, as optimum does (several times faster than the
dynamo exporter on these graphs, same numbers); dynamo is tried when TorchScript fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from nlpforge.errors import ExportError
from nlpforge.export import files, generative
from nlpforge.export.convert import eager_attention
from nlpforge.export.seq2seq_graphs import (DECODER_FILE, DECODER_WITH_PAST_FILE, ENCODER_FILE,
                                            CacheLayout, cache_layout, graphs, prepare_model,
                                            run_graph, run_nudged)
from nlpforge.export.optimize import ort_fusions
from nlpforge.export.validate import (ROUNDING_MARGIN, Features, compare, memoized,
                                      onnx_runner)
from nlpforge.manifest import Manifest

#: ONNX Runtime transformer-optimizer model type per ``model_type`` (--optimize); others: bart
FUSIONS = {"t5": "t5", "mt5": "t5", "umt5": "t5"}
#: Sizes of the trace inputs: distinct, and none of them 1 (a tracer may specialise on 1).
TRACE = {"batch": 2, "encoder": 7, "decoder": 3, "past": 5}


def export_encoder_decoder(run_dir: str, output: str, opts: Any, manifest: Manifest,
                           task: Any, model: Any, tokenizer: Any) -> dict[str, Any]:
    """Export an encoder-decoder run dir to ``output``; nothing is written unless all three
    graphs match PyTorch on every validation case. Returns the export manifest."""
    generative.check_options(opts, "encoder-decoder")
    eager_attention(model)
    prepare_model(model)
    model.eval()
    special = special_ids(Path(run_dir), model.config, tokenizer)
    layout = cache_layout(model)
    wrappers = graphs(model, layout)

    def build(target: Path) -> dict[str, Any]:
        exporters, opset = {}, None
        for name, wrapper in wrappers.items():
            exporters[name], opset = _export(wrapper, _trace_inputs(wrapper, layout),
                                             target / name, opts, run_dir)
        model.eval()  # the exporter restores training flags; references need eval mode
        report = validate(wrappers, target, layout, tokenizer, special["pad_token_id"],
                          opts.atol)
        io = {"encoder": ENCODER_FILE, "decoder": DECODER_FILE,
              "decoder_with_past": DECODER_WITH_PAST_FILE,
              "inputs": ["input_ids", "attention_mask"], "outputs": ["logits"],
              "graphs": {name: {"inputs": list(w.signature.inputs),
                                "outputs": list(w.signature.outputs),
                                "dynamic_axes": w.signature.axes_json()}
                         for name, w in wrappers.items()},
              **layout.to_json(), "cache_dtype": "float32", **special}
        model_files = [f for name in wrappers for f in files.model_files(target / name)]
        record = generative.export_record(manifest, run_dir, io, model_files, ENCODER_FILE,
                                      exporters, opset, report)
        if opts.optimize == "none":
            return record

        def check(name: str) -> Callable[[Path], dict[str, Any]]:
            def run(path: Path) -> dict[str, Any]:
                checked = validate(wrappers, target, layout, tokenizer,
                                   special["pad_token_id"], opts.atol, {name: path})
                return {k: v for k, v in checked["graphs"][name].items() if k != "cases"}
            return run

        fusions = ort_fusions(FUSIONS.get(model.config.model_type, "bart"), layout.num_heads,
                              layout.hidden_size)
        optimization, names = generative.optimize_graphs(target, {n: check(n) for n in wrappers},
                                                     opts, fusions)
        return generative.with_optimized(record, optimization, names, target)

    return generative.write_export(output, opts, run_dir, build,
                               lambda target, record: smoke_test(target, record, task))


def special_ids(run_dir: Path, config: Any, tokenizer: Any) -> dict[str, Any]:
    """Decoder start, EOS, pad and forced-BOS ids as ``generate()`` uses them."""
    ids = generative.special_ids(run_dir, config, tokenizer)
    if ids["decoder_start_token_id"] is None:
        raise ExportError(f"{run_dir}: the model config has no decoder_start_token_id; set it "
                          f"in config.json or generation_config.json")
    return {k: ids[k] for k in ("decoder_start_token_id", "eos_token_ids", "pad_token_id",
                                "forced_bos_token_id")}


# -- tracing ---------------------------------------------------------------------------------

def _padded(batch: int, length: int, vocab: int, pad_id: int, side: str,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random ids and a mask; rows after the first are shorter, padded on ``side``."""
    ids = rng.integers(min(5, vocab - 1), vocab, size=(batch, length), dtype=np.int64)
    mask = np.ones((batch, length), dtype=np.int64)
    for row in range(1, batch):
        if side == "none" or length < 3:
            break
        real = int(rng.integers(2, length))
        cols = slice(real, None) if side == "right" else slice(0, length - real)
        mask[row, cols] = 0
        ids[row, cols] = pad_id
    return ids, mask


def _trace_inputs(wrapper: Any, layout: CacheLayout) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1234)
    b, s = TRACE["batch"], TRACE["encoder"]
    ids, mask = _padded(b, s, layout.vocab_size, 0, "right", rng)
    hidden = rng.standard_normal((b, s, layout.hidden_size)).astype(np.float32)
    dec_ids = rng.integers(0, layout.vocab_size, size=(b, TRACE["decoder"]), dtype=np.int64)
    features: dict[str, np.ndarray] = {"attention_mask": mask, "encoder_attention_mask": mask,
                                       "encoder_hidden_states": hidden}
    names = wrapper.signature.inputs
    features["input_ids"] = ids if "attention_mask" in names else \
        dec_ids if "encoder_hidden_states" in names else dec_ids[:, :1]
    for name in names:
        if name.startswith("past_key_values."):
            cross = ".encoder." in name
            heads = layout.cross_num_heads if cross else layout.num_heads
            dim = layout.cross_head_dim if cross else layout.head_dim
            length = s if cross else TRACE["past"]
            features[name] = rng.standard_normal((b, heads, length, dim)).astype(np.float32)
    return {n: features[n] for n in names}


def _export(wrapper: Any, dummy: dict[str, np.ndarray], path: Path, opts: Any,
            run_dir: str) -> tuple[str, int]:
    """Write one graph; returns the exporter that did it and the opset."""
    sig = wrapper.signature
    args = tuple(torch.from_numpy(dummy[n]) for n in sig.inputs)
    names = (list(sig.inputs), list(sig.outputs), sig.dynamic_axes)

    def dynamo(target: Path, opset: int, external: bool) -> None:
        _dynamo_export(wrapper, args, target, opset, external)

    return generative.trace(wrapper, args, path, opts, run_dir, names, dynamo)


def _dynamo_export(wrapper: Any, args: tuple, path: Path, opset: int, external: bool) -> None:
    """The fallback exporter; its dynamic shapes follow the wrapper's forward signature
    (the caches are one ``*past`` argument)."""
    sig = wrapper.signature
    dims: dict[str, Any] = {}
    shapes = [{axis: dims.setdefault(label, torch.export.Dim(label, min=1, max=1 << 20))
               for axis, label in sig.dynamic_axes.get(name, {}).items()}
              for name in sig.inputs]
    has_past = any(n.startswith("past_key_values.") for n in sig.inputs)
    structure: tuple = (shapes[0], shapes[1], tuple(shapes[2:])) if has_past else tuple(shapes)
    program = torch.onnx.export(wrapper, args, dynamo=True, input_names=list(sig.inputs),
                                output_names=list(sig.outputs), dynamic_shapes=structure,
                                opset_version=opset, external_data=external, verbose=False)
    program.save(str(path), external_data=external)


# -- validation ------------------------------------------------------------------------------

#: (label, batch, encoder length, padding side, decoder prompt length, cache length)
CASES = (
    ("batch 1, 3 tokens", 1, 3, "none", 1, 1),
    ("batch 4, 17 tokens, right-padded", 4, 17, "right", 4, 4),
    ("batch 3, 11 tokens, left-padded", 3, 11, "left", 1, 9),
    ("batch 2, {long} tokens, right-padded", 2, None, "right", 6, 2),
)


def validate(wrappers: dict[str, Any], target: Path, layout: CacheLayout, tokenizer: Any,
             pad_id: int, atol: float, paths: dict[str, Path] | None = None) -> dict[str, Any]:
    """Compare every graph with PyTorch on shapes the trace never saw; ExportError on any
    output off by more than ``atol`` that is also further from float64 PyTorch than float32
    rounding explains (``validate.compare``). The decoders get the PyTorch encoder's states
    and the PyTorch decoder's caches, so each graph is checked on what it will really
    receive. ``paths`` (graph name → file): check only these files, in place of
    ``target/name``."""
    encoder, decoder, with_past = (wrappers[n] for n in (ENCODER_FILE, DECODER_FILE,
                                                          DECODER_WITH_PAST_FILE))
    long = max(4, min(int(getattr(tokenizer, "max_length", 64)), 64))
    rng = np.random.default_rng(7)
    cases: dict[str, list[tuple[str, Features]]] = {n: [] for n in wrappers}
    for label, batch, length, side, prompt, past in CASES:
        label = label.format(long=long)
        ids, mask = _padded(batch, length or long, layout.vocab_size, pad_id, side, rng)
        enc = {"input_ids": ids, "attention_mask": mask}
        cases[ENCODER_FILE].append((label, enc))
        hidden = run_graph(encoder, enc)["last_hidden_state"]
        dec = {"input_ids": rng.integers(0, layout.vocab_size, (batch, prompt), dtype=np.int64),
               "encoder_attention_mask": mask, "encoder_hidden_states": hidden}
        cases[DECODER_FILE].append((f"{label}, decoder prompt {prompt}", dec))
        first = run_graph(decoder, {**dec, "input_ids": rng.integers(
            0, layout.vocab_size, (batch, past), dtype=np.int64)})
        step: Features = {"input_ids": rng.integers(0, layout.vocab_size, (batch, 1),
                                                    dtype=np.int64),
                          "encoder_attention_mask": mask}
        for name, value in first.items():
            if name.startswith("present."):
                step[name.replace("present.", "past_key_values.", 1)] = value
        cases[DECODER_WITH_PAST_FILE].append((f"{label}, cache {past}", step))
    reports = {}
    for name, wrapper in wrappers.items():
        if paths is not None and name not in paths:
            continue
        outputs = wrapper.signature.outputs
        reference = memoized(lambda f, w=wrapper: run_graph(w, f))
        exact = memoized(lambda f, w=wrapper: run_graph(w, f, torch.float64))
        try:
            path = paths[name] if paths is not None else target / name
            report = compare(cases[name], reference, onnx_runner(path, outputs), atol, exact,
                             lambda f, w=wrapper: run_nudged(w, f))
        except ExportError as exc:
            raise ExportError(f"{name}: {exc}")
        report["max_abs_diff"] = _worst(report["max_abs_diff"])
        report["rounding"] = {kind: {k: max(report["rounding"][n][k] for n in names)
                                     for k in report["rounding"][names[0]]}
                              for kind, names in _kinds(report["rounding"]).items()}
        report["cases"] = [label for label, _ in cases[name]]
        reports[name] = report
    return {"atol": atol, "rounding_margin": ROUNDING_MARGIN, "passed": True,
            "graphs": reports}


def _kind(name: str) -> str:
    """The output kind (logits, hidden states, self/cross caches) rather than the layer."""
    return name if not name.startswith("present.") else \
        "present.*.decoder" if ".decoder." in name else "present.*.encoder"


def _kinds(names: dict[str, Any]) -> dict[str, list[str]]:
    kinds: dict[str, list[str]] = {}
    for name in names:
        kinds.setdefault(_kind(name), []).append(name)
    return kinds


def _worst(diffs: dict[str, float]) -> dict[str, float]:
    """The largest difference per output kind."""
    return {kind: max(round(diffs[n], 8) for n in names) for kind, names in _kinds(diffs).items()}


# -- smoke test ---------------------------------------------------------------------------

def smoke_test(directory: Path, manifest: Manifest, task: Any) -> None:
    """Load the finished export with the torch-free stepper: encode the task's example
    request, run the first decoder step and one more."""
    from nlpforge.runtime.generation.seq2seq import EncoderDecoderStepper
    from nlpforge.runtime.tokenizer import Tokenizer

    def open_export() -> tuple[Any, dict[str, np.ndarray]]:
        stepper = EncoderDecoderStepper.load(directory, manifest, device="cpu")
        tokenizer = Tokenizer.from_dir(directory, manifest["tokenizer"]["max_length"],
                                       manifest["tokenizer"].get("pad_id"))
        return stepper, task.encode([task.example_request(), task.example_request()],
                                    tokenizer)

    generative.smoke_test(open_export)


__all__ = ["export_encoder_decoder", "special_ids", "validate"]
