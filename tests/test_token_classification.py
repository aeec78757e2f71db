"""token-classification (NER): tag schemes, seqeval parity, alignment, decoding, windows,
and one tiny model trained, exported and run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import run_cli, write_jsonl
from hypothesis import given, settings
from hypothesis import strategies as st
from nlpforge_token_classification.decode import decode_row, merge_windows
from nlpforge_token_classification.features import IGNORE, align_labels, encode_words
from nlpforge_token_classification.entity_scores import entity_report
from nlpforge_token_classification.tags import (
    BIOES,
    IOB2,
    detect_scheme,
    label_set,
    lenient_entities,
    strict_entities,
)
from nlpforge_token_classification.task import TokenClassification
from nlpforge_token_classification.words import join_tokens, split_text, words_of

from nlpforge.data import read_dataset
from nlpforge.errors import DataError, UsageError
from nlpforge.testing.rows import ner_rows

IOB2_TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
BIOES_TAGS = IOB2_TAGS + ["E-PER", "S-PER", "E-LOC", "S-LOC"]


# -- tags and metrics: parity with seqeval ----------------------------------------------------

def sentences(tags: list[str]):
    return st.lists(st.lists(st.sampled_from(tags), min_size=0, max_size=12), min_size=1,
                    max_size=6)


def _seqeval(reference, predicted, strict: bool) -> tuple:
    """seqeval's micro and per-type scores (default mode, or strict mode with IOBES)."""
    import warnings

    from seqeval.metrics import sequence_labeling, v1
    from seqeval.scheme import IOBES

    def scores(average):
        if strict:
            return v1.precision_recall_fscore_support(reference, predicted, average=average,
                                                      scheme=IOBES)
        return sequence_labeling.precision_recall_fscore_support(reference, predicted,
                                                                 average=average)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return scores("micro")[:3], scores(None)


def _check_against_seqeval(reference, predicted, scheme):
    mine = entity_report(predicted, reference, scheme)
    overall, (p, r, f, s) = _seqeval(reference, predicted, strict=scheme == BIOES)
    assert (mine["precision"], mine["recall"], mine["f1"]) == pytest.approx(overall)
    assert len(mine["per_type"]) == len(p)
    for i, kind in enumerate(sorted(mine["per_type"])):  # seqeval sorts the types too
        got = mine["per_type"][kind]
        assert (got["precision"], got["recall"], got["f1"], got["support"]) == \
            pytest.approx((p[i], r[i], f[i], s[i]))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_default_mode_matches_seqeval(data):
    # conlleval's lenient chunking, on any tags (also BIOES tags and ill-formed sequences)
    reference = data.draw(sentences(BIOES_TAGS))
    predicted = [data.draw(st.lists(st.sampled_from(BIOES_TAGS), min_size=len(r),
                                    max_size=len(r))) for r in reference]
    _check_against_seqeval(reference, predicted, IOB2)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_strict_bioes_matches_seqeval(data):
    reference = data.draw(sentences(BIOES_TAGS))
    predicted = [data.draw(st.lists(st.sampled_from(BIOES_TAGS), min_size=len(r),
                                    max_size=len(r))) for r in reference]
    _check_against_seqeval(reference, predicted, BIOES)


@settings(max_examples=80, deadline=None)
@given(sentences(BIOES_TAGS))
def test_entity_extraction_matches_seqeval(tag_lists):
    from seqeval.metrics.sequence_labeling import get_entities
    from seqeval.scheme import IOBES, Entities

    for tags in tag_lists:
        assert [(e.type, e.start, e.end - 1) for e in lenient_entities(tags)] == get_entities(tags)
    strict = Entities(tag_lists, IOBES).entities
    for tags, theirs in zip(tag_lists, strict):
        assert [(e.type, e.start, e.end) for e in strict_entities(tags)] == \
            [(e.tag, e.start, e.end) for e in theirs]


def test_entity_report_by_hand():
    reference = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    predicted = [["B-PER", "I-PER", "O", "B-PER"], ["I-ORG", "O"]]  # I- after O starts one
    report = entity_report(predicted, reference)
    assert report["precision"] == pytest.approx(2 / 3) and report["recall"] == pytest.approx(2 / 3)
    assert report["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert report["per_type"]["PER"]["precision"] == 0.5
    assert report["accuracy"] == pytest.approx(4 / 6)
    # strict BIOES ignores the ill-formed B-PER (no E-PER)
    strict = entity_report([["B-PER", "O", "S-LOC"]], [["B-PER", "E-PER", "S-LOC"]], BIOES)
    assert strict["precision"] == 1.0 and strict["recall"] == 0.5


def test_scheme_detection_and_label_set():
    assert detect_scheme([["O", "B-PER", "I-PER"]]) == IOB2
    assert detect_scheme([["O", "S-PER"]]) == BIOES
    assert label_set([["B-PER", "O", "B-LOC"]], IOB2) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert label_set([["S-X"]], BIOES) == ["O", "B-X", "I-X", "E-X", "S-X"]


# -- words ------------------------------------------------------------------------------------

def test_raw_text_words_keep_character_spans():
    text = "Mr Smith (U.S.) paid $3.5m to O'Neil in Zürich-Nord, 1996-08-22."
    words = split_text(text)
    assert words.words == ["Mr", "Smith", "(", "U.S.", ")", "paid", "$", "3.5m", "to", "O'Neil",
                           "in", "Zürich-Nord", ",", "1996-08-22", "."]
    assert all(text[a:b] == w for w, (a, b) in zip(words.words, words.spans))
    joined = join_tokens(["EU", "rejects", "German"])
    assert joined.text == "EU rejects German" and joined.spans[2] == (11, 17)
    assert words_of({"tokens": ["a"], "text": None}).words == ["a"]


# -- rows, options and errors -----------------------------------------------------------------

def test_row_errors_name_file_line_and_field(tmp_path):
    task = TokenClassification()
    bad = [
        ({"tokens": ["a", "b"], "tags": ["O"]}, "2 tokens but 1 tags"),
        ({"tokens": ["a"], "tags": ["PER"]}, "item 0: tag 'PER' is not IOB2 or BIOES"),
        ({"tokens": ["a"], "tags": [3]}, "item 0: expected string"),
        ({"tokens": [], "tags": []}, "no tokens"),
        ({"tokens": "a b", "tags": ["O"]}, "expected list"),
    ]
    for row, message in bad:
        path = write_jsonl(tmp_path / "bad.jsonl", [{"tokens": ["x"], "tags": ["B-PER"]}, row])
        with pytest.raises(DataError, match=rf"bad.jsonl:2: field '(tags|tokens)': .*{message}"):
            read_dataset(path, task)
    iob2 = TokenClassification(scheme="iob2")
    with pytest.raises(DataError, match="'E-PER' is not IOB2"):
        iob2.check_row({"tokens": ["a"], "tags": ["E-PER"]}, "f.jsonl", 7)


def test_unknown_tag_in_validation_data(tmp_path):
    task = TokenClassification()
    task.fit([{"tokens": ["Ada"], "tags": ["B-PER"]}, {"tokens": ["Rome"], "tags": ["B-LOC"]}])
    path = write_jsonl(tmp_path / "val.jsonl", [{"tokens": ["Ada", "x"], "tags": ["B-PER", "O"]},
                                                 {"tokens": ["IBM"], "tags": ["B-ORG"]}])
    with pytest.raises(DataError, match=r"val.jsonl:2: field 'tags': item 0: unknown tag 'B-ORG'"
                                        r": the model knows the types LOC, PER"):
        read_dataset(path, task)


def test_options_and_requests_are_checked():
    with pytest.raises(UsageError, match="aggregation.*expected one of none, simple, first"):
        TokenClassification(aggregation="mean")
    with pytest.raises(UsageError, match="scheme"):
        TokenClassification(scheme="iob1")
    with pytest.raises(UsageError, match="no entity tags"):
        TokenClassification().fit([{"tokens": ["a"], "tags": ["O"]}])
    with pytest.raises(UsageError, match="use scheme=bioes"):
        TokenClassification(scheme="iob2").fit([{"tokens": ["a"], "tags": ["S-PER"]}])
    task = TokenClassification()
    with pytest.raises(DataError, match=r"inputs\[0\]: a request needs exactly one of 'text'"):
        task.check_row({"text": "a", "tokens": ["a"]}, "inputs[0]", None, training=False)
    with pytest.raises(DataError, match="aggregation'.*got 'best'"):
        task.check_row({"text": "a", "aggregation": "best"}, "inputs[0]", None, training=False)
    task.check_row({"tokens": ["a"], "aggregation": "max"}, "inputs[0]", None, training=False)


# -- alignment, windows and decoding (a real tokenizer, made-up logits) ----------------------

@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from nlpforge.runtime.tokenizer import Tokenizer
    from nlpforge.testing import train_wordpiece_tokenizer

    directory = train_wordpiece_tokenizer(tmp_path_factory.mktemp("ner-tok"))
    return Tokenizer.from_dir(directory, max_length=64, pad_id=0)


def test_labels_go_to_first_sub_tokens_or_all(tokenizer):
    words = ["Lovelace", "loved", "Zürich"]
    tags = ["B-PER", "O", "B-LOC"]
    index = {t: i for i, t in enumerate(IOB2_TAGS)}
    features, windows = encode_words([join_tokens(words)], tokenizer, stride=4)
    pieces = [t for t in windows[0].tokens]
    assert len(pieces) > len(words) + 2  # the words are split into several sub-tokens
    first = align_labels(features, [tags], index, False)[0]
    every = align_labels(features, [tags], index, True)[0]
    word_ids = features["word_ids"][0]
    for w, tag in enumerate(tags):
        positions = np.flatnonzero(word_ids == w)
        assert first[positions[0]] == index[tag]
        assert (first[positions[1:]] == IGNORE).all()
        continuation = "I" + tag[1:] if tag != "O" else "O"
        assert (every[positions[1:]] == index[continuation]).all()
    assert first[0] == IGNORE and every[0] == IGNORE  # [CLS]


def test_long_inputs_are_windowed_and_every_word_labelled_once(tokenizer):
    from nlpforge.runtime.tokenizer import Tokenizer

    short = Tokenizer(tokenizer.backend, tokenizer.pad_id, max_length=12)
    words = [f"word{i}" for i in range(30)]
    tags = ["B-PER" if i % 3 == 0 else "O" for i in range(30)]
    index = {t: i for i, t in enumerate(IOB2_TAGS)}
    features, windows = encode_words([join_tokens(words)], short, stride=4)
    assert len(windows) > 3 and features["input_ids"].shape[1] <= 12
    labels = align_labels(features, [tags], index, False)
    word_ids, owners = features["word_ids"], features["window_row"]
    assert (owners == 0).all()
    labelled = {int(word_ids[k, p]) for k, p in zip(*np.nonzero(labels != IGNORE))}
    assert labelled == set(range(30))


def test_training_batch_and_loss_units(tokenizer):
    task = TokenClassification(label_all_tokens=False)
    rows = [{"tokens": ["Lovelace", "loved", "Zürich"], "tags": ["B-PER", "O", "B-LOC"]},
            {"tokens": ["ok"], "tags": ["O"]}]
    task.fit(rows)
    batch = task.training_batch(rows, tokenizer)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert batch["labels"].shape == batch["input_ids"].shape
    assert task.loss_units(batch) == 4  # one labelled sub-token per word
    every = TokenClassification(labels=task.labels, label_all_tokens=True)
    all_batch = every.training_batch(rows, tokenizer)
    n_tokens = int(all_batch["attention_mask"].sum()) - 2 * len(rows)  # minus [CLS], [SEP]
    assert every.loss_units(all_batch) == n_tokens > 4


def _logits_for(features, pick, strength=lambda k, p: 4.0) -> np.ndarray:
    """Logits that favour ``pick(window, position)`` (a label index) by ``strength``
    (4.0: a probability of 0.93)."""
    n, length = features["input_ids"].shape
    logits = np.zeros((n, length, len(IOB2_TAGS)), dtype=np.float32)
    for k in range(n):
        for p in range(length):
            logits[k, p, pick(k, p)] = strength(k, p)
    return logits


def test_windows_merge_from_the_most_central_window(tokenizer):
    from nlpforge.runtime.tokenizer import Tokenizer

    short = Tokenizer(tokenizer.backend, tokenizer.pad_id, max_length=10)
    words = join_tokens([f"w{i}" for i in range(40)])
    features, windows = encode_words([words], short, stride=4)
    assert len(windows) >= 3
    # every window votes its own label: B-PER in even windows, B-LOC in odd ones
    logits = _logits_for(features, lambda k, p: 1 if k % 2 == 0 else 3)
    tokens = merge_windows({**features, "logits": logits}, 1)[0]
    assert [t.word for t in tokens] == sorted(t.word for t in tokens)
    assert len({(t.word, t.start) for t in tokens}) == len(tokens)  # each sub-token once
    for t in tokens:
        where = [(k, p) for k, p in zip(*np.nonzero(features["word_ids"] == t.word))
                 if features["token_spans"][k, p, 0] == t.start]
        def centrality(kp):
            k, p = kp
            real = np.flatnonzero(features["word_ids"][k] >= 0)
            return min(p - real[0], real[-1] - p)
        best = max(where, key=centrality)  # ties: max() keeps the first, the earlier window
        assert int(t.scores.argmax()) == (1 if best[0] % 2 == 0 else 3)


def test_aggregation_strategies(tokenizer):
    words = split_text("Lovelace met Babbage")
    features, _ = encode_words([words], tokenizer, stride=4)
    word_ids = features["word_ids"][0]
    first_of = {w: int(np.flatnonzero(word_ids == w)[0]) for w in range(3)}
    # Lovelace: first sub-token B-PER, the others (more confident) I-LOC; met: O;
    # Babbage: first sub-token O, the others (more confident) I-LOC
    def pick(k, p):
        if word_ids[p] in (0, 2):
            return (1 if word_ids[p] == 0 else 0) if p in first_of.values() else 4
        return 0

    def strength(k, p):
        return 4.0 if word_ids[p] < 0 or p in first_of.values() else 6.0

    outputs = {**features, "logits": _logits_for(features, pick, strength)}
    tokens = merge_windows(outputs, 1)[0]
    labels = IOB2_TAGS

    def entities(strategy):
        return [(e["type"], e["text"])
                for e in decode_row(tokens, words, labels, strategy)["entities"]]

    n_lovelace, n_babbage = int((word_ids == 0).sum()), int((word_ids == 2).sum())
    assert n_lovelace > 2 and n_babbage > 2  # the sub-tokens outvote the first one
    assert entities("first") == [("PER", "Lovelace")]
    assert entities("max") == [("LOC", "Lovelace"), ("LOC", "Babbage")]
    assert entities("average") == [("LOC", "Lovelace"), ("LOC", "Babbage")]
    simple = decode_row(tokens, words, labels, "simple")["entities"]
    assert [e["type"] for e in simple] == ["PER", "LOC", "LOC"]  # Lovelace split in two
    assert simple[0]["text"] + simple[1]["text"] == "Lovelace"
    assert simple[2]["text"] == "Babbage"[len("Babbage") - len(simple[2]["text"]):]
    none = decode_row(tokens, words, labels, "none")["entities"]
    assert len(none) == n_lovelace + n_babbage - 1 and none[0]["tag"] == "B-PER"
    assert none[0]["score"] == pytest.approx(np.exp(4) / (np.exp(4) + 4))
    assert all(e["text"] == words.text[e["start"]:e["end"]] for e in none)
    first = decode_row(tokens, words, labels, "first")
    assert first["tags"] == ["B-PER", "O", "O"]
    assert first["entities"][0] | {"score": 0} == {"type": "PER", "text": "Lovelace", "start": 0,
                                                   "end": 8, "score": 0}


# -- a tiny model trained, exported and run end to end --------------------------------------



@pytest.fixture(scope="module")
def ner_data(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ner-data")
    return (write_jsonl(directory / "train.jsonl", ner_rows(192, 0)),
            write_jsonl(directory / "validation.jsonl", ner_rows(48, 1)))


@pytest.fixture(scope="module")
def ner_run(tiny_bert, ner_data, tmp_path_factory):
    from nlpforge.training.loop import TrainConfig, train

    out = tmp_path_factory.mktemp("ner-runs") / "run"
    # 16 tokens per window: most sentences are split into windows, in training too
    summary = train(TrainConfig(task="token-classification", model=str(tiny_bert),
                                train=str(ner_data[0]), validation=str(ner_data[1]),
                                output=str(out), epochs=6, batch_size=16, lr=3e-3,
                                max_length=16, progress=False))
    return out, summary


@pytest.fixture(scope="module")
def ner_export(ner_run, tmp_path_factory):
    from nlpforge.export.onnx import export_run

    out = tmp_path_factory.mktemp("ner-exports") / "export"
    return out, export_run(str(ner_run[0]), str(out))


def _entity_sets(predictions):
    return [{(e["type"], e["start"], e["end"]) for e in p["entities"]} for p in predictions]


def test_trained_model_learns_and_onnx_matches_pytorch(ner_run, ner_export, ner_data):
    import nlpforge
    from nlpforge.runtime.batching import predict_rows
    from nlpforge.training.loading import load_run, torch_runner

    run, summary = ner_run
    assert summary["best"]["metrics"]["f1"] > 0.9, summary["best"]
    manifest = json.loads((run / "nlpforge.json").read_text())
    state = manifest["task"]["state"]
    assert state["labels"] == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert state["options"]["scheme"] == "iob2" and state["options"]["aggregation"] == "first"

    export = ner_export[0]
    exported = json.loads((export / "nlpforge.json").read_text())
    assert exported["validation"]["passed"]
    assert max(exported["validation"]["max_abs_diff"].values()) < 1e-4
    assert exported["io"]["dynamic_axes"]["logits"] == {"0": "batch_size", "1": "sequence_length"}

    rows = read_dataset(ner_data[1]).rows
    _, task, model, tokenizer = load_run(run)
    inputs = [n for n in ("input_ids", "attention_mask", "token_type_ids")
              if n in manifest["model_inputs"]]
    torch_preds = predict_rows(task, tokenizer, torch_runner(task, model, inputs), rows, 8)
    predictor = nlpforge.load(str(export), threads=1)
    onnx_preds = predictor.predict([{"tokens": r["tokens"]} for r in rows], batch_size=8)
    same = np.mean([a == b for a, b in zip(_entity_sets(torch_preds), _entity_sets(onnx_preds))])
    assert same >= 0.995
    assert [p["tags"] for p in torch_preds] == [p["tags"] for p in onnx_preds]
    metrics = predictor.task.metrics(onnx_preds, rows)
    assert metrics["f1"] == pytest.approx(task.metrics(torch_preds, rows)["f1"]) and \
        metrics["f1"] > 0.9


def test_raw_text_longer_than_a_window(ner_export):
    import nlpforge

    predictor = nlpforge.load(str(ner_export[0]), threads=1)
    sentence = "i met ada in new york , what a lovely view"
    text = " ".join([sentence] * 12)
    windows = predictor.task.encode([{"text": text}], predictor.tokenizer)["window_row"]
    assert len(windows) > 8  # 16 tokens per window
    found = predictor.predict([text])[0]["entities"]
    assert all(text[e["start"]:e["end"]] == e["text"] for e in found)
    assert all(0 < e["score"] <= 1 for e in found)
    # the entities of each repetition at their place: windows are merged back into the text
    # (a toy model trained in seconds: it misses some, but never at the wrong place)
    expected = {(kind, word, start + i * (len(sentence) + 1))
                for i in range(12) for kind, word, start in (("PER", "ada", 6),
                                                             ("LOC", "new york", 13))}
    got = {(e["type"], e["text"], e["start"]) for e in found}
    hits = expected & got
    assert len(hits) >= 12
    assert all(text[start:start + len(word)] == word for _, word, start in got)
    assert max(start for _, _, start in hits) > len(text) - len(sentence)


def test_cli_predict_and_evaluate(ner_export, ner_data, tmp_path):
    export = str(ner_export[0])
    requests = write_jsonl(tmp_path / "requests.jsonl", [
        {"text": "Grace met Alan in Paris."},
        {"tokens": ["marie", "curie", "loved", "rome"]},
        {"text": "grace loved london", "aggregation": "none"},
    ])
    result = run_cli("predict", export, "--input", str(requests), "--threads", "1")
    assert result.returncode == 0, result.stderr
    text_pred, tokens_pred, token_level = [json.loads(x) for x in result.stdout.splitlines()]
    assert {(e["type"], e["text"], e["start"], e["end"]) for e in text_pred["entities"]} >= \
        {("PER", "Grace", 0, 5), ("LOC", "Paris", 18, 23)}
    assert "tags" not in text_pred
    assert tokens_pred["tags"] == ["B-PER", "I-PER", "O", "B-LOC"]
    assert [e["text"] for e in tokens_pred["entities"]] == ["marie curie", "rome"]
    assert {"tag", "type", "score", "start", "end"} <= set(token_level["entities"][0])

    result = run_cli("evaluate", export, "--data", str(ner_data[1]), "--threads", "1")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)["metrics"]
    assert set(metrics["per_type"]) == {"LOC", "PER"} and metrics["f1"] > 0.9
    assert metrics["entities"] == sum(t.startswith("B-") for r in read_dataset(ner_data[1]).rows
                                      for t in r["tags"])


def test_cli_data_errors_name_file_and_line(ner_export, tiny_bert, tmp_path):
    bad = write_jsonl(tmp_path / "val.jsonl", [{"tokens": ["ada"], "tags": ["B-PER"]},
                                                {"tokens": ["ibm", "x"], "tags": ["O", "B-ORG"]}])
    result = run_cli("evaluate", str(ner_export[0]), "--data", str(bad))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "val.jsonl:2: field 'tags': item 1: unknown tag 'B-ORG'" in result.stderr
    train = write_jsonl(tmp_path / "train.jsonl", [{"tokens": ["ada"], "tags": ["B-PER"]},
                                                   {"tokens": ["ada", "x"], "tags": ["B-PER"]}])
    result = run_cli("train", "--task", "token-classification", "--model", str(tiny_bert),
                     "--train", str(train), "--output", str(tmp_path / "run"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "train.jsonl:2: field 'tags': 2 tokens but 1 tags" in result.stderr


def test_prediction_needs_no_torch(ner_export):
    block = textwrap.dedent('''
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "transformers", "optimum"):
                    raise ImportError(f"blocked import of {name}")
        sys.meta_path.insert(0, Block())
        import json, nlpforge
        predictor = nlpforge.load(sys.argv[1], threads=1)
        print(json.dumps(predictor.predict(["ada loved rome"])))
    ''')
    result = subprocess.run([sys.executable, "-c", block, str(ner_export[0])],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert [e["text"] for e in json.loads(result.stdout)[0]["entities"]] == ["ada", "rome"]
