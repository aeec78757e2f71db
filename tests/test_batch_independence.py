"""A row's prediction does not depend on the rows batched with it, for every built-in task and
the two test plugins: each row predicted alone equals its prediction inside any batch of other
rows of mixed kinds (texts and pairs, raw text and words, requests and evaluation rows, prompts
and chats, rows with and without targets), through ``Predictor.predict`` (one batch, or
length-sorted blocks), ``Generator.predict`` and PyTorch's ``predict_rows``; and over HTTP,
one client's pair row leaves the other clients' predictions as they are alone.

Numbers agree within ``ATOL`` (absolute plus relative: padding changes the shapes ONNX Runtime
multiplies, so sums come out in another order); labels, entities, answers and text exactly.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nlpforge.testing.contract import compare_predictions
from tests.conftest import write_jsonl

ATOL = 1e-5
#: Hypothesis draws this many batches per task; derandomized, so every run draws the same.
EXAMPLES = 25


def _export(base: Path, root: Path, task: str, rows: list[dict], max_length: int,
            **options: Any) -> Path:
    """One training step on ``rows`` and an export: a tiny model of the task (the property
    is about the task's code and the runtime, not about what the model learnt)."""
    from nlpforge.export.onnx import export_run
    from nlpforge.training.loop import TrainConfig, train

    root.mkdir(parents=True, exist_ok=True)
    train(TrainConfig(task=task, model=str(base), train=str(write_jsonl(root / "t.jsonl", rows)),
                      output=str(root / "run"), max_steps=1, batch_size=4, lr=1e-3,
                      max_length=max_length, task_options=options, progress=False,
                      tensorboard=False, device="cpu"))
    export_run(str(root / "run"), str(root / "export"))
    return root / "export"


def _load(directory: Path, **kwargs: Any) -> Any:
    import nlpforge

    return nlpforge.load(str(directory), device="cpu", threads=1, **kwargs)


# -- the rows: every kind each task takes ----------------------------------------------------

LONG = ("the film was long and the plot was thin but the music and the acting carried it "
        "through to the end where everything fell into place ") * 3

CLASSIFICATION = [
    {"text": "the food was cold"},
    {"text": "i would not go back"},
    {"text": "what a lovely film", "text_pair": "i liked it a lot"},
    {"text": "a premise", "text_pair": "a hypothesis that is longer than the premise"},
    {"text": LONG * 4},                                   # truncated to max_length
    {"text": "short", "text_pair": LONG * 4},             # a pair truncated longest first
    {"text": "", "text_pair": ""},                        # an empty pair is a pair
]
NER = [
    {"text": "Ada Lovelace met Charles Babbage in London."},
    {"tokens": ["Ada", "Lovelace", "visited", "Paris", "."]},
    {"text": "Alan Turing worked in Manchester and later lived in Wilmslow with friends "
             "from Cambridge and London, says Ada."},  # several windows of 16 tokens
    {"tokens": "Grace Hopper moved from New York to Arlington in Virginia after the war "
               "with Ada Lovelace".split()},
    {"text": "Ada Lovelace met Charles Babbage in London.", "aggregation": "simple"},
    {"tokens": ["Charles", "Babbage", "in", "London"], "aggregation": "max"},
]
QA = [
    {"question": "Where does Ada live?", "context": "Ada lives in Paris."},
    {"question": "Who lives in Rome?", "context": "The sun was out. Bob lives in Rome. "
                                                  "It rained later. " * 3},
    {"question": "Where?", "context": LONG},              # many windows of 40 tokens
    {"question": "What does the export check?",
     "context": "The export check runs one question through the exported model."},
]
FILL_MASK = [
    {"text": "the movie was [MASK] and the acting was wonderful."},
    {"text": "a [MASK] film with a [MASK] plot", "top_k": 2},
    {"text": LONG + " the [MASK] was great " + LONG},     # a mask in a later window
    {"text": "the music and the story were great"},       # an evaluation row: no mask
    {"text": LONG},                                       # an evaluation row in windows
]
REGRESSION = [{"text": "a great film"}, {"text": "bad"}, {"text": LONG * 3}]
SIMILARITY = [
    {"text_a": "a man is playing a guitar", "text_b": "someone plays music"},
    {"text_a": "a dog runs", "text_b": LONG * 3},
    {"text_a": "x", "text_b": "x"},
]


def _ner_rows() -> list[dict]:
    return [{"tokens": ["Ada", "Lovelace", "lives", "in", "London"],
             "tags": ["B-PER", "I-PER", "O", "O", "B-LOC"]},
            {"tokens": ["Charles", "went", "to", "Paris"], "tags": ["B-PER", "O", "O", "B-LOC"]}]


# -- tiny exports of every encoder task -------------------------------------------------------

@pytest.fixture(scope="module")
def wide_bert(tiny_bert, tmp_path_factory) -> Path:
    """The session's tiny BERT (its tokenizer) with weights drawn wider (initializer range
    0.2, no dropout), as the tiny decoders are: its outputs respond to every token, so a
    feature a neighbour adds (an extra [SEP]) moves a score by far more than ``ATOL``. With
    the default range (and in the suite's briefly trained export) scores hardly depend on the
    input, and an extra [SEP] moves them by less than ``ATOL``: no test of batching."""
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    directory = tmp_path_factory.mktemp("wide") / "bert"
    shutil.copytree(tiny_bert, directory)
    config = BertConfig.from_pretrained(directory)
    config.update({"initializer_range": 0.2, "hidden_dropout_prob": 0.0,
                   "attention_probs_dropout_prob": 0.0, "classifier_dropout": 0.0})
    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def classifier(wide_bert, tmp_path_factory) -> Path:
    return _export(wide_bert, tmp_path_factory.mktemp("classifier"), "text-classification",
                   [{"text": "a good film", "label": "positive"},
                    {"text": "bad", "label": "negative"}], 32)


@pytest.fixture(scope="module")
def encoders(wide_bert, classifier, tmp_path_factory) -> dict[str, Any]:
    """Per task: (the export's Predictor, whether rows are given as checked, pool of rows)."""
    from nlpforge.runtime.predictor import Predictor
    from nlpforge_text_classification import TextClassification

    root = tmp_path_factory.mktemp("batch-independence")
    base = wide_bert
    single = _load(classifier)
    labels = single.task.labels
    # The same graph read as a multi-label classifier (the task's sigmoid and threshold).
    multi = Predictor(single.directory, single.manifest,
                      TextClassification(labels=labels, multi_label=True, threshold=0.5),
                      single.tokenizer, single.session)
    ner = _load(_export(base, root / "ner", "token-classification", _ner_rows(), 16))
    qa = _load(_export(base, root / "qa", "question-answering",
                       [{**QA[0], "answers": {"text": ["Paris"], "answer_start": [13]}}] * 4,
                       40, doc_stride=8, n_best=2))
    mlm = _load(_export(base, root / "mlm", "fill-mask",
                        [{"text": LONG}, {"text": "the music was great"}] * 2, 24))
    regression = _load(_export(base, root / "reg", "text-regression",
                               [{"text": "good", "score": 1.0}, {"text": "bad", "score": 0.0}],
                               32))
    similarity = _load(_export(base, root / "sim", "sentence-similarity",
                               [{**SIMILARITY[0], "score": 0.8}, {**SIMILARITY[2], "score": 1.0}],
                               32))

    return {"text-classification": (single, False, CLASSIFICATION),
            "text-classification multi-label": (multi, False, CLASSIFICATION),
            "token-classification": (ner, False, NER),
            "question-answering": (qa, False, QA),
            "fill-mask": (mlm, True, FILL_MASK),  # requests and evaluation rows together
            "text-regression": (regression, False, REGRESSION),
            "sentence-similarity": (similarity, False, SIMILARITY)}


def _check(predict: Callable, pool: list[dict], alone: list[dict], picks: list[int],
           **kwargs: Any) -> None:
    rows = [pool[i] for i in picks]
    got = predict(rows, **kwargs)
    assert len(got) == len(rows)
    for prediction, i in zip(got, picks):
        problems = compare_predictions(prediction, alone[i], ATOL, ATOL)
        assert not problems, (f"row {json.dumps(pool[i])[:80]} alone vs in a batch of "
                              f"{len(rows)} ({kwargs}): {problems[:3]}")


_batches = st.lists(st.integers(0, 63), min_size=1, max_size=9)


@pytest.mark.parametrize("task", ["text-classification", "text-classification multi-label",
                                  "token-classification", "question-answering", "fill-mask",
                                  "text-regression", "sentence-similarity"])
def test_an_encoder_row_predicts_the_same_alone_and_in_any_batch(encoders, task):
    model, checked, pool = encoders[task]

    def predict(rows: list[dict], batch_size: int) -> list[dict]:
        return model.predict(rows, batch_size=batch_size, checked=checked)

    alone = [predict([row], 32)[0] for row in pool]

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None)
    @given(picks=_batches, batch_size=st.sampled_from([1, 2, 3, 32]))
    def prop(picks: list[int], batch_size: int) -> None:
        # a batch size below the row count takes the Predictor's length-sorted blocks
        _check(predict, pool, alone, [p % len(pool) for p in picks], batch_size=batch_size)

    prop()
    _check(predict, pool, alone, list(range(len(pool))) * 2, batch_size=32)  # every kind


def test_text_classification_encodes_each_row_as_it_is(encoders):
    """A text beside a pair gets no empty second segment: its features are its own."""
    model, _, pool = encoders["text-classification"]
    batch = model.task.encode(pool, model.tokenizer)
    for i, row in enumerate(pool):
        own = model.task.encode([row], model.tokenizer)
        width = own["input_ids"].shape[1]
        for name, array in own.items():
            assert (batch[name][i, :width] == array[0]).all(), (name, row)
        assert batch["attention_mask"][i].sum() == width  # the rest is padding


def _pairs_for_all(self: Any, rows: list[dict], tokenizer: Any) -> dict:
    """text-classification's encode before rows were encoded each as it is: the whole batch
    as pairs as soon as one row has a text_pair."""
    from nlpforge import ENCODER_INPUTS

    pairs = None
    if any(row.get("text_pair") is not None for row in rows):
        pairs = [row.get("text_pair") or "" for row in rows]
    return tokenizer.pad(tokenizer.encode([row["text"] for row in rows], pairs), ENCODER_INPUTS)


def test_the_contract_check_catches_a_batch_dependent_encode(exported, classifier):
    """``check_batch_independence`` (a stage of ``check_task``) fails on the encode that
    paired every row, with the suite's flat trained export too (where the scores move by
    less than the tolerance, the token features give it away), and passes the task as it is."""
    from nlpforge_text_classification import TextClassification

    from nlpforge.runtime.predictor import Predictor
    from nlpforge.testing.contract import check_batch_independence

    class PairsForAll(TextClassification):
        encode = _pairs_for_all

    for directory, message in ((exported, "input_ids, token_type_ids alone differ"),
                               (classifier, "prediction.score")):
        model = _load(directory)
        check_batch_independence(model, CLASSIFICATION)
        broken = Predictor(model.directory, model.manifest, PairsForAll(labels=model.labels),
                           model.tokenizer, model.session)
        with pytest.raises(AssertionError, match=f"depends on the other requests.*{message}"):
            check_batch_independence(broken, CLASSIFICATION)


# -- generative exports: decoder (prompts and chats), encoder-decoder (every seq2seq task) ----

#: A chat template for the tiny GPT-2 (which has none), set on this test's tokenizer only.
CHAT_TEMPLATE = ("{% for message in messages %}<|{{ message['role'] }}|> "
                 "{{ message['content'] }}{{ eos_token }}{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|> {% endif %}")
PROMPTS = [
    {"prompt": "once upon a time"},
    {"prompt": "to be"},
    {"prompt": "the quick brown fox jumps over the lazy dog and " * 3},
    {"messages": [{"role": "user", "content": "what is the weather like?"}]},
    {"messages": [{"role": "system", "content": "be brief"},
                  {"role": "user", "content": "numbers 0 1 2"}]},
]
SOURCES = [{"source": "the house is small"}, {"source": "two dogs are playing in the snow"},
           {"source": "summarize: the meeting moved to friday " * 4}]
DOCUMENTS = [{"document": "the meeting moved to friday"}, {"document": "two dogs " * 9}]
SPANS = [{"text": "the house <extra_id_0> small"},      # a request: generate the span
         {"text": "two dogs are playing in the snow"},  # plain text: corrupted by encode
         {"text": "<extra_id_0> meeting <extra_id_1> friday"},
         {"text": "the meeting moved to friday and the house is small"}]


@pytest.fixture(scope="module")
def generators(gpt2_export, t5_export) -> dict[str, Any]:
    from nlpforge.runtime.generation.generator import Generator
    from nlpforge_seq2seq.pretraining import SpanCorruption
    from nlpforge_seq2seq.tasks import Summarization, Translation

    decoder = _load(gpt2_export[1], batch_size=3)
    decoder.tokenizer.chat_template = CHAT_TEMPLATE
    t5 = _load(t5_export[1], batch_size=3)

    def sibling(task: Any) -> Any:
        """The T5 export's graphs behind another seq2seq task (its own prefix, fields)."""
        return Generator(t5.stepper, t5.tokenizer, t5.config, task, t5.directory, t5.manifest,
                         batch_size=3)

    return {"text-generation": (decoder, PROMPTS),
            "text2text-generation": (t5, SOURCES),
            "summarization": (sibling(Summarization(prefix="summarize: ")), DOCUMENTS + [
                {"source": "the source alias of a document"}]),
            "translation": (sibling(Translation(prefix="auto")), SOURCES[:2]),
            "span-corruption": (sibling(SpanCorruption()), SPANS)}


@pytest.mark.parametrize("task", ["text-generation", "text2text-generation", "summarization",
                                  "translation", "span-corruption"])
def test_a_generated_text_is_the_same_alone_and_in_any_batch(generators, task):
    generator, pool = generators[task]
    rows = generator.as_rows(pool)
    settings_ = {"max_new_tokens": 6, "do_sample": False, "min_new_tokens": 0}

    def predict(batch: list[dict], num_beams: int) -> list[dict]:
        return generator.predict(batch, checked=True, num_beams=num_beams,
                                 num_return_sequences=1, **settings_)

    alone = {beams: [predict([row], beams)[0] for row in rows] for beams in (1, 2)}
    assert any(p["generated_text"] for p in alone[1]), "nothing generated: a vacuous check"

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None)
    @given(picks=_batches, beams=st.sampled_from([1, 2]))
    def prop(picks: list[int], beams: int) -> None:
        _check(predict, rows, alone[beams], [p % len(rows) for p in picks], num_beams=beams)

    prop()


def test_span_corruption_keeps_requests_and_plain_texts_apart():
    from nlpforge_seq2seq.pretraining import SpanCorruption

    task = SpanCorruption()
    assert [task.batch_key(r) for r in SPANS] == [True, False, True, False]


def test_seq2seq_scores_and_generates_the_same_beside_the_other_kind(t5_export):
    """``nlpforge predict RUN_DIR`` (PyTorch through ``predict_rows``): rows with a target
    are scored (teacher forced), rows without generate; a batch of both gives each what it
    gives alone."""
    from nlpforge.cli.predict import open_model

    pool = [{"source": "the house is small", "target": "das haus ist klein"},
            {"source": "two dogs are playing"},
            {"source": "the meeting moved to friday", "target": "meeting friday"},
            {"source": "summarize: a long " * 5}]
    for batch_size in (1, 2, 32):
        _, predict = open_model(str(t5_export[0]), "cpu", 1, batch_size)
        alone = [predict([row])[0] for row in pool]
        assert {"nll", "generated_text"} <= {k for p in alone for k in p}
        _check(lambda rows: predict(rows), pool, alone, [0, 1, 2, 3, 1, 0])


# -- the server: one client's pair row among other clients' requests --------------------------

def test_a_pair_row_leaves_the_other_clients_predictions_as_they_are_alone(classifier):
    """30 clients send a text each, at once, while one client sends a pair row: the server
    batches them together (checked on /metrics), and every text's prediction is the one it
    gets alone."""
    import httpx

    from tests.test_serving import Server

    sentences = ["the food was cold", "i would not go back", "what a lovely film"]
    texts = [sentences[i % 3] for i in range(30)]
    # as long as the texts: the batcher puts requests of similar length in one batch
    pair = {"text": "the food", "text_pair": "was cold"}
    server = Server(f"sentiment={classifier}", "--max-queue-delay-ms", "500", "--threads", "1",
                    "--max-batch-size", "64")
    try:
        def predict(client: httpx.Client, inputs: list) -> list[dict]:
            response = client.post("/v1/models/sentiment/predict", json={"inputs": inputs})
            assert response.status_code == 200, response.text
            return response.json()["predictions"]

        alone = {text: predict(server.client, [text])[0] for text in sentences}
        start = threading.Barrier(len(texts) + 1)
        got: dict[int, dict] = {}

        def client(i: int, inputs: list) -> None:
            with httpx.Client(base_url=server.url, timeout=60) as connection:
                connection.get("/v2/health/live")  # connected before the race starts
                start.wait(60)
                got[i] = predict(connection, inputs)[0]

        threads = [threading.Thread(target=client, args=(i, [text]))
                   for i, text in enumerate(texts)]
        threads.append(threading.Thread(target=client, args=(-1, [pair] * 3)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert len(got) == len(texts) + 1, "a client did not get an answer"
        metrics = {line.split("{")[0]: float(line.split()[-1])
                   for line in server.client.get("/metrics").text.splitlines()
                   if line.startswith(("nlpforge_batch_size_sum", "nlpforge_batch_size_count"))}
        rows = metrics["nlpforge_batch_size_sum"] - len(sentences)
        runs = metrics["nlpforge_batch_size_count"] - len(sentences)
        assert rows / runs >= 4, f"{rows:g} rows in {runs:g} runs: hardly batched, a vacuous check"
        for i, text in enumerate(texts):
            problems = compare_predictions(got[i], alone[text], ATOL, ATOL)
            assert not problems, f"client {i} ({text!r}) beside a pair row: {problems[:3]}"
    finally:
        server.client.close()
        server.stop()


def test_a_row_refused_while_encoding_fails_only_its_own_request(encoders):
    """A QA question too long for its windows is refused only when it is encoded: in a
    server batch of several requests, that request gets the error, the others their
    predictions."""
    from nlpforge.errors import DataError
    from nlpforge.serving.predicting import PredictorModel

    model, _, pool = encoders["question-answering"]
    served = PredictorModel("qa", model)
    too_long = {"question": "why " * 60, "context": "because."}

    def job(rows: list[dict]) -> SimpleNamespace:
        return SimpleNamespace(payload=SimpleNamespace(rows=rows, truncate=True,
                                                       where="inputs", first=0),
                               size=len(rows), kind=("rows", True))

    results = served.run_batch([job(pool[:2]), job([pool[2], too_long]), job(pool[3:])])
    assert isinstance(results[1], DataError) and "too long" in str(results[1])
    for result, rows in ((results[0], pool[:2]), (results[2], pool[3:])):
        predictions, _ = result
        assert not compare_predictions(predictions, model.predict(rows), ATOL, ATOL)
