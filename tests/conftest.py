"""Fixtures: a tiny BERT built on the fly, one trained run + export shared by the suite, and a
tiny generative export per family (GPT-2 decoder, T5 encoder-decoder) built once per session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "sentiment"
SHARED = Path(os.environ.get("NLPFORGE_SHARED", ROOT.parent / "shared"))


#: Opt-in markers: skipped unless their variable is 1 or ``-m`` names them.
OPT_IN = {"slow": "NLPFORGE_SLOW", "matrix": "NLPFORGE_MATRIX"}


def pytest_collection_modifyitems(config, items):
    chosen = config.getoption("-m") or ""
    for marker, variable in OPT_IN.items():
        if os.environ.get(variable) == "1" or marker in chosen:
            continue
        skip = pytest.mark.skip(reason=f"{marker}: set {variable}=1 or run with -m {marker}")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


def run_cli(*args: str, env: dict | None = None, input: str | None = None,
            cwd: str | None = None) -> subprocess.CompletedProcess:
    """Run ``nlpforge ARGS`` in a fresh process, as a user would."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run([sys.executable, "-m", "nlpforge", *args], capture_output=True,
                          text=True, env=full_env, input=input, cwd=cwd, timeout=600)


def wait_until(condition: Callable[[], object], timeout: float, what: str,
               interval: float = 0.02) -> None:
    """Poll ``condition`` until it is true; fail saying ``what`` was awaited once ``timeout``
    seconds have passed. ``condition`` may assert too (e.g. that a process is still alive)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}", pytrace=False)
        time.sleep(interval)


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


#: Prompts for the tiny generative models; the GPT-2 export is trained on them joined.
GENERATION_PROMPTS = ["once upon a time", "the quick brown fox jumps", "to be",
                      "numbers 0 1 2 and punctuation ! ?"]
SEQ2SEQ_ROWS = [{"source": "translate English to German: the house is small",
                 "target": "das haus ist klein"},
                {"source": "summarize: the meeting moved to friday", "target": "meeting friday"},
                {"source": "two dogs are playing in the snow", "target": "zwei hunde spielen"}]


def _generative_export(root: Path, maker: Callable, task: str, rows: list[dict],
                       **model_options) -> tuple[Path, Path, Path]:
    """Train a tiny base model one step and export it: (run dir, export dir, data file)."""
    from nlpforge.export.onnx import export_run
    from nlpforge.training.loop import TrainConfig, train

    base = maker(root / "base", **model_options)
    data = write_jsonl(root / "data.jsonl", rows)
    run = root / "run"
    train(TrainConfig(task=task, model=str(base), train=str(data), output=str(run),
                      max_steps=1, batch_size=4, lr=1e-4, max_length=32, progress=False,
                      device="cpu"))
    export_run(str(run), str(root / "export"))
    return run, root / "export", data


@pytest.fixture(scope="session")
def gpt2_export(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A text-generation GPT-2 (decoder with a KV cache): (run dir, export dir, data file)."""
    from nlpforge.testing.decoders import make_tiny_gpt2

    return _generative_export(tmp_path_factory.mktemp("gpt2"), make_tiny_gpt2,
                              "text-generation", [{"text": " ".join(GENERATION_PROMPTS)}] * 4)


@pytest.fixture(scope="session")
def t5_export(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A text2text-generation T5 (encoder-decoder): (run dir, export dir, data file)."""
    from nlpforge.testing.encoder_decoders import make_tiny_t5

    return _generative_export(tmp_path_factory.mktemp("t5"), make_tiny_t5,
                              "text2text-generation", SEQ2SEQ_ROWS, initializer_factor=2.0)
