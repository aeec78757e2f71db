"""Where an export's time goes: ONNX Runtime's per-node profile, summed by operator type.

    python tools/profile_onnx.py EXPORT_DIR [--variant int8] [--data FILE] [--rows 256]
                                 [--batch-size 32] [--threads 2] [--disable SkipLayerNormFusion]

Runs the rows (default: the SST-2 validation sentences) through the variant the way the runtime
batches them, with ONNX Runtime's profiler on, and prints each operator type's share of the
kernel time, the calls and the mean time per call — the measurement that shows what bounds a
variant (e.g. how much of an int8 model's time is still fp32 layer norms, GELU and softmax, and
how much the int8 products take). Prints the CPU model and flags first.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
from pathlib import Path

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
    args = parser.parse_args()
    if not Path(args.data).is_file():
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
    rows = [json.loads(line) for line in open(args.data, encoding="utf-8")][:args.rows]
    predictor.predict(rows, batch_size=args.batch_size)  # warm-up shapes
    predictor.predict(rows, batch_size=args.batch_size)
    trace = json.loads(Path(session.end_profiling()).read_text())
    by_type: dict[str, list[float]] = collections.defaultdict(list)
    for event in trace:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_type[event["args"]["op_name"]].append(event["dur"] / 1000.0)
    total = sum(sum(v) for v in by_type.values()) / 2  # two passes were profiled
    print(f"CPU: {describe(cpu_fingerprint())}")
    print(f"{args.export} variant {predictor.variant} ({entry['file']}), disabled "
          f"optimizers: {disabled or 'none'}, {len(rows)} rows, batch {args.batch_size}, "
          f"{args.threads} threads; kernel time per pass {total:.1f} ms")
    print(f"{'operator':32} {'share':>7} {'ms/pass':>9} {'calls':>7} {'us/call':>9}")
    for op, times in sorted(by_type.items(), key=lambda kv: -sum(kv[1])):
        spent = sum(times) / 2
        print(f"{op:32} {100 * spent / total:6.1f}% {spent:9.2f} {len(times) // 2:7d} "
              f"{1000 * sum(times) / len(times):9.1f}")


if __name__ == "__main__":
    sys.exit(main())
