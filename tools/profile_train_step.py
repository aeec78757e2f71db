"""Where a training step's time goes: encode, forward, backward, clip, optimizer.

    python tools/profile_train_step.py [--steps 30] [--batch-size 32] [--threads 2]
    python tools/profile_train_step.py --pass-cost [--threads 2]

The packaged MiniLM on SST-2 training rows in nlpforge's length-grouped batches, once with
the optimizer nlpforge makes (fused AdamW) and once with PyTorch's per-tensor AdamW loop, in
turns of one step each; prints the median milliseconds of each phase. Needs
../shared/datasets/sst2; exits 0 with a message when it is absent.

``--pass-cost``: what one forward/backward pass of MiniLM costs whatever its size, and what
each token adds (a least-squares fit over batch shapes from 1x8 to 32x64): the figures behind
``SPLIT_COST`` in nlpforge/training/batches.py.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import DATASETS, minilm, sst2_rows  # noqa: E402

PHASES = ("encode", "forward", "backward", "clip", "optimizer")
SHAPES = ((1, 8), (4, 8), (8, 16), (16, 16), (32, 16), (32, 32), (8, 64), (32, 64))


def pass_cost(threads: int, repeats: int = 7) -> None:
    """Fit seconds = per pass + per token x tokens over forward/backward passes of SHAPES."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(minilm(), num_labels=2)
    model.train()

    def step(n: int, length: int) -> None:
        ids = torch.randint(1000, 20000, (n, length))
        model(input_ids=ids, attention_mask=torch.ones_like(ids),
              labels=torch.randint(0, 2, (n,))).loss.backward()

    print("| rows x tokens | ms (median) |\n| --- | ---: |")
    seconds = []
    for n, length in SHAPES:
        for _ in range(2):
            step(n, length)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step(n, length)
            times.append(time.perf_counter() - start)
        seconds.append(statistics.median(times))
        print(f"| {n} x {length} | {seconds[-1] * 1000:.1f} |")
    design = np.array([[1.0, n * length] for n, length in SHAPES])
    fixed, per_token = np.linalg.lstsq(design, np.array(seconds), rcond=None)[0]
    print(f"\nper pass {fixed * 1000:.1f} ms, per token {per_token * 1000:.3f} ms: one more "
          f"pass costs as much as {fixed / per_token:.0f} tokens")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pass-cost", action="store_true",
                        help="fit the cost of a forward/backward pass and of a token")
    args = parser.parse_args()
    if args.pass_cost:
        pass_cost(args.threads)
        return
    if not (DATASETS / "sst2" / "train.jsonl").is_file():
        print(f"skipped: {DATASETS / 'sst2'} not found")
        return
    import torch
    from transformers import AutoModelForSequenceClassification

    from nlpforge.runtime.batching import row_size
    from nlpforge.runtime.tokenizer import Tokenizer
    from nlpforge.training.batches import epoch_batches
    from nlpforge.training.optim import make_optimizer
    from nlpforge_text_classification import TextClassification

    torch.set_num_threads(args.threads)
    rows = sst2_rows(6000)
    task = TextClassification()
    task.fit(rows)
    tokenizer = Tokenizer.from_dir(minilm(), max_length=64, pad_id=0)
    batches = epoch_batches([row_size(r) for r in rows], args.batch_size,
                            torch.Generator().manual_seed(42), True)[:args.steps]
    contenders = {}
    for name in ("fused AdamW (nlpforge)", "per-tensor AdamW loop"):
        torch.manual_seed(42)
        model = AutoModelForSequenceClassification.from_pretrained(minilm(), num_labels=2)
        model.train()
        optimizer = make_optimizer(model, 5e-5, 0.01)
        if name.startswith("per-tensor"):
            for group in optimizer.param_groups:
                group["fused"], group["foreach"] = False, False
        contenders[name] = (model, optimizer, {p: [] for p in PHASES})
    for index in batches:
        batch = [rows[i] for i in index]
        for model, optimizer, times in contenders.values():
            t0 = time.perf_counter()
            features = {k: torch.from_numpy(v) for k, v in task.encode(batch, tokenizer).items()}
            features["labels"] = torch.from_numpy(task.targets(batch)["labels"])
            t1 = time.perf_counter()
            loss = model(**features).loss
            t2 = time.perf_counter()
            loss.backward()
            t3 = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            t4 = time.perf_counter()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            t5 = time.perf_counter()
            for phase, seconds in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                times[phase].append(seconds)
    skip = min(3, args.steps - 1)
    print("| optimizer | " + " | ".join(PHASES) + " | step |")
    print("| --- |" + " ---: |" * (len(PHASES) + 1))
    for name, (_, _, times) in contenders.items():
        medians = [statistics.median(times[p][skip:]) * 1000 for p in PHASES]
        steps = [sum(times[p][i] for p in PHASES) for i in range(skip, len(times["encode"]))]
        print(f"| {name} | " + " | ".join(f"{m:.1f}" for m in medians)
              + f" | {statistics.median(steps) * 1000:.1f} |")


if __name__ == "__main__":
    main()
