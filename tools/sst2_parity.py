"""Fine-tune the packaged MiniLM on SST-2, export it, and compare PyTorch and ONNX accuracy.

    python tools/sst2_parity.py [--train-rows 20000] [--epochs 1] [--out tools/out/sst2]

Reads ../shared/datasets/sst2 (or $NLPFORGE_DATASETS/sst2); exits 0 with a message when absent.
Each stage runs as the user would run it: nlpforge train, export, evaluate (run dir and export).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from evidence import DATASETS, ROOT, minilm, nlpforge



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=20000)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--out", default=str(ROOT / "tools" / "out" / "sst2"))
    args = parser.parse_args()

    sst2 = DATASETS / "sst2"
    if not (sst2 / "train.jsonl").is_file():
        print(f"skipped: {sst2} not found (set NLPFORGE_DATASETS)")
        return
    model = minilm()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = (sst2 / "train.jsonl").read_text(encoding="utf-8").splitlines()
    random.Random(0).shuffle(rows)
    subset = out / "train_subset.jsonl"
    subset.write_text("\n".join(rows[:args.train_rows]) + "\n", encoding="utf-8")
    validation = str(sst2 / "validation.jsonl")

    trained = nlpforge("train", "--task", "text-classification", "--model", model,
                       "--train", str(subset), "--validation", validation,
                       "--output", str(out / "run"), "--epochs", str(args.epochs),
                       "--batch-size", str(args.batch_size), "--lr", str(args.lr),
                       "--max-length", str(args.max_length), "--overwrite", "--quiet")
    exported = nlpforge("export", str(out / "run"), "--output", str(out / "export"), "--overwrite")
    torch_eval = nlpforge("evaluate", str(out / "run"), "--data", validation)
    onnx_eval = nlpforge("evaluate", str(out / "export"), "--data", validation)
    report = {
        "train_rows": len(rows[:args.train_rows]), "epochs": args.epochs,
        "batch_size": args.batch_size, "lr": args.lr, "max_length": args.max_length,
        "train_seconds": trained["_seconds"], "export_seconds": exported["_seconds"],
        "export_max_abs_diff": exported["max_abs_diff"],
        "validation_rows": torch_eval["rows"],
        "pytorch_accuracy": round(100 * torch_eval["metrics"]["accuracy"], 2),
        "onnx_accuracy": round(100 * onnx_eval["metrics"]["accuracy"], 2),
        "pytorch_eval_seconds": torch_eval["_seconds"], "onnx_eval_seconds": onnx_eval["_seconds"],
    }
    report["accuracy_gap_points"] = round(abs(report["pytorch_accuracy"] - report["onnx_accuracy"]), 2)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    if report["accuracy_gap_points"] > 0.1:
        sys.exit("PyTorch and ONNX accuracy differ by more than 0.1 point")


if __name__ == "__main__":
    main()
