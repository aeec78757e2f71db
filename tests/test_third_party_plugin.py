"""A plugin kept in its own distribution (tests/plugins/nlpforge-text-regression), installed
into the test environment, is found through its entry point and runs like a built-in."""

from __future__ import annotations

import importlib.metadata
import json

import pytest

from conftest import run_cli, write_jsonl


@pytest.fixture(scope="module", autouse=True)
def installed():
    """Installed with the test environment (tools/setup.sh): missing is a failure."""
    try:
        importlib.metadata.distribution("nlpforge-text-regression")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("nlpforge-text-regression is not installed: pip install -e "
                    "tests/plugins/nlpforge-text-regression (tools/setup.sh does)", pytrace=False)


def test_found_through_its_entry_point():
    tasks = {t["id"]: t for t in json.loads(run_cli("tasks", "--json").stdout)}
    assert tasks["text-regression"]["distribution"] == "nlpforge-text-regression"
    plugins = json.loads(run_cli("plugins", "--json").stdout)["plugins"]
    entry = next(p for p in plugins if p["name"] == "text-regression")
    assert entry["status"] == "loaded" and entry["commands"] == ["text-regression-stats"]


def test_train_export_predict(tiny_bert, tmp_path):
    rows = [{"text": t, "score": s} for t, s in [("great", 5.0), ("good", 4), ("meh", 3),
                                                   ("bad", 1.5), ("awful", 1)] * 4]
    data = write_jsonl(tmp_path / "scores.jsonl", rows)
    stats = run_cli("text-regression-stats", str(data))
    assert json.loads(stats.stdout) == {"rows": 20, "mean": 2.9, "min": 1.0, "max": 5.0}
    run, exp = tmp_path / "run", tmp_path / "exp"
    result = run_cli("train", "--task", "text-regression", "--model", str(tiny_bert), "--train",
                     str(data), "--validation", str(data), "--output", str(run),
                     "--max-steps", "4", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "mse" in json.loads(result.stdout)["best"]["metrics"]
    manifest = json.loads((run / "nlpforge.json").read_text())
    assert manifest["plugin"]["distribution"] == "nlpforge-text-regression"
    exported = run_cli("export", str(run), "--output", str(exp))
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["passed"]
    out = run_cli("predict", str(exp), "great", "awful")
    assert out.returncode == 0, out.stderr
    import nlpforge

    expected = nlpforge.load(str(exp)).predict(["great", "awful"])
    got = [json.loads(line) for line in out.stdout.splitlines()]
    assert [p["score"] for p in got] == pytest.approx([p["score"] for p in expected], abs=1e-6)
    onnx_eval = json.loads(run_cli("evaluate", str(exp), "--data", str(data)).stdout)
    torch_eval = json.loads(run_cli("evaluate", str(run), "--data", str(data)).stdout)
    assert onnx_eval["metrics"]["mse"] == pytest.approx(torch_eval["metrics"]["mse"], rel=1e-4)

    blocked = run_cli("predict", str(exp), "x",
                      env={"NLPFORGE_BLOCK_PLUGINS": "nlpforge-text-regression"})
    assert blocked.returncode != 0
    assert "pip install 'nlpforge-text-regression>=0.1,<0.2'" in blocked.stderr
