"""Replay the hardening attack catalogue against a real ``nlpforge serve`` on loopback.

    python tools/attack.py [--export DIR] [--markdown docs/benchmarks/attack.md]

Starts ``nlpforge serve`` on 127.0.0.1 (a free port) with the export (default: the
quickstart's ``exports/quickstart``, else a tiny export built with tools/make_tiny_export.py),
runs every attack — each bounded in requests, bytes and seconds, sent to loopback only —
checks that the server answered as expected and is still healthy after each, and prints a
table: attempt, expected, got, verdict. It then measures what the targets name: a one-row
request's latency while a maximum-size request runs against its unloaded latency, the
server's RSS before and after the whole run, and how long SIGTERM takes with a
maximum-size request in flight. Exit status 1 when an attack was not answered as expected.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx

ROOT = Path(__file__).resolve().parent.parent
PAIR_TEXT = "i would not go back"
SENTENCE = "the food was cold and the service was slow, but the music was lovely"


@dataclass
class Row:
    attempt: str
    expected: str
    got: str
    ok: bool


def cpu() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.*)", info)
    flags = set(re.search(r"flags\s*:\s*(.*)", info).group(1).split()) if "flags" in info else set()
    wanted = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
              if f in flags]
    return f"{model.group(1) if model else platform.processor()} ({os.cpu_count()} cores; " \
           f"{', '.join(wanted) or 'no AVX2'})"


class Server:
    """``nlpforge serve`` in a subprocess on a free loopback port."""

    def __init__(self, export: Path, *options: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nlpforge", "serve", f"m={export}", "--port", "0",
             "--host", "127.0.0.1", *options],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        found = threading.Event()
        self.url = ""

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.lines.append(line)
                match = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
                if match and not found.is_set():
                    self.url = match.group(1)
                    found.set()
            found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(180) or not self.url:
            self.proc.kill()
            sys.exit("attack: the server did not start:\n" + "".join(self.lines))
        self.host, port = self.url.removeprefix("http://").split(":")
        self.port = int(port)
        self.client = httpx.Client(base_url=self.url, timeout=60)
        deadline = time.monotonic() + 180
        while self.client.get("/v2/health/ready").status_code != 200:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                sys.exit("attack: the server did not become ready:\n" + "".join(self.lines))
            time.sleep(0.1)

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s*(\d+)", status).group(1)) / 1024

    def healthy(self) -> bool:
        try:
            return (self.proc.poll() is None
                    and self.client.get("/v2/health/ready").status_code == 200
                    and self.predict(["fine"]).status_code == 200)
        except httpx.HTTPError:
            return False

    def predict(self, inputs: list, client: httpx.Client | None = None) -> httpx.Response:
        return (client or self.client).post("/v1/models/m/predict", json={"inputs": inputs})

    def raw(self, data: bytes, read: bool = True, timeout: float = 10.0) -> bytes:
        """Send bytes on a fresh connection; the response's first bytes (b"" when closed)."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            try:
                sock.sendall(data)
            except OSError:
                pass
            if not read:
                return b""
            try:
                return sock.recv(4096)
            except OSError:
                return b""

    def stop(self) -> float:
        sent = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)
        return time.monotonic() - sent


def status_of(raw: bytes) -> str:
    match = re.match(rb"HTTP/1\.[01] (\d{3})", raw)
    return match.group(1).decode() if match else ("closed" if not raw else "?")


def request(method: str, path: str, body: bytes = b"", headers: dict | None = None) -> bytes:
    head = {"Host": "127.0.0.1", "Content-Length": str(len(body)), **(headers or {})}
    lines = "".join(f"{k}: {v}\r\n" for k, v in head.items())
    return f"{method} {path} HTTP/1.1\r\n{lines}\r\n".encode() + body


def attacks(server: Server, limit: int) -> list[tuple[str, str, Callable[[], tuple[str, bool]]]]:
    """(attempt, expected, run → (got, as expected))."""
    s = server

    def mixed_batch() -> tuple[str, bool]:
        alone = s.predict([SENTENCE]).json()["predictions"][0]
        pair = {"text": PAIR_TEXT, "text_pair": "the staff"}
        results: list = []

        def client(i: int) -> None:
            with httpx.Client(base_url=s.url, timeout=60) as c:
                body = [pair] if i == 0 else [SENTENCE]
                results.append((i, s.predict(body, c).json()["predictions"][0]))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        others = [p for i, p in results if i != 0]
        same = all(p == alone for p in others)
        return f"{sum(p == alone for p in others)}/{len(others)} equal to alone", same

    def too_many() -> tuple[str, bool]:
        response = s.predict(["x"] * (limit + 1))
        return f"{response.status_code}", response.status_code == 413 and \
            "--max-inputs-per-request" in response.text

    def abandoned() -> tuple[str, bool]:
        body = json.dumps({"inputs": [SENTENCE] * limit}).encode()
        for _ in range(4):
            s.raw(request("POST", "/v1/models/m/predict", body,
                          {"Content-Type": "application/json"}), read=False)
        time.sleep(0.5)
        response = s.predict(["fine"])
        return f"{response.status_code}", response.status_code == 200

    def aborted_upload() -> tuple[str, bool]:
        before = s.client.get("/metrics").text.count('code="500"')
        s.raw(request("POST", "/v1/models/m/predict", b'{"inputs": ["fi',
                      {"Content-Type": "application/json", "Content-Length": "1000"}),
              read=False)
        time.sleep(0.3)
        metrics = s.client.get("/metrics").text
        counted = 'code="499"' in metrics and metrics.count('code="500"') == before
        return "499" if counted else "500 or uncounted", counted

    def huge_header() -> tuple[str, bool]:
        got = status_of(s.raw(request("GET", "/v2/health/live",
                                      headers={"X-Big": "a" * (2 * 1024 * 1024)})))
        return got, got in ("431", "closed")

    def many_headers() -> tuple[str, bool]:
        headers = {f"X-H{i}": "v" for i in range(5000)}
        got = status_of(s.raw(request("GET", "/v2/health/live", headers=headers)))
        return got, got in ("431", "closed")

    def slow_client() -> tuple[str, bool]:
        started = time.monotonic()
        with socket.create_connection((s.host, s.port), timeout=60) as sock:
            sock.settimeout(2)
            data = request("GET", "/v2/health/live")
            closed = False
            for byte in data[:40]:
                try:
                    sock.sendall(bytes([byte]))
                    time.sleep(1.0)
                except OSError:
                    closed = True
                    break
                if time.monotonic() - started > 30:
                    break
                try:
                    if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                        closed = True
                        break
                except (BlockingIOError, socket.timeout):
                    pass
                except OSError:
                    closed = True
                    break
        seconds = time.monotonic() - started
        return f"dropped after {seconds:.0f} s" if closed else "kept", closed

    def long_text() -> tuple[str, bool]:
        before = s.rss_mb()
        response = s.predict(["word " * 800_000])  # 4 MB of text, under the body limit
        grew = s.rss_mb() - before
        return f"{response.status_code}, RSS +{grew:.0f} MB", response.status_code == 200 \
            and grew < 100

    def text_plain() -> tuple[str, bool]:
        got = status_of(s.raw(request("POST", "/v1/models/m/predict",
                                      b'{"inputs": ["x"]}', {"Content-Type": "text/plain"})))
        return got, got == "415"

    def foreign_host() -> tuple[str, bool]:
        got = status_of(s.raw(request("GET", "/v1/models", headers={"Host": "evil.example"})))
        return got, got in ("400", "421")

    def no_cors() -> tuple[str, bool]:
        response = s.client.options("/v1/models/m/predict", headers={
            "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
        allowed = response.headers.get("access-control-allow-origin")
        return f"{response.status_code}, allow-origin {allowed!r}", allowed is None

    def huge_shape() -> tuple[str, bool]:
        body = {"inputs": [{"name": "input_ids", "shape": [0, 2 ** 62], "datatype": "INT64",
                            "data": []}]}
        response = s.client.post("/v2/models/m/infer", json=body)
        return f"{response.status_code}", response.status_code == 400

    def long_datatype() -> tuple[str, bool]:
        body = {"inputs": [{"name": "text", "shape": [1], "datatype": "X" * 1_000_000,
                            "data": ["x"]}]}
        response = s.client.post("/v2/models/m/infer", json=body)
        return f"{response.status_code}, {len(response.content)} bytes", \
            response.status_code == 400 and len(response.content) < 2000

    def encoded_slash() -> tuple[str, bool]:
        got = status_of(s.raw(request("POST", "/v1/models/m%2F..%2Fm/predict",
                                      b'{"inputs": ["x"]}',
                                      {"Content-Type": "application/json"})))
        return got, got in ("400", "404")

    def docs_offline() -> tuple[str, bool]:
        page = s.client.get("/docs").text
        external = re.findall(r"https?://[^\"' ]+\.(?:js|css)", page)
        return f"{len(external)} external assets", not external and "swagger" in page.lower()

    return [
        ("16 clients, one sends a text pair", "the others' predictions as alone", mixed_batch),
        (f"{limit + 1} inputs in one request", "413 naming the limit", too_many),
        (f"4 abandoned {limit}-row requests", "the next client served (200)", abandoned),
        ("an upload cut off after 15 of 1000 bytes", "a client error (499), not a 500",
         aborted_upload),
        ("a 2 MB header", "431 or closed, before auth", huge_header),
        ("5,000 headers", "431 or closed", many_headers),
        ("a client sending 1 byte/s", "dropped by the read timeout", slow_client),
        ("one 4 MB text", "200, RSS grows < 100 MB", long_text),
        ("POST with Content-Type text/plain", "415", text_plain),
        ("Host: evil.example on loopback", "400 or 421", foreign_host),
        ("a CORS preflight from another origin", "no Access-Control-Allow-Origin", no_cors),
        ("shape [0, 2**62]", "400", huge_shape),
        ("a 1 MB datatype name", "400, message clipped", long_datatype),
        ("an encoded slash in the model name", "400 or 404", encoded_slash),
        ("GET /docs", "no asset from a CDN", docs_offline),
    ]


def probe_latency(server: Server, limit: int, rounds: int = 5) -> tuple[float, float]:
    """Median latency of a one-row request unloaded, and while a maximum-size request runs."""
    unloaded = []
    for _ in range(rounds * 2):
        t0 = time.perf_counter()
        server.predict([SENTENCE])
        unloaded.append(time.perf_counter() - t0)
    loaded = []
    for _ in range(rounds):
        done = threading.Event()

        def large() -> None:
            with httpx.Client(base_url=server.url, timeout=300) as c:
                server.predict([f"{SENTENCE} {i}" for i in range(limit)], c)
            done.set()

        thread = threading.Thread(target=large)
        thread.start()
        time.sleep(0.3)
        while not done.is_set():
            t0 = time.perf_counter()
            server.predict([SENTENCE])
            loaded.append(time.perf_counter() - t0)
            time.sleep(0.1)
        thread.join()
    return statistics.median(unloaded), statistics.median(loaded)


def shutdown_seconds(export: Path, limit: int, timeout_s: float) -> tuple[float, int]:
    server = Server(export, "--max-inputs-per-request", str(limit),
                    "--shutdown-timeout-s", str(timeout_s))
    result: dict = {}

    def large() -> None:
        with httpx.Client(base_url=server.url, timeout=300) as c:
            result["status"] = server.predict([f"{SENTENCE} {i}" for i in range(limit)],
                                              c).status_code

    thread = threading.Thread(target=large)
    thread.start()
    time.sleep(1.0)
    seconds = server.stop()
    thread.join(60)
    return seconds, result.get("status", 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--export", type=Path)
    parser.add_argument("--max-inputs", type=int, default=2048)
    parser.add_argument("--shutdown-timeout-s", type=float, default=2.0)
    parser.add_argument("--threads", type=int, help="the server's --threads (default: all "
                                                     "cores)")
    parser.add_argument("--markdown", type=Path, help="also write the tables here")
    args = parser.parse_args()
    export = args.export or ROOT / "exports" / "quickstart"
    if not (export / "nlpforge.json").is_file():
        export = ROOT / "build" / "attack-export"
        if not (export / "nlpforge.json").is_file():
            subprocess.run([sys.executable, str(ROOT / "tools" / "make_tiny_export.py"),
                            str(export)], check=True)
    threads = ["--threads", str(args.threads)] if args.threads else []
    server = Server(export, "--max-inputs-per-request", str(args.max_inputs), *threads)
    server.predict([SENTENCE] * 64)  # warm
    rss_before = server.rss_mb()
    rows = []
    for attempt, expected, run in attacks(server, args.max_inputs):
        try:
            got, ok = run()
        except Exception as exc:  # an attack that breaks the tool is a failed row
            got, ok = f"{type(exc).__name__}: {exc}"[:80], False
        healthy = server.healthy()
        rows.append(Row(attempt, expected, got + ("" if healthy else "; server UNHEALTHY"),
                        ok and healthy))
        print(f"{'ok  ' if ok and healthy else 'FAIL'} {attempt}: {got} "
              f"(server RSS {server.rss_mb():.0f} MB)", flush=True)
    unloaded, loaded = probe_latency(server, args.max_inputs)
    print(f"latency probe done (server RSS {server.rss_mb():.0f} MB)", flush=True)
    time.sleep(1.0)  # idle: what the server gives back when the work is done
    rss_after = server.rss_mb()
    server.stop()
    seconds, status = shutdown_seconds(export, args.max_inputs, args.shutdown_timeout_s)
    targets = [
        ("one-row latency while a max-size request runs", f"{loaded * 1000:.0f} ms vs "
         f"{unloaded * 1000:.0f} ms unloaded ({loaded / unloaded:.1f}×)", "≤ 2×",
         loaded <= 2 * unloaded),
        ("SIGTERM with a max-size request in flight", f"exit after {seconds:.2f} s; the "
         f"request got {status}", f"≤ {args.shutdown_timeout_s:g} + 1 s, 503",
         seconds <= args.shutdown_timeout_s + 1 and status == 503),
        ("RSS before and after the attacks", f"{rss_before:.0f} → {rss_after:.0f} MB "
         f"({(rss_after / rss_before - 1) * 100:+.1f} %)", "within 10 %",
         rss_after <= rss_before * 1.10),
    ]
    lines = [f"CPU: {cpu()}; export: {export.name}; --max-inputs-per-request "
             f"{args.max_inputs}; --threads {args.threads or 'all cores'}; "
             f"`python tools/attack.py{f' --threads {args.threads}' if args.threads else ''}`",
             "",
             "| attempt | expected | got | |", "| --- | --- | --- | --- |"]
    lines += [f"| {r.attempt} | {r.expected} | {r.got} | {'ok' if r.ok else 'FAIL'} |"
              for r in rows]
    lines += ["", "| target | measured | wanted | |", "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {got} | {want} | {'met' if ok else 'missed'} |"
              for name, got, want, ok in targets]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text("# Attack catalogue against nlpforge serve\n\n" + text)
    sys.exit(0 if all(r.ok for r in rows) else 1)


if __name__ == "__main__":
    main()
