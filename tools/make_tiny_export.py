"""Build a tiny BERT, fine-tune it briefly on the shipped examples and export it.

    python tools/make_tiny_export.py OUT_DIR

Used by the test command to have an export for the runtime-only (no torch) check.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from nlpforge.export.onnx import export_run
from nlpforge.testing import make_tiny_bert
from nlpforge.training.loop import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "build/tiny-export")
    examples = ROOT / "examples" / "sentiment"
    with tempfile.TemporaryDirectory() as tmp:
        base = make_tiny_bert(Path(tmp) / "base")
        run = Path(tmp) / "run"
        train(TrainConfig(task="text-classification", model=str(base),
                          train=str(examples / "train.jsonl"), output=str(run), max_steps=5,
                          progress=False))
        export_run(str(run), str(out), overwrite=True)
    print(f"tiny export written to {out}")


if __name__ == "__main__":
    main()
