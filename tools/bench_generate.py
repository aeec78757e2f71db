"""Generation benchmark: nlpforge's torch-free runtime against transformers' ``generate()``.

    python tools/bench_generate.py [--threads 2] [--runs 5] [--warmup 2] [--models gpt2,t5]
        [--batches 1,8] [--out tools/out/generate]

Models (random weights, built from configs, so nothing is downloaded): a GPT-2 of 6 layers,
384 wide (6 heads, 1536 MLP) and a T5 of similar size (6+6 layers, d_model 384, 6 heads,
d_ff 1536), both with a 16,384-token vocabulary. Each is trained one step through
``nlpforge train`` (to make a run dir) and exported with ``nlpforge export --optimize
extended`` (the fp32 graphs and the fused ones, the default variant); the export is kept
under OUT/models and reused.

Workload: greedy decoding, 32-token prompts (the same token ids for every contender), exactly
64 new tokens (``min_new_tokens=max_new_tokens=64``, so no row stops early), batch 1 and 8.
Contenders, each in a process of its own with the same threads (``torch.set_num_threads`` /
ONNX Runtime intra-op threads), all loaded and warmed up first and then run in turns (one
generation each per round, the starting one rotating), so that the machine's slower and
faster spells fall on every contender alike:
- ``transformers``: ``model.generate()`` in PyTorch, with its KV cache (the default);
- ``nlpforge``: the runtime's search (``nlpforge.runtime.generation.search.generate``) over
  the export's stepper (its default variant: optimized);
- ``nlpforge-fp32``: the same over the unfused fp32 graphs (``--variant fp32``);
- ``stepper-loop``: a bare argmax loop over the same stepper (no logits processors, no
  bookkeeping): what the search adds on top of the model.
Each runs ``--warmup`` times, then ``--runs`` rounds; the median is reported as tokens/s
(batch × 64 / seconds) and ms per token step (seconds / 64). The generated tokens of every
contender are compared with transformers' (``same_tokens``).
Writes results.json and results.md under --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PROMPT_TOKENS = 32
NEW_TOKENS = 64
VOCAB = 16384
#: Seconds between turns: OpenMP and ONNX Runtime threads spin for a while after a run.
PAUSE = 0.3
CONTENDERS = ("transformers", "nlpforge", "nlpforge-fp32", "stepper-loop")
MODELS = {
    "gpt2": dict(n_embd=384, n_layer=6, n_head=6, n_inner=1536, n_positions=512,
                 vocab_size=VOCAB, initializer_range=0.02),
    "t5": dict(d_model=384, d_kv=64, d_ff=1536, num_layers=6, num_decoder_layers=6,
               num_heads=6, embeddings=VOCAB, relative_attention_num_buckets=32,
               relative_attention_max_distance=128, dropout_rate=0.0),
}
TASKS = {"gpt2": "text-generation", "t5": "text2text-generation"}


# -- setup: base model → run dir → export dir (once) ---------------------------------------


def build(name: str, root: Path) -> tuple[Path, Path]:
    """The run dir and export dir of model ``name`` (made once, then reused)."""
    run, export = root / f"{name}-run", root / f"{name}-export"
    manifest = export / "nlpforge.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("optimization"):
        return run, export
    from nlpforge.export.onnx import export_run

    if not (run / "nlpforge.json").is_file():
        train_run(name, root, run)
    export_run(str(run), str(export), optimize="extended", overwrite=True)
    return run, export


def train_run(name: str, root: Path, run: Path) -> None:
    """Model ``name`` from its config, trained one step by ``nlpforge train`` into ``run``."""
    from nlpforge.training.loop import TrainConfig, train

    base = root / f"{name}-base"
    if name == "gpt2":
        from nlpforge.testing.decoders import make_tiny_gpt2

        make_tiny_gpt2(base, **MODELS[name])
        rows = [{"text": "the quick brown fox jumps over the lazy dog"}] * 8
    else:
        from nlpforge.testing.encoder_decoders import make_tiny_t5

        make_tiny_t5(base, **MODELS[name])
        rows = [{"source": "translate English to German: the house is small",
                 "target": "das haus ist klein"}] * 8
    data = root / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    train(TrainConfig(task=TASKS[name], model=str(base), train=str(data), output=str(run),
                      max_steps=1, batch_size=4, lr=1e-5, max_length=64, progress=False,
                      device="cpu", overwrite=True))


def prompts(batch: int, vocab: int, seed: int = 0) -> np.ndarray:
    """``batch`` prompts of 32 token ids, away from the special tokens at the start."""
    rng = np.random.default_rng(seed)
    return rng.integers(100, vocab, size=(batch, PROMPT_TOKENS), dtype=np.int64)


# -- workers (one process per contender and setting) ---------------------------------------


def worker(contender: str, run: Path, export: Path, batch: int, threads: int,
           warmup: int) -> None:
    """Load one contender, warm it up, then run it once per ``run`` line read on stdin,
    answering each with a JSON line (seconds, tokens)."""
    tokenizer_vocab = json.loads((run / "config.json").read_text())["vocab_size"]
    ids = prompts(batch, min(tokenizer_vocab, VOCAB))
    mask = np.ones_like(ids)
    if contender == "transformers":
        generate = _torch_generate(run, ids, mask, threads)
    else:
        generate = _nlpforge_generate(export, ids, mask, threads, contender == "stepper-loop",
                                      "fp32" if contender == "nlpforge-fp32" else None)
    for _ in range(warmup):
        generate()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        started = time.perf_counter()
        tokens = generate()
        seconds = time.perf_counter() - started
        print(json.dumps({"seconds": seconds, "tokens": np.asarray(tokens).tolist()}),
              flush=True)


def _torch_generate(run: Path, ids: np.ndarray, mask: np.ndarray, threads: int):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    torch.set_num_threads(threads)
    config = AutoConfig.from_pretrained(run)
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    model = auto.from_pretrained(run).eval()
    input_ids, attention_mask = torch.from_numpy(ids), torch.from_numpy(mask)
    skip = 1 if config.is_encoder_decoder else ids.shape[1]

    def generate() -> np.ndarray:
        with torch.inference_mode():
            out = model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                 do_sample=False, num_beams=1, max_new_tokens=NEW_TOKENS,
                                 min_new_tokens=NEW_TOKENS, use_cache=True)
        return out[:, skip:].numpy()

    return generate


def _nlpforge_generate(export: Path, ids: np.ndarray, mask: np.ndarray, threads: int,
                       bare: bool, variant: str | None):
    from nlpforge.runtime.generation.generator import Generator
    from nlpforge.runtime.generation.search import generate as search

    generator = Generator.load(export, device="cpu", threads=threads, variant=variant)
    stepper = generator.stepper
    config = generator.config.with_overrides({"max_new_tokens": NEW_TOKENS,
                                              "min_new_tokens": NEW_TOKENS, "num_beams": 1,
                                              "do_sample": False})

    def generate() -> np.ndarray:
        result = search(stepper, ids, mask, config)
        return result.sequences[:, result.prompt_length:]

    def loop() -> np.ndarray:
        logits, state = stepper.start(ids, mask)
        out = []
        for i in range(NEW_TOKENS):
            tokens = logits.argmax(axis=1)
            out.append(tokens)
            if i + 1 < NEW_TOKENS:
                logits, state = stepper.step(state, tokens)
        return np.stack(out, axis=1)

    return loop if bare else generate


# -- driver --------------------------------------------------------------------------------


class Worker:
    """One contender in a process of its own, run on demand (``run()``)."""

    def __init__(self, contender: str, run: Path, export: Path, batch: int,
                 args: argparse.Namespace):
        import os

        self.contender = contender
        command = [sys.executable, __file__, "--worker", contender, "--run", str(run),
                   "--export", str(export), "--batch", str(batch),
                   "--threads", str(args.threads), "--warmup", str(args.warmup)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env={**os.environ, "PYTHONWARNINGS": "ignore",
                            "OMP_NUM_THREADS": str(args.threads)})
        self._answer()  # loaded and warmed up

    def _answer(self) -> dict[str, Any]:
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"{self.contender} failed:\n{self.process.stderr.read()[-3000:]}")
        return json.loads(line)

    def run(self) -> dict[str, Any]:
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def measure(run: Path, export: Path, batch: int, args: argparse.Namespace
            ) -> dict[str, dict[str, Any]]:
    """Every contender in its own process, loaded and warmed up, then run in turns: round r
    runs each once, starting from a different one each round, so that a slower or faster
    spell of the machine falls on all of them alike. Medians per contender."""
    workers = [Worker(c, run, export, batch, args) for c in CONTENDERS]
    times: dict[str, list[float]] = {c: [] for c in CONTENDERS}
    tokens: dict[str, Any] = {}
    try:
        for r in range(args.runs):
            for k in range(len(workers)):
                w = workers[(r + k) % len(workers)]
                time.sleep(PAUSE)  # the last one's threads stop spinning before the next runs
                answer = w.run()
                times[w.contender].append(answer["seconds"])
                tokens[w.contender] = answer["tokens"]
    finally:
        for w in workers:
            w.close()
    out = {}
    for contender in CONTENDERS:
        seconds = statistics.median(times[contender])
        out[contender] = {"contender": contender, "batch": batch, "threads": args.threads,
                          "runs": args.runs, "seconds": seconds,
                          "all_seconds": times[contender],
                          "tokens_per_s": batch * NEW_TOKENS / seconds,
                          "ms_per_token": 1000 * seconds / NEW_TOKENS,
                          "tokens": tokens[contender]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--models", default="gpt2,t5")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--out", default=str(ROOT / "tools" / "out" / "generate"))
    parser.add_argument("--worker", choices=CONTENDERS)
    parser.add_argument("--run")
    parser.add_argument("--export")
    parser.add_argument("--batch", type=int)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, Path(args.run), Path(args.export), args.batch, args.threads,
               args.warmup)
        return
    out = Path(args.out)
    (out / "models").mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.models.split(","):
        run, export = build(name, out / "models")
        for batch in [int(b) for b in args.batches.split(",")]:
            row: dict[str, Any] = {"model": name, "batch": batch}
            for contender, measured in measure(run, export, batch, args).items():
                row[contender] = measured
                print(f"{name} batch {batch} {contender}: {measured['tokens_per_s']:.1f} "
                      f"tokens/s, {measured['ms_per_token']:.2f} ms/token", flush=True)
            reference = row["transformers"].pop("tokens")
            for contender in CONTENDERS[1:]:
                row[contender]["same_tokens"] = row[contender].pop("tokens") == reference
                row[contender]["speedup"] = (row[contender]["tokens_per_s"]
                                             / row["transformers"]["tokens_per_s"])
            results.append(row)
    settings = {"threads": args.threads, "runs": args.runs, "warmup": args.warmup,
                "prompt_tokens": PROMPT_TOKENS, "new_tokens": NEW_TOKENS, "vocab": VOCAB,
                "models": MODELS}
    (out / "results.json").write_text(json.dumps({"settings": settings, "results": results},
                                                 indent=2) + "\n", encoding="utf-8")
    (out / "results.md").write_text(table(results, settings), encoding="utf-8")
    print(table(results, settings))


def table(results: list[dict], settings: dict) -> str:
    lines = [f"Greedy, {settings['prompt_tokens']}-token prompts, {settings['new_tokens']} new "
             f"tokens, {settings['threads']} threads, median of {settings['runs']} runs "
             f"(`python tools/bench_generate.py`).", "",
             "| model | batch | transformers tok/s (ms/tok) | nlpforge tok/s (ms/tok) | "
             "speedup | fp32 graphs tok/s (speedup) | bare stepper loop tok/s | "
             "same tokens |",
             "|---|---|---|---|---|---|---|---|"]
    for row in results:
        hf, nf, fp32, bare = (row[c] for c in CONTENDERS)
        same = all(row[c]["same_tokens"] for c in CONTENDERS[1:])
        lines.append(f"| {row['model']} | {row['batch']} | {hf['tokens_per_s']:.0f} "
                     f"({hf['ms_per_token']:.2f}) | {nf['tokens_per_s']:.0f} "
                     f"({nf['ms_per_token']:.2f}) | {nf['speedup']:.2f}× | "
                     f"{fp32['tokens_per_s']:.0f} ({fp32['speedup']:.2f}×) | "
                     f"{bare['tokens_per_s']:.0f} | {same} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
