"""Benchmark nlpforge serve on the packaged MiniLM fine-tuned on SST-2; all figures from one run.

The model is exported as one ships it (``--optimize extended --quantize int8``, into
tools/out/serve/export; ``--reuse-export`` keeps one already there). Contenders, each in its
own process with the same CPU threads:
  - the in-process Predictor, one sentence per call (the reference for server overhead);
  - nlpforge serve with dynamic batching (its defaults; the export's default variant,
    optimized fp32), and the same with ``--variant int8``;
  - nlpforge serve --max-batch-size 1 (the same server and model without batching);
  - tools/serve_baseline.py: FastAPI + a Hugging Face pipeline (PyTorch) called per request.
They run --rounds times, in an order that rotates each round, so that a busy spell of the
machine does not land on one contender only; the tables give the median of the rounds for
every level and each ratio is the median of the rounds' ratios (each round's contenders ran
close in time), with its range. Each ratio is labelled by exactly what it compares: only
``--max-batch-size 1`` against the default isolates batching; against the baseline, the
export (ONNX Runtime, fused graph) and the server differ too.
The server's own cost at concurrency 1 is also measured side by side: one client sends the
same sentences to the in-process predictor and to the server in alternating blocks
(``paired_overhead``).
The in-process run also measures the ceiling of batching on this machine: the model alone,
one sentence per run against length-sorted batches of 32 (no HTTP, no queue).
tools/loadgen.py drives each server at concurrency 1, 8, 32 and 64 with SST-2 validation
sentences (under NLPFORGE_DATASETS) over v2 infer (the baseline over its own /predict). Then a
soak: a fresh nlpforge serve, 1,000 warm-up requests, then --soak requests at concurrency 32,
resident memory measured before and after. Prints the CPU model and flags; writes
bench.md and bench.json under --out (tools/out/serve), and the page ``--markdown FILE`` names
(docs/benchmarks/serve.md). Without the data or an SST-2 run dir it says so and exits 0.

    python tools/bench_serve.py [--threads N] [--requests 2000] [--seconds 20] [--rounds 3]
                                [--levels 1,8,32,64] [--soak 10000] [--run DIR] [--out DIR]
                                [--reuse-export] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import command_line, cpu_line, write_markdown  # noqa: E402
from loadgen import SST2, LEVELS, loopback_target, build_requests, read_texts, run_level, \
    run_levels, table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tools" / "out" / "serve"


def find_run() -> Path | None:
    """The full SST-2 run when it exists, else the subset one (None: neither)."""
    for name in ("sst2-full", "sst2"):
        run = ROOT / "tools" / "out" / name / "run"
        if (run / "config.json").is_file():
            return run
    return None


def model_dirs(run: Path, data: str, out: Path, reuse: bool = True) -> tuple[Path, Path]:
    """(run dir, export dir): ``run`` exported the way one ships it — ``--optimize extended
    --quantize int8`` (checked on ``data``) — into ``out``/export; ``reuse``: keep an export
    already there."""
    export = out / "export"
    if reuse and (export / "model.int8.onnx").is_file():
        return run, export
    command = [sys.executable, "-m", "nlpforge", "export", str(run), "--output", str(export),
               "--optimize", "extended", "--quantize", "int8", "--calibration-data",
               data, "--overwrite"]
    print("$ nlpforge", " ".join(command[3:]), flush=True)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"bench_serve: export failed:\n{result.stderr[-3000:]}")
    return run, export


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Process:
    """A server in its own process, ready once ``health`` answers 200."""

    def __init__(self, args: list[str], port: int, health: str):
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 600
        while True:
            try:
                with urllib.request.urlopen(self.url + health, timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"bench_serve: {' '.join(args)} did not start")
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(120)


def nlpforge_serve(export: Path, threads: int, *options: str) -> Process:
    port = free_port()
    return Process([sys.executable, "-m", "nlpforge", "serve", f"sst2={export}", "--port",
                    str(port), "--threads", str(threads), *options], port, "/v2/health/ready")


def in_process_latency(export: Path, threads: int, texts: list[str], count: int) -> dict:
    """p50/p95 of Predictor.predict([text]), measured in a process of its own; and the most
    any batching server could gain on this machine: the mean time per sentence one at a time
    against the same sentences predicted in length-sorted batches of 32 (the best of three
    passes), with no serving work at all."""
    code = f"""
import json, sys, time
import nlpforge
texts = json.loads(sys.stdin.read())
predictor = nlpforge.load({str(export)!r}, threads={threads})
for text in texts[:50]:
    predictor.predict([text])
times = []
for text in texts:
    t0 = time.perf_counter(); predictor.predict([text]); times.append(time.perf_counter() - t0)
single = sum(times) / len(times)
times.sort()
batched = []
for _ in range(3):
    t0 = time.perf_counter(); predictor.predict(texts); batched.append(time.perf_counter() - t0)
batched = min(batched) / len(texts)
print(json.dumps({{"p50_ms": times[len(times) // 2] * 1000,
                   "p95_ms": times[int(len(times) * 0.95)] * 1000, "calls": len(times),
                   "single_ms_per_sentence": single * 1000,
                   "batched_ms_per_sentence": batched * 1000,
                   "batching_ceiling": single / batched}}))
"""
    sample = (texts * (count // len(texts) + 1))[:count]
    result = subprocess.run([sys.executable, "-c", code], input=json.dumps(sample),
                            capture_output=True, text=True, check=True)
    return {k: round(v, 2) for k, v in json.loads(result.stdout).items()}


def paired_overhead(export: Path, threads: int, texts: list[str], count: int,
                    block: int = 40, settle: int = 8) -> dict:
    """The server's own cost at concurrency 1, side by side: one client process holds an
    in-process Predictor and a keep-alive connection to ``nlpforge serve`` (its own process,
    same threads) and sends the same sentences both ways in alternating blocks of ``block``
    calls (over a plain socket, the ready-made requests tools/loadgen.py sends: the figure
    is the server's cost, not an HTTP client library's). The first ``settle`` calls of a
    block are not counted: the other side's model has just pushed this one's weights out of
    the caches. Reports both p50s and their difference."""
    server = nlpforge_serve(export, threads)
    host, port = loopback_target(server.url)
    code = f"""
import json, socket, sys, time
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
import nlpforge
from loadgen import build_requests
texts = json.loads(sys.stdin.read())
predictor = nlpforge.load({str(export)!r}, threads={threads})
raw = dict(zip(texts, build_requests({host!r}, "v2", "sst2", texts)))
connection = socket.create_connection(({host!r}, {port}))
connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def served(text):
    connection.sendall(raw[text])
    data = b""
    while b"\\r\\n\\r\\n" not in data:
        data += connection.recv(65536)
    head, _, body = data.partition(b"\\r\\n\\r\\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\\r\\n")[0])
    while len(body) < length:
        body += connection.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), head
def local(text):
    predictor.predict([text])
times = {{"served": [], "local": []}}
for start in range(0, len(texts), {block}):
    part = texts[start:start + {block}]
    for name, call in (("served", served), ("local", local))[::1 if start // {block} % 2 else -1]:
        for i, text in enumerate(part):
            t0 = time.perf_counter(); call(text); seconds = time.perf_counter() - t0
            if i >= {settle}:
                times[name].append(seconds)
p50 = {{k: sorted(v)[len(v) // 2] * 1000 for k, v in times.items()}}
print(json.dumps({{"server_p50_ms": p50["served"], "in_process_p50_ms": p50["local"],
                   "difference_ms": p50["served"] - p50["local"],
                   "calls_each": len(times["served"])}}))
"""
    sample = (texts * (count // len(texts) + 1))[:count]
    try:
        result = subprocess.run([sys.executable, "-c", code], input=json.dumps(sample),
                                capture_output=True, text=True, check=True)
    finally:
        server.stop()
    return {k: round(v, 2) for k, v in json.loads(result.stdout).items()}


def soak(export: Path, threads: int, texts: list[str], count: int) -> dict:
    server = nlpforge_serve(export, threads)
    try:
        host, port = loopback_target(server.url)
        requests = build_requests(host, "v2", "sst2", texts)
        asyncio.run(run_level(host, port, requests, 32, 1000, 600))
        before = rss_mb(server.proc.pid)
        result = asyncio.run(run_level(host, port, requests, 32, count, 3600))
        after = rss_mb(server.proc.pid)
    finally:
        server.stop()
    return {**result, "rss_before_mb": round(before, 1), "rss_after_mb": round(after, 1),
            "rss_growth_pct": round((after - before) / before * 100, 2)}


def contenders(export: Path, run_dir: Path, threads: int) -> dict[str, tuple[Callable, str]]:
    """The servers: name → (how to start one, the route loadgen sends to)."""
    def baseline() -> Process:
        port = free_port()
        return Process([sys.executable, str(ROOT / "tools" / "serve_baseline.py"), str(run_dir),
                        "--port", str(port), "--threads", str(threads)], port, "/health")

    return {
        "nlpforge serve": (lambda: nlpforge_serve(export, threads), "v2"),
        "nlpforge serve --variant int8":
            (lambda: nlpforge_serve(export, threads, "--variant", "int8"), "v2"),
        "nlpforge serve --max-batch-size 1":
            (lambda: nlpforge_serve(export, threads, "--max-batch-size", "1"), "v2"),
        "FastAPI + HF pipeline": (baseline, "baseline"),
    }


#: (numerator, denominator, what the ratio compares) of each throughput ratio at 32 clients.
RATIOS = (
    ("nlpforge serve", "nlpforge serve --max-batch-size 1",
     "dynamic batching alone: `nlpforge serve` vs the same server and model with "
     "`--max-batch-size 1`"),
    ("nlpforge serve", "FastAPI + HF pipeline",
     "`nlpforge serve` (optimized ONNX graph on ONNX Runtime, dynamic batching) vs FastAPI + "
     "HF pipeline (PyTorch fp32, one request per call): export, runtime, server and batching "
     "together"),
    ("nlpforge serve --variant int8", "FastAPI + HF pipeline",
     "`nlpforge serve --variant int8` (dynamic int8 ONNX, dynamic batching) vs FastAPI + HF "
     "pipeline (PyTorch fp32, one request per call): the same plus int8"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--requests", type=int, default=2000, help="most requests per level")
    parser.add_argument("--seconds", type=float, default=20.0, help="most seconds per level")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the contenders, in a rotating order")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)),
                        help="client concurrency levels (the ratios need 32)")
    parser.add_argument("--soak", type=int, default=10_000, help="soak requests (0: none)")
    parser.add_argument("--data", default=str(SST2))
    parser.add_argument("--run", help="the SST-2 run dir (default: tools/out/sst2-full/run, "
                                      "else tools/out/sst2/run)")
    parser.add_argument("--out", default=str(OUT), help="results and the export [%(default)s]")
    parser.add_argument("--reuse-export", action="store_true",
                        help="keep OUT/export when it is there")
    parser.add_argument("--markdown", help="also write the report to this file "
                                           "(docs/benchmarks/serve.md)")
    args = parser.parse_args()
    run = Path(args.run) if args.run else find_run()
    if not Path(args.data).is_file() or run is None or not (run / "config.json").is_file():
        print(f"skipped: needs {args.data} (NLPFORGE_DATASETS) and an SST-2 run dir (--run, "
              f"or tools/out/sst2*/run: tools/sst2_parity.py makes it)")
        return
    print(cpu_line(), flush=True)
    out = Path(args.out)
    run_dir, export = model_dirs(run, args.data, out, args.reuse_export)
    texts = read_texts(args.data)
    levels = [int(x) for x in args.levels.split(",")]
    report: dict = {"command": command_line(), "cpu": cpu_line(),
                    "run_dir": str(run_dir), "export_dir": str(export), "threads": args.threads,
                    "cpus": os.cpu_count(), "rounds": args.rounds,
                    "load_average_start": os.getloadavg()}
    bounds = dict(max_requests=args.requests, max_seconds=args.seconds)

    report["paired"] = paired_overhead(export, args.threads, texts, 872)
    print("server vs in-process, paired:", report["paired"], flush=True)
    servers = contenders(export, run_dir, args.threads)
    names = ["in-process", *servers]
    rounds: dict[str, list] = {name: [] for name in names}
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", flush=True)
        for name in names[r % len(names):] + names[:r % len(names)]:
            if name == "in-process":
                rounds[name].append(in_process_latency(export, args.threads, texts, 500))
                print("  in-process predictor:", rounds[name][-1], flush=True)
                continue
            start, route = servers[name]
            server = start()
            try:
                results = run_levels(server.url, route, "sst2", texts, levels, **bounds)
            finally:
                server.stop()
            rounds[name].append(results)
            print(f"\n  {name}\n{table(results)}", flush=True)
    report["in_process"] = {k: round(statistics.median(r[k] for r in rounds["in-process"]), 2)
                            for k in rounds["in-process"][0]}
    report["rounds_results"] = {name: rounds[name] for name in servers}
    report["servers"] = {name: median_levels(rounds[name]) for name in servers}
    if args.soak:
        report["soak"] = soak(export, args.threads, texts, args.soak)
        print("\nsoak:", report["soak"], flush=True)
    report["load_average_end"] = os.getloadavg()
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    body = render(report)
    for path in [out / "bench.md", *([args.markdown] if args.markdown else [])]:
        write_markdown(path, "nlpforge serve benchmark", body, command=report["command"],
                       cpu=report["cpu"])
    print("\n" + body)


def median_levels(rounds: list[list[dict]]) -> list[dict]:
    """One row per concurrency level: the median of the rounds' figures; requests, answers
    and errors summed over the rounds."""
    out = []
    for rows in zip(*rounds):
        errors: dict[str, int] = {}
        for row in rows:
            for code, count in row["errors"].items():
                errors[code] = errors.get(code, 0) + count
        merged = {k: round(statistics.median(row[k] for row in rows), 2)
                  for k in ("seconds", "throughput", "p50_ms", "p95_ms", "p99_ms")}
        merged.update({k: sum(row[k] for row in rows) for k in ("requests", "ok")})
        out.append({"concurrency": rows[0]["concurrency"], **merged, "errors": errors})
    return out


def throughput_at(results: list[dict], concurrency: int) -> float:
    return next(r["throughput"] for r in results if r["concurrency"] == concurrency)


def ratio_cell(report: dict, numerator: str, denominator: str, concurrency: int = 32) -> str:
    """The median over the rounds of one round's throughput ratio, with its range."""
    rounds = report.get("rounds_results") or {k: [v] for k, v in report["servers"].items()}
    each = sorted(throughput_at(a, concurrency) / throughput_at(b, concurrency)
                  for a, b in zip(rounds[numerator], rounds[denominator]))
    spread = f" (rounds {each[0]:.2f}-{each[-1]:.2f})" if len(each) > 1 else ""
    return (f"{throughput_at(report['servers'][numerator], concurrency):.1f} vs "
            f"{throughput_at(report['servers'][denominator], concurrency):.1f} req/s: "
            f"{statistics.median(each):.2f}x{spread}")


def render(report: dict) -> str:
    servers = report["servers"]
    rounds = report.get("rounds", 1)
    lines = [f"Export `{report['export_dir']}`, {report['threads']} threads per contender, "
             f"{report['cpus']} CPUs, {rounds} rounds in a rotating order (tables: the median of "
             f"the rounds per level, requests summed; ratios: the median of the rounds' ratios "
             f"and their range), "
             f"load average at start {report['load_average_start'][0]:.2f}, at end "
             f"{report['load_average_end'][0]:.2f}.\n",
             "| what is compared | measured |", "| --- | --- |"]
    has_32 = all(any(r["concurrency"] == 32 for r in rows) for rows in servers.values())
    for numerator, denominator, label in RATIOS if has_32 else ():
        lines.append(f"| throughput at 32 clients, {label} | "
                     f"{ratio_cell(report, numerator, denominator)} |")
    c1 = next((r for r in servers["nlpforge serve"] if r["concurrency"] == 1), None)
    if c1:
        lines.append(f"| p50 at concurrency 1, `nlpforge serve` vs the in-process predictor "
                     f"(separate processes): server {c1['p50_ms']} ms vs in-process "
                     f"{report['in_process']['p50_ms']} ms | "
                     f"{c1['p50_ms'] - report['in_process']['p50_ms']:+.2f} ms |")
    if "paired" in report:
        pair = report["paired"]
        lines.append(f"| p50 at concurrency 1, `nlpforge serve` vs the in-process predictor side "
                     f"by side (one client, the same sentences both ways in alternating blocks, "
                     f"{pair['calls_each']} calls each): server {pair['server_p50_ms']} ms vs "
                     f"in-process {pair['in_process_p50_ms']} ms | "
                     f"{pair['difference_ms']:+.2f} ms |")
    inp = report["in_process"]
    if "batching_ceiling" in inp:
        lines.append(f"| ceiling of batching, the model alone (no server): one sentence per run "
                     f"{inp['single_ms_per_sentence']} ms vs length-sorted batches of 32 "
                     f"{inp['batched_ms_per_sentence']} ms per sentence | "
                     f"{inp['batching_ceiling']:.2f}x |")
    if "soak" in report:
        s = report["soak"]
        lines.append(f"| soak: {s['requests']} requests at 32 clients to `nlpforge serve` | errors "
                     f"{s['errors'] or 'none'}, RSS {s['rss_before_mb']} → {s['rss_after_mb']} "
                     f"MB ({s['rss_growth_pct']:+.2f}%) |")
    for name, results in servers.items():
        lines += ["", f"## {name}", "", table(results)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
