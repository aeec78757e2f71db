"""Sentence-embedding benchmark: all-MiniLM-L6-v2 exported straight from its files by nlpforge
against sentence-transformers' ``encode()``, side by side.

    python tools/bench_embedding.py [--threads 2] [--rounds 3] [--out tools/out/bench_embedding]
                                    [--markdown docs/benchmarks/embedding.md]

Contenders, each in its own process with the same threads, once per round in a rotating order:
- ``st-fp32``: ``SentenceTransformer(path).encode(texts, batch_size=32)`` (it sorts by length);
- ``st-bf16``: the same model cast to bfloat16 (only where the CPU has AVX-512 BF16 or AMX);
- ``nlpforge-fp32``, ``nlpforge-optimized``, ``nlpforge-int8``: ``nlpforge.load(export,
  variant=...).predict(texts, batch_size=32)`` of ``nlpforge export PATH --optimize extended
  --quantize int8 --force`` (the task detected from ``modules.json``);
- ``nlpforge-tuned``: ``nlpforge.load(export)`` after ``nlpforge tune`` on SST-2's test
  sentences (no pairs to gate int8 by the task metric: its output-cosine gate, 0.99, applies).
Measured over the 872 SST-2 validation sentences at their real lengths, batch 32: sentences/s
(median of 3 passes per process, then of the rounds) and each contender's cosine similarity to
``st-fp32`` (min and median over the sentences). Prints the CPU model and flags with the table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bench_common import DATASETS, ROOT, cpu_line, has_bf16, write_markdown
from evidence import minilm

DATA = DATASETS / "sst2"
BATCH = 32
CONTENDERS = ("st-fp32", "st-bf16", "nlpforge-fp32", "nlpforge-optimized", "nlpforge-int8",
              "nlpforge-tuned")


def worker(name: str, args: argparse.Namespace) -> dict:
    """One contender: its embeddings (saved for the cosine) and the passes' seconds."""
    texts = [json.loads(line)["text"] for line in open(DATA / "validation.jsonl")]
    if name.startswith("st-"):
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(args.threads)
        torch.set_num_interop_threads(1)
        model = SentenceTransformer(minilm(), device="cpu")
        if name == "st-bf16":
            model = model.to(torch.bfloat16)

        def embed() -> np.ndarray:
            out = model.encode(texts, batch_size=BATCH, convert_to_numpy=False,
                               convert_to_tensor=True)
            return out.float().numpy()
    else:
        import nlpforge

        variant = name.split("-", 1)[1]
        predictor = nlpforge.load(str(Path(args.out) / "export"), device="cpu",
                                  threads=None if variant == "tuned" else args.threads,
                                  variant=None if variant == "tuned" else variant)

        def embed() -> np.ndarray:
            return np.array([p["embedding"] for p in predictor.predict(texts,
                                                                       batch_size=BATCH)])
    embed()  # warm-up
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        vectors = embed()
        seconds.append(time.perf_counter() - start)
    np.save(Path(args.out) / f"{name}.npy", vectors.astype(np.float32))
    return {"seconds": seconds, "sentences": len(texts)}


def export(args: argparse.Namespace) -> None:
    target = Path(args.out) / "export"
    if args.reuse_export and (target / "nlpforge.json").is_file():
        return
    subprocess.run([sys.executable, "-m", "nlpforge", "export", minilm(), "--output",
                    str(target), "--optimize", "extended", "--quantize", "int8", "--force",
                    "--overwrite"], check=True, capture_output=True, text=True)
    # SST-2 has no sentence pairs to gate int8 by the task metric: tune keeps an int8
    # candidate only if every embedding stays at a cosine of 0.99 or more to fp32's.
    held_out = DATA / "test_unofficial_labels.jsonl"
    subprocess.run([sys.executable, "-m", "nlpforge", "tune", str(target), "--data",
                    str(held_out if held_out.is_file() else DATA / "validation.jsonl"),
                    "--threads", str(args.threads)],
                   check=True, capture_output=True, text=True)


def cosines(out: Path, name: str) -> tuple[float, float]:
    a, b = np.load(out / "st-fp32.npy"), np.load(out / f"{name}.npy")
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.min()), float(np.median(cos))


def table(results: dict[str, list[float]], out: Path, args: argparse.Namespace) -> str:
    base = statistics.median(results["st-fp32"])
    best_torch = max(statistics.median(v) for k, v in results.items() if k.startswith("st-"))
    lines = [f"{args.threads} threads; {args.rounds} rounds, each contender in its own "
             f"process (median); {args.repeats} passes per process (median)", "",
             "| contender | sentences/s | vs st-fp32 | vs best sentence-transformers | "
             "cosine to st-fp32 (min / median) |", "| --- | --- | --- | --- | --- |"]
    for contender, rates in results.items():
        rate = statistics.median(rates)
        low, mid = cosines(out, contender)
        lines.append(f"| {contender} | {rate:,.0f} | {rate / base:.2f}x | "
                     f"{rate / best_torch:.2f}x | {low:.6f} / {mid:.6f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "tools" / "out" / "bench_embedding"))
    parser.add_argument("--reuse-export", action="store_true")
    parser.add_argument("--markdown", help="also write the table to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return
    if not (DATA / "validation.jsonl").is_file():
        print(f"skipped: {DATA} not found (set NLPFORGE_DATASETS)")
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    export(args)
    contenders = [c for c in CONTENDERS if c != "st-bf16" or has_bf16()]
    results: dict[str, list[float]] = {c: [] for c in contenders}
    for round_ in range(args.rounds):
        order = contenders[round_ % len(contenders):] + contenders[:round_ % len(contenders)]
        for contender in order:
            run = subprocess.run([sys.executable, __file__, "--worker", contender, "--out",
                                  str(out), "--threads", str(args.threads), "--repeats",
                                  str(args.repeats)], capture_output=True, text=True)
            if run.returncode != 0:
                sys.exit(f"{contender} failed:\n{run.stderr[-2000:]}")
            measured = json.loads(run.stdout.strip().splitlines()[-1])
            results[contender].append(measured["sentences"]
                                      / statistics.median(measured["seconds"]))
            print(f"round {round_ + 1} {contender}: {results[contender][-1]:,.0f} sentences/s",
                  file=sys.stderr, flush=True)
    text = table(results, out, args)
    print(f"CPU: {cpu_line()}\n{text}")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    if args.markdown:
        write_markdown(args.markdown, "Sentence embeddings: nlpforge vs sentence-transformers",
                       "all-MiniLM-L6-v2 (the packaged files) exported straight from its files, "
                       "the 872 SST-2 validation sentences, batch 32.\n\n" + text)


if __name__ == "__main__":
    main()
