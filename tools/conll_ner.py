"""Fine-tune the packaged MiniLM on CoNLL-2003 NER, export it, and compare PyTorch and ONNX.

    python tools/conll_ner.py [--train-rows 6000] [--epochs 1] [--batch-size 16] [--lr 1e-4]
                              [--max-length 128] [--eval-rows 0] [--threads N]
                              [--validate-during-training] [--reuse] [--out tools/out/conll]

Reads ../shared/datasets/conll2003 (or $NLPFORGE_DATASETS/conll2003); exits 0 with a message
when it is absent. Each stage runs as a user would run it: nlpforge train, export, evaluate
(run dir and export dir, on validation and test). Reports seqeval-style entity F1 for both
backends and the share of sentences whose predicted entities agree between them, and writes
OUT/report.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from evidence import DATASETS, ROOT, minilm, nlpforge

SPLITS = ("validation", "test")


def entity_sets(path: Path) -> list[set]:
    """The (type, start, end) entities of each prediction in a predictions file."""
    return [{(e["type"], e["start"], e["end"]) for e in json.loads(line)["entities"]}
            for line in path.read_text(encoding="utf-8").splitlines()]


def summary(metrics: dict) -> dict:
    return {"f1": round(100 * metrics["f1"], 2), "precision": round(100 * metrics["precision"], 2),
            "recall": round(100 * metrics["recall"], 2),
            "per_type_f1": {k: round(100 * v["f1"], 2) for k, v in metrics["per_type"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=6000,
                        help="sentences drawn at random from train (0: all 14,041)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--eval-rows", type=int, default=0,
                        help="evaluate on the first N sentences of validation and test (0: all)")
    parser.add_argument("--threads", type=int, help="CPU threads of every stage")
    parser.add_argument("--validate-during-training", action="store_true",
                        help="also evaluate on validation after each epoch (picks the best)")
    parser.add_argument("--reuse", action="store_true",
                        help="evaluate OUT/run and OUT/export from an earlier run again (e.g. "
                             "with another --eval-rows) instead of training and exporting")
    parser.add_argument("--out", default=str(ROOT / "tools" / "out" / "conll"))
    args = parser.parse_args()

    conll = DATASETS / "conll2003"
    if not all((conll / f"{s}.jsonl").is_file() for s in ("train", *SPLITS)):
        print(f"skipped: {conll} (train/validation/test.jsonl) not found (set NLPFORGE_DATASETS)")
        return
    model = minilm()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    subset = out / "train_subset.jsonl"
    if args.reuse:
        previous = json.loads((out / "report.json").read_text(encoding="utf-8"))
        rows = subset.read_text(encoding="utf-8").splitlines()
    else:
        rows = (conll / "train.jsonl").read_text(encoding="utf-8").splitlines()
        random.Random(0).shuffle(rows)
        rows = rows[:args.train_rows] if args.train_rows else rows
        subset.write_text("\n".join(rows) + "\n", encoding="utf-8")

    splits = {}
    for split in SPLITS:
        lines = (conll / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        lines = lines[:args.eval_rows] if args.eval_rows else lines
        splits[split] = out / f"{split}_subset.jsonl"
        splits[split].write_text("\n".join(lines) + "\n", encoding="utf-8")

    run, export = out / "run", out / "export"
    if args.reuse:
        trained = {"_seconds": previous["train_seconds"], "steps": previous["train_steps"]}
        exported = {"_seconds": previous["export_seconds"],
                    "max_abs_diff": previous["export_max_abs_diff"]}
        for name in ("epochs", "batch_size", "lr", "max_length"):
            setattr(args, name, previous[name])
    else:
        validation = (["--validation", str(splits["validation"])]
                      if args.validate_during_training else ["--eval-strategy", "no"])
        trained = nlpforge("train", "--task", "token-classification", "--model", model,
                           "--train", str(subset), *validation,
                           "--output", str(run), "--epochs", str(args.epochs),
                           "--batch-size", str(args.batch_size), "--lr", str(args.lr),
                           "--max-length", str(args.max_length), "--overwrite", "--quiet",
                           threads=args.threads)
        exported = nlpforge("export", str(run), "--output", str(export), "--overwrite",
                            threads=args.threads)
    threads = ["--threads", str(args.threads)] if args.threads else []
    report: dict = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "trained_by": previous["command"] if args.reuse else None,
        "train_rows": len(rows), "eval_rows": args.eval_rows or "all", "epochs": args.epochs,
        "batch_size": args.batch_size, "lr": args.lr, "max_length": args.max_length,
        "train_seconds": trained["_seconds"], "train_steps": trained.get("steps"),
        "export_seconds": exported["_seconds"],
        "export_max_abs_diff": exported["max_abs_diff"],
    }
    for split in SPLITS:
        data = str(splits[split])
        results = {}
        for backend, directory in (("pytorch", run), ("onnx", export)):
            predictions = out / f"{split}.{backend}.jsonl"
            evaluated = nlpforge("evaluate", str(directory), "--data", data,
                                 "--predictions", str(predictions), *threads,
                                 threads=args.threads)
            results[backend] = {**summary(evaluated["metrics"]),
                                "seconds": evaluated["_seconds"]}
        torch_sets = entity_sets(out / f"{split}.pytorch.jsonl")
        onnx_sets = entity_sets(out / f"{split}.onnx.jsonl")
        same = sum(a == b for a, b in zip(torch_sets, onnx_sets, strict=True))
        report[split] = {"sentences": len(torch_sets), **results,
                         "same_entities_share": round(same / len(torch_sets), 5)}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    worst = min(report[s]["same_entities_share"] for s in SPLITS)
    if worst < 0.995:
        sys.exit(f"PyTorch and ONNX agree on the entities of only {100 * worst:.2f}% of sentences")


if __name__ == "__main__":
    main()
