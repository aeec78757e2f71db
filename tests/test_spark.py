"""examples/spark_predict.py on a local Spark: the same rows as nlpforge predict's local engine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import ROOT, write_jsonl

pytest.importorskip("pyspark", reason="PySpark is not installed")
pq = pytest.importorskip("pyarrow.parquet")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("PySpark needs Java (no java on PATH, no JAVA_HOME)", allow_module_level=True)

ROWS = [{"id": 10 + i, "text": text} for i, text in enumerate(
    ["a fine film", "an awful film", "wonderful, moving, funny", "dull and far too long",
     "Ein großartiger Film — très bien", "ok", "never again", "😀 great"] * 2)]


def test_spark_example_matches_the_local_engine(exported, tmp_path):
    from nlpforge.cli.main import cli

    data = write_jsonl(tmp_path / "reviews.jsonl", ROWS)
    result = CliRunner().invoke(cli, ["predict", str(exported), "--input", str(data),
                                      "--output", str(tmp_path / "local.jsonl"), "-q"])
    assert result.exit_code == 0, result.output
    expected = {row["id"]: row for row in map(json.loads,
                                              (tmp_path / "local.jsonl").read_text().splitlines())}

    out = tmp_path / "scores.parquet"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYSPARK_PYTHON": sys.executable}
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "spark_predict.py"),
                          str(exported), str(data), str(out), "--master", "local[2]"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    rows = pq.read_table(out).to_pylist()
    assert sorted(row["id"] for row in rows) == sorted(expected)
    for row in rows:
        want = expected[row["id"]]
        assert row["label"] == want["label"]
        assert row["score"] == pytest.approx(want["score"], abs=1e-6)
        assert row["scores"] == pytest.approx(want["scores"], abs=1e-6)
