"""Load generator for nlpforge serve (and tools/serve_baseline.py): loopback only, bounded.

Each concurrency level runs until --requests requests or --seconds seconds, whichever comes
first; clients are keep-alive HTTP/1.1 connections written on asyncio streams (a light client,
so that on a small machine the server, not the client, is measured). Reports throughput and
p50/p95/p99 latency per level. Targets other than loopback addresses are refused.

    python tools/loadgen.py http://127.0.0.1:8000 --model sentiment \\
        [--route v2|v1|baseline] [--data sentences.jsonl] [--concurrency 1,8,32,64] \\
        [--requests 2000] [--seconds 30] [--warmup 50] [--json out.json]

--data defaults to SST-2's validation set under NLPFORGE_DATASETS (default ../shared/datasets);
without it the tool says so and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

#: SST-2's validation sentences, under NLPFORGE_DATASETS (default ../shared/datasets).
SST2 = Path(os.environ.get("NLPFORGE_DATASETS", Path(__file__).resolve().parents[2] / "shared"
                           / "datasets")) / "sst2" / "validation.jsonl"
LEVELS = (1, 8, 32, 64)

#: route → (path of model NAME, JSON body of one text)
ROUTES: dict[str, tuple[str, Callable[[str], object]]] = {
    "v2": ("/v2/models/{}/infer",
           lambda text: {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                     "data": [text]}]}),
    "v1": ("/v1/models/{}/predict", lambda text: {"inputs": [text]}),
    "baseline": ("/predict", lambda text: {"text": text}),
}


def loopback_target(url: str) -> tuple[str, int]:
    """(host, port) of ``url``; exits unless every address it resolves to is loopback."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        sys.exit(f"loadgen: {url}: give an http:// URL")
    port = parts.port or 80
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, port,
                                                               type=socket.SOCK_STREAM)}
    except socket.gaierror as exc:
        sys.exit(f"loadgen: {parts.hostname}: {exc.strerror}")
    if not addresses or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback
                                for a in addresses):
        sys.exit(f"loadgen: refusing {parts.hostname} ({', '.join(sorted(addresses))}): "
                 f"only loopback targets (127.0.0.0/8, ::1) are allowed")
    return parts.hostname, port


def read_texts(path: str | Path, limit: int = 100_000) -> list[str]:
    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                texts.append(json.loads(line)["text"])
            if len(texts) >= limit:
                break
    return texts


def build_requests(host: str, route: str, model: str, texts: list[str],
                   token: str | None = None) -> list[bytes]:
    """One ready-to-send HTTP/1.1 request per text."""
    path_template, body_of = ROUTES[route]
    path = path_template.format(model)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    out = []
    for text in texts:
        body = json.dumps(body_of(text)).encode("utf-8")
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"{auth}Content-Length: {len(body)}\r\n\r\n")
        out.append(head.encode("ascii") + body)
    return out


class Connection:
    """One keep-alive connection; reconnects when the server closes it."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


async def run_level(host: str, port: int, requests: list[bytes], concurrency: int,
                    max_requests: int, max_seconds: float) -> dict:
    """``concurrency`` clients send ``requests`` round-robin until a bound is reached."""
    latencies: list[float] = []
    codes: dict[int, int] = {}
    issued = 0
    started = time.perf_counter()
    deadline = started + max_seconds

    async def client() -> None:
        nonlocal issued
        connection = Connection(host, port)
        try:
            while issued < max_requests and time.perf_counter() < deadline:
                raw = requests[issued % len(requests)]
                issued += 1
                t0 = time.perf_counter()
                try:
                    status, _ = await connection.send(raw)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    status = 0  # connection error
                    await connection.close()
                latencies.append(time.perf_counter() - t0)
                codes[status] = codes.get(status, 0) + 1
        finally:
            await connection.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    ok = codes.get(200, 0)
    ordered = sorted(latencies)
    return {"concurrency": concurrency, "requests": len(latencies), "ok": ok,
            "errors": {str(k): v for k, v in sorted(codes.items()) if k != 200},
            "seconds": round(seconds, 3), "throughput": round(ok / seconds, 2),
            "p50_ms": round(percentile(ordered, 50) * 1000, 2),
            "p95_ms": round(percentile(ordered, 95) * 1000, 2),
            "p99_ms": round(percentile(ordered, 99) * 1000, 2)}


def run_levels(url: str, route: str, model: str, texts: list[str], levels=LEVELS,
               max_requests: int = 2000, max_seconds: float = 30.0, warmup: int = 50,
               token: str | None = None) -> list[dict]:
    host, port = loopback_target(url)
    requests = build_requests(host, route, model, texts, token)
    results = []
    for level in levels:
        if warmup:
            asyncio.run(run_level(host, port, requests, level, warmup, max_seconds))
        results.append(asyncio.run(run_level(host, port, requests, level, max_requests,
                                             max_seconds)))
    return results


def table(results: list[dict]) -> str:
    lines = ["| concurrency | requests | errors | req/s | p50 ms | p95 ms | p99 ms |",
             "| ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for r in results:
        errors = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "0"
        lines.append(f"| {r['concurrency']} | {r['requests']} | {errors} | {r['throughput']} | "
                     f"{r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", help="server base URL, e.g. http://127.0.0.1:8000 (loopback only)")
    parser.add_argument("--model", default="", help="model name (v1, v2 routes)")
    parser.add_argument("--route", choices=sorted(ROUTES), default="v2")
    parser.add_argument("--data", default=str(SST2), help="JSON Lines with a 'text' field")
    parser.add_argument("--concurrency", default=",".join(map(str, LEVELS)))
    parser.add_argument("--requests", type=int, default=2000, help="most requests per level")
    parser.add_argument("--seconds", type=float, default=30.0, help="most seconds per level")
    parser.add_argument("--warmup", type=int, default=50, help="unmeasured requests per level")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.route != "baseline" and not args.model:
        parser.error("--model is needed for the v1 and v2 routes")
    if not Path(args.data).is_file():
        print(f"loadgen: skipped: {args.data} not found (set NLPFORGE_DATASETS or --data)")
        return
    levels = [int(c) for c in args.concurrency.split(",")]
    results = run_levels(args.url, args.route, args.model, read_texts(args.data), levels,
                         args.requests, args.seconds, args.warmup,
                         os.environ.get("NLPFORGE_SERVE_TOKEN"))
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
