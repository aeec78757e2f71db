"""Benchmark nlpforge serve on the packaged MiniLM fine-tuned on SST-2; all figures from one run.

The model is exported as one ships it (``--optimize extended --quantize int8``, into
tools/out/serve/export; ``--reuse-export`` keeps one already there). Each contender runs in
its own process with the same CPU threads, one after another:
  - the in-process Predictor, one sentence per call (the reference for server overhead);
  - nlpforge serve with dynamic batching (its defaults; the export's default variant,
    optimized fp32), and the same with ``--variant int8``;
  - nlpforge serve --max-batch-size 1;
  - tools/serve_baseline.py: FastAPI + a Hugging Face pipeline called per request.
The server's own cost at concurrency 1 is also measured side by side: one client sends the
same sentences to the in-process predictor and to the server in alternating blocks
(``paired_overhead``).
The in-process run also measures the ceiling of batching on this machine: the model alone,
one sentence per run against length-sorted batches of 32 (no HTTP, no queue).
tools/loadgen.py drives each server at concurrency 1, 8, 32 and 64 with SST-2 validation
sentences over v2 infer (the baseline over its own /predict). Then a soak: a fresh nlpforge
serve, 1,000 warm-up requests, then --soak requests at concurrency 32, resident memory measured
before and after. Writes tools/out/serve/bench.md and bench.json.

    python tools/bench_serve.py [--threads N] [--requests 2000] [--seconds 20] [--soak 10000]
                                [--reuse-export]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import SST2, LEVELS, loopback_target, build_requests, read_texts, run_level, \
    run_levels, table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tools" / "out" / "serve"


def model_dirs(reuse: bool = True) -> tuple[Path, Path]:
    """(run dir, export dir): the full SST-2 run when it exists, else the subset one, exported
    the way one ships it — ``--optimize extended --quantize int8`` (checked on the SST-2
    validation set) — into tools/out/serve/export; ``reuse``: keep an export already there."""
    for name in ("sst2-full", "sst2"):
        run = ROOT / "tools" / "out" / name / "run"
        if (run / "config.json").is_file():
            break
    else:
        sys.exit("bench_serve: no tools/out/sst2*/run; run tools/sst2_parity.py first")
    export = OUT / "export"
    if reuse and (export / "model.int8.onnx").is_file():
        return run, export
    command = [sys.executable, "-m", "nlpforge", "export", str(run), "--output", str(export),
               "--optimize", "extended", "--quantize", "int8", "--calibration-data",
               str(SST2), "--overwrite"]
    print("$", " ".join(command[1:]), flush=True)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--requests", type=int, default=2000, help="most requests per level")
    parser.add_argument("--seconds", type=float, default=20.0, help="most seconds per level")
    parser.add_argument("--soak", type=int, default=10_000, help="soak requests (0: none)")
    parser.add_argument("--data", default=str(SST2))
    parser.add_argument("--reuse-export", action="store_true",
                        help="keep tools/out/serve/export when it is there")
    args = parser.parse_args()
    run_dir, export = model_dirs(args.reuse_export)
    texts = read_texts(args.data)
    report: dict = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                    "run_dir": str(run_dir), "export_dir": str(export), "threads": args.threads,
                    "cpus": os.cpu_count(), "load_average_start": os.getloadavg()}
    bounds = dict(max_requests=args.requests, max_seconds=args.seconds)

    report["in_process"] = in_process_latency(export, args.threads, texts, 500)
    print("in-process predictor:", report["in_process"], flush=True)
    report["paired"] = paired_overhead(export, args.threads, texts, 872)
    print("server vs in-process, paired:", report["paired"], flush=True)
    contenders = [
        ("nlpforge serve", lambda: nlpforge_serve(export, args.threads), "v2"),
        ("nlpforge serve --variant int8",
         lambda: nlpforge_serve(export, args.threads, "--variant", "int8"), "v2"),
        ("nlpforge serve --max-batch-size 1",
         lambda: nlpforge_serve(export, args.threads, "--max-batch-size", "1"), "v2"),
        ("FastAPI + HF pipeline", lambda: Process(
            [sys.executable, str(ROOT / "tools" / "serve_baseline.py"), str(run_dir),
             "--port", str(port := free_port()), "--threads", str(args.threads)],
            port, "/health"), "baseline"),
    ]
    report["servers"] = {}
    for name, start, route in contenders:
        server = start()
        try:
            results = run_levels(server.url, route, "sst2", texts, LEVELS, **bounds)
        finally:
            server.stop()
        report["servers"][name] = results
        print(f"\n{name}\n{table(results)}", flush=True)
    if args.soak:
        report["soak"] = soak(export, args.threads, texts, args.soak)
        print("\nsoak:", report["soak"], flush=True)
    report["load_average_end"] = os.getloadavg()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (OUT / "bench.md").write_text(render(report))
    print("\n" + render(report))


def throughput_at(results: list[dict], concurrency: int) -> float:
    return next(r["throughput"] for r in results if r["concurrency"] == concurrency)


def render(report: dict) -> str:
    servers = report["servers"]
    batched, single, baseline, int8 = (servers[k] for k in (
        "nlpforge serve", "nlpforge serve --max-batch-size 1", "FastAPI + HF pipeline",
        "nlpforge serve --variant int8"))
    c1 = next(r for r in batched if r["concurrency"] == 1)
    lines = ["# nlpforge serve benchmark\n",
             f"`{report['command']}` — export `{report['export_dir']}`, {report['threads']} "
             f"threads per contender, {report['cpus']} CPUs, load average at start "
             f"{report['load_average_start'][0]:.2f}, at end {report['load_average_end'][0]:.2f}.\n",
             "| claim | measured |", "| --- | --- |",
             f"| throughput at 32 clients, batching vs --max-batch-size 1 | "
             f"{throughput_at(batched, 32) / throughput_at(single, 32):.2f}x |",
             f"| throughput at 32 clients, batching vs FastAPI + HF pipeline | "
             f"{throughput_at(batched, 32) / throughput_at(baseline, 32):.2f}x |",
             f"| the same with the export's int8 variant (`--variant int8`) | "
             f"{throughput_at(int8, 32) / throughput_at(baseline, 32):.2f}x |",
             f"| p50 at concurrency 1: server {c1['p50_ms']} ms vs in-process "
             f"{report['in_process']['p50_ms']} ms | "
             f"{c1['p50_ms'] - report['in_process']['p50_ms']:+.2f} ms |"]
    if "paired" in report:
        pair = report["paired"]
        lines.append(f"| p50 at concurrency 1, side by side (one client, the same sentences "
                     f"both ways in alternating blocks, {pair['calls_each']} calls each): "
                     f"server {pair['server_p50_ms']} ms vs in-process "
                     f"{pair['in_process_p50_ms']} ms | {pair['difference_ms']:+.2f} ms |")
    inp = report["in_process"]
    if "batching_ceiling" in inp:
        lines.append(f"| ceiling: the model alone, one sentence per run "
                     f"{inp['single_ms_per_sentence']} ms vs length-sorted batches of 32 "
                     f"{inp['batched_ms_per_sentence']} ms per sentence | "
                     f"{inp['batching_ceiling']:.2f}x |")
    if "soak" in report:
        s = report["soak"]
        lines.append(f"| soak: {s['requests']} requests at 32 clients | errors "
                     f"{s['errors'] or 'none'}, RSS {s['rss_before_mb']} → {s['rss_after_mb']} "
                     f"MB ({s['rss_growth_pct']:+.2f}%) |")
    for name, results in servers.items():
        lines += ["", f"## {name}", "", table(results)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
