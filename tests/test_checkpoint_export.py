"""nlpforge export CHECKPOINT: models trained elsewhere (save_pretrained dirs), exported with no
training — the task and its state read from the checkpoint, every refusal clear and leaving
nothing behind, and the export usable downstream like one of a trained run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from nlpforge.errors import ModelDirError, NlpforgeError, UsageError
from nlpforge.testing.encoders import ENCODER_HEADS, HEAD_LABELS, make_tiny_encoder
from tests.conftest import run_cli, write_jsonl

TEXTS = ["the movie was great", "a terrible film with a boring plot and bad acting", "ok"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny BERT checkpoint per encoder head, as save_pretrained writes them."""
    root = tmp_path_factory.mktemp("checkpoints")
    return {task: make_tiny_encoder(root / task, "bert", head, seed=3)
            for head, task in ENCODER_HEADS.items()}


def _copy(source, target, drop=()):
    shutil.copytree(source, target)
    for name in drop:
        (target / name).unlink()
    return target


def _edit_config(directory, **fields):
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.update(fields)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("task", list(ENCODER_HEADS.values()))
def test_task_and_labels_come_from_the_config(checkpoints, task):
    from nlpforge.export.checkpoint import open_checkpoint

    with open_checkpoint(str(checkpoints[task])) as found:
        assert found.task.id == task
        assert found.task_reason.startswith("detected: the best checkpoint_match for Bert")
        assert found.task.labels == HEAD_LABELS.get(task)
        assert found.tokenizer.max_length == 512  # the tokenizer's model_max_length
        assert found.tokenizer_file == "tokenizer.json"


def test_exported_checkpoint_predicts_like_pytorch_and_records_its_source(checkpoints,
                                                                          tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification

    import nlpforge

    out = tmp_path / "x"
    result = run_cli("export", str(checkpoints["text-classification"]), "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["passed"] is True
    manifest = json.loads((out / "nlpforge.json").read_text())
    assert manifest["source"] == {
        "kind": "checkpoint", "model": str(checkpoints["text-classification"]),
        "path": str(checkpoints["text-classification"].absolute()), "hub_id": None,
        "revision": None, "trust_remote_code": False}
    assert manifest["source_run"] == manifest["source"]["path"]
    assert manifest["metrics"] == {} and manifest["training"] is None
    assert manifest["provenance"]["imported"] is True

    predictions = nlpforge.load(str(out)).predict([{"text": t} for t in TEXTS])
    model = AutoModelForSequenceClassification.from_pretrained(
        checkpoints["text-classification"]).eval()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoints["text-classification"])
    with torch.inference_mode():
        for text, prediction in zip(TEXTS, predictions):
            probs = model(**tokenizer(text, return_tensors="pt")).logits.softmax(-1)[0]
            expected = dict(zip(HEAD_LABELS["text-classification"], probs.tolist()))
            assert prediction["label"] == max(expected, key=expected.get)
            for label, score in expected.items():
                assert prediction["scores"][label] == pytest.approx(score, abs=1e-5)

    shown = run_cli("inspect", str(out), "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["source"]["kind"] == "checkpoint"


def test_variants_and_triton_work_on_a_checkpoint(checkpoints, tmp_path):
    from nlpforge.export.onnx import export_model

    data = write_jsonl(tmp_path / "calibration.jsonl",
                       [{"text": t, "label": "positive" if i % 2 else "negative"}
                        for i, t in enumerate(TEXTS * 4)])
    manifest = export_model(str(checkpoints["text-classification"]), str(tmp_path / "x"),
                            optimize="extended", quantize="int8", calibration_data=str(data),
                            max_metric_drop=100.0)
    assert set(manifest["variants"]) == {"fp32", "optimized", "int8"}
    assert manifest["quantization"]["validation"]["quality"]["passed"] is True
    triton = export_model(str(checkpoints["token-classification"]), str(tmp_path / "repo" / "ner"),
                          format="triton")
    assert (tmp_path / "repo" / "ner" / "config.pbtxt").is_file()
    assert triton["task"]["state"]["labels"] == HEAD_LABELS["token-classification"]


def test_int8_without_calibration_data_says_what_to_give(checkpoints, tmp_path):
    from nlpforge.export.onnx import export_model

    with pytest.raises(NlpforgeError, match="--calibration-data"):
        export_model(str(checkpoints["text-classification"]), str(tmp_path / "x"),
                     quantize="int8")
    assert not (tmp_path / "x").exists()


def test_multi_label_and_tag_schemes_come_from_the_config(checkpoints, tmp_path):
    from nlpforge.export.checkpoint import open_checkpoint

    multi = _copy(checkpoints["text-classification"], tmp_path / "multi")
    _edit_config(multi, problem_type="multi_label_classification")
    with open_checkpoint(str(multi)) as found:
        assert found.task.settings["multi_label"] is True
    bioes = _copy(checkpoints["token-classification"], tmp_path / "bioes")
    _edit_config(bioes, id2label={"0": "O", "1": "S-PER", "2": "B-PER", "3": "E-PER"},
                 label2id={"O": 0, "S-PER": 1, "B-PER": 2, "E-PER": 3})
    with open_checkpoint(str(bioes)) as found:
        assert found.task.settings["scheme"] == "bioes"
    plain = _copy(checkpoints["token-classification"], tmp_path / "plain")
    _edit_config(plain, id2label={"0": "PER", "1": "LOC"}, label2id={"PER": 0, "LOC": 1})
    with pytest.raises(UsageError, match="PER, LOC are not IOB2/BIOES tags"):
        with open_checkpoint(str(plain)):
            pass


def test_a_tokenizer_json_is_built_from_the_slow_tokenizer_files(checkpoints, tmp_path):
    from nlpforge.export.onnx import export_model
    from transformers import BertTokenizer

    slow = _copy(checkpoints["question-answering"], tmp_path / "slow", drop=["tokenizer.json"])
    vocab = json.loads((checkpoints["question-answering"] / "tokenizer.json")
                       .read_text())["model"]["vocab"]
    (slow / "vocab.txt").write_text("".join(f"{t}\n" for t, _ in sorted(vocab.items(),
                                                                        key=lambda x: x[1])))
    config = json.loads((slow / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "BertTokenizer"
    (slow / "tokenizer_config.json").write_text(json.dumps(config))
    manifest = export_model(str(slow), str(tmp_path / "x"))
    assert (tmp_path / "x" / "tokenizer.json").is_file()
    assert not (slow / "tokenizer.json").exists()  # the checkpoint is left as it was
    from nlpforge import Tokenizer

    ours = Tokenizer.from_dir(tmp_path / "x").encode(["the movie was great"])[0].ids
    assert ours == BertTokenizer(str(slow / "vocab.txt"))("the movie was great")["input_ids"]
    assert manifest["task"]["id"] == "question-answering"


def _refusals(checkpoints, tmp_path):
    cls = checkpoints["text-classification"]
    file = tmp_path / "file.bin"
    file.write_text("x")
    empty = tmp_path / "empty"
    empty.mkdir()
    remote = _copy(cls, tmp_path / "remote")
    _edit_config(remote, auto_map={"AutoModelForSequenceClassification": "modeling.MyModel"})
    unknown = _copy(cls, tmp_path / "unknown")
    _edit_config(unknown, architectures=["BertForNextSentencePrediction"])
    headless = _copy(checkpoints["fill-mask"], tmp_path / "headless")
    _edit_config(headless, architectures=["BertForQuestionAnswering"])
    return [
        (str(file), {}, ModelDirError, "not a directory"),
        (str(tmp_path / "missing"), {}, ModelDirError, "no such directory"),
        (str(empty), {}, ModelDirError, "not a model directory: no config.json"),
        (str(_copy(cls, tmp_path / "no-tok", drop=["tokenizer.json"])), {}, ModelDirError,
         "no tokenizer: tokenizer.json is missing"),
        (str(_copy(cls, tmp_path / "no-weights", drop=["model.safetensors"])), {},
         ModelDirError, "no weights"),
        (str(remote), {}, UsageError, "runs its own code .*--trust-remote-code"),
        (str(unknown), {}, UsageError,
         "no installed task exports the architecture BertForNextSentencePrediction"),
        (str(cls), {"task": "question-answering"}, UsageError,
         "--task question-answering does not fit .* tasks that fit: text-classification"),
        (str(headless), {}, ModelDirError,
         "no weights for the BertForQuestionAnswering .*qa_outputs"),
        ("someone/not-a-model", {}, ModelDirError, "cannot be downloaded from the Hugging Face"),
    ]


def test_refusals_name_the_problem_and_write_nothing(checkpoints, tmp_path, monkeypatch):
    from nlpforge.export.onnx import export_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a Hub id must fail here without the network
    for model, kwargs, error, message in _refusals(checkpoints, tmp_path):
        out = tmp_path / "out"
        with pytest.raises(error, match=message):
            export_model(model, str(out), **kwargs)
        assert not out.exists(), model


def test_cli_refusal_is_one_line_without_traceback(checkpoints, tmp_path):
    result = run_cli("export", str(tmp_path), "--output", str(tmp_path / "x"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "not a model directory: no config.json" in result.stderr
    result = run_cli("export", str(checkpoints["fill-mask"]), "--output", str(tmp_path / "x"),
                     "--task", "no-such-task")
    assert result.returncode != 0 and "unknown task 'no-such-task'" in result.stderr


def test_run_dir_options_are_refused_for_a_run_dir(trained_run, tmp_path):
    from nlpforge.export.onnx import export_model

    with pytest.raises(UsageError, match="--task: .* is an nlpforge run dir"):
        export_model(str(trained_run), str(tmp_path / "x"), task="fill-mask")


def test_inspect_prints_what_the_export_would_be(checkpoints, tmp_path):
    result = run_cli("inspect", str(checkpoints["token-classification"]), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["task"] == "token-classification"
    assert report["family"] == "encoder"
    assert report["labels"] == HEAD_LABELS["token-classification"]
    assert report["tasks_that_fit"] == ["token-classification"]
    assert report["export_writes"][0] == "model.onnx"
    assert not any(p.name == "nlpforge.json" for p in checkpoints["token-classification"].iterdir())


def test_generative_checkpoints_are_detected_with_their_settings(tmp_path):
    from nlpforge.export.checkpoint import open_checkpoint
    from nlpforge.testing.decoders import make_tiny_gpt2
    from nlpforge.testing.encoder_decoders import make_tiny_t5

    gpt2 = make_tiny_gpt2(tmp_path / "gpt2")
    with open_checkpoint(str(gpt2)) as found:
        assert found.task.id == "text-generation"
        assert found.tokenizer.pad_id is not None
    t5 = make_tiny_t5(tmp_path / "t5")
    _edit_config(t5, task_specific_params={"summarization": {"prefix": "summarize: "}})
    with open_checkpoint(str(t5)) as found:
        assert found.task.id == "text2text-generation"
        assert sorted(t for t, s in found.candidates.items() if s) == [
            "span-corruption", "summarization", "text2text-generation", "translation"]
    with open_checkpoint(str(t5), "summarization") as found:
        assert found.task.settings["prefix"] == "summarize: "
    with open_checkpoint(str(t5), "translation", task_options={"target_lang": "French"}) as found:
        assert found.task.settings["target_lang"] == "French"
    with pytest.raises(UsageError, match="task 'translation' has no option nope"):
        with open_checkpoint(str(t5), "translation", task_options={"nope": "1"}):
            pass


def test_exported_scores_match_pytorch_on_every_head(checkpoints, tmp_path):
    """The raw outputs of each head's export against the checkpoint's PyTorch model."""
    import torch
    import transformers
    from nlpforge.export.onnx import export_model
    from nlpforge.runtime.predictor import Predictor

    for head, task in ENCODER_HEADS.items():
        out = tmp_path / task
        export_model(str(checkpoints[task]), str(out))
        session = Predictor.load(out).session
        model = getattr(transformers, head).from_pretrained(checkpoints[task]).eval()
        ids = np.array([[2, 10, 11, 12, 3]], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids),
                "token_type_ids": np.zeros_like(ids)}
        names = [i.name for i in session.get_inputs()]
        onnx_out = session.run(None, {k: v for k, v in feed.items() if k in names})
        with torch.inference_mode():
            torch_out = model(**{k: torch.from_numpy(v) for k, v in feed.items()})
        first = torch_out.start_logits if task == "question-answering" else torch_out.logits
        np.testing.assert_allclose(onnx_out[0], first.numpy(), atol=1e-4)
