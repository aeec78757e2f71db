"""Inference benchmark on the MiniLM fine-tuned for SST-2: PyTorch (fp32, bf16 autocast, dynamic
int8), the Hugging Face pipeline, plain onnxruntime and nlpforge's runtime (fp32, optimized, int8
and the export's default/tuned choice), side by side.

    python tools/bench_inference.py [--run tools/out/sst2-full/run] [--threads 2] \\
        [--out tools/out/bench_inference] [--repeats 3] [--rounds 3] [--reuse-export] \\
        [--only NAME,...] [--rows N] [--markdown docs/benchmarks/inference.md]
    python tools/bench_inference.py --device cuda [--markdown docs/benchmarks/gpu.md]

Contenders on the CPU (``--device cpu``, the default):
- ``pytorch-fp32``: ``AutoModelForSequenceClassification`` in inference mode;
- ``pytorch-bf16``: the same under ``torch.autocast("cpu", dtype=torch.bfloat16)``, only where
  the CPU has avx512_bf16 or amx_bf16 (the results say when it was skipped);
- ``pytorch-int8``: ``torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear},
  dtype=torch.qint8)``;
- ``hf-pipeline``: ``pipeline("text-classification", model=RUN)`` with ``batch_size=32``;
- ``onnxruntime-fp32``/``-int8``: plain onnxruntime + tokenizers + numpy written by hand, on
  the export's graphs with nlpforge's session settings;
- ``nlpforge-fp32``/``-optimized``/``-int8``: ``nlpforge.load(EXPORT, variant=...)``;
- ``nlpforge-tuned``: ``nlpforge.load(EXPORT)`` with no variant: whatever the export's manifest
  chooses (the variant ``nlpforge tune`` recorded — the tool runs it on a new export with
  SST-2 rows held out from the validation set it scores, the test sentences, and --threads;
  ``--no-tune`` skips it — else the export's default);
  the variant is reported, and --threads applies to it as to every contender.
Every end-to-end loop (all but the pipeline, which batches as it does) does the same work:
tokenize every row, sort the rows by token count, batches of 32 padded to their own longest
row, the model, argmax, labels back in input order.
With ``--device cuda``: ``pytorch-fp32``/``pytorch-fp16`` (``model.half()``) on the GPU and
``nlpforge-fp32``/``nlpforge-fp16`` on ONNX Runtime's CUDA provider (the export is made with
``--fp16``); it refuses to start where CUDA is not usable.

Every contender runs in its own process with the same number of threads (PyTorch's OpenMP
threads keep spinning after work and would steal the CPU from ONNX Runtime in a shared
process), once per round, in a rotating order, so that a busy spell of the machine does not
land on one contender only. Measured, as medians (within a process, then over the rounds):
- latency at batch 1 and throughput at batch 32, sequences of 16, 64 and 128 tokens;
- end-to-end throughput and accuracy over the SST-2 validation sentences at their real
  lengths (batch 32), and each contender's accuracy drop against PyTorch fp32;
- the cost of nlpforge's runtime and of the hand-written loop alone (the model replaced by a
  stub);
- the fp32 matrix-multiply peak of this machine and the model's fp32 GFLOP/s as a share of the
  peak measured in turns with it in the same process.
Ratios are labelled by what they compare: "vs PyTorch fp32", "vs best PyTorch contender" (the
fastest of the PyTorch ones and the pipeline on that measure). The targets (``targets()``) are
printed as met or missed with their numbers. Writes results.json, results.md and bench.png
under --out, and the page ``--markdown FILE`` names (with the command and the CPU line).
The sentence-embedding comparison (sentence-transformers' ``encode()`` against nlpforge's export
of all-MiniLM-L6-v2) is tools/bench_embedding.py.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import DATASETS, ROOT, command_line, cpu_line, has_bf16  # noqa: E402
from bench_inference_report import model_flops, write_report  # noqa: E402

DATA = DATASETS / "sst2"
SEQS = (16, 64, 128)
BATCH = 32
#: name → (kind, what it runs); each is measured by ``worker()`` in a process of its own.
CONTENDERS = {
    "pytorch-fp32": ("torch", "fp32"),
    "pytorch-bf16": ("torch", "bf16"),
    "pytorch-int8": ("torch", "int8"),
    "hf-pipeline": ("pipeline", None),
    "onnxruntime-fp32": ("ort", "model.onnx"),
    "onnxruntime-int8": ("ort", "model.int8.onnx"),
    "nlpforge-fp32": ("nlpforge", "fp32"),
    "nlpforge-optimized": ("nlpforge", "optimized"),
    "nlpforge-int8": ("nlpforge", "int8"),
    "nlpforge-tuned": ("nlpforge", None),
}
#: ``--device cuda``: PyTorch on the GPU against nlpforge on ONNX Runtime's CUDA provider.
CUDA_CONTENDERS = {
    "pytorch-fp32": ("torch", "fp32"),
    "pytorch-fp16": ("torch", "fp16"),
    "nlpforge-fp32": ("nlpforge", "fp32"),
    "nlpforge-fp16": ("nlpforge", "fp16"),
}
#: The contenders that run PyTorch (the "best PyTorch contender" is the fastest of these).
TORCH_KINDS = ("torch", "pipeline")
EXPORT_ARGS = "--optimize extended --quantize int8"


def contenders_of(device: str) -> dict[str, tuple[str, str | None]]:
    return CUDA_CONTENDERS if device == "cuda" else CONTENDERS


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


def sorted_batches(lengths: list[int]) -> list[list[int]]:
    """Row indices sorted by token count, cut into batches of ``BATCH`` (nlpforge's order)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[start:start + BATCH] for start in range(0, len(order), BATCH)]


def padded(columns: dict[str, list[list[int]]], index: list[int], pad_id: int = 0) -> dict:
    """Rows ``index`` of token-id ``columns`` as int64 arrays padded to their longest row."""
    import numpy as np

    width = max(len(columns["input_ids"][i]) for i in index)
    out = {}
    for name, values in columns.items():
        array = np.full((len(index), width), pad_id if name == "input_ids" else 0, np.int64)
        for row, i in enumerate(index):
            array[row, :len(values[i])] = values[i]
        out[name] = array
    return out


class StubSession:
    """Stands in for an onnxruntime session: zeros of the logits' shape, instantly."""

    def run(self, names: list, feeds: dict) -> list:
        import numpy as np

        return [np.zeros((len(feeds["input_ids"]), 2), dtype=np.float32)]


def overhead_ms(predict: Callable[[list[str]], list[str]], rows: list[dict], repeats: int) -> float:
    """Milliseconds ``predict`` takes over all rows with the model replaced by a stub."""
    texts = [r["text"] for r in rows]
    return 1000 * median_seconds(lambda: predict(texts), max(5, repeats), warmup=1)


def read_rows(limit: int | None) -> list[dict]:
    rows = [json.loads(line) for line in open(DATA / "validation.jsonl", encoding="utf-8")]
    return rows[:limit] if limit else rows


def worker(name: str, args: argparse.Namespace) -> dict:
    kind, what = contenders_of(args.device).get(name, ("peak", None))
    threads, export = args.threads, Path(args.out) / "export"
    rows = read_rows(args.rows)
    if kind == "peak":
        return matmul_peak(threads)
    if kind in TORCH_KINDS:
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
    if kind == "torch":
        return torch_contender(args.run, export, what or "fp32", args.device, rows, args.repeats)
    if kind == "pipeline":
        return pipeline_contender(args.run, rows, args.repeats)
    if kind == "ort":
        return ort_contender(export, what, threads, rows, args.repeats)
    return nlpforge_contender(export, what, args.device, threads, rows, args.repeats)


def torch_contender(run: str, export: Path, mode: str, device: str, rows: list[dict],
                    repeats: int) -> dict:
    """PyTorch as a knowledgeable user runs it: ``mode`` fp32, bf16 (CPU autocast), int8
    (dynamic quantization of the Linear layers) or fp16 (``model.half()`` on the GPU); the
    end-to-end loop sorts rows by token count like nlpforge's."""
    import contextlib

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(run).eval()
    if mode == "int8":
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear},
                                                       dtype=torch.qint8)
    if mode == "fp16":
        model = model.half()
    model = model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(run)
    labels = model.config.id2label
    manifest = json.loads((export / "nlpforge.json").read_text())["tokenizer"]
    max_length, pad_id = manifest["max_length"], manifest.get("pad_id") or 0

    def autocast() -> Any:
        if mode == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def logits(features: dict) -> Any:
        with torch.inference_mode(), autocast():
            out = model(**{k: torch.from_numpy(v).to(device) for k, v in features.items()})
            return out.logits.float().cpu()  # on the GPU: waits for the result, like ORT

    def predict(texts: list[str]) -> list[str]:
        columns = dict(tokenizer(texts, truncation=True, max_length=max_length))
        out: list[str] = [""] * len(texts)
        for index in sorted_batches([len(ids) for ids in columns["input_ids"]]):
            for i, best in zip(index, logits(padded(columns, index, pad_id)).argmax(-1).tolist()):
                out[i] = labels[best]
        return out

    return {**measure_shapes(logits, model.config.vocab_size, repeats),
            "end_to_end": end_to_end(predict, rows, repeats)}


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
    """Plain onnxruntime + tokenizers + numpy, written by hand, with nlpforge's session
    settings (all graph optimizations, ``threads`` intra-op threads, one inter-op thread)."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session: Any = ort.InferenceSession(str(export / model_file), options,
                                        providers=["CPUExecutionProvider"])
    manifest = json.loads((export / "nlpforge.json").read_text())
    labels = manifest["task"]["state"]["labels"]
    pad_id = manifest["tokenizer"].get("pad_id") or 0
    tokenizer = Tokenizer.from_file(str(export / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(manifest["tokenizer"]["max_length"])

    def run_features(features: dict) -> Any:
        return session.run(["logits"], features)

    def predict(texts: list[str]) -> list[str]:
        every = tokenizer.encode_batch(texts)
        columns = {"input_ids": [e.ids for e in every],
                   "attention_mask": [e.attention_mask for e in every],
                   "token_type_ids": [e.type_ids for e in every]}
        out: list[str] = [""] * len(texts)
        for index in sorted_batches([len(e.ids) for e in every]):
            logits = session.run(["logits"], padded(columns, index, pad_id))[0]
            for i, best in zip(index, logits.argmax(-1)):
                out[i] = labels[int(best)]
        return out

    vocab = json.loads((export / "config.json").read_text())["vocab_size"]
    result = {**measure_shapes(run_features, vocab, repeats),
              "end_to_end": end_to_end(predict, rows, repeats)}
    session = StubSession()
    result["overhead_ms"] = overhead_ms(predict, rows, repeats)
    return result


def nlpforge_contender(export: Path, variant: str | None, device: str, threads: int,
                       rows: list[dict], repeats: int) -> dict:
    import nlpforge

    predictor = nlpforge.load(str(export), variant=variant, device=device, threads=threads)

    def predict(texts: list[str]) -> list[str]:
        return [p["label"] for p in predictor.predict(texts, batch_size=BATCH)]

    vocab = json.loads((export / "config.json").read_text())["vocab_size"]
    result = {**measure_shapes(predictor.run, vocab, repeats),
              "end_to_end": end_to_end(predict, rows, repeats),
              "variant": predictor.variant, "providers": predictor.providers,
              "variant_reason": str(getattr(predictor, "variant_reason", ""))}
    if device == "cpu" and variant in ("fp32", "optimized"):
        result["paired"] = paired_compute(predictor.run, export, threads)
    if device == "cpu":
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

def export_model(args: argparse.Namespace) -> Path:
    export = Path(args.out) / "export"
    if args.reuse_export and (export / "nlpforge.json").is_file():
        return export
    extra = args.export_args.split() if args.export_args is not None else (
        [] if args.device == "cuda" else EXPORT_ARGS.split())
    if args.device == "cuda":
        extra.append("--fp16")
    # Calibration and tuning read rows held out from the accuracy measured (the validation
    # set): the SST-2 test sentences (unofficial labels), else the validation set itself.
    held_out = DATA / "test_unofficial_labels.jsonl"
    held_out = held_out if held_out.is_file() else DATA / "validation.jsonl"
    if "--quantize" in extra:
        extra += ["--calibration-data", str(held_out)]
    command = [sys.executable, "-m", "nlpforge", "export", args.run, "--output", str(export),
               *extra, "--overwrite"]
    commands = [command]
    if args.device == "cpu" and args.tune:
        commands.append([sys.executable, "-m", "nlpforge", "tune", str(export), "--data",
                         str(held_out), "--threads", str(args.threads),
                         "--max-metric-drop", "0.5",  # the targets' accuracy bound
                         *(["--rows", str(min(args.rows, 256))] if args.rows else []),
                         *(["--rounds", "1"] if args.rounds == 1 else [])])
    for step in commands:
        print("$ nlpforge", " ".join(step[3:]), flush=True)
        result = subprocess.run(step, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"nlpforge {step[3]} failed:\n{result.stderr[-3000:]}")
    return export


def median_of(runs: list[Any]) -> Any:
    """The rounds' results merged: the median of every number."""
    if isinstance(runs[0], dict):
        return {k: median_of([r[k] for r in runs]) for k in runs[0]}
    if isinstance(runs[0], (int, float)) and not isinstance(runs[0], bool):
        return statistics.median(runs)
    if isinstance(runs[0], list) and runs[0] and isinstance(runs[0][0], (int, float)):
        return [x for run in runs for x in run]  # every round's samples
    return runs[0]


def in_process(name: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", name, "--run", args.run, "--out", args.out,
               "--threads", str(args.threads), "--repeats", str(args.repeats), "--rounds", "1",
               "--device", args.device, *(["--rows", str(args.rows)] if args.rows else [])]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false",
           "PYTHONWARNINGS": "ignore", "TRANSFORMERS_VERBOSITY": "error"}
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(f"{name} failed:\n{result.stderr[-3000:]}")
    data = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"  {name}: done in {time.perf_counter() - start:.0f}s", flush=True)
    return data


def cuda_problem() -> str | None:
    """Why ``--device cuda`` cannot run here (None: it can): both PyTorch and ONNX Runtime
    must reach a GPU."""
    import onnxruntime as ort

    from nlpforge.runtime.providers import cuda_device_count, cuda_libraries_ok

    problems = []
    if cuda_device_count() == 0:
        problems.append("the CUDA driver sees no GPU (libcuda.so.1 missing or no device)")
    elif "CUDAExecutionProvider" not in ort.get_available_providers():
        problems.append(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider "
                        f"(install onnxruntime-gpu)")
    elif not cuda_libraries_ok():
        problems.append("ONNX Runtime's CUDA provider cannot load cuBLAS/cuDNN")
    try:
        import torch

        if not torch.cuda.is_available():
            problems.append(f"torch {torch.__version__} cannot use CUDA (install a CUDA wheel, "
                            f"e.g. tools/gpu_check.sh does)")
    except ImportError:
        problems.append("torch is not installed")
    return "; ".join(problems) or None


def gpu_name() -> str:
    import torch

    return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(ROOT / "tools" / "out" / "sst2-full" / "run"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None,
                        help="results dir (default tools/out/bench_inference[-cuda])")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--rows", type=int, help="only the first N validation rows (smoke runs)")
    parser.add_argument("--export-args",
                        help=f"nlpforge export options [cpu: {EXPORT_ARGS}, cuda: none]; "
                             f"--device cuda adds --fp16, --quantize adds SST-2's test "
                             f"sentences (held out from the validation set scored) as "
                             f"--calibration-data")
    parser.add_argument("--tune", action=argparse.BooleanOptionalAction, default=True,
                        help="run nlpforge tune on a new export (CPU), so that nlpforge-tuned "
                             "runs the variant it picks for --threads [on]")
    parser.add_argument("--reuse-export", action="store_true",
                        help="keep OUT/export (and its tuned choice) when it is there")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite results.md and bench.png from results.json")
    parser.add_argument("--only", help="comma-separated contenders (default: all)")
    parser.add_argument("--markdown", help="also write the report to this file "
                                           "(docs/benchmarks/inference.md, gpu.md)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out = args.out or str(ROOT / "tools" / "out" / ("bench_inference" + (
        "-cuda" if args.device == "cuda" else "")))
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return
    out = Path(args.out)
    if args.report_only:
        write_report(json.loads((out / "results.json").read_text()), out, args.markdown)
        return
    if args.device == "cuda" and (problem := cuda_problem()):
        sys.exit(f"bench_inference: --device cuda refused: {problem}")
    model_dir = Path(args.run)  # a run dir of nlpforge train, or a save_pretrained checkpoint
    if not ((DATA / "validation.jsonl").is_file() and any(
            (model_dir / name).is_file() for name in ("nlpforge.json", "config.json"))):
        print(f"skipped: needs {DATA / 'validation.jsonl'} and a finished run dir or a "
              f"checkpoint at {args.run}")
        return
    out.mkdir(parents=True, exist_ok=True)
    table = contenders_of(args.device)
    wanted = args.only.split(",") if args.only else list(table)
    unknown = [n for n in wanted if n not in table]
    if unknown:
        sys.exit(f"bench_inference: unknown contenders {unknown}; known: {', '.join(table)}")
    skipped = {}
    if "pytorch-bf16" in wanted and not has_bf16():
        skipped["pytorch-bf16"] = ("the CPU has neither avx512_bf16 nor amx_bf16: bf16 "
                                   "autocast would be emulated, many times slower than fp32")
        wanted.remove("pytorch-bf16")
    results: dict[str, Any] = {
        "command": command_line(), "machine": cpu_line(), "device": args.device,
        "gpu": gpu_name() if args.device == "cuda" else None,
        "threads": args.threads, "run": args.run, "skipped": skipped,
        "seqs": list(SEQS), "batch": BATCH,
        "pytorch_contenders": [n for n, (kind, _) in table.items() if kind in TORCH_KINDS],
        "rows": len(read_rows(args.rows)), "rounds": args.rounds,
        "load_before": " ".join(open("/proc/loadavg").read().split()[:3]),
    }
    print(results["machine"], flush=True)
    for name, why in skipped.items():
        print(f"  {name}: skipped: {why}", flush=True)
    export_model(args)
    names = (["peak"] if args.device == "cpu" else []) + wanted
    rounds: dict[str, list[dict]] = {name: [] for name in names}
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", flush=True)
        for name in names[r % len(names):] + names[:r % len(names)]:
            rounds[name].append(in_process(name, args))
    peaks = rounds.pop("peak", None)
    if peaks:
        results["peak"] = max(peaks, key=lambda p: p["peak_gflops"])
        results["peak"]["rounds"] = [round(p["peak_gflops"], 1) for p in peaks]
    results["contenders"] = {name: median_of(runs) for name, runs in rounds.items()}
    results["load_after"] = " ".join(open("/proc/loadavg").read().split()[:3])
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_report(results, out, args.markdown)


if __name__ == "__main__":
    main()
