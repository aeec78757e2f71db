"""Fine-tune a small T5 on Multi30k en→de, export it, and compare PyTorch and ONNX BLEU/chrF.

    python tools/seq2seq_real.py [--train-rows 29000] [--max-steps 600] [--eval-rows 300]
                                 [--out tools/out/seq2seq]

No pretrained encoder-decoder is available offline, so the model is a small T5 built from a
config (d_model 128, 2+2 layers) with a Unigram tokenizer trained on the training texts; the
point is the pipeline's correctness on real data, not state-of-the-art BLEU. Stages: nlpforge
train (translation task, T5 prefix), nlpforge export (three graphs, validated), then greedy
decoding of the test rows by transformers' generate() on the run dir and by the torch-free
search loop over EncoderDecoderStepper on the export. The two must give the same tokens, hence
the same BLEU/chrF. Writes REPORT.json under --out.

Reads ../shared/datasets/multi30k_en_de (or $NLPFORGE_DATASETS/multi30k_en_de); exits 0 with a
message when absent.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from evidence import DATASETS, ROOT



def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def torch_generate(run: Path, rows: list[dict], prefix: str, max_new: int,
                   batch_size: int) -> list[list[int]]:
    """Greedy generate() of transformers on the run dir (the reference)."""
    import torch
    from transformers import AutoModelForSeq2SeqLM

    from nlpforge.runtime.tokenizer import Tokenizer

    manifest = json.loads((run / "nlpforge.json").read_text())
    tokenizer = Tokenizer.from_dir(run, manifest["tokenizer"]["max_length"],
                                   manifest["tokenizer"]["pad_id"])
    model = AutoModelForSeq2SeqLM.from_pretrained(run).eval()
    out = []
    for start in range(0, len(rows), batch_size):
        part = rows[start:start + batch_size]
        batch = tokenizer.pad(tokenizer.encode([prefix + r["source"] for r in part]),
                              ("input_ids", "attention_mask"))
        with torch.inference_mode():
            seqs = model.generate(input_ids=torch.from_numpy(batch["input_ids"]),
                                  attention_mask=torch.from_numpy(batch["attention_mask"]),
                                  do_sample=False, num_beams=1, max_new_tokens=max_new)
        out.extend(_strip(seq.tolist(), model.config.pad_token_id) for seq in seqs)
    return out


def onnx_generate(export: Path, rows: list[dict], prefix: str, max_new: int,
                  batch_size: int) -> list[list[int]]:
    """Greedy decoding of the export with the torch-free search loop and stepper."""
    from nlpforge.runtime.generation.config import GenerationConfig
    from nlpforge.runtime.generation.search import generate
    from nlpforge.runtime.generation.seq2seq import EncoderDecoderStepper
    from nlpforge.runtime.tokenizer import Tokenizer

    manifest = json.loads((export / "nlpforge.json").read_text())
    stepper = EncoderDecoderStepper.load(export, manifest, device="cpu")
    tokenizer = Tokenizer.from_dir(export, manifest["tokenizer"]["max_length"],
                                   manifest["tokenizer"]["pad_id"])
    config = GenerationConfig.from_dir(export).with_overrides(
        {"max_new_tokens": max_new, "num_beams": 1, "do_sample": False})
    out = []
    for start in range(0, len(rows), batch_size):
        part = rows[start:start + batch_size]
        batch = tokenizer.pad(tokenizer.encode([prefix + r["source"] for r in part]),
                              ("input_ids", "attention_mask"))
        result = generate(stepper, batch["input_ids"], batch["attention_mask"], config)
        out.extend(_strip(seq.tolist(), stepper.pad_token_id) for seq in result.sequences)
    return out


def _strip(ids: list[int], pad: int) -> list[int]:
    """Drop the decoder start token and trailing padding."""
    ids = ids[1:]
    while ids and ids[-1] == pad:
        ids.pop()
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=29000)
    parser.add_argument("--max-steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--vocab-size", type=int, default=3000)
    parser.add_argument("--eval-rows", type=int, default=300)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "tools" / "out" / "seq2seq"))
    args = parser.parse_args()
    data = DATASETS / "multi30k_en_de"
    if not (data / "train.jsonl").is_file():
        print(f"skipped: {data} not found (set NLPFORGE_DATASETS)")
        return
    import torch

    from nlpforge.export.onnx import export_run
    from nlpforge.plugins import get_plugin_manager
    from nlpforge.runtime.tokenizer import Tokenizer
    from nlpforge.testing.encoder_decoders import make_tiny_t5
    from nlpforge.training.loop import TrainConfig, train

    torch.set_num_threads(args.threads)  # 1 on a shared machine: spinning OpenMP threads stall
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_rows = read_rows(data / "train.jsonl")
    random.Random(0).shuffle(train_rows)
    train_rows = train_rows[:args.train_rows]
    validation = read_rows(data / "validation.jsonl")[:200]
    test = read_rows(data / "test.jsonl")[:args.eval_rows]
    (out / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                                             for r in train_rows), encoding="utf-8")
    (out / "validation.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                  for r in validation), encoding="utf-8")
    timings = {}
    start = time.perf_counter()
    sample = train_rows[:10000]  # enough text for a small vocabulary, trained in seconds
    corpus = [r["source"] for r in sample] + [r["target"] for r in sample]
    base = make_tiny_t5(out / "base", vocab_size=args.vocab_size, corpus=corpus, d_model=128,
                        d_kv=32, d_ff=256, num_heads=4, num_layers=2, num_decoder_layers=2,
                        relative_attention_num_buckets=32,
                        relative_attention_max_distance=128)
    timings["base_model"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    result = train(TrainConfig(task="translation", model=str(base), train=str(out / "train.jsonl"),
                               validation=str(out / "validation.jsonl"), output=str(out / "run"),
                               overwrite=True, max_steps=args.max_steps,
                               batch_size=args.batch_size, lr=args.lr, max_length=64,
                               eval_strategy="epoch", progress=False,
                               task_options={"max_target_length": 64}))
    timings["train"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    record = export_run(str(out / "run"), str(out / "export"), overwrite=True)
    timings["export"] = round(time.perf_counter() - start, 1)
    task = get_plugin_manager().get_task("translation").from_state(
        record["task"]["state"])
    prefix = task.prefix()
    start = time.perf_counter()
    reference = torch_generate(out / "run", test, prefix, args.max_new_tokens, 32)
    timings["generate_pytorch"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    exported = onnx_generate(out / "export", test, prefix, args.max_new_tokens, 32)
    timings["generate_onnx"] = round(time.perf_counter() - start, 1)
    tokenizer = Tokenizer.from_dir(out / "export")
    texts = {name: [tokenizer.decode(ids) for ids in seqs]
             for name, seqs in (("pytorch", reference), ("onnx", exported))}
    metrics = {name: task.metrics([{"generated_text": t} for t in generated], test)
               for name, generated in texts.items()}
    same = sum(a == b for a, b in zip(reference, exported))
    report = {
        "dataset": "multi30k_en_de", "train_rows": len(train_rows),
        "test_rows": len(test), "model": "T5 from config: d_model 128, 2+2 layers, 4 heads, "
        f"vocab {args.vocab_size} (Unigram trained on the training texts)",
        "steps": result["steps"], "batch_size": args.batch_size, "lr": args.lr,
        "validation_perplexity": (result["best"] or {}).get("metrics", {}).get("perplexity"),
        "decoding": f"greedy, max_new_tokens {args.max_new_tokens}",
        "metrics": metrics, "identical_token_sequences": f"{same}/{len(test)}",
        "export_validation_max_abs_diff": {
            name: r["max_abs_diff"] for name, r in record["validation"]["graphs"].items()},
        "examples": [{"source": r["source"], "reference": r["target"],
                      "pytorch": texts["pytorch"][i], "onnx": texts["onnx"][i]}
                     for i, r in enumerate(test[:5])],
        "seconds": timings,
    }
    (out / "REPORT.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n",
                                     encoding="utf-8")
    print(json.dumps(report, indent=2, ensure_ascii=False))
    if same != len(test):
        sys.exit(f"PyTorch and ONNX disagree on {len(test) - same} of {len(test)} rows")


if __name__ == "__main__":
    main()
