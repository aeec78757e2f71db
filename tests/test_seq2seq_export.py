"""Encoder-decoder export (T5, BART; Marian when slow tests run) and the ONNX
EncoderDecoderStepper, checked against PyTorch and transformers' generate()."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nlpforge.runtime.generation import search
from tests.conftest import run_cli, write_jsonl

ROWS = [{"source": f"the house number {i} is small", "target": f"das haus {i} ist klein"}
        for i in range(16)]
TEXTS = ["the house number 3 is small", "hello",
         "a man in a blue shirt is standing on a ladder near two dogs in the snow"]
#: Wider initial weights than transformers' defaults, so a random tiny model's greedy output
#: is not one token repeated (a parity test should see the argmax move).
WIDE = {"t5": {"initializer_factor": 1.5}, "bart": {"init_std": 0.3},
        "marian": {"init_std": 0.3}}


def _make(kind: str, directory: Path) -> Path:
    from nlpforge.testing import encoder_decoders as tiny

    return getattr(tiny, f"make_tiny_{kind}")(directory, **WIDE[kind])


def _train_and_export(kind: str, root: Path) -> tuple[Path, Path]:
    from nlpforge.export.onnx import export_run
    from nlpforge.training.loop import TrainConfig, train

    base = _make(kind, root / "base")
    data = write_jsonl(root / "train.jsonl", ROWS)
    run = root / "run"
    train(TrainConfig(task="text2text-generation", model=str(base), train=str(data),
                      output=str(run), max_steps=1, batch_size=8, lr=1e-4, progress=False))
    export_run(str(run), str(root / "export"))
    return run, root / "export"


@pytest.fixture(scope="module", params=["t5", "bart"])
def exported(request, tmp_path_factory):
    run, export = _train_and_export(request.param, tmp_path_factory.mktemp(request.param))
    return request.param, run, export


_LOADED: dict = {}


def _load(run: Path, export: Path):
    """Manifest, stepper, tokenizer and PyTorch model of one export (loaded once)."""
    if export not in _LOADED:
        _LOADED[export] = _open(run, export)
    return _LOADED[export]


def _open(run: Path, export: Path):
    from transformers import AutoModelForSeq2SeqLM

    from nlpforge.runtime.generation.seq2seq import EncoderDecoderStepper
    from nlpforge.runtime.tokenizer import Tokenizer

    manifest = json.loads((export / "nlpforge.json").read_text())
    stepper = EncoderDecoderStepper.load(export, manifest, device="cpu")
    tokenizer = Tokenizer.from_dir(export, 64, manifest["tokenizer"]["pad_id"])
    model = AutoModelForSeq2SeqLM.from_pretrained(run).eval()
    return manifest, stepper, tokenizer, model


def _batch(tokenizer, texts, side="right"):
    tokenizer.padding_side = side
    try:
        return tokenizer.pad(tokenizer.encode(texts), ("input_ids", "attention_mask"))
    finally:
        tokenizer.padding_side = "right"


def _greedy(stepper, input_ids, attention_mask, max_new_tokens):
    """The smallest greedy loop: finished rows get the pad token, as generate() does."""
    logits, state = stepper.start(input_ids, attention_mask)
    rows = input_ids.shape[0]
    out = [np.full(rows, stepper.decoder_start_token_id)]
    done = np.zeros(rows, dtype=bool)
    for i in range(max_new_tokens):
        token = np.where(done, stepper.pad_token_id, logits.argmax(-1))
        out.append(token)
        done |= np.isin(token, stepper.eos_token_ids)
        if done.all() or i == max_new_tokens - 1:
            break
        logits, state = stepper.step(state, token)
    return np.stack(out, axis=1)


def _generate(model, batch, **kwargs):
    with torch.inference_mode():
        return model.generate(input_ids=torch.from_numpy(batch["input_ids"]),
                              attention_mask=torch.from_numpy(batch["attention_mask"]),
                              do_sample=False, **kwargs).numpy()


def test_export_layout_and_manifest(exported):
    kind, run, export = exported
    for name in ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx",
                 "tokenizer.json", "config.json", "generation_config.json"):
        assert (export / name).is_file(), name
    manifest = json.loads((export / "nlpforge.json").read_text())
    io = manifest["io"]
    config = json.loads((run / "config.json").read_text())
    assert manifest["kind"] == "export" and manifest["family"] == "encoder-decoder"
    assert io["num_layers"] == 2 and io["num_heads"] == 2 and io["head_dim"] == 16
    assert io["decoder_start_token_id"] == config["decoder_start_token_id"]
    assert io["eos_token_ids"] == [config["eos_token_id"]]
    assert io["pad_token_id"] == config["pad_token_id"]
    past = io["graphs"]["decoder_with_past_model.onnx"]["inputs"]
    assert "past_key_values.1.encoder.value" in past and "past_key_values.0.decoder.key" in past
    report = manifest["validation"]["graphs"]
    assert set(report) == {"encoder_model.onnx", "decoder_model.onnx",
                           "decoder_with_past_model.onnx"}
    margin = manifest["validation"]["rounding_margin"]
    for r in report.values():
        assert r["passed"] and set(r["rounding"]) <= set(r["max_abs_diff"])
        for kind, diff in r["max_abs_diff"].items():  # within --atol, or float32's rounding
            seen = r["rounding"].get(kind)
            assert 0 <= diff <= 1e-4 or \
                seen["export"] <= max(1e-4, margin * seen["float32_pytorch"])
    assert any("left-padded" in c for c in report["decoder_with_past_model.onnx"]["cases"])


@pytest.mark.parametrize("side", ["right", "left"])
def test_stepper_logits_match_pytorch_at_every_step(exported, side):
    """Random forced tokens through start/step; each step's logits equal a full PyTorch
    forward over the same decoder prefix (padded batch, encoder padded on either side)."""
    _, run, export = exported
    _, stepper, tokenizer, model = _load(run, export)
    batch = _batch(tokenizer, TEXTS, side)
    forced = np.random.default_rng(0).integers(3, stepper.vocab_size, (len(TEXTS), 6))
    logits, state = stepper.start(batch["input_ids"], batch["attention_mask"])
    prefix = np.full((len(TEXTS), 1), stepper.decoder_start_token_id)
    for t in range(forced.shape[1] + 1):
        with torch.inference_mode():
            want = model(input_ids=torch.from_numpy(batch["input_ids"]),
                         attention_mask=torch.from_numpy(batch["attention_mask"]),
                         decoder_input_ids=torch.from_numpy(prefix)).logits[:, -1].numpy()
        np.testing.assert_allclose(logits, want, atol=1e-4, rtol=0)
        if t == forced.shape[1]:
            break
        logits, state = stepper.step(state, forced[:, t])
        prefix = np.concatenate([prefix, forced[:, t:t + 1]], axis=1)
    assert state.length == forced.shape[1] + 1


def test_greedy_matches_generate_batched_and_single(exported):
    _, run, export = exported
    _, stepper, tokenizer, model = _load(run, export)
    batch = _batch(tokenizer, TEXTS)
    want = _generate(model, batch, num_beams=1, max_new_tokens=10)
    got = _greedy(stepper, batch["input_ids"], batch["attention_mask"], 10)
    np.testing.assert_array_equal(got[:, :want.shape[1]], want)
    assert len(set(want[:, 1:].ravel().tolist())) > 1  # the parity saw more than one token
    single = _batch(tokenizer, TEXTS[2:])
    np.testing.assert_array_equal(_greedy(stepper, single["input_ids"],
                                          single["attention_mask"], 10)[0],
                                  got[2, :want.shape[1]])


def test_beam_search_matches_generate(exported):
    """Beam search duplicates and reorders rows through select(): the tokens must be
    those of transformers' beam search on the same weights."""
    from nlpforge.runtime.generation.config import GenerationConfig

    _, run, export = exported
    _, stepper, tokenizer, model = _load(run, export)
    batch = _batch(tokenizer, TEXTS)
    want = _generate(model, batch, num_beams=3, max_new_tokens=8)
    config = GenerationConfig.from_dir(export).with_overrides({"num_beams": 3,
                                                               "max_new_tokens": 8})
    got = search.generate(stepper, batch["input_ids"], batch["attention_mask"], config)
    np.testing.assert_array_equal(got.sequences[:, :want.shape[1]], want)


def test_select_duplicates_and_reorders_rows(exported):
    _, run, export = exported
    _, stepper, tokenizer, _ = _load(run, export)
    batch = _batch(tokenizer, TEXTS)
    logits, state = stepper.start(batch["input_ids"], batch["attention_mask"])
    tokens = np.array([5, 6, 7])
    after, _ = stepper.step(state, tokens)
    index = np.array([2, 0, 0, 1])
    picked = stepper.select(state, index)
    assert picked.batch_size == 4 and picked.prompts.tolist() == [2, 0, 0, 1]
    moved, state2 = stepper.step(picked, tokens[index])
    np.testing.assert_allclose(moved, after[index], atol=1e-5)
    # swapping two beams of the same prompt (rows 1 and 2, told apart by one more step)
    # keeps the cross-attention cache as it is; the logits follow the self-attention rows
    _, state3 = stepper.step(state2, np.array([8, 9, 10, 11]))
    same = stepper.select(state3, np.array([0, 2, 1, 3]))
    assert same.cross_cache is state3.cross_cache and same.prompts.tolist() == [2, 0, 0, 1]
    swapped, _ = stepper.step(same, np.array([12, 12, 12, 12]))
    unswapped, _ = stepper.step(state3, np.array([12, 12, 12, 12]))
    np.testing.assert_allclose(swapped, unswapped[[0, 2, 1, 3]], atol=1e-5)
    assert not np.allclose(unswapped[1], unswapped[2])
    other = stepper.select(state2, np.array([3, 0]))
    assert other.cross_cache is not state2.cross_cache and other.prompts.tolist() == [1, 2]
    with pytest.raises(Exception, match="row numbers"):
        stepper.select(state, np.array([3]))


def test_stepper_refuses_a_broken_export_dir(exported, tmp_path):
    import shutil

    from nlpforge.errors import ModelDirError
    from nlpforge.runtime.generation.seq2seq import EncoderDecoderStepper

    _, _, export = exported
    copy = tmp_path / "copy"
    shutil.copytree(export, copy)
    (copy / "decoder_with_past_model.onnx").unlink()
    manifest = json.loads((copy / "nlpforge.json").read_text())
    with pytest.raises(ModelDirError, match="decoder_with_past_model.onnx is missing"):
        EncoderDecoderStepper.load(copy, manifest, device="cpu")
    del manifest["io"]["num_layers"]
    with pytest.raises(ModelDirError, match="lacks num_layers"):
        EncoderDecoderStepper.load(export, manifest, device="cpu")


def test_numpy_and_io_binding_paths_agree(exported):
    """On the CPU the caches stay numpy arrays; the IO-binding path (CUDA's) gives the same
    logits through steps and a row selection that changes prompts."""
    from nlpforge.runtime.generation.seq2seq import EncoderDecoderStepper

    _, run, export = exported
    manifest, plain, tokenizer, _ = _load(run, export)
    bound = EncoderDecoderStepper.load(export, manifest, device="cpu", binding=True)
    batch = _batch(tokenizer, TEXTS, "left")
    results = []
    for stepper in (plain, bound):
        logits, state = stepper.start(batch["input_ids"], batch["attention_mask"])
        seen = [logits, stepper.step(state, np.array([5, 6, 7]))[0]]
        state = stepper.select(state, np.array([2, 2, 0]))
        seen.append(stepper.step(state, np.array([8, 9, 10]))[0])
        results.append(seen)
        assert isinstance(state.cross_cache[0], np.ndarray) == (stepper is plain)
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_optimized_export_generates_the_same_tokens(exported, tmp_path):
    """--optimize extended runs ONNX Runtime's fusions (T5's or BART's) on all three graphs,
    each validated after every pass; greedy on the optimized default equals generate()."""
    from nlpforge.cli.export import summary
    from nlpforge.export.onnx import export_run
    from nlpforge.runtime.generation.seq2seq import EncoderDecoderStepper

    kind, run, _ = exported
    out = tmp_path / "optimized"
    manifest = export_run(str(run), str(out), optimize="extended")
    choice = manifest["default_choice"]  # the faster of fp32 and optimized, timed here
    assert manifest["default_variant"] == choice["variant"]
    assert choice["seconds"][choice["variant"]] == min(choice["seconds"].values())
    graphs = manifest["variants"]["optimized"]["graphs"]
    assert sorted(graphs.values()) == ["decoder_model.optimized.onnx",
                                       "decoder_with_past_model.optimized.onnx",
                                       "encoder_model.optimized.onnx"]
    records = manifest["optimization"]["graphs"]
    assert all(step["validation"]["passed"] for r in records.values() for step in r["steps"])
    assert sum(sum(step["applied"].values()) for r in records.values()
               for step in r["steps"]) > 0  # something was fused
    assert set(summary(str(out), {**manifest, "export_seconds": 1})["max_abs_diff"]) == \
        set(graphs)
    stepper = EncoderDecoderStepper.load(out, manifest, device="cpu", variant="optimized")
    assert stepper.decoder_with_past._model_path.endswith("decoder_with_past_model.optimized.onnx")
    _, _, tokenizer, model = _load(run, exported[2])
    batch = _batch(tokenizer, TEXTS)
    want = _generate(model, batch, num_beams=1, max_new_tokens=10)
    got = _greedy(stepper, batch["input_ids"], batch["attention_mask"], 10)
    np.testing.assert_array_equal(got[:, :want.shape[1]], want)
    texts = {}
    for variant in ("fp32", "optimized"):
        done = run_cli("generate", str(out), TEXTS[0], "--max-new-tokens", "6", "--json",
                       "--variant", variant)
        assert done.returncode == 0, done.stderr
        texts[variant] = json.loads(done.stdout.splitlines()[0])
    assert texts["fp32"] == texts["optimized"]
    refused = run_cli("generate", str(exported[2]), "hi", "--variant", "optimized")
    assert refused.returncode != 0 and "has no optimized variant" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_unsupported_variants_are_refused(exported, tmp_path):
    from nlpforge.errors import UsageError
    from nlpforge.export.onnx import export_run

    _, run, _ = exported
    with pytest.raises(UsageError, match="not available for encoder-decoder exports"):
        export_run(str(run), str(tmp_path / "x"), quantize="int8")
    assert not (tmp_path / "x").exists()


def test_generator_and_cli_evaluate_generate_text(exported, tmp_path):
    """The runtime's Generator drives this stepper: its text is transformers' greedy text;
    nlpforge evaluate on the export generates and reports the ROUGE/BLEU/chrF of the text
    that transformers generates from the run dir with the export's settings."""
    from nlpforge.runtime.generation.config import GenerationConfig
    from nlpforge.runtime.generation.generator import Generator

    kind, run, export = exported
    _, _, tokenizer, model = _load(run, export)
    generator = Generator.load(export, device="cpu")
    got = generator.predict(TEXTS, max_new_tokens=10)
    batch = _batch(tokenizer, TEXTS)
    want = _generate(model, batch, num_beams=1, max_new_tokens=10)
    assert [p["generated_text"] for p in got] == [tokenizer.decode(row[1:]) for row in want]
    if kind != "t5":
        return  # one CLI run is enough
    data = write_jsonl(tmp_path / "eval.jsonl", ROWS[:4])
    written = tmp_path / "predictions.jsonl"
    result = run_cli("evaluate", str(export), "--data", str(data), "--device", "cpu",
                     "--predictions", str(written))
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)["metrics"]
    # PyTorch: greedy generate() on the run dir's weights, as long as the export may go
    limit = GenerationConfig.from_dir(export).max_new_tokens
    sources = [generator.task.source_text(r) for r in ROWS[:4]]
    torch_ids = _generate(model, _batch(tokenizer, sources), num_beams=1, max_new_tokens=limit)
    by_torch = [{"generated_text": tokenizer.decode(row[1:])} for row in torch_ids]
    assert [json.loads(line) for line in written.read_text().splitlines()] == by_torch
    expected = generator.task.metrics(by_torch, ROWS[:4])
    assert set(expected) == {"rouge1", "rouge2", "rougeL", "bleu", "chrf", "exact_match"}
    assert metrics == pytest.approx(expected, rel=1e-9)


@pytest.mark.slow
def test_marian_greedy_matches_generate(tmp_path):
    run, export = _train_and_export("marian", tmp_path)
    _, stepper, tokenizer, model = _load(run, export)
    batch = _batch(tokenizer, TEXTS)
    want = _generate(model, batch, num_beams=1, max_new_tokens=10)
    got = _greedy(stepper, batch["input_ids"], batch["attention_mask"], 10)
    np.testing.assert_array_equal(got[:, :want.shape[1]], want)
