"""The text-generation task: rows → targets (text blocks, prompt/completion, chat turns),
teacher-forced perplexity, and PyTorch/ONNX agreement through ``nlpforge evaluate``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from nlpforge.errors import DataError, UsageError
from tests.conftest import run_cli, write_jsonl

CHAT = {"messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": "hi"},
                     {"role": "assistant", "content": "hello there"},
                     {"role": "user", "content": "how are you?"},
                     {"role": "assistant", "content": "fine"}]}
PAIR = {"prompt": "question: how many legs does a spider have? answer:", "completion": " eight"}
TEXTS = [{"text": "the quick brown fox jumps over the lazy dog"},
         {"text": "to be, or not to be"}, {"text": "once upon a time"}]


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from nlpforge.testing.decoders import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tg") / "llama")


@pytest.fixture(scope="module")
def gpt2_tokenizer_dir(tmp_path_factory):
    from nlpforge.testing.decoders import train_byte_bpe_tokenizer

    return train_byte_bpe_tokenizer(tmp_path_factory.mktemp("tg") / "gpt2tok",
                                    bos="<|endoftext|>", eos="<|endoftext|>", pad="<|pad|>")


def _task(**options):
    from nlpforge_text_generation import TextGeneration

    return TextGeneration(**options)


def _tokenizer(directory, max_length=64):
    from nlpforge.runtime.tokenizer import Tokenizer

    return Tokenizer.from_dir(directory, max_length=max_length)


def _targets(tokenizer, ids, labels):
    return tokenizer.decode([t for t, l in zip(ids, labels) if l != -100],
                            skip_special_tokens=False)


def test_plugin_and_stepper_import_without_torch():
    code = ("import sys, nlpforge_text_generation, nlpforge.runtime.generation.decoder; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("row, message, field", [
    ({"prompt": "p"}, "needs its 'completion'", "completion"),
    ({"completion": "c"}, "needs its 'prompt'", "prompt"),
    ({"text": "t", "prompt": "p", "completion": "c"}, "either 'text'", "text"),
    ({}, "needs 'text'", None),
    ({"messages": [{"role": "user", "content": "hi"}]}, "at least one assistant", "messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages\\[0\\].role", "messages"),
    ({"messages": [{"role": "user"}]}, "messages\\[0\\].content", "messages"),
    ({"messages": []}, "non-empty", "messages"),
    ({"text": 3}, "expected string", "text"),
])
def test_bad_rows_name_the_field(row, message, field):
    with pytest.raises(DataError, match=message) as info:
        _task().check_row(row, "train.jsonl", 7)
    assert "train.jsonl:7" in str(info.value)
    if field:
        assert field in str(info.value)


def test_requests_take_a_prompt_or_messages():
    task = _task()
    task.check_row({"prompt": "hi"}, training=False)
    task.check_row({"messages": [{"role": "user", "content": "hi"}]}, training=False)
    with pytest.raises(DataError, match="needs 'prompt'"):
        task.check_row({"text": "hi"}, "inputs[0]", None, training=False)
    with pytest.raises(UsageError, match="text_mode"):
        _task(text_mode="pack")


def test_prompt_completion_loss_is_on_the_completion_and_eos(llama):
    tokenizer = _tokenizer(llama)
    batch = _task().training_batch([PAIR], tokenizer)
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    assert _targets(tokenizer, ids, labels) == " eight</s>"
    assert ids[0] == tokenizer.backend.token_to_id("<s>") and labels[0] == -100
    assert _task().loss_units(batch) == int((labels != -100).sum())


def test_chat_rendering_matches_transformers_and_loss_is_on_assistant_turns(llama):
    from transformers import AutoTokenizer

    tokenizer = _tokenizer(llama)
    batch = _task().training_batch([CHAT], tokenizer)
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    expected = AutoTokenizer.from_pretrained(llama).apply_chat_template(
        CHAT["messages"], tokenize=True, return_dict=False)
    assert ids.tolist() == list(expected)
    assert _targets(tokenizer, ids, labels) == "hello there</s>\nfine</s>\n"
    prompt = _task().prompt_features([{"messages": CHAT["messages"][:2]}], tokenizer)
    assert tokenizer.decode(prompt["input_ids"][0], skip_special_tokens=False).endswith(
        "<|user|>\nhi</s>\n<|assistant|>\n")


def test_chat_rows_need_a_chat_template(gpt2_tokenizer_dir):
    with pytest.raises(DataError, match="chat template"):
        _task().training_batch([CHAT], _tokenizer(gpt2_tokenizer_dir))


def test_text_blocks_pack_documents_with_eos_between(gpt2_tokenizer_dir):
    tokenizer = _tokenizer(gpt2_tokenizer_dir, max_length=8)
    eos = tokenizer.backend.token_to_id("<|endoftext|>")
    whole = _tokenizer(gpt2_tokenizer_dir, max_length=1000).backend
    stream = [t for row in TEXTS for t in whole.encode(row["text"]).ids + [eos]]
    batch = _task().training_batch(TEXTS, tokenizer)
    mask = batch["attention_mask"].astype(bool)
    assert batch["input_ids"][mask].tolist() == stream
    assert (mask.sum(1)[:-1] == 8).all() and len(batch["input_ids"]) == -(-len(stream) // 8)
    assert (batch["labels"][mask] == batch["input_ids"][mask]).all()
    assert (batch["labels"][~mask] == -100).all()
    truncated = _task(text_mode="truncate").training_batch(TEXTS, tokenizer)
    assert len(truncated["input_ids"]) == 3 and truncated["input_ids"].shape[1] == 8


def test_scoring_windows_cover_every_token_of_a_long_text(gpt2_tokenizer_dir):
    tokenizer = _tokenizer(gpt2_tokenizer_dir, max_length=8)
    rows = [{"text": " ".join(["the quick brown fox"] * 6)}, PAIR]
    features = _task().encode(rows, tokenizer)
    n = len(_tokenizer(gpt2_tokenizer_dir, 1000).backend.encode(rows[0]["text"]).ids) + 1  # EOS
    windows = -(-n // 8)
    assert features["row_index"].tolist() == [0] * windows + [1]
    first = features["labels"][features["row_index"] == 0]
    assert int((first[:, 1:] != -100).sum()) == n - windows  # all but each window's first
    mask = features["attention_mask"]
    real = mask.astype(bool)
    assert (features["position_ids"][real] == (np.cumsum(mask, 1) - 1)[real]).all()


def test_nll_matches_torch_cross_entropy():
    import torch
    from nlpforge_text_generation.scoring import row_scores

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, 6, 11)).astype(np.float32) * 4
    labels = rng.integers(0, 11, (3, 6))
    labels[0, :3] = -100
    labels[2, 4:] = -100
    scores = row_scores(logits, labels, np.array([0, 1, 0]), 2)
    ce = torch.nn.functional.cross_entropy(
        torch.from_numpy(logits[:, :-1]).reshape(-1, 11), torch.from_numpy(labels[:, 1:]).reshape(-1),
        ignore_index=-100, reduction="none").reshape(3, 5).sum(1).numpy()
    assert scores[0]["nll"] == pytest.approx(ce[0] + ce[2], rel=1e-5)
    assert scores[1]["nll"] == pytest.approx(ce[1], rel=1e-5)
    assert scores[0]["tokens"] == int((labels[[0, 2], 1:] != -100).sum())


@pytest.fixture(scope="module")
def trained(llama, tmp_path_factory):
    from nlpforge.export.onnx import export_run
    from nlpforge.training.loop import TrainConfig, train

    tmp = tmp_path_factory.mktemp("tg-run")
    rows = [CHAT, PAIR, *TEXTS] * 4
    data = write_jsonl(tmp / "train.jsonl", rows)
    run = tmp / "run"
    train(TrainConfig(task="text-generation", model=str(llama), train=str(data),
                      validation=str(data), output=str(run), max_steps=20, batch_size=5,
                      lr=3e-3, max_length=64, eval_strategy="steps", eval_steps=10,
                      warmup_ratio=0.0, progress=False, device="cpu"))
    export_run(str(run), str(tmp / "export"))
    return data, run, tmp / "export"


def test_training_lowers_perplexity(trained):
    _, run, _ = trained
    history = json.loads((run / "trainer_state.json").read_text())["history"]
    first, last = history[0]["metrics"]["perplexity"], history[-1]["metrics"]["perplexity"]
    assert last < first * 0.7
    assert json.loads((run / "nlpforge.json").read_text())["family"] == "decoder"


def test_evaluate_run_dir_and_export_agree(trained):
    """The export through the CLI (torch-free runtime, empty caches fed by the Predictor),
    the run dir in process (the same code path, without a second torch start-up)."""
    from nlpforge.cli.predict import open_model
    from nlpforge.data import read_dataset

    data, run, export = trained
    task, predict = open_model(str(run), "cpu", None, 4)
    rows = read_dataset(str(data), task, training=True).rows
    torch_metrics = task.metrics(predict(rows), rows)
    result = run_cli("evaluate", str(export), "--data", str(data), "--batch-size", "4")
    assert result.returncode == 0, result.stderr
    onnx_metrics = json.loads(result.stdout)["metrics"]
    assert torch_metrics["tokens"] == onnx_metrics["tokens"] > 0
    assert onnx_metrics["perplexity"] == pytest.approx(torch_metrics["perplexity"], rel=1e-4)


def test_chat_template_is_read_from_tokenizer_config_too(llama, tmp_path):
    """transformers 5 writes chat_template.jinja; older dirs keep it in tokenizer_config.json."""
    import shutil

    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(llama / name, tmp_path / name)
    assert _tokenizer(tmp_path).chat_template == _tokenizer(llama).chat_template
    assert "<|assistant|>" in _tokenizer(llama).chat_template
