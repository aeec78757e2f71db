"""nlpforge export options: --optimize, --quantize int8, --fp16, --opset, external data,
--format triton, variants at run time, and the bad inputs around them (optimum:
test_optimum_compat.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from conftest import EXAMPLES, run_cli, wait_until

VALIDATION = str(EXAMPLES / "validation.jsonl")


@pytest.fixture(scope="module")
def triton_repo(trained_run, tmp_path_factory) -> Path:
    """One CLI export with every variant, as a Triton model repository entry REPO/sentiment."""
    repo = tmp_path_factory.mktemp("triton")
    result = run_cli("export", str(trained_run), "--output", str(repo / "sentiment"),
                     "--format", "triton", "--optimize", "extended", "--quantize", "int8",
                     "--calibration-data", VALIDATION, "--fp16", "--max-batch-size", "16",
                     "--instances", "2", "--instance-kind", "cpu", "--triton-variant", "int8")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert set(summary["variants"]) == {"fp32", "optimized", "int8", "fp16"}
    return repo


@pytest.fixture(scope="module")
def full(triton_repo) -> Path:
    """The version folder of the Triton entry: an ordinary export dir with all variants."""
    return triton_repo / "sentiment" / "1"


def manifest_of(directory: Path) -> dict:
    return json.loads((directory / "nlpforge.json").read_text())


# -- variants ---------------------------------------------------------------------------------

def test_the_optimized_graph_is_the_default_only_where_it_is_faster(trained_run, tmp_path):
    from nlpforge.export.onnx import export_run

    manifest = export_run(str(trained_run), str(tmp_path / "x"), optimize="extended")
    choice = manifest["default_choice"]  # fp32 and optimized timed in turns at export
    assert manifest["default_variant"] == choice["variant"] in ("fp32", "optimized")
    assert choice["seconds"][choice["variant"]] == min(choice["seconds"].values())
    assert set(choice["seconds"]) == {"fp32", "optimized"}
    assert choice["cpu"]["model"] and "batch 1 and 32" in choice["workload"]
    assert manifest_of(tmp_path / "x")["default_variant"] == choice["variant"]


def test_every_variant_is_written_and_validated(full):
    manifest = manifest_of(full)
    # A Triton entry is served elsewhere (often a GPU): nothing is timed on the exporting CPU
    assert manifest["default_variant"] == "optimized" and "default_choice" not in manifest
    files = {v["file"] for v in manifest["variants"].values()}
    assert files == {"model.onnx", "model.optimized.onnx", "model.int8.onnx", "model.fp16.onnx"}
    assert all((full / f).is_file() for f in files)

    optimization = manifest["optimization"]
    assert optimization["level"] == "extended"
    assert [s["pass"] for s in optimization["steps"]] == ["onnxruntime-basic",
                                                          "transformer-fusions"]
    for step in optimization["steps"]:  # validated against PyTorch after every pass
        assert step["validation"]["passed"] and step["validation"]["atol"] == 1e-4
    fused = optimization["steps"][1]["applied"]
    assert fused["com.microsoft.Attention"] == 2 and fused["com.microsoft.SkipLayerNormalization"]
    assert manifest["quantization"]["source"] == "model.onnx"
    assert manifest["quantization"]["quantized_nodes"]["MatMulInteger"] >= 12

    quantization = manifest["quantization"]
    assert quantization["per_channel"] is True
    check = quantization["validation"]
    assert check["mode"] == "task-metric" and "cannot match" in check["note"]
    quality = check["quality"]
    assert quality["metric"] == "macro_f1" and quality["rows"] == 100
    assert set(quality["before"]) >= {"accuracy", "macro_f1"} and quality["passed"]
    assert quality["data"] == VALIDATION

    fp16 = manifest["variants"]["fp16"]
    assert fp16["validation"]["mode"] == "numerical" and fp16["validation"]["passed"]
    weights = onnx.load(str(full / "model.fp16.onnx")).graph.initializer
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)


def test_runtime_loads_each_variant(full, tmp_path):
    import nlpforge
    from nlpforge.errors import ModelDirError

    texts = ["what a great film", "awful service"]
    reference = nlpforge.load(str(full), variant="fp32", device="cpu").predict(texts)
    default = nlpforge.load(str(full), device="cpu")
    assert default.variant == "optimized"
    for variant, tolerance in (("optimized", 1e-5), ("int8", 0.05), ("fp16", 0.01)):
        predictor = nlpforge.load(str(full), variant=variant, device="cpu")
        for got, want in zip(predictor.predict(texts), reference):
            assert got["score"] == pytest.approx(want["score"], abs=tolerance), variant

    moved = tmp_path / "copy"
    shutil.copytree(full, moved)
    manifest = manifest_of(moved)
    del manifest["variants"]["int8"]
    (moved / "nlpforge.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelDirError, match=r"no int8 variant .*--quantize int8"):
        nlpforge.load(str(moved), variant="int8")


def test_predict_and_evaluate_take_a_variant(full, trained_run, tmp_path):
    """The commands run the variant asked for: their output is that variant's in process."""
    import nlpforge
    from nlpforge.cli.predict import open_model
    from nlpforge.data import read_dataset

    result = run_cli("predict", str(full), "--variant", "int8", "a lovely film")
    assert result.returncode == 0, result.stderr
    (want,) = nlpforge.load(str(full), variant="int8").predict(["a lovely film"])
    got = json.loads(result.stdout)
    assert got["label"] == want["label"] and got["score"] == pytest.approx(want["score"],
                                                                           abs=1e-6)
    written = tmp_path / "fp16.jsonl"
    result = run_cli("evaluate", str(full), "--variant", "fp16", "--data", VALIDATION,
                     "--predictions", str(written))
    assert result.returncode == 0, result.stderr
    task, fp16 = open_model(str(full), "cpu", None, 32, "fp16", for_metrics=True)
    _, fp32 = open_model(str(full), "cpu", None, 32, "fp32", for_metrics=True)
    rows = read_dataset(VALIDATION, task, training=True).rows
    want16, want32 = fp16(rows), fp32(rows)
    printed = [json.loads(line)["score"] for line in written.read_text().splitlines()]
    assert printed == pytest.approx([p["score"] for p in want16], abs=1e-6)
    assert printed != pytest.approx([p["score"] for p in want32], abs=1e-6)  # not fp32's
    assert json.loads(result.stdout)["metrics"] == task.metrics(want16, rows)
    result = run_cli("predict", str(trained_run), "--variant", "int8", "text")
    assert result.returncode == 2 and "variants belong to export dirs" in result.stderr


def test_serve_takes_a_variant(full):
    from nlpforge.serving import ServedModel

    served = ServedModel.load("m", full, threads=1, variant="int8")
    assert served.predictor.variant == "int8"
    assert served.predictor.session._model_path.endswith("model.int8.onnx")
    assert ServedModel.load("m", full, threads=1).predictor.variant == "optimized"


# -- Triton -----------------------------------------------------------------------------------

def test_triton_config_parses_as_model_config(triton_repo):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    entry = triton_repo / "sentiment"
    assert sorted(p.name for p in entry.iterdir()) == ["1", "config.pbtxt"]
    config = text_format.Parse((entry / "config.pbtxt").read_text(),
                               model_config_pb2.ModelConfig())
    assert config.name == "sentiment" and config.backend == "onnxruntime"
    assert config.max_batch_size == 16
    assert config.default_model_filename == "model.int8.onnx"
    assert (entry / "1" / config.default_model_filename).is_file()
    inputs = {i.name: i for i in config.input}
    assert list(inputs) == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(i.data_type == model_config_pb2.TYPE_INT64 and list(i.dims) == [-1]
               for i in inputs.values())
    (logits,) = config.output
    assert logits.name == "logits" and logits.data_type == model_config_pb2.TYPE_FP32
    assert list(logits.dims) == [2]
    assert config.HasField("dynamic_batching")
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    (group,) = config.instance_group
    assert group.count == 2 and group.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert config.parameters["nlpforge.task"].string_value == "text-classification"
    assert manifest_of(entry / "1")["triton"]["checked_with"].endswith("ModelConfig")


def test_triton_config_without_batching(full, tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from nlpforge.export.triton import TritonOptions, model_config

    text = model_config("m", full / "model.onnx", TritonOptions(max_batch_size=0), {})
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [-1, -1]  # the batch axis is the model's own


# -- optimize levels --------------------------------------------------------------------------

@pytest.mark.parametrize("level, passes", [
    ("basic", ["onnxruntime-basic"]),
    ("extended", ["onnxruntime-basic", "transformer-fusions"]),
    ("all", ["onnxruntime-basic", "transformer-fusions", "onnxruntime-all"]),
])
def test_each_optimize_level_validates_after_every_pass(exported, tmp_path, level, passes):
    from nlpforge.export.optimize import optimize
    from nlpforge.export.validate import compare, encoder_cases, memoized, onnx_runner

    source = exported / "model.onnx"
    vocab = json.loads((exported / "config.json").read_text())["vocab_size"]
    cases = encoder_cases(["input_ids", "attention_mask", "token_type_ids"], vocab, 64)
    reference = memoized(onnx_runner(source, ["logits"]))
    checked = []

    def check(path: Path) -> dict:
        checked.append(path)
        return compare(cases, reference, onnx_runner(path, ["logits"]), 1e-4)

    record, portable = optimize(source, tmp_path / "model.optimized.onnx", level, check, tmp_path)
    assert [s["pass"] for s in record["steps"]] == passes and len(checked) == len(passes)
    assert all(s["validation"]["passed"] for s in record["steps"])
    assert record["portable"] is (level != "all")
    assert (portable == tmp_path / "model.optimized.onnx") is (level != "all")
    compare(cases, reference, onnx_runner(tmp_path / "model.optimized.onnx", ["logits"]), 1e-4)


def test_a_pass_that_breaks_the_model_fails_the_export(exported, tmp_path):
    from nlpforge.errors import ExportError
    from nlpforge.export.optimize import optimize

    def check(path: Path) -> dict:
        if "fusions" in path.name:
            raise ExportError("the exported model differs from PyTorch: logits off")
        return {"passed": True}

    with pytest.raises(ExportError, match="after the pass 'transformer-fusions', the exported"):
        optimize(exported / "model.onnx", tmp_path / "out.onnx", "extended", check, tmp_path)


# -- int8 quality check -----------------------------------------------------------------------

def test_int8_refuses_a_large_metric_drop(trained_run, tmp_path, monkeypatch):
    import nlpforge.export.quality as quality
    from nlpforge.errors import ExportError
    from nlpforge.export.onnx import export_run

    def evaluate(path, task, tokenizer, rows, batch_size=32):
        score = 0.7 if "int8" in Path(path).name else 0.9
        return {"accuracy": score, "macro_f1": score}

    monkeypatch.setattr(quality, "evaluate", evaluate)
    out = tmp_path / "exp"
    with pytest.raises(ExportError, match=r"loses 20\.00 points of macro_f1 .*--force"):
        export_run(str(trained_run), str(out), quantize="int8",
                   calibration_data=VALIDATION, max_metric_drop=0.5)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_quality_check_tolerance_and_force():
    from nlpforge.errors import ExportError
    from nlpforge.export.quality import quality_check
    from nlpforge_text_classification import TextClassification

    task = TextClassification(labels=["a", "b"])
    before, after = {"macro_f1": 0.90, "accuracy": 0.9}, {"macro_f1": 0.895, "accuracy": 0.9}
    ok = quality_check("int8", task, before, after, "v.jsonl", 10, 0.5, force=False)
    assert ok["drop_points"] == pytest.approx(0.5) and ok["passed"] and not ok["forced"]
    with pytest.raises(ExportError, match="more than --max-metric-drop 0.4"):
        quality_check("int8", task, before, after, "v.jsonl", 10, 0.4, force=False)
    forced = quality_check("int8", task, before, after, "v.jsonl", 10, 0.4, force=True)
    assert not forced["passed"] and forced["forced"]


# -- opset, external data, int8 without data ----------------------------------------------------

def test_opset_external_data_and_forced_int8_without_data(trained_run, tmp_path):
    """--opset 18; weights over a (lowered) threshold go to .data files, for every variant;
    --quantize int8 --force without labelled data skips the quality check, and says so."""
    import nlpforge
    from nlpforge.errors import UsageError
    from nlpforge.export.onnx import export_run

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    manifest = manifest_of(run)
    manifest["training"]["validation"] = str(tmp_path / "gone.jsonl")
    manifest["provenance"]["validation_file"] = str(tmp_path / "gone.jsonl")
    (run / "nlpforge.json").write_text(json.dumps(manifest))
    with pytest.raises(UsageError, match="needs labelled data: pass --calibration-data"):
        export_run(str(run), str(tmp_path / "e"), quantize="int8")

    out = tmp_path / "exp"
    export = export_run(str(run), str(out), opset=18, external_data_threshold=4096,
                        optimize="basic", quantize="int8", force=True)
    assert export["opset"] == 18
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {18}
    for name in ("fp32", "optimized", "int8"):
        variant = export["variants"][name]
        assert variant["files"] == [variant["file"], variant["file"] + ".data"], name
        assert all((out / f).is_file() for f in variant["files"])
        graph = onnx.load(str(out / variant["file"]), load_external_data=False).graph
        inline = [t.name for t in graph.initializer
                  if t.data_location != onnx.TensorProto.EXTERNAL and len(t.raw_data) > 4096]
        assert not inline, (name, inline)  # the weights are in the .data file
        assert nlpforge.load(str(out), variant=name).predict(["fine"])[0]["label"]
    quality = export["quantization"]["validation"]["quality"]
    assert quality == {"skipped": "no labelled data (--force)", "forced": True}


# -- a custom nn.Module head ------------------------------------------------------------------

import nlpforge  # noqa: E402
from nlpforge_text_classification import TextClassification  # noqa: E402


class PooledSentiment(TextClassification):
    """A test task whose head is a plain nn.Module: mean pooling + linear on an AutoModel."""

    id = "pooled-sentiment"

    def build_model(self, base, **kwargs):
        import torch
        from transformers import AutoModel

        class PooledHead(torch.nn.Module):
            def __init__(self, encoder, labels):
                super().__init__()
                self.encoder = encoder
                self.classifier = torch.nn.Linear(encoder.config.hidden_size, labels)

            def forward(self, input_ids, attention_mask, token_type_ids=None):
                hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                      token_type_ids=token_type_ids).last_hidden_state
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                return self.classifier(pooled)

        encoder = base if isinstance(base, torch.nn.Module) else AutoModel.from_pretrained(base)
        return PooledHead(encoder, len(self.labels))

    def load_model(self, path):
        from safetensors.torch import load_file
        from transformers import AutoConfig, AutoModel

        model = self.build_model(AutoModel.from_config(AutoConfig.from_pretrained(path)))
        model.load_state_dict(load_file(str(Path(path) / "model.safetensors")))
        return model.eval()

    def forward(self, model, features):
        return {"logits": model(**features)}


@nlpforge.hookimpl
def register_tasks(register):
    register(PooledSentiment)


@pytest.fixture
def custom_task_registered():
    from importlib import metadata

    from nlpforge.plugins import PluginManager, get_plugin_manager, reset_plugin_manager

    builtin = [ep for ep in metadata.entry_points(group="nlpforge")
               if ep.name == "text-classification"]
    mine = metadata.EntryPoint("pooled-sentiment", __name__, "nlpforge")
    reset_plugin_manager(PluginManager(entry_points=[*builtin, mine]))
    yield get_plugin_manager()
    reset_plugin_manager()


def test_custom_module_head_exports_and_validates(tiny_bert, tmp_path, custom_task_registered):
    import torch
    from safetensors.torch import save_file

    from nlpforge.export.onnx import export_run
    from nlpforge.manifest import new_manifest, write_manifest

    run = tmp_path / "run"
    run.mkdir()
    task = PooledSentiment(labels=["negative", "positive"])
    torch.manual_seed(0)
    model = task.build_model(str(tiny_bert))
    model.encoder.config.save_pretrained(run)
    save_file(model.state_dict(), str(run / "model.safetensors"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_bert / name, run / name)
    write_manifest(run, new_manifest(
        "run", task, custom_task_registered.plugin_of(task.id), {"max_length": 64, "pad_id": 0},
        model_inputs=["input_ids", "attention_mask", "token_type_ids"]))

    export = export_run(str(run), str(tmp_path / "exp"), optimize="extended")
    assert export["validation"]["passed"] and export["validation"]["max_abs_diff"]["logits"] < 1e-4
    assert export["optimization"]["steps"][-1]["validation"]["passed"]
    predictor = nlpforge.load(str(tmp_path / "exp"))
    expected = torch.softmax(model.eval()(**{k: torch.from_numpy(v) for k, v in task.encode(
        [{"text": "a lovely film"}], predictor.tokenizer).items()}), -1)[0, 1].item()
    assert predictor.predict(["a lovely film"])[0]["scores"]["positive"] == \
        pytest.approx(expected, abs=1e-5)


# -- bad input --------------------------------------------------------------------------------

def test_run_dir_from_another_task_is_refused(trained_run, tmp_path):
    from nlpforge.errors import ModelDirError
    from nlpforge.export.onnx import export_run

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config,
                                                 "id2label": {"0": "PER", "1": "LOC"}}))
    with pytest.raises(ModelDirError, match=r"labels \['LOC', 'PER'\] .*another run"):
        export_run(str(run), str(tmp_path / "e1"))
    (run / "config.json").write_text(json.dumps({**config,
                                                 "architectures": ["BertForTokenClassification"]}))
    with pytest.raises(ModelDirError, match="config.json is for BertForTokenClassification but "
                                            "the task 'text-classification' loads a "
                                            "BertForSequenceClassification: .* another task"):
        export_run(str(run), str(tmp_path / "e2"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize("options, message", [
    ({"calibration_data": "x.jsonl"}, "used by --quantize int8 and --optimize auto"),
    ({"format": "triton", "triton": {"variant": "int8"}},
     "--triton-variant int8: this export makes fp32"),
    ({"opset": 9}, "--opset must be between 14 and 23"),
    ({"quantize": "int8", "max_metric_drop": -1}, "--max-metric-drop must be 0 or more"),
    ({"format": "triton", "triton": {"instances": 0}}, "--instances must be at least 1"),
    ({"optimize": "max"}, "--optimize must be one of none, basic, extended, all"),
    ({"external_data_threshold": 0}, "--external-data-threshold must be at least 1 byte"),
])
def test_option_errors(options, message):
    from nlpforge.errors import UsageError
    from nlpforge.export.onnx import ExportOptions
    from nlpforge.export.triton import TritonOptions

    if "triton" in options:
        options = {**options, "triton": TritonOptions(**options["triton"])}
    with pytest.raises(UsageError, match=message):
        ExportOptions(**options).check()


def test_option_errors_on_the_command_line(trained_run, tmp_path):
    result = run_cli("export", str(trained_run), "--output", str(tmp_path / "e"),
                     "--triton-variant", "fp16", "--format", "triton", "--optimize", "basic")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--triton-variant fp16: this export makes fp32, optimized" in result.stderr
    assert not (tmp_path / "e").exists()


def test_unwritable_output_is_refused(trained_run, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_cli("export", str(trained_run), "--output", str(blocker / "exp"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"cannot create {blocker}" in result.stderr


def test_existing_triton_model_dir_needs_overwrite(triton_repo, trained_run):
    from nlpforge.errors import UsageError
    from nlpforge.export.onnx import export_run

    with pytest.raises(UsageError, match="Triton model dir .* already exists; pass --overwrite"):
        export_run(str(trained_run), str(triton_repo / "sentiment"), format="triton")
    assert (triton_repo / "sentiment" / "1" / "model.int8.onnx").is_file()


def test_interrupted_export_leaves_nothing(trained_run, tmp_path):
    """A killed export (SIGTERM; Ctrl-C is the same path) removes its half-built dir."""
    out = tmp_path / "exp"
    process = subprocess.Popen([sys.executable, "-m", "nlpforge", "export", str(trained_run),
                                "--output", str(out), "--optimize", "all"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONWARNINGS": "ignore"})

    def converted() -> bool:
        assert process.poll() is None, process.communicate()
        return bool(list(tmp_path.glob(".exp.tmp-*/model.onnx")))

    try:  # the signal must land while the half-built dir exists
        wait_until(converted, 120, "the export's model.onnx in its temporary dir",
                   interval=0.05)
    except BaseException:
        process.kill()
        process.communicate()
        raise
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0 and "Traceback" not in stderr
    assert "Interrupted" in stderr
    assert not out.exists() and not list(tmp_path.iterdir())
