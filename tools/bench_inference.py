"""Inference benchmark on the MiniLM fine-tuned for SST-2: PyTorch eager, the Hugging Face
pipeline, plain onnxruntime and nlpforge's runtime (fp32, optimized, int8), side by side.

    python tools/bench_inference.py [--run tools/out/sst2-full/run] [--threads 2] \\
        [--out tools/out/bench_inference] [--repeats 3] [--rounds 3] [--reuse-export]

Every contender runs in its own process with the same number of threads (PyTorch's OpenMP
threads keep spinning after work and would steal the CPU from ONNX Runtime in a shared
process), once per round, in a rotating order, so that a busy spell of the machine does not
land on one contender only. Measured, as medians (within a process, then over the rounds):
- latency at batch 1 and throughput at batch 32, sequences of 16, 64 and 128 tokens;
- end-to-end throughput over the SST-2 validation sentences at their real lengths (batch 32):
  nlpforge ``predict``, the pipeline (``pipeline("text-classification", model=RUN,
  batch_size=32)``) and a hand-written loop over plain onnxruntime with the same batches;
- the cost of nlpforge's runtime and of the hand-written loop alone (tokenize, pad, postprocess;
  the model replaced by a stub), which shows what the runtime adds;
- SST-2 validation accuracy of each variant; the matrix-multiply peak of this machine (fp32,
  the best round; ONNX Runtime's uint8 x int8 kernel), and the model's fp32 GFLOP/s as a share
  of the peak measured in turns with it in the same process.
Writes results.json, results.md (tables) and bench.png under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("NLPFORGE_DATASETS", ROOT.parent / "shared" / "datasets")) / "sst2"
SEQS = (16, 64, 128)
BATCH = 32
#: name → (kind, what it runs); each is measured by ``worker()`` in a process of its own.
#: onnxruntime-*: a hand-written loop over plain onnxruntime (the runtime's batches, no nlpforge).
CONTENDERS = {
    "pytorch-eager": ("torch", None),
    "hf-pipeline": ("pipeline", None),
    "onnxruntime-fp32": ("ort", "model.onnx"),
    "onnxruntime-int8": ("ort", "model.int8.onnx"),
    "nlpforge-fp32": ("nlpforge", "fp32"),
    "nlpforge-optimized": ("nlpforge", "optimized"),
    "nlpforge-int8": ("nlpforge", "int8"),
}


# -- measuring (in the worker process) ---------------------------------------------------------

def median_seconds(call: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def synthetic(batch: int, seq: int, vocab: int, seed: int = 0) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, vocab, size=(batch, seq), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 101, 102
    return {"input_ids": ids, "attention_mask": np.ones_like(ids),
            "token_type_ids": np.zeros_like(ids)}


def measure_shapes(run_features: Callable[[dict], Any], vocab: int, repeats: int) -> dict:
    """Batch-1 latency (ms) and batch-32 throughput (sequences/s) per sequence length."""
    out: dict[str, dict] = {"latency_ms": {}, "throughput": {}}
    for seq in SEQS:
        one = synthetic(1, seq, vocab)
        out["latency_ms"][str(seq)] = 1000 * median_seconds(lambda: run_features(one),
                                                             max(15, repeats * 10))
        many = synthetic(BATCH, seq, vocab)
        out["throughput"][str(seq)] = BATCH / median_seconds(lambda: run_features(many),
                                                             max(3, repeats), warmup=1)
    return out


def end_to_end(predict: Callable[[list[str]], list[str]], rows: list[dict],
               repeats: int) -> dict:
    """Sentences/s of ``predict`` over all rows (median of ``repeats``) and its accuracy."""
    texts = [r["text"] for r in rows]
    labels = predict(texts)  # also the warm-up
    seconds = median_seconds(lambda: predict(texts), repeats, warmup=0)
    correct = sum(p == r["label"] for p, r in zip(labels, rows))
    return {"sentences_per_s": len(texts) / seconds, "seconds": seconds,
            "accuracy": 100.0 * correct / len(rows)}


class StubSession:
    """Stands in for an onnxruntime session: zeros of the logits' shape, instantly."""

    def run(self, names: list, feeds: dict) -> list:
        import numpy as np

        return [np.zeros((len(feeds["input_ids"]), 2), dtype=np.float32)]


def overhead_ms(predict: Callable[[list[str]], list[str]], rows: list[dict], repeats: int) -> float:
    """Milliseconds ``predict`` takes over all rows with the model replaced by a stub."""
    texts = [r["text"] for r in rows]
    return 1000 * median_seconds(lambda: predict(texts), max(5, repeats), warmup=1)


def worker(name: str, args: argparse.Namespace) -> dict:
    kind, what = CONTENDERS.get(name, ("peak", None))
    threads, export = args.threads, Path(args.out) / "export"
    rows = [json.loads(line) for line in open(DATA / "validation.jsonl", encoding="utf-8")]
    if kind == "peak":
        return matmul_peak(threads)
    if kind in ("torch", "pipeline"):
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
    if kind == "torch":
        return torch_contender(args.run, rows, args.repeats)
    if kind == "pipeline":
        return pipeline_contender(args.run, rows, args.repeats)
    if kind == "ort":
        return ort_contender(export, what, threads, rows, args.repeats)
    return nlpforge_contender(export, what, threads, rows, args.repeats)


def torch_contender(run: str, rows: list[dict], repeats: int) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(run).eval()
    tokenizer = AutoTokenizer.from_pretrained(run)
    labels = model.config.id2label

    def run_features(features: dict) -> Any:
        with torch.inference_mode():
            return model(**{k: torch.from_numpy(v) for k, v in features.items()}).logits

    def predict(texts: list[str]) -> list[str]:
        out: list[str] = []
        for start in range(0, len(texts), BATCH):
            batch = tokenizer(texts[start:start + BATCH], padding=True, return_tensors="pt")
            with torch.inference_mode():
                out += [labels[int(i)] for i in model(**batch).logits.argmax(-1)]
        return out

    return {**measure_shapes(run_features, model.config.vocab_size, repeats),
            "end_to_end": end_to_end(predict, rows, repeats), "e2e_note": "hand loop, batch 32"}


def pipeline_contender(run: str, rows: list[dict], repeats: int) -> dict:
    from transformers import pipeline

    pipe = pipeline("text-classification", model=run, device=-1)
    tokenizer = pipe.tokenizer
    word = "good"  # one WordPiece token: a text of n words is n + 2 tokens

    def run_features(features: dict) -> Any:
        batch, seq = features["input_ids"].shape
        text = " ".join([word] * (seq - 2))
        assert len(tokenizer(text)["input_ids"]) == seq
        return pipe([text] * batch, batch_size=BATCH)

    def predict(texts: list[str]) -> list[str]:
        return [p["label"] for p in pipe(texts, batch_size=BATCH)]

    return {**measure_shapes(run_features, tokenizer.vocab_size, repeats),
            "end_to_end": end_to_end(predict, rows, repeats)}


def ort_contender(export: Path, model_file: str, threads: int, rows: list[dict],
                  repeats: int) -> dict:
    """Plain onnxruntime + tokenizers + numpy, written by hand, with the runtime's batches."""
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session: Any = ort.InferenceSession(str(export / model_file), options,
                                        providers=["CPUExecutionProvider"])
    manifest = json.loads((export / "nlpforge.json").read_text())
    labels = manifest["task"]["state"]["labels"]
    tokenizer = Tokenizer.from_file(str(export / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(manifest["tokenizer"]["max_length"])

    def run_features(features: dict) -> Any:
        return session.run(["logits"], features)

    def predict(texts: list[str]) -> list[str]:
        every = tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(every[i].ids))
        out: list[str] = [""] * len(texts)
        for start in range(0, len(order), BATCH):
            index = order[start:start + BATCH]
            encodings = [every[i] for i in index]
            width = max(len(e.ids) for e in encodings)
            ids = np.zeros((len(index), width), dtype=np.int64)
            mask, types = np.zeros_like(ids), np.zeros_like(ids)
            for row, e in enumerate(encodings):
                n = len(e.ids)
                ids[row, :n], mask[row, :n], types[row, :n] = e.ids, e.attention_mask, e.type_ids
            logits = session.run(["logits"], {"input_ids": ids, "attention_mask": mask,
                                              "token_type_ids": types})[0]
            for i, best in zip(index, logits.argmax(-1)):
                out[i] = labels[int(best)]
        return out

    vocab = json.loads((export / "config.json").read_text())["vocab_size"]
    result = {**measure_shapes(run_features, vocab, repeats),
              "end_to_end": end_to_end(predict, rows, repeats)}
    session = StubSession()
    result["overhead_ms"] = overhead_ms(predict, rows, repeats)
    return result


def nlpforge_contender(export: Path, variant: str, threads: int, rows: list[dict],
                       repeats: int) -> dict:
    import nlpforge

    predictor = nlpforge.load(str(export), variant=variant, device="cpu", threads=threads)

    def predict(texts: list[str]) -> list[str]:
        return [p["label"] for p in predictor.predict(texts, batch_size=BATCH)]

    vocab = json.loads((export / "config.json").read_text())["vocab_size"]
    result = {**measure_shapes(predictor.run, vocab, repeats),
              "end_to_end": end_to_end(predict, rows, repeats)}
    if variant != "int8":
        result["paired"] = paired_compute(predictor.run, export, threads)
    predictor.session = StubSession()
    result["overhead_ms"] = overhead_ms(predict, rows, repeats)
    return result


def ort_matmul(n: int, threads: int, int8: bool = False) -> Callable[[], Any]:
    """One n x n matrix multiply in ONNX Runtime with constant (pre-packed) weights, as a
    model's are: fp32 ``MatMul``, or ``MatMulInteger`` of uint8 activations and int8 weights
    (what dynamic int8 models run)."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if int8:
        a = rng.integers(0, 255, (n, n), dtype=np.uint8)
        b = rng.integers(-127, 127, (n, n), dtype=np.int8)
        node, types = "MatMulInteger", (TensorProto.UINT8, TensorProto.INT32)
    else:
        a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
        node, types = "MatMul", (TensorProto.FLOAT, TensorProto.FLOAT)
    graph = helper.make_graph(
        [helper.make_node(node, ["a", "b"], ["c"])], "mm",
        [helper.make_tensor_value_info("a", types[0], [n, n])],
        [helper.make_tensor_value_info("c", types[1], [n, n])],
        [numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"a": a})


def matmul_peak(threads: int, n: int = 2048) -> dict:
    """GFLOP/s of one n x n matrix multiply: fp32 in PyTorch (oneDNN/MKL) and ONNX Runtime,
    and ONNX Runtime's uint8 x int8 kernel (giga-operations/s, counted like FLOPs)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    flops = 2.0 * n ** 3
    result = {"n": n, "torch_gflops": flops / median_seconds(lambda: a @ b, 15, 3) / 1e9,
              "onnxruntime_gflops": flops / median_seconds(ort_matmul(n, threads), 15, 3) / 1e9,
              "int8_gops": flops / median_seconds(ort_matmul(n, threads, True), 15, 3) / 1e9}
    result["peak_gflops"] = max(result["torch_gflops"], result["onnxruntime_gflops"])
    return result


def paired_compute(run_features: Callable[[dict], Any], export: Path, threads: int,
                   pairs: int = 5, n: int = 2048) -> dict:
    """The model's GFLOP/s at batch 32 / sequence 128 as a share of ONNX Runtime's fp32
    matmul peak measured just before it, ``pairs`` times in turns (the machine's speed drifts
    by tens of percent over minutes: only a pair shares its conditions)."""
    config = json.loads((export / "config.json").read_text())
    flops = model_flops(config, 128) * BATCH
    many = synthetic(BATCH, 128, config["vocab_size"])
    peak_call = ort_matmul(n, threads)
    shares, peaks = [], []
    for _ in range(pairs):
        peak = 2.0 * n ** 3 / median_seconds(peak_call, 7, 2) / 1e9
        achieved = flops / median_seconds(lambda: run_features(many), 3, 1) / 1e9
        peaks.append(peak)
        shares.append(achieved / peak)
    return {"shares": shares, "peak_gflops": statistics.median(peaks)}


# -- the parent: export, run each contender in a process, report ----------------------------------

def model_flops(config: dict, seq: int) -> float:
    """Multiply-add FLOPs of one sequence through a BERT encoder + classifier."""
    h, inner, layers = config["hidden_size"], config["intermediate_size"], \
        config["num_hidden_layers"]
    per_layer = 8 * seq * h * h + 4 * seq * h * inner + 4 * seq * seq * h
    return layers * per_layer + 2 * h * h + 2 * h * len(config.get("id2label", {0: 0, 1: 1}))


def export_model(args: argparse.Namespace) -> Path:
    export = Path(args.out) / "export"
    if args.reuse_export and (export / "nlpforge.json").is_file():
        return export
    command = [sys.executable, "-m", "nlpforge", "export", args.run, "--output", str(export),
               "--optimize", "extended", "--quantize", "int8", "--calibration-data",
               str(DATA / "validation.jsonl"), "--overwrite"]
    print("$", " ".join(command[1:]), flush=True)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"export failed:\n{result.stderr[-3000:]}")
    return export


def median_of(runs: list[Any]) -> Any:
    """The rounds' results merged: the median of every number."""
    if isinstance(runs[0], dict):
        return {k: median_of([r[k] for r in runs]) for k in runs[0]}
    if isinstance(runs[0], (int, float)):
        return statistics.median(runs)
    if isinstance(runs[0], list) and runs[0] and isinstance(runs[0][0], (int, float)):
        return [x for run in runs for x in run]  # every round's samples
    return runs[0]


def in_process(name: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", name, "--run", args.run, "--out", args.out,
               "--threads", str(args.threads), "--repeats", str(args.repeats), "--rounds", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false",
           "PYTHONWARNINGS": "ignore", "TRANSFORMERS_VERBOSITY": "error"}
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(f"{name} failed:\n{result.stderr[-3000:]}")
    data = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"  {name}: done in {time.perf_counter() - start:.0f}s", flush=True)
    return data


def report(results: dict, args: argparse.Namespace, config: dict) -> str:
    c, peak = results["contenders"], results["peak"]
    lines = [f"# Inference benchmark: MiniLM-L6 (SST-2), {args.threads} threads", "",
             f"Command: `{results['command']}`  ", f"Machine: {results['machine']}  ",
             f"Medians; every contender in its own process. Load average before/after: "
             f"{results['load_before']} / {results['load_after']}.", "",
             "Contenders: `pytorch-eager` (AutoModelForSequenceClassification, inference mode; "
             "end to end: a loop over batches of 32 in input order), `hf-pipeline` "
             "(`pipeline(\"text-classification\", model=RUN)`, `batch_size=32`), "
             "`onnxruntime-*` (plain onnxruntime + tokenizers + numpy written by hand, "
             "the runtime's batches: sorted by token count, padded per batch), `nlpforge-*` "
             "(`nlpforge.load(EXPORT, variant=...)`: `.run` on fixed shapes, `.predict` end to "
             "end). fp32 = model.onnx, optimized = --optimize extended, int8 = --quantize int8 "
             "(dynamic, per-channel, made from model.onnx).", "",
             "## Latency at batch 1 (ms) and throughput at batch 32 (sequences/s)", "",
             "| contender | " + " | ".join(f"b1 s{s} ms" for s in SEQS) + " | "
             + " | ".join(f"b32 s{s} seq/s" for s in SEQS) + " | b1 s128 vs PyTorch |",
             "| --- |" + " ---: |" * (2 * len(SEQS) + 1)]
    base = c["pytorch-eager"]["latency_ms"]["128"]
    for name, r in c.items():
        lines.append(f"| {name} | " + " | ".join(f"{r['latency_ms'][str(s)]:.2f}" for s in SEQS)
                     + " | " + " | ".join(f"{r['throughput'][str(s)]:.1f}" for s in SEQS)
                     + f" | {base / r['latency_ms']['128']:.2f}x |")
    pipe = c["hf-pipeline"]["end_to_end"]["sentences_per_s"]
    lines += ["", f"## End to end: {results['rows']} SST-2 validation sentences, batch 32", "",
              "| contender | sentences/s | vs HF pipeline | accuracy % |",
              "| --- | ---: | ---: | ---: |"]
    for name, r in c.items():
        e = r["end_to_end"]
        lines.append(f"| {name} | {e['sentences_per_s']:.1f} | {e['sentences_per_s'] / pipe:.2f}x"
                     f" | {e['accuracy']:.2f} |")
    lines += ["", "## What the runtime adds", "",
              "Tokenize, pad, run a stub instead of the model, postprocess: all "
              f"{results['rows']} sentences, batch 32 (ms).", "",
              "| loop | fp32 | int8 |", "| --- | ---: | ---: |"]
    for kind in ("nlpforge", "onnxruntime"):
        label = "nlpforge predict" if kind == "nlpforge" else "hand-written onnxruntime loop"
        lines.append(f"| {label} | " + " | ".join(f"{c[f'{kind}-{v}']['overhead_ms']:.1f}"
                                                  for v in ("fp32", "int8")) + " |")
    flops = model_flops(config, 128) * BATCH
    lines += ["", "## Compute", "",
              f"Matrix-multiply peak ({peak['n']}x{peak['n']} fp32, {args.threads} threads): "
              f"PyTorch {peak['torch_gflops']:.1f} GFLOP/s, ONNX Runtime "
              f"{peak['onnxruntime_gflops']:.1f} GFLOP/s; peak = {peak['peak_gflops']:.1f} "
              f"(best of the rounds: {peak['rounds']}). ONNX Runtime's uint8 x int8 kernel, same "
              f"size: {peak['int8_gops']:.1f} GOP/s, {peak['int8_gops'] / peak['onnxruntime_gflops']:.2f}x "
              f"its fp32 one: the most an int8 model can gain over fp32 on this CPU, before "
              f"quantizing activations and the layers that stay fp32.", "",
              "Paired: the model at batch 32 / seq 128 and ONNX Runtime's fp32 peak measured in "
              "turns within the contender's process, 5 pairs per round; the median share over "
              "all pairs.", "",
              "| contender | GFLOP/s at batch 32, seq 128 | share of the best peak | paired share |",
              "| --- | ---: | ---: | ---: |"]
    for name in ("pytorch-eager", "onnxruntime-fp32", "nlpforge-fp32", "nlpforge-optimized"):
        achieved = flops * c[name]["throughput"]["128"] / BATCH / 1e9
        paired = c[name].get("paired")
        lines.append(f"| {name} | {achieved:.1f} | {100 * achieved / peak['peak_gflops']:.1f}% | "
                     + (f"{100 * statistics.median(paired['shares']):.1f}% "
                        f"(peak {paired['peak_gflops']:.1f}) |" if paired else "|"))
    lines += ["", "## Targets", ""] + [f"- {t}" for t in targets(results, config)]
    return "\n".join(lines) + "\n"


def targets(results: dict, config: dict) -> list[str]:
    c, peak = results["contenders"], results["peak"]
    e2e = {n: r["end_to_end"] for n, r in c.items()}
    speed = c["pytorch-eager"]["latency_ms"]["128"] / c["nlpforge-int8"]["latency_ms"]["128"]
    loss = e2e["nlpforge-fp32"]["accuracy"] - e2e["nlpforge-int8"]["accuracy"]
    pipe = e2e["hf-pipeline"]["sentences_per_s"]
    int8, fp32 = (e2e[f"nlpforge-{v}"]["sentences_per_s"] / pipe for v in ("int8", "fp32"))
    overhead = {v: 100 * (1 - e2e[f"nlpforge-{v}"]["sentences_per_s"]
                          / e2e[f"onnxruntime-{v}"]["sentences_per_s"]) for v in ("fp32", "int8")}
    flops = model_flops(config, 128)
    best = max(c[n]["throughput"]["128"] for n in ("nlpforge-fp32", "nlpforge-optimized"))
    share = 100 * flops * best / 1e9 / peak["peak_gflops"]
    paired = max(100 * statistics.median(c[n]["paired"]["shares"])
                 for n in ("nlpforge-fp32", "nlpforge-optimized"))

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    return [
        f"int8 vs PyTorch eager at batch 1 / seq 128: {speed:.2f}x (target >= 2.5x) "
        f"with {loss:+.2f} points of accuracy lost (target <= 0.5): "
        f"{verdict(speed >= 2.5 and loss <= 0.5)}",
        f"predict int8 vs HF pipeline end to end: {int8:.2f}x (target >= 5x): {verdict(int8 >= 5)}",
        f"predict fp32 vs HF pipeline end to end: {fp32:.2f}x (target >= 2.5x): "
        f"{verdict(fp32 >= 2.5)}",
        f"runtime cost over a hand-written onnxruntime loop: fp32 {overhead['fp32']:+.1f}%, "
        f"int8 {overhead['int8']:+.1f}% end to end (target within 5%): "
        f"{verdict(max(overhead.values()) <= 5)}; without the model: nlpforge "
        f"{c['nlpforge-fp32']['overhead_ms']:.0f} ms vs the hand loop "
        f"{c['onnxruntime-fp32']['overhead_ms']:.0f} ms per {results['rows']} sentences",
        f"fp32 compute at batch 32 / seq 128: {paired:.1f}% of the matmul peak measured in "
        f"turns with it (target >= 85%): {verdict(paired >= 85)}; {share:.1f}% of the best "
        f"round's peak, {peak['peak_gflops']:.1f} GFLOP/s",
    ]


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = results["contenders"]
    names = list(c)
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = [j + i * width for j in range(len(SEQS))]
        axes[0].bar(xs, [c[name]["latency_ms"][str(s)] for s in SEQS], width, label=name)
        axes[1].bar(xs, [c[name]["throughput"][str(s)] for s in SEQS], width, label=name)
    for ax, title in ((axes[0], "latency, batch 1 (ms, lower is better)"),
                      (axes[1], "throughput, batch 32 (sequences/s)")):
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(SEQS))])
        ax.set_xticklabels([f"seq {s}" for s in SEQS])
        ax.set_title(title)
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=8)
    rates = [c[n]["end_to_end"]["sentences_per_s"] for n in names]
    axes[2].barh(names, rates, color=[f"C{i}" for i in range(len(names))])
    for y, (rate, name) in enumerate(zip(rates, names)):
        axes[2].text(rate, y, f" {rate:.0f} ({c[name]['end_to_end']['accuracy']:.1f}%)",
                     va="center", fontsize=8)
    axes[2].set_title(f"end to end, {results['rows']} SST-2 sentences (sentences/s, accuracy)")
    axes[2].invert_yaxis()
    fig.suptitle(f"MiniLM-L6 SST-2 on {results['threads']} CPU threads")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def machine() -> str:
    name = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    isa = [f for f in ("avx512f", "avx512_vnni", "avx_vnni", "avx2", "fma") if f" {f}" in flags]
    return f"{name}, {os.cpu_count()} CPUs, {'/'.join(isa) or 'no AVX'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(ROOT / "tools" / "out" / "sst2-full" / "run"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "tools" / "out" / "bench_inference"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reuse-export", action="store_true")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite results.md and bench.png from results.json")
    parser.add_argument("--only", help="comma-separated contenders (default: all)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return
    if not ((DATA / "validation.jsonl").is_file() and (Path(args.run) / "nlpforge.json").is_file()):
        print(f"skipped: needs {DATA / 'validation.jsonl'} and a finished run dir {args.run}")
        return
    out = Path(args.out)
    if args.report_only:
        write_report(json.loads((out / "results.json").read_text()), args, out)
        return
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "command": "python tools/bench_inference.py " + " ".join(sys.argv[1:]),
        "machine": machine(), "threads": args.threads, "run": args.run,
        "rows": sum(1 for _ in open(DATA / "validation.jsonl", encoding="utf-8")),
        "load_before": " ".join(open("/proc/loadavg").read().split()[:3]),
    }
    export_model(args)
    names = ["peak", *(args.only.split(",") if args.only else CONTENDERS)]
    rounds: dict[str, list[dict]] = {name: [] for name in names}
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", flush=True)
        for name in names[r % len(names):] + names[:r % len(names)]:
            rounds[name].append(in_process(name, args))
    peaks = rounds.pop("peak")
    results["peak"] = max(peaks, key=lambda p: p["peak_gflops"])
    results["peak"]["rounds"] = [round(p["peak_gflops"], 1) for p in peaks]
    results["contenders"] = {name: median_of(runs) for name, runs in rounds.items()}
    results["load_after"] = " ".join(open("/proc/loadavg").read().split()[:3])
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_report(results, args, out)


def write_report(results: dict, args: argparse.Namespace, out: Path) -> None:
    if set(CONTENDERS) <= set(results["contenders"]):
        config = json.loads((Path(results["run"]) / "config.json").read_text())
        (out / "results.md").write_text(report(results, args, config))
        plot(results, out / "bench.png")
        print((out / "results.md").read_text())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
