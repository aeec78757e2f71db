"""fill-mask: dynamic and evaluation masking, perplexity, top-k fillers, export parity, errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import run_cli, write_jsonl
from nlpforge_fill_mask import FillMask

from nlpforge.errors import DataError, UsageError
from nlpforge.runtime.tokenizer import Tokenizer
from nlpforge.testing.encoders import CORPUS

LONG = " ".join(CORPUS[:6])  # about 60 tokens
TRAIN = [{"text": t} for t in CORPUS[:10]] * 4 + [{"text": LONG}]
VALID = [{"text": t} for t in CORPUS] + [{"text": LONG}]


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    return Tokenizer.from_dir(tiny_bert, max_length=24)


@pytest.fixture(scope="module")
def run_dir(tiny_bert, tmp_path_factory):
    from nlpforge.training.loop import TrainConfig, train

    root = tmp_path_factory.mktemp("fill-mask")
    out = root / "run"
    train(TrainConfig(task="fill-mask", model=str(tiny_bert),
                      train=str(write_jsonl(root / "train.jsonl", TRAIN)),
                      validation=str(write_jsonl(root / "valid.jsonl", VALID)),
                      output=str(out), max_steps=40, batch_size=8, lr=3e-3, max_length=32,
                      warmup_ratio=0.0, progress=False, tensorboard=False))
    return out


@pytest.fixture(scope="module")
def export_dir(run_dir, tmp_path_factory):
    from nlpforge.export.onnx import export_run

    out = tmp_path_factory.mktemp("fill-mask-export") / "exp"
    export_run(str(run_dir), str(out))
    return out


# -- masking ---------------------------------------------------------------------------------


def test_dynamic_masking_follows_bert_recipe(tokenizer):
    task = FillMask(text_mode="truncate")
    rows = [{"text": t} for t in CORPUS] * 40
    np.random.seed(0)
    batch = task.training_batch(rows, tokenizer)
    plain = tokenizer.pad(tokenizer.encode([r["text"] for r in rows]))
    ids, labels, mask = plain["input_ids"], batch["labels"], plain["attention_mask"].astype(bool)
    special = np.isin(ids, [0, 1, 2, 3, 4])
    chosen = labels != -100
    assert not (chosen & (special | ~mask)).any(), "special or padding token chosen"
    assert (labels[chosen] == ids[chosen]).all(), "labels must hold the original ids"
    share = chosen.sum() / (mask & ~special).sum()
    assert 0.13 < share < 0.17, share
    corrupted = batch["input_ids"][chosen]
    as_mask = (corrupted == 4).mean()
    unchanged = (corrupted == ids[chosen]).mean()
    assert 0.75 < as_mask < 0.85 and 0.06 < unchanged < 0.15, (as_mask, unchanged)
    assert (batch["input_ids"][~chosen] == ids[~chosen]).all(), "unchosen token changed"
    assert task.loss_units(batch) == chosen.sum()


def test_dynamic_masks_are_reproducible_from_the_numpy_seed(tokenizer):
    task = FillMask()
    rows = [{"text": t} for t in CORPUS]
    np.random.seed(7)
    first = task.training_batch(rows, tokenizer)
    state = np.random.get_state()  # what the trainer checkpoints
    second = task.training_batch(rows, tokenizer)
    np.random.seed(7)
    assert (task.training_batch(rows, tokenizer)["labels"] == first["labels"]).all()
    np.random.set_state(state)
    again = task.training_batch(rows, tokenizer)
    assert (again["labels"] == second["labels"]).all()
    assert (again["input_ids"] == second["input_ids"]).all()
    assert (first["labels"] != second["labels"]).any(), "each pass must draw new masks"


def test_a_batch_always_has_a_masked_token(tokenizer):
    task = FillMask(mlm_probability=0.01)
    np.random.seed(0)
    for _ in range(20):
        assert task.loss_units(task.training_batch([{"text": "dull"}], tokenizer)) >= 1


def test_loss_on_masked_rows_equals_the_heads_loss(tokenizer, tiny_bert):
    import torch

    task = FillMask()
    model = task.build_model(str(tiny_bert)).eval()
    np.random.seed(3)
    batch = {k: torch.from_numpy(v) for k, v in
             task.training_batch([{"text": t} for t in CORPUS], tokenizer).items()}
    grads = []
    for loss_of in (lambda: model(**batch).loss, lambda: task.compute_loss(model, batch)):
        model.zero_grad()
        loss = loss_of()
        loss.backward()
        grads.append((float(loss.detach()), model.get_input_embeddings().weight.grad.clone()))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6)
    assert not model.get_output_embeddings()._forward_pre_hooks, "hook left behind"


def test_evaluation_masks_depend_on_the_text_only(tokenizer, tiny_bert):
    task = FillMask()
    rows = [{"text": t} for t in CORPUS]

    def targets(batch):
        f = task.encode(batch, tokenizer)
        out = {}
        for r, row in enumerate(batch):  # (window, position, target, corrupted id)
            mine = f["window_row"] == r
            labels, ids = f["target_ids"][mine], f["input_ids"][mine]
            out[row["text"]] = [(w, p, labels[w, p], ids[w, p])
                                for w, p in zip(*np.nonzero(labels != -100))]
        return out

    np.random.seed(1)
    whole = targets(rows)
    np.random.seed(2)
    assert targets(rows[::-1]) == whole
    assert targets(rows[3:5]) == {k: whole[k] for k in (CORPUS[3], CORPUS[4])}
    unlimited = Tokenizer.from_dir(tiny_bert, max_length=512)
    for text, chosen in whole.items():
        count = len(chosen)
        tokens = len(unlimited.encode([text])[0].ids) - 2
        assert count == max(1, round(0.15 * tokens)), text


def test_text_modes(tokenizer, tiny_bert):
    rows = [{"text": LONG}, {"text": "dull"}]
    tokens = len(Tokenizer.from_dir(tiny_bert, max_length=512).encode([LONG])[0].ids) - 2
    for mode in ("blocks", "split"):  # evaluation rows: each alone, nothing dropped
        split = FillMask(text_mode=mode).encode(rows, tokenizer)
        windows = split["window_row"] == 0
        assert windows.sum() == math.ceil(tokens / 22) and split["window_row"][-1] == 1
        assert split["attention_mask"][windows].sum() - 2 * windows.sum() == tokens
    cut = FillMask(text_mode="truncate").encode(rows, tokenizer)
    assert cut["window_row"].tolist() == [0, 1]
    # training: blocks packs every token of the batch (special tokens included) end to end
    np.random.seed(0)
    packed = FillMask().training_batch([{"text": t} for t in CORPUS], tokenizer)
    total = sum(len(e.ids) for e in tokenizer.encode_windows(CORPUS, stride=0)[0])
    assert packed["input_ids"].shape == (math.ceil(total / 24), 24)
    assert packed["attention_mask"].sum() == total and packed["attention_mask"][:-1].all()
    np.random.seed(0)
    alone = FillMask(text_mode="split").training_batch([{"text": t} for t in CORPUS[:3]]
                                                       + [{"text": LONG}], tokenizer)
    assert alone["input_ids"].shape[0] == 3 + math.ceil(tokens / 22)
    with pytest.raises(UsageError, match="text_mode"):
        FillMask(text_mode="pack")


def test_options_are_checked():
    for bad in ({"mlm_probability": 0}, {"mlm_probability": 1.5}, {"top_k": 0},
                {"mask_replace_prob": 0.9, "random_replace_prob": 0.2}):
        with pytest.raises(UsageError):
            FillMask(**bad)


# -- scoring ---------------------------------------------------------------------------------


def test_perplexity_and_accuracy_from_logits(tokenizer):
    task = FillMask()
    rows = [{"text": CORPUS[0]}, {"text": CORPUS[1]}]
    features = task.encode(rows, tokenizer)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(*features["input_ids"].shape, 300)).astype(np.float32)
    out = task.postprocess({**features, "logits": logits}, rows)
    targets = features["target_ids"]
    w, t = np.nonzero(targets != -100)
    x = logits[w, t].astype(np.float64)
    nll = np.log(np.exp(x).sum(-1)) - x[np.arange(len(w)), targets[w, t]]
    hits = (x.argmax(-1) == targets[w, t]).sum()
    metrics = task.metrics(out, rows)
    assert metrics["masked_tokens"] == len(w) == sum(p["masked_tokens"] for p in out)
    assert metrics["perplexity"] == pytest.approx(math.exp(nll.mean()), rel=1e-9)
    assert metrics["masked_accuracy"] == pytest.approx(hits / len(w))
    with pytest.raises(UsageError, match="no token to score"):
        task.metrics([{"masks": []}], [{"text": "[MASK]"}])


def test_fillers_are_sorted_probabilities_per_mask(tokenizer):
    task = FillMask()
    rows = [{"text": "the [MASK] was [MASK] and cold"}, {"text": "the food was [MASK]", "top_k": 2}]
    features = task.encode(rows, tokenizer)
    logits = np.random.default_rng(0).normal(size=(*features["input_ids"].shape, 268))
    out = task.postprocess({**features, "logits": logits.astype(np.float32)}, rows)
    assert len(out[0]["masks"]) == 2 and len(out[1]["masks"]) == 1
    assert [len(m) for m in out[0]["masks"]] == [5, 5] and len(out[1]["masks"][0]) == 2
    first = out[0]["masks"][0]
    scores = [f["score"] for f in first]
    assert scores == sorted(scores, reverse=True) and 0 < scores[-1] <= scores[0] < 1
    ids = features["input_ids"][0]
    position = int(np.flatnonzero(ids == 4)[0])
    x = logits[0, position] - logits[0, position].max()
    assert scores[0] == pytest.approx(np.exp(x).max() / np.exp(x).sum())
    assert first[0]["token"] == int(np.argmax(logits[0, position]))
    assert first[0]["token_str"] == tokenizer.decode([first[0]["token"]], False)
    # the other mask stays in the sequence; [CLS]/[SEP] do not
    assert first[0]["sequence"].count("[MASK]") == 1 and "[CLS]" not in first[0]["sequence"]
    assert "masked_tokens" not in out[0]


# -- data errors -----------------------------------------------------------------------------


def test_request_without_mask_names_the_input_and_the_token():
    task = FillMask.from_state({"options": {}, "mask_token": "<mask>"})
    with pytest.raises(DataError, match=r"inputs\[3\]: field 'text': no mask token: write <mask>"):
        task.check_row({"text": "Paris is the capital"}, "inputs[3]", None, training=False)
    task.check_row({"text": "Paris is the <mask>."}, "inputs[0]", None, training=False)
    with pytest.raises(DataError, match=r"data.jsonl:4: field 'text': empty text"):
        task.check_row({"text": "  "}, "data.jsonl", 4)
    with pytest.raises(DataError, match=r"field 'top_k'"):
        task.check_row({"text": "a <mask>", "top_k": 0}, "inputs[0]", None, training=False)


# -- end to end ------------------------------------------------------------------------------


def test_training_lowers_perplexity(run_dir, tiny_bert, tokenizer):
    from nlpforge.training.loop import evaluate_rows, model_inputs

    task = FillMask()
    base = task.build_model(str(tiny_bert))
    tok = Tokenizer.from_dir(run_dir, max_length=32)
    _, before = evaluate_rows(task, base, tok, VALID, model_inputs(base), 8)
    manifest = json.loads((run_dir / "nlpforge.json").read_text())
    after = manifest["metrics"]
    assert manifest["task"]["state"]["mask_token"] == "[MASK]"
    assert after["masked_tokens"] == before["masked_tokens"]
    assert after["perplexity"] < 0.7 * before["perplexity"], (before, after)


def test_export_matches_pytorch(run_dir, export_dir, tmp_path):
    manifest = json.loads((export_dir / "nlpforge.json").read_text())
    assert manifest["validation"]["passed"] and manifest["io"]["outputs"] == ["logits"]
    assert manifest["io"]["dynamic_axes"]["logits"] == {"0": "batch_size", "1": "sequence_length"}
    from nlpforge.cli.predict import open_model

    data = write_jsonl(tmp_path / "valid.jsonl", VALID)
    result = run_cli("evaluate", str(export_dir), "--data", str(data),
                     "--predictions", str(tmp_path / "onnx.jsonl"))
    assert result.returncode == 0, result.stderr
    onnx = json.loads(result.stdout)["metrics"]
    onnx_rows = [json.loads(line) for line in (tmp_path / "onnx.jsonl").read_text().splitlines()]
    task, run = open_model(str(run_dir), "cpu", None, 4)  # PyTorch, other batches
    torch_rows = run(VALID)
    torch = task.metrics(torch_rows, VALID)
    assert onnx["perplexity"] == pytest.approx(torch["perplexity"], rel=1e-4)
    assert onnx["masked_accuracy"] == torch["masked_accuracy"]
    assert onnx["masked_tokens"] == torch["masked_tokens"] > len(VALID)
    assert onnx["perplexity"] == pytest.approx(manifest["metrics"]["perplexity"], rel=1e-4)
    same = [a["predicted_ids"] == b["predicted_ids"] for a, b in zip(onnx_rows, torch_rows)]
    assert sum(same) / len(same) >= 0.995


def test_predict_top_k_fillers(export_dir):
    import nlpforge

    predictor = nlpforge.load(str(export_dir))
    out = predictor.predict(["the movie was [MASK] and the acting was [MASK]",
                             {"text": "the food was [MASK]", "top_k": 3}])
    assert [len(m) for m in out[0]["masks"]] == [5, 5] and len(out[1]["masks"][0]) == 3
    best = out[1]["masks"][0][0]
    assert set(best) == {"score", "token", "token_str", "sequence"}
    assert best["sequence"] == f"the food was {best['token_str']}".replace(" ##", "")
    result = run_cli("predict", str(export_dir), "the service was [MASK]")
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout)
    assert len(line["masks"]) == 1 and len(line["masks"][0]) == 5
    assert sum(f["score"] for f in line["masks"][0]) <= 1 + 1e-6
    (want,) = predictor.predict(["the service was [MASK]"])
    assert [f["token"] for f in line["masks"][0]] == [f["token"] for f in want["masks"][0]]
    assert [f["score"] for f in line["masks"][0]] == pytest.approx(
        [f["score"] for f in want["masks"][0]], abs=1e-6)


def test_requests_without_mask_fail_cleanly(export_dir, tmp_path):
    requests = write_jsonl(tmp_path / "req.jsonl", [{"text": "the [MASK] film"},
                                                    {"text": "no mask here"}])
    result = run_cli("predict", str(export_dir), "--input", str(requests))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"{requests}:2: field 'text': no mask token: write [MASK]" in result.stderr
    import nlpforge

    with pytest.raises(DataError, match=r"inputs\[1\].*\[MASK\]"):
        nlpforge.load(str(export_dir)).predict(["a [MASK] day", "a fine day"])


def test_plugin_imports_without_torch():
    code = textwrap.dedent('''
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "transformers"):
                    raise ImportError(name)
        sys.meta_path.insert(0, Block())
        import nlpforge_fill_mask, nlpforge_fill_mask.masking, nlpforge_fill_mask.scoring
        print("ok")
    ''')
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr
