"""The encoder-decoder task plugin: text2text-generation, summarization, translation and
span-corruption (fields, encoding, T5's noise mask, metrics, training, teacher-forced and
generated evaluation)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_jsonl

ROWS = [{"source": f"the house number {i} is small", "target": f"das haus {i} ist klein"}
        for i in range(12)]


def _task(task_id: str, **options):
    from nlpforge.plugins import get_plugin_manager

    return get_plugin_manager().get_task(task_id)(**options)


@pytest.fixture(scope="module")
def t5_base(tmp_path_factory) -> Path:
    from nlpforge.testing.encoder_decoders import make_tiny_t5

    return make_tiny_t5(tmp_path_factory.mktemp("t5") / "base")


@pytest.fixture(scope="module")
def t5_tokenizer(t5_base):
    from nlpforge.runtime.tokenizer import Tokenizer

    return Tokenizer.from_dir(t5_base, 32, 0)


@pytest.fixture(scope="module")
def bart_dir(tmp_path_factory) -> Path:
    from nlpforge.testing.encoder_decoders import train_bart_tokenizer

    return train_bart_tokenizer(tmp_path_factory.mktemp("bart"))


@pytest.fixture(scope="module")
def bart_tokenizer(bart_dir):
    from nlpforge.runtime.tokenizer import Tokenizer

    return Tokenizer.from_dir(bart_dir, 32, 1)


def test_four_tasks_are_registered_without_torch():
    code = ("import sys, nlpforge_seq2seq\n"
            "from nlpforge.plugins import get_plugin_manager\n"
            "pm = get_plugin_manager()\n"
            "ids = ['text2text-generation', 'summarization', 'translation', 'span-corruption']\n"
            "print([pm.get_task(i).family.value for i in ids])\n"
            "print('torch' in sys.modules, 'transformers' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == [str(["encoder-decoder"] * 4), "False False"]


def test_field_aliases_and_clear_errors():
    from nlpforge.errors import DataError

    text2text, summary, translation = (_task(i) for i in ("text2text-generation",
                                                          "summarization", "translation"))
    text2text.check_row({"input": "a", "output": "b"})
    text2text.check_row({"source": "a"}, training=False)
    # the shared datasets' own rows read as they are
    summary.check_row({"id": "train_0", "document": "#Person1#: hi", "summary": "they talk",
                       "topic": "x"})
    translation.check_row({"source": "A dog.", "target": "Ein Hund.", "source_lang": "en",
                           "target_lang": "de"})
    with pytest.raises(DataError, match=r"train.jsonl:3.*missing required field 'summary'"):
        summary.check_row({"document": "text"}, "train.jsonl", 3)
    with pytest.raises(DataError, match=r"field 'target'.*expected string"):
        translation.check_row({"source": "a", "target": 5}, "t.jsonl", 1)
    custom = _task("text2text-generation", source_field="question", target_field="answer")
    custom.check_row({"question": "q?", "answer": "a"})
    with pytest.raises(DataError, match="missing required field 'question'"):
        custom.check_row({"source": "q?", "answer": "a"})


def test_encode_labels_truncation_and_prefix(t5_base, t5_tokenizer):
    task = _task("summarization", max_target_length=4)
    task.build_model(str(t5_base))  # resolves prefix=auto from the model type
    assert task.settings["prefix"] == "summarize: "
    rows = [{"document": "the house is small", "summary": "a small house with a big garden"},
            {"document": "hello", "summary": "hi"}]
    features = task.encode(rows, t5_tokenizer)
    eos = t5_tokenizer.backend.token_to_id("</s>")
    labels = features["labels"]
    assert labels.shape == (2, 4) and labels[0, -1] == eos  # cut to 4, </s> kept
    real = labels[1][labels[1] != -100]
    assert real[-1] == eos and (labels[1, len(real):] == -100).all()
    first = t5_tokenizer.decode(features["input_ids"][0])
    assert first.startswith("summarize:") and first.endswith("small")
    assert task.loss_units(features) == int((labels != -100).sum())
    requests = task.encode([{"document": "hello"}], t5_tokenizer)
    assert "labels" not in requests
    translation = _task("translation", source_lang="French", target_lang="English")
    translation.resolve_prefix("t5")
    assert translation.prefix() == "translate French to English: "
    bart = _task("translation")
    bart.resolve_prefix("bart")
    assert bart.prefix() == ""


def test_noise_mask_follows_t5():
    from nlpforge_seq2seq.span_corruption import random_spans_noise_mask

    np.random.seed(3)
    mask = random_spans_noise_mask(100, 0.15, 3.0)
    again = random_spans_noise_mask(100, 0.15, 3.0, np.random.RandomState(0))
    assert mask.sum() == 15 and not mask[0]  # round(100 × 0.15); starts with non-noise
    starts = mask & ~np.concatenate([[False], mask[:-1]])
    assert starts.sum() == 5  # round(15 / 3) spans
    np.random.seed(3)
    np.testing.assert_array_equal(random_spans_noise_mask(100, 0.15, 3.0), mask)
    assert again.sum() == 15
    assert random_spans_noise_mask(10, 0.5, 1.0).sum() == 5


def test_span_corruption_round_trip(t5_tokenizer, bart_tokenizer, bart_dir):
    from nlpforge.errors import UsageError

    task = _task("span-corruption", noise_density=0.3, mean_noise_span_length=2.0)
    rows = [{"text": "the movie was great and the acting was wonderful"},
            {"text": "friendly staff, clean rooms and a lovely view"}]
    np.random.seed(0)
    batch = task.training_batch(rows, t5_tokenizer)
    sentinel = {t5_tokenizer.backend.token_to_id(f"<extra_id_{i}>"): i for i in range(10)}
    eos = t5_tokenizer.backend.token_to_id("</s>")
    for r, row in enumerate(rows):
        source = [t for t, m in zip(batch["input_ids"][r], batch["attention_mask"][r]) if m]
        target = [t for t in batch["labels"][r] if t != -100]
        assert source[-1] == eos and target[-1] == eos and target[0] == sentinel_id(sentinel, 0)
        spans: dict[int, list[int]] = {}
        for token in target[:-1]:
            if token in sentinel:
                current = spans.setdefault(sentinel[token], [])
            else:
                current.append(token)
        rebuilt = []
        for token in source[:-1]:
            rebuilt.extend(spans[sentinel[token]] if token in sentinel else [token])
        original = t5_tokenizer.encode([row["text"]])[0].ids[:-1]
        assert rebuilt == original
    other = task.training_batch(rows, t5_tokenizer)
    assert not np.array_equal(other["labels"], batch["labels"]) or \
        not np.array_equal(other["input_ids"], batch["input_ids"])
    np.random.seed(0)
    np.testing.assert_array_equal(task.training_batch(rows, t5_tokenizer)["labels"],
                                  batch["labels"])
    # evaluation rows: the same corruption every time, the global stream untouched
    state = np.random.get_state()[1].copy()
    first, second = task.encode(rows, t5_tokenizer), task.encode(rows, t5_tokenizer)
    np.testing.assert_array_equal(first["labels"], second["labels"])
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    # generated spans (an export's predictions) are scored against the removed ones
    spans = [t5_tokenizer.decode([int(t) for t in row if t >= 0]) for row in first["labels"]]
    assert task.metrics([{"generated_text": s} for s in spans], rows)["exact_match"] == 1.0
    assert task.metrics([{"generated_text": "x"}] * 2, rows)["exact_match"] == 0.0
    request = task.encode([{"text": "the movie <extra_id_0> wonderful"}], t5_tokenizer)
    assert "labels" not in request and sentinel_id(sentinel, 0) in request["input_ids"][0]
    with pytest.raises(UsageError, match="sentinel tokens"):
        task.training_batch(rows, bart_tokenizer)
    with pytest.raises(UsageError, match="sentinel tokens"):  # before any training
        task.build_model(str(bart_dir))
    with pytest.raises(UsageError, match="noise_density"):
        _task("span-corruption", noise_density=1.5)


def sentinel_id(sentinels: dict[int, int], n: int) -> int:
    return next(token for token, i in sentinels.items() if i == n)


def test_generation_metrics_and_perplexity():
    task = _task("text2text-generation")
    rows = [{"source": "x", "target": "the cat sat on the mat"},
            {"source": "y", "target": "a dog barked loudly"}]
    perfect = task.metrics([{"generated_text": r["target"]} for r in rows], rows)
    assert perfect["rouge1"] == pytest.approx(100) and perfect["bleu"] == pytest.approx(100)
    assert perfect["exact_match"] == 1.0
    off = task.metrics([{"generated_text": "the cat sat"}, {"generated_text": "nothing"}], rows)
    assert 0 < off["rouge1"] < 100 and off["rougeL"] <= off["rouge1"] and off["exact_match"] == 0
    summary = _task("summarization").metrics([{"generated_text": "the cat sat on a mat"}],
                                             [{"document": "x",
                                               "summary": "the cat sat on the mat"}])
    assert set(summary) == {"rouge1", "rouge2", "rougeL"}
    german = "ein Hund bellt laut im Garten"  # BLEU needs 4-grams
    translation = _task("translation").metrics([{"generated_text": german}],
                                               [{"source": "x", "target": german}])
    assert translation == {"bleu": pytest.approx(100), "chrf": pytest.approx(100)}
    ppl = task.metrics([{"nll": 2.0, "tokens": 1}, {"nll": 1.0, "tokens": 2}], rows)
    assert ppl["loss"] == pytest.approx(1.0) and ppl["perplexity"] == pytest.approx(np.e)


def test_postprocess_from_logits_equals_torch_nll(t5_base, t5_tokenizer):
    import torch

    task = _task("text2text-generation")
    model = task.build_model(str(t5_base)).eval()
    features = task.encode(ROWS[:3], t5_tokenizer)
    tensors = {k: torch.from_numpy(v) for k, v in features.items()}
    with torch.inference_mode():
        by_torch = task.forward(model, tensors)
        logits = model(**tensors).logits.numpy()
        loss = float(model(**tensors).loss)
    from_torch = task.postprocess({**features, "token_nll": by_torch["token_nll"].numpy()},
                                  ROWS[:3])
    from_logits = task.postprocess({**features, "logits": logits}, ROWS[:3])
    for a, b in zip(from_torch, from_logits):
        assert a["tokens"] == b["tokens"] and a["nll"] == pytest.approx(b["nll"], rel=1e-5)
    # the loss transformers trains on is the token-weighted mean of the same NLL
    assert task.metrics(from_torch, ROWS[:3])["loss"] == pytest.approx(loss, rel=1e-5)


@pytest.fixture(scope="module")
def trained(t5_base, tmp_path_factory):
    from nlpforge.training.loop import TrainConfig, train

    root = tmp_path_factory.mktemp("run")
    data = write_jsonl(root / "train.jsonl", ROWS)
    result = train(TrainConfig(task="text2text-generation", model=str(t5_base),
                               train=str(data), validation=str(data), output=str(root / "run"),
                               max_steps=3, batch_size=6, lr=1e-3, progress=False,
                               task_options={"max_target_length": 12}))
    return root / "run", result


def test_training_reports_perplexity_and_predicts_text(trained):
    from nlpforge.runtime.batching import predict_rows
    from nlpforge.training.loading import load_run, torch_runner

    run, result = trained
    manifest = json.loads((run / "nlpforge.json").read_text())
    assert manifest["family"] == "encoder-decoder"
    assert manifest["task"]["state"]["options"]["prefix"] == ""  # T5 text2text: no prefix
    metrics = result["best"]["metrics"]
    assert metrics["tokens"] > 0 and metrics["perplexity"] == pytest.approx(
        np.exp(metrics["loss"]), rel=1e-4)
    manifest, task, model, tokenizer = load_run(run)
    run_model = torch_runner(task, model, manifest["model_inputs"])
    scored = predict_rows(task, tokenizer, run_model, ROWS)
    assert task.metrics(scored, ROWS)["perplexity"] == pytest.approx(metrics["perplexity"],
                                                                     rel=1e-4)
    generated = predict_rows(task, tokenizer, run_model, [{"source": r["source"]}
                                                          for r in ROWS[:2]])
    assert all(isinstance(p["generated_text"], str) for p in generated)
    assert set(task.metrics(generated, ROWS[:2])) >= {"rouge1", "bleu", "chrf"}


def test_span_corruption_trains(t5_base, tmp_path):
    from nlpforge.training.loop import TrainConfig, train

    data = write_jsonl(tmp_path / "text.jsonl", [{"text": r["source"] + " and " + r["target"]}
                                                 for r in ROWS])
    result = train(TrainConfig(task="span-corruption", model=str(t5_base), train=str(data),
                               validation=str(data), output=str(tmp_path / "run"),
                               max_steps=2, batch_size=6, lr=1e-3, progress=False))
    assert np.isfinite(result["best"]["metrics"]["loss"])
