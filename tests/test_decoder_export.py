"""Decoder-only export with a KV cache, and the torch-free DecoderStepper over it.

GPT-2 (absolute positions) and Llama (rotary, grouped-query attention) are trained for a few
steps, exported once per module, and checked: graph names, the validation report, greedy
tokens identical to ``transformers``' ``generate()`` single and batched with left padding,
beam-style row selection, and the refusals.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import onnx
import pytest

from nlpforge.errors import ExportError, UsageError
from tests.conftest import write_jsonl

ROWS = [
    {"text": "the quick brown fox jumps over the lazy dog, again and again"},
    {"prompt": "question: how many legs does a spider have?", "completion": " eight"},
    {"text": "to be, or not to be, that is the question"},
] * 3
PROMPTS = ["the movie was", "once upon a time there was a little model", "hi"]


def _train(tmp, maker, name):
    from nlpforge.training.loop import TrainConfig, train

    base = maker(tmp / f"{name}-base")
    data = write_jsonl(tmp / f"{name}.jsonl", ROWS)
    run = tmp / f"{name}-run"
    # Validation runs the PyTorch model through predict_rows (GPT-2's forward takes
    # token_type_ids, which the task does not make: they must be left out, not required).
    train(TrainConfig(task="text-generation", model=str(base), train=str(data),
                      validation=str(data), output=str(run), max_steps=2, batch_size=4,
                      lr=1e-3, max_length=32, progress=False, device="cpu"))
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from nlpforge.testing.decoders import make_tiny_gpt2, make_tiny_llama

    tmp = tmp_path_factory.mktemp("decoder-runs")
    return {"gpt2": _train(tmp, make_tiny_gpt2, "gpt2"),
            "llama": _train(tmp, make_tiny_llama, "llama")}


@pytest.fixture(scope="module")
def exports(runs, tmp_path_factory):
    from nlpforge.export.onnx import export_run

    tmp = tmp_path_factory.mktemp("decoder-exports")
    for name, run in runs.items():
        export_run(str(run), str(tmp / name))
    return {name: tmp / name for name in runs}


def _manifest(directory):
    return json.loads((directory / "nlpforge.json").read_text())


def _stepper(directory, **kwargs):
    from nlpforge.runtime.generation.decoder import DecoderStepper

    return DecoderStepper.load(directory, _manifest(directory), device="cpu", **kwargs)


def _prompts(directory, texts):
    from nlpforge.runtime.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_dir(directory)
    tokenizer.padding_side = "left"
    return tokenizer.pad(tokenizer.encode(texts), ("input_ids", "attention_mask"))


def _greedy(stepper, ids, mask, new_tokens):
    """The minimal greedy loop generate() runs: finished rows are fed the pad token."""
    logits, state = stepper.start(ids, mask)
    out = []
    done = np.zeros(len(ids), dtype=bool)
    for _ in range(new_tokens):
        tokens = np.where(done, stepper.pad_token_id, logits.argmax(-1))
        out.append(tokens)
        done |= np.isin(tokens, stepper.eos_token_ids)
        if done.all():
            break
        logits, state = stepper.step(state, tokens)
    return np.concatenate([ids, np.stack(out, axis=1)], axis=1)


@functools.lru_cache(maxsize=2)
def _hf_model(run):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(run).eval()


def _hf_greedy(run, ids, mask, new_tokens):
    import torch

    model = _hf_model(run)
    with torch.inference_mode():
        out = model.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                             max_new_tokens=new_tokens, do_sample=False, num_beams=1)
    return out.numpy()


# -- the graph and its manifest --------------------------------------------------------------

@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_graph_has_cache_inputs_outputs_and_positions(exports, name):
    directory = exports[name]
    graph = onnx.load(str(directory / "model.onnx"), load_external_data=False).graph
    inputs = [i.name for i in graph.input]
    outputs = [o.name for o in graph.output]
    assert inputs == ["input_ids", "attention_mask", "position_ids", "past_key_values.0.key",
                      "past_key_values.0.value", "past_key_values.1.key",
                      "past_key_values.1.value"]
    assert outputs == ["logits", "present.0.key", "present.0.value", "present.1.key",
                       "present.1.value"]
    io = _manifest(directory)["io"]
    kv_heads = 2  # GPT-2: 2 heads; Llama: 4 query heads sharing 2 KV heads
    assert (io["num_layers"], io["num_kv_heads"]) == (2, kv_heads)
    assert io["head_dim"] == (16 if name == "gpt2" else 8)
    assert io["position_ids"] is True and io["eos_token_ids"] and "pad_token_id" in io
    for copied in ("tokenizer.json", "config.json", "generation_config.json"):
        assert (directory / copied).is_file()


def test_validation_covers_batches_caches_and_left_padding(exports):
    report = _manifest(exports["llama"])["validation"]
    assert report["passed"] and set(report["max_abs_diff"]) >= {"logits", "present.1.value"}
    assert max(report["max_abs_diff"].values()) < report["atol"]
    cases = report["cases"]
    assert {c["input_ids"][0] for c in cases} == {1, 3}
    assert {c["past_key_values"][2] for c in cases} >= {0, 5, 6, 7}
    assert any("left-padded" in c["case"] and c["past_key_values"][2] > 0 for c in cases)


# -- the stepper against transformers' generate() ---------------------------------------------

@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_greedy_tokens_match_generate_single_and_batched(runs, exports, name):
    stepper = _stepper(exports[name])
    for texts in (PROMPTS[:1], PROMPTS):
        batch = _prompts(exports[name], texts)
        if len(texts) > 1:
            assert (batch["attention_mask"][:, 0] == 0).any()  # really left-padded
        ours = _greedy(stepper, batch["input_ids"], batch["attention_mask"], 12)
        theirs = _hf_greedy(runs[name], batch["input_ids"], batch["attention_mask"], 12)
        assert ours.tolist() == theirs[:, :ours.shape[1]].tolist()


def test_cached_steps_equal_a_full_recompute(exports):
    """Logits after 5 cached steps equal those of the whole sequence run with no cache."""
    stepper = _stepper(exports["llama"])
    batch = _prompts(exports["llama"], PROMPTS)
    tokens = _greedy(stepper, batch["input_ids"], batch["attention_mask"], 5)[:, :-1]
    logits, state = stepper.start(batch["input_ids"], batch["attention_mask"])
    for column in range(batch["input_ids"].shape[1], tokens.shape[1]):
        logits, state = stepper.step(state, tokens[:, column])
    assert state.length == tokens.shape[1]
    mask = np.concatenate([batch["attention_mask"],
                           np.ones((len(tokens), tokens.shape[1] - batch["input_ids"].shape[1]),
                                   dtype=np.int64)], axis=1)
    full, _ = stepper.start(tokens, mask)
    np.testing.assert_allclose(logits, full, atol=1e-4)


def test_cache_stays_in_ortvalues_through_io_binding(exports):
    """The CUDA code path (IO binding, OrtValues on the device) run on CPU bindings."""
    from onnxruntime import OrtValue

    stepper = _stepper(exports["gpt2"], binding=True)
    assert stepper.graph.binding
    batch = _prompts(exports["gpt2"], PROMPTS[:2])
    logits, state = stepper.start(batch["input_ids"], batch["attention_mask"])
    assert logits.shape == (2, stepper.vocab_size) and logits.dtype == np.float32
    _, after = stepper.step(state, logits.argmax(-1))
    assert all(isinstance(v, OrtValue) and v.device_name() == "cpu" for v in after.cache)
    assert after.cache[0].shape() == [2, 2, state.length + 1, 16]
    assert state.cache[0].shape() == [2, 2, state.length, 16]  # the old state is untouched


def test_numpy_and_io_binding_paths_agree(exports):
    """On the CPU the cache stays numpy (no binding); both paths give the same logits,
    through steps and a row selection."""
    plain, bound = _stepper(exports["llama"]), _stepper(exports["llama"], binding=True)
    assert not plain.graph.binding
    batch = _prompts(exports["llama"], PROMPTS)
    results = []
    for stepper in (plain, bound):
        logits, state = stepper.start(batch["input_ids"], batch["attention_mask"])
        seen = [logits]
        for tokens in ([5, 6, 7], [8, 9, 10]):
            logits, state = stepper.step(state, np.array(tokens))
            seen.append(logits)
        state = stepper.select(state, np.array([2, 0, 0]))
        seen.append(stepper.step(state, np.array([11, 12, 13]))[0])
        results.append(seen)
        assert isinstance(state.cache[0], np.ndarray) == (stepper is plain)
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, atol=1e-6)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_optimized_export_generates_the_same_tokens_and_the_faster_is_the_default(runs, tmp_path, name):
    """--optimize extended: ONNX Runtime's fusions for TorchScript graphs, validated after
    every pass; the stepper loads the optimized graph and greedy still equals generate()."""
    from nlpforge.cli.export import summary
    from nlpforge.export.onnx import export_run

    out = tmp_path / name
    manifest = export_run(str(runs[name]), str(out), optimize="extended")
    choice = manifest["default_choice"]  # the faster of fp32 and optimized, timed here
    assert manifest["default_variant"] == choice["variant"]
    assert choice["seconds"][choice["variant"]] == min(choice["seconds"].values())
    optimized = manifest["variants"]["optimized"]
    assert optimized["graphs"] == {"model.onnx": "model.optimized.onnx"}
    record = manifest["optimization"]["graphs"]["model.onnx"]
    assert [s["pass"] for s in record["steps"]] == ["transformer-fusions", "onnxruntime-basic"]
    assert all(s["validation"]["passed"] for s in record["steps"])
    fused = {op for s in record["steps"] for op in s["applied"]}
    assert fused and all(op.startswith("com.microsoft.") for op in fused)
    assert summary(str(out), {**manifest, "export_seconds": 1})["variants"]["optimized"]["applied"]
    stepper = _stepper(out, variant="optimized")
    assert stepper.session._model_path.endswith("model.optimized.onnx")
    batch = _prompts(out, PROMPTS)
    ours = _greedy(stepper, batch["input_ids"], batch["attention_mask"], 12)
    theirs = _hf_greedy(runs[name], batch["input_ids"], batch["attention_mask"], 12)
    assert ours.tolist() == theirs[:, :ours.shape[1]].tolist()
    fp32 = _stepper(out, variant="fp32")
    assert fp32.session._model_path.endswith("/model.onnx")


def test_select_reorders_and_duplicates_cache_rows(exports):
    stepper = _stepper(exports["llama"])
    batch = _prompts(exports["llama"], PROMPTS[:2])
    logits, state = stepper.start(batch["input_ids"], batch["attention_mask"])
    index = np.array([1, 1, 0])
    chosen = stepper.select(state, index)
    stepped, _ = stepper.step(chosen, logits.argmax(-1)[index])
    # the same rows started directly, in that order
    direct_logits, direct = stepper.start(batch["input_ids"][index], batch["attention_mask"][index])
    expected, _ = stepper.step(direct, direct_logits.argmax(-1))
    np.testing.assert_allclose(stepped, expected, atol=1e-5)
    assert stepper.select(state, np.arange(2)) is state


def test_stepper_refuses_right_padded_prompts(exports):
    from nlpforge.errors import DataError

    stepper = _stepper(exports["gpt2"])
    ids = np.array([[5, 6, 0]])
    with pytest.raises(DataError, match="left-padded"):
        stepper.start(ids, np.array([[1, 1, 0]]))


# -- other architectures, refusals -------------------------------------------------------------

@pytest.mark.parametrize("kind", ["mistral", "qwen2"])
def test_llama_like_architectures_export_and_validate(tmp_path, kind):
    """The same wrapper, exporter and validation pass, with a sliding window of 4 that the
    validation goes past (the full matrix is tests/test_decoder_matrix.py)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from nlpforge.export.decoder import DecoderWrapper, _export, model_sizes, validate
    from nlpforge.export.decoder_arch import architecture
    from nlpforge.export.onnx import ExportOptions

    config = AutoConfig.for_model(kind, vocab_size=97, hidden_size=32, intermediate_size=64,
                                  num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, sliding_window=4,
                                  use_sliding_window=True, max_position_embeddings=128,
                                  **({"max_window_layers": 1} if kind == "qwen2" else {}))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    wrapper = DecoderWrapper(model, architecture(config)).eval()
    sizes = model_sizes(model, wrapper.arch, tokenizer=None)
    _export(wrapper, sizes, tmp_path / "model.onnx", ExportOptions(), kind)
    report = validate(wrapper, sizes, tmp_path / "model.onnx", 1e-4)
    assert report["passed"] and report["max_abs_diff"]["logits"] < 1e-4
    assert sizes["sliding_window"] == 4
    assert "past the sliding window of 4" in report["cases"][-1]["case"]


def test_unsupported_architecture_is_refused():
    from types import SimpleNamespace

    from nlpforge.export.decoder_arch import architecture

    with pytest.raises(ExportError, match="model type 'mamba'.*supported: arcee, bloom"):
        architecture(SimpleNamespace(model_type="mamba"))


def test_mismatch_and_unsupported_options_write_nothing(runs, tmp_path):
    from nlpforge.export.onnx import export_run

    out = tmp_path / "strict"
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_run(str(runs["gpt2"]), str(out), atol=1e-12)
    assert not out.exists() and not list(tmp_path.iterdir())
    with pytest.raises(UsageError, match="--quantize.*decoder"):
        export_run(str(runs["gpt2"]), str(out), quantize="int8")
    assert not out.exists()


def test_stepper_refuses_an_export_without_cache_fields(exports, tmp_path):
    from nlpforge.errors import ModelDirError
    from nlpforge.runtime.generation.decoder import DecoderStepper

    manifest = _manifest(exports["gpt2"])
    del manifest["io"]["num_kv_heads"]
    with pytest.raises(ModelDirError, match="lacks num_kv_heads"):
        DecoderStepper.load(exports["gpt2"], manifest)
    manifest = _manifest(exports["gpt2"])
    with pytest.raises(ModelDirError, match="model.onnx is missing"):
        DecoderStepper.load(tmp_path, manifest)
