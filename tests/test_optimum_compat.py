"""Hugging Face optimum loads nlpforge's exports: tools/optimum_check.py (slow test).

optimum-onnx pins transformers<4.58 and nlpforge needs transformers 5, so the check builds a
second virtual environment once (build/optimum-venv, from the package registry) and runs
optimum's ORTModel classes there on tiny exports made here; see the tool's docstring. Run it
with ``python -m pytest tests/test_optimum_compat.py -m slow``.

What holds: the encoder (text-classification, every variant) and decoder (GPT-2, Llama) exports
load with their ORTModel class and give nlpforge's logits and greedy tokens. What does not, and
why, is asserted below so that a fix shows up as a failure here, with what to update.
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
#: optimum feeds the seq2seq cache by position, in an order these graphs do not have.
BY_POSITION = [case for case in check.CASES if case.split("/")[0] in SEQ2SEQ
               and not case.endswith(check.BY_LAYER)]
COMPATIBLE = [case for case in check.CASES if case not in BY_POSITION]
FIXED = ("this now works: the export was fixed. Move the cases into "
         "test_optimum_loads_the_export_and_matches_nlpforge (or drop this test) and update "
         "the optimum section of docs/export.md")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("optimum")
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "optimum_check.py"),
                             "--report", str(work / "report.json"), "--work", str(work)],
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode in (0, check.INCOMPATIBLE), result.stderr[-6000:]
    return json.loads((work / "report.json").read_text())


@pytest.mark.parametrize("case", COMPATIBLE)
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


@pytest.mark.parametrize("case", BY_POSITION)
def test_optimum_cannot_generate_with_the_seq2seq_exports_yet(report, case):
    """decoder_with_past_model.onnx takes its cache inputs as every layer's self-attention
    cache, then every layer's cross-attention cache; optimum zips its cache, flattened layer by
    layer (0.decoder.key, 0.decoder.value, 0.encoder.key, 0.encoder.value, 1.decoder.key…),
    with the inputs in graph order. With 2 layers, layer 0's cross-attention cache lands in
    past_key_values.1.decoder.*: the first step with a cache fails (fed by name, the same
    graphs match nlpforge: the */cache-inputs-by-layer cases above)."""
    inputs = report["seq2seq_cache_inputs"][case.split("/")[0]]
    assert not inputs["layer_by_layer"], FIXED
    assert inputs["inputs"][2] == "past_key_values.1.decoder.key"
    result = report["cases"][case]
    assert not result["ok"], FIXED
    assert result["stage"] == "generate" and "MatMul" in result["error"], result["error"]


@pytest.mark.parametrize("name", list(check.EXPORTS))
def test_transformers_4_reads_the_export_tokenizer_json(report, name):
    """optimum's transformers (4.x) tokenizes like nlpforge from tokenizer.json."""
    got = report["tokenizers"][name]["PreTrainedTokenizerFast(tokenizer_file=...)"]
    assert got["loaded"] and got["same_ids"], got


@pytest.mark.parametrize("name", list(check.EXPORTS))
def test_transformers_4_fast_tokenizer_reads_the_export_dir(report, name):
    """PreTrainedTokenizerFast.from_pretrained(export_dir) (special tokens included) works but
    for T5: its tokenizer_config.json lists "extra_special_tokens" (the sentinels), which
    transformers 4 reads as a dict."""
    got = report["tokenizers"][name]["PreTrainedTokenizerFast.from_pretrained"]
    if name == "t5":
        assert not got["loaded"], FIXED.replace("cases", "tokenizer cases")
        assert "'list' object has no attribute 'keys'" in got["error"], got["error"]
    else:
        assert got["loaded"] and got["same_ids"], got


@pytest.mark.parametrize("name", list(check.EXPORTS))
def test_transformers_4_auto_tokenizer_cannot_read_the_tokenizer_config_yet(report, name):
    """tokenizer_config.json as transformers 5 saves it names "tokenizer_class":
    "TokenizersBackend", a class transformers 4 does not have."""
    got = report["tokenizers"][name]["AutoTokenizer.from_pretrained"]
    assert not got["loaded"], FIXED.replace("cases", "tokenizer cases")
    assert "TokenizersBackend" in got["error"], got["error"]
