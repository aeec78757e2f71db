"""Fixtures: a tiny BERT built on the fly, and one trained run + export shared by the suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "sentiment"
SHARED = Path(os.environ.get("NLPFORGE_SHARED", ROOT.parent / "shared"))


def pytest_collection_modifyitems(config, items):
    if os.environ.get("NLPFORGE_SLOW") == "1" or "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: set NLPFORGE_SLOW=1 or run with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def run_cli(*args: str, env: dict | None = None, input: str | None = None,
            cwd: str | None = None) -> subprocess.CompletedProcess:
    """Run ``nlpforge ARGS`` in a fresh process, as a user would."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run([sys.executable, "-m", "nlpforge", *args], capture_output=True,
                          text=True, env=full_env, input=input, cwd=cwd, timeout=600)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    from nlpforge.testing import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")


@pytest.fixture(scope="session")
def trained_run(tiny_bert, tmp_path_factory) -> Path:
    """A text-classification run dir trained briefly on the shipped sentiment examples."""
    from nlpforge.training.loop import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "sentiment"
    train(TrainConfig(task="text-classification", model=str(tiny_bert),
                      train=str(EXAMPLES / "train.jsonl"),
                      validation=str(EXAMPLES / "validation.jsonl"), output=str(out),
                      epochs=2, batch_size=32, lr=1e-3, progress=False))
    return out


@pytest.fixture(scope="session")
def exported(trained_run, tmp_path_factory) -> Path:
    from nlpforge.export.onnx import export_run

    out = tmp_path_factory.mktemp("exports") / "sentiment"
    export_run(str(trained_run), str(out))
    return out
