"""Fine-tune the packaged MiniLM for extractive QA on SQuAD v1.1 and compare PyTorch and ONNX.

    python tools/squad_qa.py [--train-rows 3000] [--eval-rows 0] [--epochs 1]
        [--batch-size 32] [--lr 1e-4] [--max-length 384] [--stride 128] [--out tools/out/squad]

Only the SQuAD v1.1 dev set is available (../shared/datasets/squad_v1.1/validation.jsonl, or
$NLPFORGE_DATASETS/squad_v1.1), so it is split by article: the sorted article titles, the
first ``--train-share`` of them (80%) for training, the rest held out for evaluation; no
article is in both. ``--train-rows`` takes a seeded random sample of the training questions
(0: all), ``--eval-rows`` one of the held-out questions (0: all). Each stage runs as a user
would run it: nlpforge train, export, and evaluate on the run dir (PyTorch) and on the export
(ONNX), both writing their predictions; the report (``OUT/report.json``) has EM/F1 of both
and the share of questions whose answer span is the same. Exits 0 with a message when the
dataset is absent.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from evidence import DATASETS, ROOT, minilm, nlpforge



def split_by_article(lines: list[str], share: float) -> tuple[list[str], list[str], list[str]]:
    """Training lines, held-out lines and the held-out titles (sorted titles, first share)."""
    titles = sorted({json.loads(line)["title"] for line in lines})
    cut = max(1, min(len(titles) - 1, round(len(titles) * share)))
    train_titles = set(titles[:cut])
    train = [line for line in lines if json.loads(line)["title"] in train_titles]
    held = [line for line in lines if json.loads(line)["title"] not in train_titles]
    return train, held, titles[cut:]


def sample(lines: list[str], count: int, seed: int) -> list[str]:
    if not count or count >= len(lines):
        return lines
    return random.Random(seed).sample(lines, count)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=0, help="training questions (0: all)")
    parser.add_argument("--eval-rows", type=int, default=0, help="held-out questions (0: all)")
    parser.add_argument("--train-share", type=float, default=0.8,
                        help="share of the articles (sorted by title) used for training")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--stride", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "tools" / "out" / "squad"))
    args = parser.parse_args()

    data = DATASETS / "squad_v1.1" / "validation.jsonl"
    if not data.is_file():
        print(f"skipped: {data} not found (set NLPFORGE_DATASETS)")
        return
    model = minilm()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [line for line in data.read_text(encoding="utf-8").splitlines() if line.strip()]
    train_lines, held_lines, held_titles = split_by_article(lines, args.train_share)
    train_lines = sample(train_lines, args.train_rows, args.seed)
    held_lines = sample(held_lines, args.eval_rows, args.seed)
    train_file, held_file = out / "train.jsonl", out / "heldout.jsonl"
    train_file.write_text("\n".join(train_lines) + "\n", encoding="utf-8")
    held_file.write_text("\n".join(held_lines) + "\n", encoding="utf-8")

    trained = nlpforge("train", "--task", "question-answering", "--model", model,
                       "--train", str(train_file), "--output", str(out / "run"),
                       "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                       "--lr", str(args.lr), "--max-length", str(args.max_length),
                       "--option", f"doc_stride={args.stride}", "--seed", str(args.seed),
                       "--overwrite", "--quiet")
    exported = nlpforge("export", str(out / "run"), "--output", str(out / "export"),
                        "--overwrite")
    evaluations = {}
    for name, directory in (("pytorch", out / "run"), ("onnx", out / "export")):
        predictions = out / f"predictions_{name}.jsonl"
        evaluations[name] = nlpforge("evaluate", str(directory), "--data", str(held_file),
                                     "--predictions", str(predictions))
        evaluations[name]["predictions"] = read_jsonl(predictions)
    pairs = list(zip(evaluations["pytorch"]["predictions"], evaluations["onnx"]["predictions"]))
    same = sum((a["start"], a["end"]) == (b["start"], b["end"]) for a, b in pairs)
    report = {
        "dataset": str(data),
        "split": (f"articles sorted by title; the first {round(100 * args.train_share)}% "
                  f"train, the last {len(held_titles)} held out"),
        "held_out_articles": held_titles,
        "train_questions": len(train_lines), "held_out_questions": len(held_lines),
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "max_length": args.max_length, "doc_stride": args.stride,
        "train_steps": trained.get("steps"),
        "train_seconds": trained["_seconds"], "export_seconds": exported["_seconds"],
        "export_max_abs_diff": exported.get("max_abs_diff"),
        "pytorch": {k: round(v, 2) for k, v in evaluations["pytorch"]["metrics"].items()},
        "onnx": {k: round(v, 2) for k, v in evaluations["onnx"]["metrics"].items()},
        "pytorch_eval_seconds": evaluations["pytorch"]["_seconds"],
        "onnx_eval_seconds": evaluations["onnx"]["_seconds"],
        "same_answer_span": round(100 * same / max(1, len(pairs)), 2),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    if report["same_answer_span"] < 99.5:
        sys.exit("ONNX and PyTorch answer spans agree on fewer than 99.5% of the questions")


if __name__ == "__main__":
    main()
