"""question-answering: windows, span search, SQuAD metrics, data errors, and a tiny model
trained, exported and run torch-free, with ONNX answers checked against PyTorch's."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, write_jsonl
from nlpforge_question_answering import QuestionAnswering
from nlpforge_question_answering.answers import check_answers, parse_answers
from nlpforge_question_answering.spans import search_spans
from nlpforge_question_answering.squad import f1_score, normalize_answer, squad_scores
from nlpforge_question_answering.windows import answer_positions

from nlpforge.errors import DataError, UsageError

NAMES = ["anna", "boris", "clara", "david", "emma", "felix", "greta", "hugo", "ida", "jonas"]
CITIES = ["paris", "berlin", "rome", "madrid", "vienna", "oslo", "lisbon", "prague", "dublin",
          "athens", "warsaw", "zurich"]
FILLER = ["the weather was mild that year", "a small dog slept by the door",
          "many people walked along the river", "the market opened early on monday",
          "a long train crossed the old bridge", "the garden was full of red flowers"]


def make_rows(count: int, seed: int, filler: int = 4) -> list[dict]:
    """Contexts of filler sentences around one "NAME lives in CITY." fact; long enough
    (with a small --max-length) to need several windows, the fact anywhere in them."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        name, city = rng.choice(NAMES), rng.choice(CITIES)
        sentences = [rng.choice(FILLER) + "." for _ in range(filler)]
        sentences.insert(rng.randint(0, filler), f"{name.title()} lives in {city.title()}.")
        context = " ".join(sentences)
        start = context.index(city.title())
        rows.append({"question": f"Where does {name.title()} live?", "context": context,
                     "answers": {"text": [city.title()], "answer_start": [start]}})
    return rows


def corpus() -> list[str]:
    return [r["context"] + " " + r["question"] for r in make_rows(60, 99)]


# -- SQuAD metrics ---------------------------------------------------------------------------

def test_squad_normalisation_and_scores_match_the_official_script():
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert f1_score("Denver Broncos team", "the Denver Broncos") == pytest.approx(0.8)
    assert f1_score("", "Broncos") == 0.0
    # v1.1: a gold answer that normalises to nothing scores 0; v2.0 scores an empty match 1
    assert f1_score("", "the") == 0.0 and f1_score("", "the", no_answer_rule=True) == 1.0
    report = squad_scores(["Denver Broncos", "Carolina", "1999"],
                          [["Denver Broncos", "Broncos"], ["Carolina Panthers"], ["2000"]])
    assert report["exact_match"] == pytest.approx(100 / 3)
    assert report["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)
    v2 = squad_scores(["", "x", ""], [[], ["x"], ["y"]], no_answers=True)
    assert v2["no_answer_accuracy"] == 100.0 and v2["has_answer_exact_match"] == 50.0
    assert v2["exact_match"] == pytest.approx(200 / 3)


# -- rows and their answers ------------------------------------------------------------------

def test_answers_in_both_squad_spellings():
    hf = {"text": ["Paris", "Paris"], "answer_start": [10, 10]}
    original = [{"text": "Paris", "answer_start": 10}]
    assert parse_answers(hf) == parse_answers(original * 2)
    assert parse_answers({"text": [], "answer_start": []}) == []


@pytest.mark.parametrize("answers, message", [
    ({"text": ["Paris"], "answer_start": [3]},
     ("answer 0 'Paris' is not at answer_start 3: the context there reads ' live'"
      "; the text occurs at offset 13")),
    ({"text": ["Rome"], "answer_start": [13]}, "does not occur in the context at all"),
    ({"text": ["Paris"], "answer_start": []}, "'text' has 1 answers but 'answer_start' has 0"),
    ({"text": ["Paris"], "answer_start": ["13"]}, "must be a character offset"),
    ({"text": [""], "answer_start": [0]}, "must be a non-empty string"),
    ({"text": [], "answer_start": []}, "allow_no_answer=true"),
    ("Paris", "expected dict or list, got string 'Paris'"),
])
def test_bad_answers_name_file_line_field_and_what_is_there(answers, message):
    task = QuestionAnswering()
    row = {"question": "Where?", "context": "Ida lives in Paris.", "answers": answers}
    with pytest.raises(DataError) as error:
        task.check_row(row, "train.jsonl", 7)
    assert str(error.value).startswith("train.jsonl:7: field 'answers': ")
    assert message in str(error.value)


def test_no_answer_rows_need_the_option():
    row = {"question": "Where?", "context": "Ida lives in Paris.", "answers": []}
    assert check_answers(row, None, None, allow_no_answer=True) == []
    QuestionAnswering(allow_no_answer=True).check_row(row, "t.jsonl", 1)


def test_bad_options_are_usage_errors():
    with pytest.raises(UsageError, match="max_answer_length must be at least 1"):
        QuestionAnswering(max_answer_length=0)
    with pytest.raises(UsageError, match="'n_best': expected int"):
        QuestionAnswering(n_best="many")


# -- windows ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def qa_base(tmp_path_factory) -> Path:
    """A tiny random BERT whose WordPiece vocabulary was trained on the synthetic contexts."""
    import torch
    from tokenizers import Tokenizer as Backend
    from transformers import BertConfig, BertModel

    from nlpforge.testing.encoders import train_wordpiece_tokenizer

    directory = train_wordpiece_tokenizer(tmp_path_factory.mktemp("qa") / "base", 300, corpus())
    vocab = Backend.from_file(str(directory / "tokenizer.json")).get_vocab_size()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=256, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    BertModel(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tokenizer(qa_base):
    from nlpforge.runtime.tokenizer import Tokenizer

    return Tokenizer.from_dir(qa_base, max_length=32, pad_id=0)


def test_long_contexts_become_windows_that_keep_the_question_and_the_answer(tokenizer):
    task = QuestionAnswering(doc_stride=8)
    rows = make_rows(6, 1, filler=5) + [
        {"question": "Where?", "context": "Ida lives in Oslo.",
         "answers": {"text": ["Oslo"], "answer_start": [13]}}]
    features = task.encode(rows, tokenizer)
    owners = features["window_row"]
    assert sorted(set(owners.tolist())) == list(range(7)) and len(owners) > 7
    assert features["input_ids"].shape[1] <= 32
    assert (np.bincount(owners)[:-1] > 1).all() and np.bincount(owners)[-1] == 1
    batch = task.training_batch(rows, tokenizer)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "start_positions",
                          "end_positions"}
    held = 0
    for w, row in enumerate(owners):
        start, end = batch["start_positions"][w], batch["end_positions"][w]
        answer = parse_answers(rows[row]["answers"])[0]
        if start == 0:  # first token: this window does not hold the whole answer
            assert end == 0
            continue
        held += 1
        first, last = features["offsets"][w, start, 0], features["offsets"][w, end, 1]
        assert rows[row]["context"][first:last] == answer.text
        assert features["context_mask"][w, start] and features["context_mask"][w, end]
    assert held >= len(rows)  # every answer is whole in at least one window


def test_answer_cut_by_a_window_edge_is_not_a_target():
    features = {"window_row": np.array([0, 0]), "cls_index": np.array([0, 0]),
                "context_mask": np.array([[0, 1, 1, 1], [0, 1, 1, 1]], dtype=bool),
                "offsets": np.array([[[0, 0], [0, 3], [4, 7], [8, 11]],
                                     [[0, 0], [8, 11], [12, 15], [16, 19]]])}
    starts, ends = answer_positions(features, [(4, 15)])  # "bbb ccc ddd" spans both windows
    assert starts.tolist() == [0, 0] and ends.tolist() == [0, 0]
    starts, ends = answer_positions(features, [(9, 15)])  # inside a token: the whole token
    assert starts.tolist() == [0, 1] and ends.tolist() == [0, 2]


def test_window_and_question_limits_are_clear_errors(tokenizer):
    rows = make_rows(1, 2)
    with pytest.raises(UsageError, match="doc_stride=16 needs windows of more than 32 tokens"):
        QuestionAnswering(doc_stride=16).encode(rows, tokenizer)
    long = [{**rows[0], "question": " ".join(["where does anna live"] * 8)}]
    with pytest.raises(DataError, match="is too long: at least 32 tokens.*at most 20"):
        QuestionAnswering(doc_stride=8).encode(long, tokenizer)


# -- span search -----------------------------------------------------------------------------

def _outputs(start, end, mask, owners, cls=None):
    start, end = np.array(start, dtype=np.float32), np.array(end, dtype=np.float32)
    return {"start_logits": start, "end_logits": end, "context_mask": np.array(mask, bool),
            "window_row": np.array(owners), "cls_index": np.array(cls or [0] * len(owners))}


def test_best_span_over_windows_respects_order_length_and_context():
    mask = [[0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]]
    start = [[9, 9, 1, 0, 6, 0], [0, 0, 2, -1, -1, -1]]  # question tokens score high: ignored
    end = [[9, 9, 0, 4, 0, 1], [0, 0, 0, 1, 3, 0]]       # (4, 3) would score 10: end < start
    found = search_spans(_outputs(start, end, mask, [0, 0]), 1, 30, 3, False)[0]
    best = found.spans[0]
    assert (best.window, best.start, best.end, best.logit) == (0, 4, 5, 7.0)
    assert (found.spans[1].start, found.spans[1].end, found.spans[1].logit) == (4, 4, 6.0)
    assert len(found.spans) == 6  # candidates × windows, best first
    assert [s.logit for s in found.spans] == sorted((s.logit for s in found.spans), reverse=True)
    assert found.null_logit is None
    # the probability: start softmax × end softmax over the window's context and first token
    s, e = np.exp([9, 1, 0, 6, 0]), np.exp([9, 0, 4, 0, 1])
    assert best.probability == pytest.approx(s[3] / s.sum() * e[4] / e.sum(), rel=1e-6)
    single = search_spans(_outputs(start, end, mask, [0, 0]), 1, 1, 1, False)[0].spans[0]
    assert (single.window, single.start, single.end) == (0, 4, 4)
    # one row per window: with spans of at most 2 tokens, row 1's (2, 4) is out of reach
    rows = search_spans(_outputs(start, end, mask, [0, 1]), 2, 2, 1, False)
    assert (rows[1].spans[0].start, rows[1].spans[0].end) == (2, 3)
    rows = search_spans(_outputs(start, end, mask, [0, 1]), 2, 30, 1, False)
    assert (rows[1].spans[0].start, rows[1].spans[0].end) == (2, 4)


def test_no_answer_wins_by_the_threshold():
    mask = [[0, 1, 1]]
    outputs = _outputs([[4, 1, 0]], [[4, 0, 1]], mask, [0])
    found = search_spans(outputs, 1, 30, 1, True)[0]
    assert found.null_logit == 8.0 and found.spans[0].logit == 2.0
    task = QuestionAnswering(allow_no_answer=True)
    offsets = np.array([[[0, 0], [0, 3], [4, 7]]])
    row = {"question": "q", "context": "abc def"}
    prediction = task.postprocess({**outputs, "offsets": offsets}, [row])[0]
    assert prediction["answer"] == "" and prediction["start"] is None
    assert 0 < prediction["score"] < 1
    lenient = QuestionAnswering(allow_no_answer=True, null_threshold=10.0, n_best=2)
    prediction = lenient.postprocess({**outputs, "offsets": offsets}, [row])[0]
    assert (prediction["answer"], prediction["start"], prediction["end"]) == ("abc def", 0, 7)
    assert [a["answer"] for a in prediction["n_best"]] == ["abc def", "abc"]


# -- a tiny model: train, export, parity, CLI ------------------------------------------------

@pytest.fixture(scope="module")
def qa_data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("qa-data")
    return {"train": write_jsonl(root / "train.jsonl", make_rows(160, 3)),
            "validation": write_jsonl(root / "validation.jsonl", make_rows(40, 4))}


@pytest.fixture(scope="module")
def qa_run(qa_base, qa_data, tmp_path_factory) -> Path:
    from nlpforge.training.loop import TrainConfig, train

    out = tmp_path_factory.mktemp("qa-runs") / "run"
    train(TrainConfig(task="question-answering", model=str(qa_base), train=str(qa_data["train"]),
                      validation=str(qa_data["validation"]), output=str(out), epochs=2,
                      batch_size=16, lr=3e-3, max_length=40, warmup_ratio=0.0,
                      task_options={"doc_stride": 8}, progress=False, tensorboard=False))
    return out


@pytest.fixture(scope="module")
def qa_export(qa_run, tmp_path_factory) -> Path:
    from nlpforge.export.onnx import export_run

    out = tmp_path_factory.mktemp("qa-exports") / "export"
    export_run(str(qa_run), str(out))
    return out


def test_training_learns_the_answers(qa_run):
    state = json.loads((qa_run / "trainer_state.json").read_text())
    metrics = state["best"]["metrics"]
    assert metrics["questions"] == 40
    assert metrics["f1"] >= 60.0, metrics
    manifest = json.loads((qa_run / "nlpforge.json").read_text())
    assert manifest["task"]["state"]["options"]["doc_stride"] == 8


def test_export_signature_and_onnx_answers_match_pytorch(qa_run, qa_export, qa_data):
    import nlpforge
    from nlpforge.runtime.batching import predict_rows
    from nlpforge.training.loading import load_run, torch_runner

    manifest = json.loads((qa_export / "nlpforge.json").read_text())
    assert manifest["io"]["outputs"] == ["start_logits", "end_logits"]
    assert manifest["io"]["dynamic_axes"]["start_logits"] == {"0": "batch_size",
                                                               "1": "sequence_length"}
    rows = [json.loads(line) for line in qa_data["validation"].read_text().splitlines()]
    _, task, model, tokenizer = load_run(qa_run)
    inputs = [n for n in ("input_ids", "attention_mask", "token_type_ids")
              if n in manifest["model_inputs"]]
    torch_preds = predict_rows(task, tokenizer, torch_runner(task, model, inputs), rows, 8)
    onnx_preds = nlpforge.load(str(qa_export)).predict(
        [{"question": r["question"], "context": r["context"]} for r in rows])
    same = [(a["start"], a["end"]) == (b["start"], b["end"])
            for a, b in zip(torch_preds, onnx_preds)]
    assert all(same)
    for row, prediction in zip(rows, onnx_preds):
        assert set(prediction) == {"answer", "start", "end", "score"}
        assert row["context"][prediction["start"]:prediction["end"]] == prediction["answer"]
        assert 0 < prediction["score"] <= 1
        assert prediction["answer"]


def test_n_best_long_and_empty_contexts_torch_free(qa_export):
    import nlpforge

    predictor = nlpforge.load(str(qa_export))
    predictor.task = QuestionAnswering(**{**predictor.task.settings, "n_best": 3})
    long = make_rows(1, 8, filler=30)[0]  # many windows
    empty = {"question": "Where does Ida live?", "context": ""}
    found, nothing = predictor.predict([{"question": long["question"],
                                         "context": long["context"]}, empty])
    assert len(predictor.task.encode([long], predictor.tokenizer)["window_row"]) > 5
    spans = [(a["start"], a["end"]) for a in found["n_best"]]
    assert len(found["n_best"]) == 3 and len(set(spans)) == 3
    assert found["n_best"][0]["answer"] == found["answer"]
    assert all(long["context"][a["start"]:a["end"]] == a["answer"] for a in found["n_best"])
    assert found["answer"] == long["answers"]["text"][0]
    assert (nothing["answer"], nothing["start"], nothing["n_best"]) == ("", None, [])


def test_served_answers_equal_the_predictor_for_windowed_contexts(qa_export):
    """Long contexts (several windows per request) through the server's batcher, v1 and v2."""
    import nlpforge
    from test_serving import Server

    rows = make_rows(3, 9, filler=30) + make_rows(2, 10)
    requests = [{"question": r["question"], "context": r["context"]} for r in rows]
    expected = nlpforge.load(str(qa_export)).predict(requests)
    server = Server(f"qa={qa_export}", "--threads", "1", "--max-batch-size", "4")
    try:
        c = server.client
        response = c.post("/v1/models/qa/predict", json={"inputs": requests})
        assert response.status_code == 200, response.text
        served = response.json()["predictions"]
        assert [(p["answer"], p["start"], p["end"]) for p in served] == \
            [(p["answer"], p["start"], p["end"]) for p in expected]
        v2 = {"inputs": [{"name": name, "shape": [len(requests)], "datatype": "BYTES",
                          "data": [r[name] for r in requests]}
                         for name in ("question", "context")]}
        response = c.post("/v2/models/qa/infer", json=v2)
        assert response.status_code == 200, response.text
        outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
        assert outputs["answer"] == [p["answer"] for p in expected]
    finally:
        server.client.close()
        server.stop()


def test_cli_predict_evaluate_and_bad_offsets(qa_run, qa_export, qa_data, tmp_path):
    """predict prints the in-process Predictor's answers; evaluate on the export gives the
    metrics PyTorch gave the saved (best) model on the same validation data in training."""
    import nlpforge

    requests = [{"question": "Where does Emma live?", "context": "Emma lives in Oslo."},
                *({"question": r["question"], "context": r["context"]} for r in make_rows(2, 5))]
    result = run_cli("predict", str(qa_export), "--input",
                     str(write_jsonl(tmp_path / "req.jsonl", requests)))
    assert result.returncode == 0, result.stderr
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    expected = nlpforge.load(str(qa_export)).predict(requests)
    assert [(p["answer"], p["start"], p["end"]) for p in printed] == \
        [(p["answer"], p["start"], p["end"]) for p in expected]
    assert [p["score"] for p in printed] == pytest.approx([p["score"] for p in expected],
                                                          abs=1e-6)

    result = run_cli("evaluate", str(qa_export), "--data", str(qa_data["validation"]))
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)["metrics"]
    by_torch = json.loads((qa_run / "trainer_state.json").read_text())["best"]["metrics"]
    assert metrics["questions"] == by_torch["questions"] == 40
    for key in ("exact_match", "f1"):
        assert metrics[key] == pytest.approx(by_torch[key], abs=1e-6), key

    rows = make_rows(3, 5)
    rows[1]["answers"]["answer_start"][0] += 2
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    result = run_cli("evaluate", str(qa_export), "--data", str(bad))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"{bad}:2: field 'answers': answer 0 " in result.stderr
    assert "the context there reads" in result.stderr


def test_plugin_imports_no_torch():
    code = ("import sys, nlpforge_question_answering, nlpforge_question_answering.spans, "
            "nlpforge_question_answering.windows, nlpforge_question_answering.squad; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
