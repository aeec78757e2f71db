"""Hugging Face optimum loads nlpforge's exports: tools/optimum_check.py (slow test).

optimum-onnx pins transformers<4.58 and nlpforge needs transformers 5, so the check builds a
second virtual environment once (build/optimum-venv, from the package registry) and runs
optimum's ORTModel classes there on tiny exports made here; see the tool's docstring. Run it
with ``python -m pytest tests/test_optimum_compat.py -m slow``.

Every export — encoder (text-classification, every variant), decoder (GPT-2, Llama) and
encoder-decoder (T5, BART) — loads with its ORTModel class and gives nlpforge's logits and
greedy tokens, and transformers 4 (optimum's) loads the export's tokenizer with nlpforge's ids.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _tool():
    spec = importlib.util.spec_from_file_location("optimum_check",
                                                  ROOT / "tools" / "optimum_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = _tool()
SEQ2SEQ = [name for name, (family, _, _) in check.EXPORTS.items()
           if family == "encoder-decoder"]
TOKENIZER_LOADERS = ("PreTrainedTokenizerFast(tokenizer_file=...)",
                     "PreTrainedTokenizerFast.from_pretrained", "AutoTokenizer.from_pretrained")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("optimum")
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "optimum_check.py"),
                             "--report", str(work / "report.json"), "--work", str(work)],
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-6000:]
    return json.loads((work / "report.json").read_text())


@pytest.mark.parametrize("case", check.CASES)
def test_optimum_loads_the_export_and_matches_nlpforge(report, case):
    """ORTModelFor*.from_pretrained(export_dir, file_name=<the variant's files>) (or no file
    names: then optimum must pick the fp32 files); classifier logits within 1e-4 of
    nlpforge's, greedy generate() tokens identical to nlpforge's Generator."""
    result = report["cases"][case]
    assert result["ok"], json.dumps(result)[:3000]
    variant = case.split("/")[1]
    fp32 = variant in ("default", "fp32")
    assert all((".optimized." not in f and ".int8." not in f) is fp32 for f in result["files"])
    assert len(result["files"]) == (3 if result["family"] == "encoder-decoder" else 1)


@pytest.mark.parametrize("name", SEQ2SEQ)
def test_seq2seq_cache_inputs_come_layer_by_layer(report, name):
    """optimum feeds the cache by position, layer by layer (0.decoder.key, 0.decoder.value,
    0.encoder.key, 0.encoder.value, 1.decoder.key…): the graph's inputs are in that order."""
    inputs = report["seq2seq_cache_inputs"][name]
    assert inputs["layer_by_layer"], inputs
    assert inputs["inputs"][:4] == [f"past_key_values.0.{part}.{kind}"
                                     for part in ("decoder", "encoder")
                                     for kind in ("key", "value")]


@pytest.mark.parametrize("name", list(check.EXPORTS))
@pytest.mark.parametrize("loader", TOKENIZER_LOADERS)
def test_transformers_4_loads_the_export_tokenizer(report, name, loader):
    """optimum's transformers (4.x) loads the export's tokenizer (tokenizer_config.json names
    PreTrainedTokenizerFast, not transformers 5's TokenizersBackend) and tokenizes like
    nlpforge."""
    got = report["tokenizers"][name][loader]
    assert got["loaded"] and got["same_ids"], got
