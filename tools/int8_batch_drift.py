"""How much a prediction moves with the rows batched with it, per variant of an export.

    python tools/int8_batch_drift.py [--export DIR] [--train-rows 4000] [--rounds 5]
        [--batch-size 32] [--out tools/out/int8_drift]

Without ``--export`` it fine-tunes the packaged MiniLM on the first ``--train-rows`` rows of
SST-2's train set (one epoch) and exports it with ``--quantize int8``. Then, for every variant
of the export (fp32, int8, and optimized/fp16 where made), it predicts each SST-2 validation
sentence alone and inside ``--rounds`` random batchings of ``--batch-size`` rows ("plain"
batches of sentences, "mixed" ones where one row in eight is a text pair), in batches of
sentences of one token count (no padding) and in batches of copies of itself. It reports
the largest change of a sentence's scores against its prediction alone (the 99th percentile
and the median too) and how many predictions changed label.

Reads ../shared/datasets/sst2 (or $NLPFORGE_DATASETS/sst2); without it, the shipped
examples/sentiment. Writes ``report.json`` and ``report.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
from evidence import DATASETS, ROOT, minilm, nlpforge

PAIR_SHARE = 8  # one row in eight of a mixed batch is a text pair
COPIES = 8  # rows of a batch of copies
MODES = ("plain", "mixed", "same length", "copies")


def data_files() -> tuple[Path, Path, str]:
    """(train file, validation file, what they are)."""
    sst2 = DATASETS / "sst2"
    if (sst2 / "validation.jsonl").is_file():
        return sst2 / "train.jsonl", sst2 / "validation.jsonl", "SST-2"
    examples = ROOT / "examples" / "sentiment"
    return examples / "train.jsonl", examples / "validation.jsonl", "examples/sentiment"


def make_export(args: argparse.Namespace, train: Path, validation: Path) -> Path:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = train.read_text(encoding="utf-8").splitlines()[:args.train_rows]
    subset = out / "train_subset.jsonl"
    subset.write_text("\n".join(rows) + "\n", encoding="utf-8")
    nlpforge("train", "--task", "text-classification", "--model", minilm(), "--train",
             str(subset), "--validation", str(validation), "--output", str(out / "run"),
             "--epochs", "1", "--batch-size", "32", "--max-length", "64", "--overwrite",
             "--quiet", echo=True)
    nlpforge("export", str(out / "run"), "--output", str(out / "export"), "--quantize", "int8",
             "--calibration-data", str(validation), "--overwrite", echo=True)
    return out / "export"


def batchings(mode: str, lengths: list[int], size: int, rounds: int) -> list[list[list]]:
    """Per round, batches of sentence indices. ``plain``: random batches; ``mixed``: random
    batches where every PAIR_SHARE-th row is a pair ``(i, j)`` of two other sentences;
    ``same length``: sentences of one token count together (no padding: how ``predict``
    batches many rows); ``copies``: each sentence with copies of itself only."""
    count = len(lengths)
    if mode == "same length":
        groups: dict[int, list] = {}
        for i, n in enumerate(lengths):
            groups.setdefault(n, []).append(i)
        return [[g[s:s + size] for g in groups.values() for s in range(0, len(g), size)]]
    if mode == "copies":
        return [[[i] * COPIES for i in range(count)]]
    out = []
    for r in range(rounds):
        rng = random.Random(r)
        order = list(range(count))
        rng.shuffle(order)
        per_batch = size - size // PAIR_SHARE if mode == "mixed" else size
        batches = []
        for start in range(0, count, per_batch):
            batch: list = order[start:start + per_batch]
            if mode == "mixed":
                for _ in range(size // PAIR_SHARE):
                    batch.insert(rng.randrange(len(batch) + 1),
                                 (rng.randrange(count), rng.randrange(count)))
            batches.append(batch)
        out.append(batches)
    return out


def measure(export: Path, variant: str, texts: list[str], args: argparse.Namespace) -> list[dict]:
    import nlpforge

    model = nlpforge.load(str(export), variant=variant, device="cpu", threads=args.threads)
    labels = model.labels

    def scores(prediction: dict) -> np.ndarray:
        return np.array([prediction["scores"][label] for label in labels])

    alone = [model.predict([text])[0] for text in texts]
    alone_scores = np.stack([scores(p) for p in alone])
    lengths = [int(model.task.encode([{"text": t}], model.tokenizer)["attention_mask"].sum())
               for t in texts]
    results = []
    for mode in MODES:
        diffs, flips, flipped = [], 0, set()
        for batches in batchings(mode, lengths, args.batch_size, args.rounds):
            for batch in batches:
                rows = [{"text": texts[b[0]], "text_pair": texts[b[1]]} if isinstance(b, tuple)
                        else {"text": texts[b]} for b in batch]
                for b, prediction in zip(batch, model.predict(rows, batch_size=len(rows))):
                    if isinstance(b, tuple):
                        continue
                    diffs.append(float(np.abs(scores(prediction) - alone_scores[b]).max()))
                    if prediction["label"] != alone[b]["label"]:
                        flips += 1
                        flipped.add(b)
        d = np.array(diffs)
        results.append({"variant": variant, "batches": mode, "predictions": len(d),
                        "max": float(d.max()), "p99": float(np.percentile(d, 99)),
                        "median": float(np.median(d)), "label_changes": flips,
                        "sentences_with_a_label_change": len(flipped)})
        print(json.dumps(results[-1]), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", help="an existing text-classification export dir")
    parser.add_argument("--train-rows", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "tools" / "out" / "int8_drift"))
    args = parser.parse_args()

    train, validation, source = data_files()
    export = Path(args.export) if args.export else make_export(args, train, validation)
    manifest = json.loads((export / "nlpforge.json").read_text(encoding="utf-8"))
    if manifest["task"]["id"] != "text-classification":
        sys.exit(f"{export}: a text-classification export is needed")
    variants = ["fp32", *[v for v in ("optimized", "fp16", "int8")
                          if v in manifest.get("variants", {})]]
    texts = [json.loads(line)["text"] for line in
             validation.read_text(encoding="utf-8").splitlines() if line.strip()]
    results = [r for variant in variants for r in measure(export, variant, texts, args)]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"export": str(export), "sentences": f"{source} validation ({len(texts)})",
              "rounds": args.rounds, "batch_size": args.batch_size, "threads": args.threads,
              "results": results}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    lines = [f"{len(texts)} {source} validation sentences, each alone and in batches of at "
             f"most {args.batch_size} rows ({args.rounds} random batchings plain and mixed, "
             f"{args.threads} threads)", "",
             "| variant | batches | predictions | max change of a score | 99th percentile | "
             "median | label changes (sentences) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['variant']} | {r['batches']} | {r['predictions']} | {r['max']:.2e} | "
              f"{r['p99']:.2e} | {r['median']:.2e} | {r['label_changes']} "
              f"({r['sentences_with_a_label_change']}) |" for r in results]
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
