"""nlpforge tune / --optimize auto: candidates measured on this machine, checked (outputs for
lossless ones, the task metric for int8), the fastest kept as the ``tuned`` variant that
``nlpforge.load`` runs on this CPU only, and a default never slower than fp32 as measured."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from nlpforge.errors import UsageError
from tests.conftest import EXAMPLES, run_cli

DATA = str(EXAMPLES / "validation.jsonl")
FAST = {"rows": 32, "rounds": 1}


@pytest.fixture
def export_copy(exported, tmp_path, monkeypatch):
    from nlpforge.export import tune

    monkeypatch.setattr(tune, "MIN_SECONDS", 0.01)  # timings are not what these tests check
    return shutil.copytree(exported, tmp_path / "export")


def _manifest(directory):
    return json.loads((directory / "nlpforge.json").read_text())


def test_tuning_records_the_choice_cpu_and_every_candidate(export_copy):
    import nlpforge
    from nlpforge.export.tune import tune
    from nlpforge.runtime.host import cpu_fingerprint

    record = tune(export_copy, DATA, **FAST)
    manifest = _manifest(export_copy)
    assert manifest["tuning"] == record
    assert record["cpu"] == cpu_fingerprint()
    candidates = record["candidates"]
    assert {"fp32/default", "fp32/no-skip-layernorm-fusion", "int8-static/default",
            "int8-dynamic/default", "int8-dynamic-per-tensor/default"} <= set(candidates)
    for name, candidate in candidates.items():
        mode = candidate["check"]["mode"]
        assert mode == ("task-metric" if candidate["lossy"] else "outputs"), name
        if candidate["check"]["passed"]:
            assert candidate["rows_per_second"] > 0 and candidate["batch1_ms"] > 0
    int8 = candidates["int8-static/default"]["check"]
    assert int8["metric"] == "macro_f1" and "drop_points" in int8
    tuned = manifest["variants"]["tuned"]
    assert (export_copy / tuned["file"]).is_file()
    assert tuned["session"] == record["settings"] and "threads" in tuned["session"]
    assert record["default_variant"] == manifest["default_variant"] == "fp32"

    predictor = nlpforge.load(str(export_copy))
    assert predictor.variant == "tuned"
    assert predictor.variant_reason.startswith("tuned on this CPU")
    rows = [json.loads(line) for line in open(DATA)][:16]
    tuned_labels = [p["label"] for p in predictor.predict(rows)]
    fp32_labels = [p["label"] for p in nlpforge.load(str(export_copy),
                                                     variant="fp32").predict(rows)]
    if not record["candidate"].startswith("int8"):  # lossless: the same predictions
        assert tuned_labels == fp32_labels


def test_another_cpu_gets_the_default_and_is_told_why(export_copy):
    import nlpforge
    from nlpforge.export.tune import tune

    tune(export_copy, DATA, **FAST)
    manifest = _manifest(export_copy)
    manifest["tuning"]["cpu"] = {**manifest["tuning"]["cpu"], "model": "Some Other CPU"}
    (export_copy / "nlpforge.json").write_text(json.dumps(manifest))
    predictor = nlpforge.load(str(export_copy))
    assert predictor.variant == manifest["default_variant"]
    assert "tuned on another CPU (Some Other CPU" in predictor.variant_reason
    result = run_cli("predict", str(export_copy), "a lovely film", "-v")
    assert result.returncode == 0, result.stderr
    assert "variant fp32 (model.onnx): the export's default: it was tuned on another CPU" \
        in result.stderr
    assert json.loads(result.stdout)["label"]


def test_a_candidate_that_fails_its_check_is_never_chosen(export_copy):
    """A 'lossless' variant whose outputs differ from fp32 (one weight changed) is refused."""
    from nlpforge.export.tune import tune

    model = onnx.load(str(export_copy / "model.onnx"))
    for weight in model.graph.initializer:
        array = onnx.numpy_helper.to_array(weight)
        if array.dtype == np.float32 and array.ndim == 2:
            weight.CopyFrom(onnx.numpy_helper.from_array(array * 1.5, weight.name))
    onnx.save(model, str(export_copy / "model.broken.onnx"))
    manifest = _manifest(export_copy)
    manifest["variants"]["optimized"] = {"file": "model.broken.onnx",
                                         "files": ["model.broken.onnx"], "precision": "fp32",
                                         "validation": "optimization"}
    (export_copy / "nlpforge.json").write_text(json.dumps(manifest))
    record = tune(export_copy, DATA, **FAST)
    broken = record["candidates"]["optimized/default"]["check"]
    assert broken["passed"] is False and broken["max_abs_diff"] > broken["atol"]
    assert not record["candidate"].startswith("optimized")


def test_without_labelled_rows_int8_is_gated_by_the_cosine_of_its_outputs(export_copy):
    from nlpforge.export.tune import tune

    record = tune(export_copy, None, **FAST)  # the run's validation file is recorded: hide it
    assert record["labelled"] is True
    manifest = _manifest(export_copy)
    manifest["provenance"]["validation_file"] = None
    manifest["training"]["validation"] = None
    (export_copy / "nlpforge.json").write_text(json.dumps(manifest))
    record = tune(export_copy, None, min_cosine=1.01, **FAST)  # no int8 can pass
    assert record["data"] == "synthetic texts" and record["labelled"] is False
    for candidate in record["candidates"].values():
        if candidate["lossy"]:
            check = candidate["check"]
            assert check["mode"] == "output-cosine" and check["passed"] is False
            assert -1.0 <= check["min_cosine"] <= 1.0 + 1e-9
    assert not record["candidate"].startswith("int8")
    forced = tune(export_copy, None, min_cosine=1.01, force=True, **FAST)
    static = forced["candidates"]["int8-static/default"]["check"]
    assert static["forced"] is True and static["passed"] is True


def test_retuning_replaces_the_tuned_file(export_copy):
    from nlpforge.export.tune import TUNED_FILE, tune

    tune(export_copy, DATA, **FAST)
    first = _manifest(export_copy)["variants"]["tuned"]
    tune(export_copy, DATA, **FAST)
    second = _manifest(export_copy)["variants"]["tuned"]
    listed = {f for v in _manifest(export_copy)["variants"].values()
              for f in v.get("files") or [v["file"]]}
    leftovers = {p.name for p in export_copy.glob("*.onnx")} - listed
    assert not leftovers, (first, second)
    assert (export_copy / TUNED_FILE).exists() == (second["file"] == TUNED_FILE)
    assert not list(export_copy.glob(".tune-*"))


def test_optimize_auto_exports_then_tunes(trained_run, tmp_path, monkeypatch):
    import nlpforge
    from nlpforge.export import tune
    from nlpforge.export.onnx import export_run

    monkeypatch.setattr(tune, "MIN_SECONDS", 0.01)

    manifest = export_run(str(trained_run), str(tmp_path / "x"), optimize="auto")
    assert {"fp32", "optimized", "tuned"} <= set(manifest["variants"])
    assert manifest["tuning"]["data"].endswith("validation.jsonl")
    timings = manifest["tuning"]["candidates"]
    default = manifest["default_variant"]
    assert default in ("fp32", "optimized")
    assert timings[f"{default}/default"]["rows_per_second"] >= \
        timings["fp32/default"]["rows_per_second"]
    assert nlpforge.load(str(tmp_path / "x")).variant == "tuned"


def test_bad_arguments_are_refused(export_copy, tmp_path):
    from nlpforge.export.tune import tune

    with pytest.raises(UsageError, match="--rows must be at least 1"):
        tune(export_copy, DATA, rows=0)
    with pytest.raises(UsageError, match="--objective must be throughput or latency"):
        tune(export_copy, DATA, objective="fast")
    result = run_cli("tune", str(tmp_path / "nothing"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "no such directory" in result.stderr
    from click.testing import CliRunner

    from nlpforge.cli.main import cli

    result = CliRunner().invoke(cli, ["tune", str(export_copy), "--data", DATA, "--rows", "16",
                                      "--rounds", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["tuned"] in _manifest(export_copy)["tuning"]["candidates"]


def test_cpu_fingerprint_reads_the_model_and_flags():
    from nlpforge.runtime.host import FLAGS, cpu_fingerprint, same_cpu

    fingerprint = cpu_fingerprint()
    assert fingerprint["cpus"] >= 1 and set(fingerprint["flags"]) <= set(FLAGS)
    assert same_cpu(dict(fingerprint))
    assert not same_cpu({**fingerprint, "flags": fingerprint["flags"] + ["made-up"]})
    assert not same_cpu(None)
