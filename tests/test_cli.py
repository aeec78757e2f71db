"""The command line end to end: train → export → predict → evaluate, and its user errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import EXAMPLES, run_cli, write_jsonl


def assert_same_predictions(printed: str, expected: list[dict]) -> None:
    """``nlpforge predict`` output (one JSON object a line) against in-process predictions:
    the same labels, and scores within 1e-6."""
    got = [json.loads(line) for line in printed.splitlines()]
    assert [p["label"] for p in got] == [p["label"] for p in expected]
    for a, b in zip(got, expected):
        assert a["score"] == pytest.approx(b["score"], abs=1e-6)
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-6)


def test_train_export_predict_evaluate(tiny_bert, tmp_path):
    run, exp = tmp_path / "run", tmp_path / "exp"
    result = run_cli("train", "--task", "text-classification", "--model", str(tiny_bert),
                     "--train", str(EXAMPLES / "train.jsonl"),
                     "--validation", str(EXAMPLES / "validation.jsonl"),
                     "--output", str(run), "--epochs", "1", "--batch-size", "32",
                     "--lr", "1e-3", "--quiet")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["steps"] == 10 and "accuracy" in summary["best"]["metrics"]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "nlpforge.json",
                 "trainer_state.json"):
        assert (run / name).is_file(), name
    manifest = json.loads((run / "nlpforge.json").read_text())
    assert manifest["kind"] == "run" and manifest["task"]["state"]["labels"] == ["negative", "positive"]

    result = run_cli("export", str(run), "--output", str(exp))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] and report["max_abs_diff"]["logits"] < 1e-4
    assert report["shapes_validated"] >= 4
    for name in ("model.onnx", "tokenizer.json", "config.json", "nlpforge.json"):
        assert (exp / name).is_file(), name
    export_manifest = json.loads((exp / "nlpforge.json").read_text())
    assert export_manifest["kind"] == "export" and export_manifest["io"]["outputs"] == ["logits"]
    shapes = {tuple(c["input_ids"]) for c in export_manifest["validation"]["cases"]}
    assert (1, 3) in shapes and any(b == 4 for b, _ in shapes)

    import nlpforge

    predictor = nlpforge.load(str(exp))
    result = run_cli("predict", str(exp), "what a great film", "awful service")
    assert result.returncode == 0, result.stderr
    preds = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(abs(sum(p["scores"].values()) - 1) < 1e-6 for p in preds)
    assert_same_predictions(result.stdout, predictor.predict(["what a great film",
                                                              "awful service"]))

    requests = [{"text": "fine"}, {"text": "bad"}, {"text": "ok"}]
    result = run_cli("predict", str(exp), "--input", str(write_jsonl(tmp_path / "req.jsonl",
                                                                     requests)))
    assert result.returncode == 0, result.stderr
    assert_same_predictions(result.stdout, predictor.predict(requests))
    result = run_cli("predict", str(exp), "--input", "-", input="one\ntwo\n")
    assert result.returncode == 0, result.stderr
    assert_same_predictions(result.stdout, predictor.predict(["one", "two"]))

    onnx_eval = run_cli("evaluate", str(exp), "--data", str(EXAMPLES / "validation.jsonl"))
    torch_eval = run_cli("evaluate", str(run), "--data", str(EXAMPLES / "validation.jsonl"))
    assert onnx_eval.returncode == 0 and torch_eval.returncode == 0, onnx_eval.stderr + torch_eval.stderr
    a, b = json.loads(onnx_eval.stdout)["metrics"], json.loads(torch_eval.stdout)["metrics"]
    assert a["accuracy"] == pytest.approx(b["accuracy"], abs=1e-3)
    assert a["macro_f1"] == pytest.approx(b["macro_f1"], abs=1e-3)


def test_multi_label_and_text_pairs(tiny_bert, tmp_path):
    rows = [{"text": t, "text_pair": p, "label": labels}
            for t, p, labels in [("great food", "fast", ["food", "service"]),
                                 ("cold food", "slow", ["food"]),
                                 ("nice staff", "kind", ["service"]),
                                 ("bad place", "", [])] * 6]
    train = write_jsonl(tmp_path / "t.jsonl", rows)
    run, exp = tmp_path / "run", tmp_path / "exp"
    result = run_cli("train", "--task", "text-classification", "--option", "multi_label=true",
                     "--model", str(tiny_bert), "--train", str(train), "--validation", str(train),
                     "--output", str(run), "--max-steps", "3", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "micro_f1" in json.loads(result.stdout)["best"]["metrics"]
    exported = run_cli("export", str(run), "--output", str(exp))
    assert exported.returncode == 0, exported.stderr
    atol = 1e-4  # export's default --atol: validation held the logits to it
    assert json.loads(exported.stdout)["max_abs_diff"]["logits"] < atol
    import nlpforge
    from nlpforge.cli.predict import open_model
    from nlpforge.training.loading import load_run, torch_runner

    requests = [{"text": r["text"], "text_pair": r["text_pair"]} for r in rows[:4]]
    predictor = nlpforge.load(str(exp))
    onnx = predictor.predict(requests)
    assert set(onnx[0]) == {"labels", "scores"} and set(onnx[0]["scores"]) == {"food", "service"}
    _, by_torch = open_model(str(run), "cpu", None, 4)
    for got, want in zip(onnx, by_torch(requests)):
        assert got["labels"] == want["labels"]
        assert got["scores"] == pytest.approx(want["scores"], abs=atol)
    features = predictor.task.encode(requests, predictor.tokenizer)
    assert features["token_type_ids"].any()  # the pair reaches the model as segment B
    manifest, task, model, _ = load_run(run)
    inputs = [n for n in ("input_ids", "attention_mask", "token_type_ids")
              if n in manifest["model_inputs"]]
    np.testing.assert_allclose(predictor.run(features)["logits"],
                               torch_runner(task, model, inputs)(features)["logits"], atol=atol)


def test_predictor_keeps_input_order_and_batching_does_not_change_results(exported):
    import nlpforge

    predictor = nlpforge.load(str(exported), threads=1)
    texts = ["short", "a much longer sentence about a lovely film " * 5, "mid length text here",
             "x", "the food was cold and the staff rude"]
    one_by_one = [predictor.predict([t], batch_size=1)[0] for t in texts]
    batched = predictor.predict(texts, batch_size=4)
    for a, b in zip(one_by_one, batched):
        assert a["label"] == b["label"]
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)
    assert predictor.providers == ["CPUExecutionProvider"]


def test_predictor_input_errors(exported):
    import nlpforge
    from nlpforge.errors import DataError

    predictor = nlpforge.load(str(exported))
    with pytest.raises(DataError, match=r"inputs\[1\]: field 'text': expected string"):
        predictor.predict(["fine", {"text": 3}])
    with pytest.raises(DataError, match="list of inputs"):
        predictor.predict("just a string")


@pytest.mark.parametrize("args, message", [
    (["train", "--task", "nope", "--model", "m", "--train", "t.jsonl", "--output", "o"],
     "unknown task 'nope'"),
    (["train", "--task", "text-classification", "--model", "m", "--train", "missing.jsonl",
      "--output", "o"], "missing.jsonl: no such file"),
    (["train", "--task", "text-classification", "--model", "m", "--train", "t.jsonl",
      "--output", "o", "--epochs", "0"], "--epochs must be positive"),
    (["train", "--task", "text-classification", "--model", "m", "--train", "t.jsonl",
      "--output", "o", "--option", "colour"], "--option takes NAME=VALUE"),
    (["predict", "no-such-dir", "text"], "no-such-dir: no such directory"),
    (["evaluate", "no-such-dir", "--data", "x"], "no such directory"),
    (["export", "no-such-dir", "--output", "e"], "no such directory"),
])
def test_user_errors_have_no_traceback(tmp_path, args, message):
    write_jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    result = run_cli(*args, cwd=str(tmp_path))
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_base_model_is_a_clear_error(tmp_path):
    write_jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    result = run_cli("train", "--task", "text-classification", "--model", str(tmp_path / "nomodel"),
                     "--train", str(tmp_path / "t.jsonl"), "--output", str(tmp_path / "run"),
                     env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode != 0 and "cannot load a tokenizer" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run.tmp")]


def test_existing_outputs_are_not_overwritten(trained_run, exported, tmp_path):
    result = run_cli("export", str(trained_run), "--output", str(exported))
    assert result.returncode != 0 and "--overwrite" in result.stderr
    assert (exported / "model.onnx").is_file()
    result = run_cli("train", "--task", "text-classification", "--model", "x", "--train",
                     str(EXAMPLES / "train.jsonl"), "--output", str(trained_run))
    assert result.returncode != 0 and "already exists" in result.stderr


def test_wrong_kind_of_dir(trained_run, exported):
    result = run_cli("export", str(exported), "--output", "x")
    assert result.returncode != 0 and "not a run dir" in result.stderr
    import nlpforge
    from nlpforge.errors import ModelDirError

    with pytest.raises(ModelDirError, match="make an export dir first"):
        nlpforge.load(str(trained_run))


def test_incomplete_and_corrupt_dirs(exported, trained_run, tmp_path):
    import nlpforge
    from nlpforge.errors import ManifestError, ModelDirError

    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(ModelDirError, match="cannot load the ONNX model"):
        nlpforge.load(str(broken))
    (broken / "model.onnx").unlink()
    with pytest.raises(ModelDirError, match="model.onnx is missing"):
        nlpforge.load(str(broken))
    (broken / "nlpforge.json").write_text("{\n  \"kind\": ")
    with pytest.raises(ManifestError, match="corrupt JSON"):
        nlpforge.load(str(broken))

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "model.safetensors").unlink()
    result = run_cli("export", str(run), "--output", str(tmp_path / "e"))
    assert result.returncode != 0 and "missing model weights" in result.stderr
    assert not (tmp_path / "e").exists()


def test_failed_validation_leaves_no_export_dir(trained_run, tmp_path, monkeypatch):
    import nlpforge.export.onnx as onnx_export
    from nlpforge.errors import ExportError

    original = onnx_export.compare

    def drifting(cases, reference, candidate, atol):
        return original(cases, lambda f: {k: v + 1e-2 for k, v in reference(f).items()},
                        candidate, atol)

    monkeypatch.setattr(onnx_export, "compare", drifting)
    out = tmp_path / "exp"
    with pytest.raises(ExportError, match=r"logits on 'batch 1, 3 tokens': max abs diff"):
        onnx_export.export_run(str(trained_run), str(out))
    assert not out.exists()
    assert not list(tmp_path.iterdir())


def test_missing_plugin_names_the_distribution(exported, tmp_path):
    moved = tmp_path / "exp"
    shutil.copytree(exported, moved)
    result = run_cli("predict", str(moved), "hello",
                     env={"NLPFORGE_BLOCK_PLUGINS": "text-classification"})
    assert result.returncode != 0
    assert "pip install 'nlpforge>=0.1,<0.2'" in result.stderr
    assert "Traceback" not in result.stderr
