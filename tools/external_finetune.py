"""A checkpoint fine-tuned outside nlpforge, exported by nlpforge: PyTorch and ONNX accuracy on
its validation data, prediction by prediction.

    python tools/external_finetune.py [--train-rows 4000] [--out tools/out/external]
                                      [--markdown docs/benchmarks/external-checkpoint.md]

Fine-tunes the packaged all-MiniLM-L6-v2 on SST-2 with a few lines of plain transformers and
PyTorch (no nlpforge), saves it with ``save_pretrained``, then runs ``nlpforge inspect`` and
``nlpforge export CHECKPOINT`` (the task detected from its config) and ``nlpforge evaluate`` on
the export; the checkpoint's own PyTorch accuracy is computed with transformers. Reads
../shared/datasets/sst2 (or $NLPFORGE_DATASETS/sst2); exits 0 with a message when absent.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from bench_common import cpu_line
from evidence import DATASETS, ROOT, minilm, nlpforge

LABELS = ["negative", "positive"]


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def fine_tune(base: str, train: list[dict], out: Path, epochs: float, batch_size: int,
              lr: float, max_length: int) -> None:
    """What a transformers user writes: tokenizer, head with its labels, AdamW, a loop."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=2, id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)})
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    steps = int(len(train) * epochs) // batch_size
    for step in range(steps):
        batch = [train[(step * batch_size + i) % len(train)] for i in range(batch_size)]
        features = tokenizer([r["text"] for r in batch], padding=True, truncation=True,
                             max_length=max_length, return_tensors="pt")
        labels = torch.tensor([LABELS.index(r["label"]) for r in batch])
        loss = model(**features, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def torch_predictions(checkpoint: Path, data: list[dict]) -> list[str]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(data), 64):
            texts = [r["text"] for r in data[i:i + 64]]
            logits = model(**tokenizer(texts, padding=True, truncation=True,
                                       return_tensors="pt")).logits
            out += [model.config.id2label[int(j)] for j in logits.argmax(-1)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=4000)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--out", default=str(ROOT / "tools" / "out" / "external"))
    parser.add_argument("--markdown", help="also write the result as a markdown table")
    args = parser.parse_args()

    sst2 = DATASETS / "sst2"
    if not (sst2 / "train.jsonl").is_file():
        print(f"skipped: {sst2} not found (set NLPFORGE_DATASETS)")
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = rows(sst2 / "train.jsonl")
    random.Random(0).shuffle(train)
    validation = sst2 / "validation.jsonl"
    checkpoint = out / "checkpoint"
    start = time.perf_counter()
    fine_tune(minilm(), train[:args.train_rows], checkpoint, args.epochs, args.batch_size,
              args.lr, args.max_length)
    tuned = time.perf_counter() - start
    shown = nlpforge("inspect", str(checkpoint), "--json")
    nlpforge("export", str(checkpoint), "--output", str(out / "export"), "--overwrite")
    onnx = nlpforge("evaluate", str(out / "export"), "--data", str(validation),
                    "--predictions", str(out / "onnx_predictions.jsonl"))
    data = rows(validation)
    expected = torch_predictions(checkpoint, data)
    got = [json.loads(line)["label"] for line in
           (out / "onnx_predictions.jsonl").read_text().splitlines() if line]
    torch_accuracy = sum(p == r["label"] for p, r in zip(expected, data)) / len(data)
    result = {
        "cpu": cpu_line(), "rows": len(data), "train_rows": args.train_rows,
        "fine_tune_seconds": round(tuned, 1), "detected_task": shown["task"],
        "picked_by": shown["picked_by"],
        "pytorch_accuracy": round(100 * torch_accuracy, 2),
        "onnx_accuracy": round(100 * onnx["metrics"]["accuracy"], 2),
        "predictions_that_differ": sum(a != b for a, b in zip(expected, got)),
    }
    print(json.dumps(result, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(
            "# A checkpoint fine-tuned outside nlpforge, exported by nlpforge\n\n"
            "`python tools/external_finetune.py --markdown docs/benchmarks/external-checkpoint.md`"
            f": all-MiniLM-L6-v2 fine-tuned with plain transformers + PyTorch on "
            f"{args.train_rows} SST-2 train rows, saved with `save_pretrained`, exported with "
            f"`nlpforge export CHECKPOINT` (task detected: {result['detected_task']}), scored "
            f"on the {len(data)} SST-2 dev sentences.\n\nCPU: {result['cpu']}\n\n"
            "| model | accuracy (%) |\n| --- | --- |\n"
            f"| PyTorch (transformers) | {result['pytorch_accuracy']} |\n"
            f"| ONNX (nlpforge export) | {result['onnx_accuracy']} |\n\n"
            f"Predictions that differ: {result['predictions_that_differ']} of {len(data)}.\n")


if __name__ == "__main__":
    sys.exit(main())
