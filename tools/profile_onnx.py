"""Where an export's time goes: ONNX Runtime's per-node profile, summed by operator type.

    python tools/profile_onnx.py EXPORT_DIR [--variant int8] [--data FILE] [--rows 256]
                                 [--batch-size 32] [--threads 2] [--disable SkipLayerNormFusion]
                                 [--shape 32x128] [--gemm]

Runs the rows (default: the SST-2 validation sentences) through the variant the way the runtime
batches them, with ONNX Runtime's profiler on, and prints each operator type's share of the
kernel time, the calls and the mean time per call — the measurement that shows what bounds a
variant (e.g. how much of an int8 model's time is still fp32 layer norms, GELU and softmax, and
how much the int8 products take). Prints the CPU model and flags first.

``--shape BATCHxSEQ`` profiles random token ids of that shape instead of the rows. ``--gemm``
also times ONNX Runtime's fp32 MatMul alone at the model's own projection shapes (tokens x
hidden x 3·hidden, hidden x hidden, hidden x intermediate, intermediate x hidden, for
``--shape``'s tokens) against a 2048³ one: how close to the peak the model's matrix products
can run, so the rest of a share-of-peak figure is the time outside them.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import time
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("NLPFORGE_DATASETS", ROOT.parent / "shared" / "datasets"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export")
    parser.add_argument("--variant", default=None)
    parser.add_argument("--data", default=str(DATA / "sst2" / "validation.jsonl"))
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--disable", action="append", default=[],
                        help="an ONNX Runtime optimizer to switch off (repeatable)")
    parser.add_argument("--shape", help="BATCHxSEQ: random token ids instead of the rows")
    parser.add_argument("--gemm", action="store_true",
                        help="also time fp32 MatMul alone at the model's shapes")
    args = parser.parse_args()
    if args.shape is None and not Path(args.data).is_file():
        print(f"skipped: {args.data} not found (set NLPFORGE_DATASETS)")
        return
    import onnxruntime as ort

    import nlpforge
    from nlpforge.runtime.host import cpu_fingerprint, describe

    predictor = nlpforge.load(args.export, device="cpu", threads=args.threads,
                              variant=args.variant)
    entry = predictor.manifest["variants"][predictor.variant]
    settings = {**(entry.get("session") or {})}
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "profile")
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    disabled = list(settings.get("disabled_optimizers") or []) + args.disable
    session = ort.InferenceSession(str(Path(args.export) / entry["file"]), options,
                                   providers=["CPUExecutionProvider"],
                                   disabled_optimizers=disabled)
    predictor.session = session
    if args.shape:
        batch, seq = (int(x) for x in args.shape.lower().split("x"))
        ids = np.random.default_rng(0).integers(1000, 5000, (batch, seq)).astype(np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids),
                 "token_type_ids": np.zeros_like(ids)}
        feeds = {i.name: feeds[i.name] for i in session.get_inputs()}

        def work() -> None:
            session.run(None, feeds)
        what = f"random ids {batch}x{seq}"
    else:
        rows = [json.loads(line) for line in open(args.data, encoding="utf-8")][:args.rows]

        def work() -> None:
            predictor.predict(rows, batch_size=args.batch_size)
        what = f"{len(rows)} rows, batch {args.batch_size}"
    work()  # both passes are profiled (the first also allocates for new shapes): the sums
    work()  # below are halved
    trace = json.loads(Path(session.end_profiling()).read_text())
    by_type: dict[str, list[float]] = collections.defaultdict(list)
    for event in trace:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_type[event["args"]["op_name"]].append(event["dur"] / 1000.0)
    total = sum(sum(v) for v in by_type.values()) / 2  # two passes were profiled
    print(f"CPU: {describe(cpu_fingerprint())}")
    print(f"{args.export} variant {predictor.variant} ({entry['file']}), disabled "
          f"optimizers: {disabled or 'none'}, {what}, {args.threads} threads; kernel time "
          f"per pass {total:.1f} ms")
    print(f"{'operator':32} {'share':>7} {'ms/pass':>9} {'calls':>7} {'us/call':>9}")
    for op, times in sorted(by_type.items(), key=lambda kv: -sum(kv[1])):
        spent = sum(times) / 2
        print(f"{op:32} {100 * spent / total:6.1f}% {spent:9.2f} {len(times) // 2:7d} "
              f"{1000 * sum(times) / len(times):9.1f}")
    if args.gemm:
        config = json.loads((Path(args.export) / "config.json").read_text())
        hidden, inner = config["hidden_size"], config["intermediate_size"]
        tokens = batch * seq if args.shape else 4096
        peak = gemm_gflops(2048, 2048, 2048, args.threads)
        print(f"fp32 MatMul alone, {args.threads} threads: 2048x2048x2048 {peak:.1f} GFLOP/s")
        for k, n in ((hidden, 3 * hidden), (hidden, hidden), (hidden, inner), (inner, hidden)):
            rate = gemm_gflops(tokens, k, n, args.threads)
            print(f"  {tokens}x{k}x{n}: {rate:.1f} GFLOP/s, {100 * rate / peak:.0f}% of 2048^3")


def gemm_gflops(m: int, k: int, n: int, threads: int) -> float:
    """ONNX Runtime's fp32 MatMul of an [m, k] input by constant [k, n] weights, GFLOP/s."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    weights = onnx.numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["A", "W"], ["Y"])], "gemm",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [m, n])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    a = rng.standard_normal((m, k)).astype(np.float32)
    for _ in range(3):
        session.run(None, {"A": a})
    times = []
    for _ in range(10):
        start = time.perf_counter()
        session.run(None, {"A": a})
        times.append(time.perf_counter() - start)
    return 2 * m * k * n / statistics.median(times) / 1e9


if __name__ == "__main__":
    sys.exit(main())
