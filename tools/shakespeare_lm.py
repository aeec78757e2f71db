"""Fine-tune a small GPT-2 on Tiny Shakespeare; perplexity of PyTorch and of the ONNX export.

    python tools/shakespeare_lm.py [--layers 4] [--width 128] [--vocab 2048] [--max-steps 100]
                                   [--epochs E] [--batch-size 8] [--lr 2e-3]
                                   [--max-length 64] [--out tools/out/shakespeare]

The defaults fit about 15 minutes on 2 busy CPU cores (a 4-layer, 256-wide GPT-2 takes ~25 s
per step there); on a GPU pass --device cuda with --layers 6 --width 384 --epochs 3. The
validation split is evaluated once per backend after training (not during it).

No pretrained decoder is available offline, so the base model is a randomly initialised GPT-2
built from a config, with a byte-level BPE tokenizer trained on the training split. Reads
../shared/datasets/tiny_shakespeare (or $NLPFORGE_DATASETS/tiny_shakespeare); exits 0 with a
message when it is absent. Each stage runs as a user would run it: nlpforge train, export,
evaluate (run dir: PyTorch; export dir: ONNX Runtime, teacher-forced through the KV-cache
graph with an empty cache). The two validation perplexities must agree; a greedy sample
from the torch-free DecoderStepper is included. Writes OUT/report.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from evidence import DATASETS, ROOT, nlpforge



def make_base(directory: Path, train: Path, layers: int, width: int, vocab: int,
              positions: int) -> None:
    """A GPT-2 of the given size with a tokenizer trained on the training texts."""
    import torch
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

    from nlpforge.testing.decoders import train_byte_bpe_tokenizer

    texts = [json.loads(line)["text"] for line in train.read_text(encoding="utf-8").splitlines()]
    train_byte_bpe_tokenizer(directory, bos="<|endoftext|>", eos="<|endoftext|>", pad="<|pad|>",
                             vocab_size=vocab, corpus=texts, model_max_length=positions)
    from tokenizers import Tokenizer

    backend = Tokenizer.from_file(str(directory / "tokenizer.json"))
    eos, pad = backend.token_to_id("<|endoftext|>"), backend.token_to_id("<|pad|>")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=backend.get_vocab_size(), n_embd=width, n_layer=layers,
                        n_head=max(1, width // 64), n_positions=positions, bos_token_id=eos,
                        eos_token_id=eos, pad_token_id=pad)
    model = GPT2LMHeadModel(config)
    model.generation_config = GenerationConfig(bos_token_id=eos, eos_token_id=eos,
                                               pad_token_id=pad)
    model.save_pretrained(directory)


def sample(export: Path, prompts: list[str], new_tokens: int = 40) -> list[str]:
    """Greedy continuations from the export, torch-free (the stepper's own minimal loop)."""
    import numpy as np

    from nlpforge.manifest import read_manifest
    from nlpforge.runtime.generation.decoder import DecoderStepper
    from nlpforge.runtime.tokenizer import Tokenizer

    manifest = read_manifest(export)
    stepper = DecoderStepper.load(export, manifest, device="cpu")
    tokenizer = Tokenizer.from_dir(export, manifest["tokenizer"]["max_length"],
                                   manifest["tokenizer"].get("pad_id"))
    tokenizer.padding_side = "left"
    batch = tokenizer.pad(tokenizer.encode(prompts), ("input_ids", "attention_mask"))
    logits, state = stepper.start(batch["input_ids"], batch["attention_mask"])
    out = []
    for _ in range(new_tokens):
        tokens = logits.argmax(-1)
        out.append(tokens)
        logits, state = stepper.step(state, tokens)
    generated = np.stack(out, axis=1)
    return [p + tokenizer.decode(g.tolist()) for p, g in zip(prompts, generated)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--epochs", type=float, help="passes over the data (overrides --max-steps)")
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8, help="rows (blocks of text) "
                        "packed into max-length token blocks per step")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--device", default="cpu", help="training device (cpu, cuda)")
    parser.add_argument("--out", default=str(ROOT / "tools" / "out" / "shakespeare"))
    args = parser.parse_args()

    data = DATASETS / "tiny_shakespeare"
    train, validation = data / "train.jsonl", data / "validation.jsonl"
    if not (train.is_file() and validation.is_file()):
        print(f"skipped: {data} (train.jsonl, validation.jsonl) not found")
        return
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.perf_counter()
    make_base(out / "base", train, args.layers, args.width, args.vocab, 1024)
    report: dict = {"data": str(data), "settings": vars(args),
                    "base_seconds": round(time.perf_counter() - start, 1)}
    steps = ["--epochs", str(args.epochs)] if args.epochs else ["--max-steps",
                                                                 str(args.max_steps)]
    trained = nlpforge("train", "--task", "text-generation", "--model", str(out / "base"),
                       "--train", str(train), "--output", str(out / "run"), *steps,
                       "--batch-size", str(args.batch_size), "--lr", str(args.lr),
                       "--max-length", str(args.max_length), "--warmup-ratio", "0.05",
                       "--scheduler", "cosine", "--eval-strategy", "no",
                       "--device", args.device)
    report["train_seconds"] = trained["_seconds"]
    log = (out / "run" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    report["train_log"] = [json.loads(line) for line in log if line.strip()]
    exported = nlpforge("export", str(out / "run"), "--output", str(out / "export"))
    report["export_seconds"] = exported["_seconds"]
    manifest = json.loads((out / "export" / "nlpforge.json").read_text())
    report["export_validation"] = {k: manifest["validation"][k]
                                   for k in ("atol", "max_abs_diff", "passed")}
    results = {}
    for name, directory in (("pytorch", out / "run"), ("onnx", out / "export")):
        result = nlpforge("evaluate", str(directory), "--data", str(validation), "--device",
                          "cpu", "--batch-size", "32")
        results[name] = {**result["metrics"], "seconds": result["_seconds"]}
    report["validation"] = results
    torch_ppl, onnx_ppl = results["pytorch"]["perplexity"], results["onnx"]["perplexity"]
    report["relative_difference"] = abs(onnx_ppl - torch_ppl) / torch_ppl
    report["agree"] = report["relative_difference"] < 1e-4
    report["samples"] = sample(out / "export", ["ROMEO:\n", "First Citizen:\nWe are"])
    report["total_seconds"] = round(time.perf_counter() - start, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: report[k] for k in ("validation", "relative_difference", "agree",
                                              "samples", "total_seconds")}, indent=2))
    if not report["agree"]:
        sys.exit("PyTorch and ONNX perplexities differ")


if __name__ == "__main__":
    main()
