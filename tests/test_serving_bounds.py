"""No request monopolises a model: rows per request and queued rows are bounded, large
requests run in chunks taken round robin with the others, abandoned work is dropped, and
SIGTERM keeps its deadline whatever is in flight."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import threading
import time

import httpx
import pytest

from nlpforge.serving.batcher import DynamicBatcher
from nlpforge.serving.errors import NotReady, Overloaded, RequestTimeout
from nlpforge.serving.prometheus import Metrics
from tests.conftest import wait_until
from tests.test_serving import Server


def make_batcher(run_batch, **kwargs) -> DynamicBatcher:
    return DynamicBatcher("m", run_batch, Metrics(["m"]).models["m"], **kwargs)


def chunks(name: str, count: int, rows: int = 2) -> list[tuple[str, int, int]]:
    return [(f"{name}{i}", rows, 5) for i in range(count)]


# -- the batcher ------------------------------------------------------------------------------

def test_a_small_request_is_taken_with_the_next_turn_not_after_a_large_one():
    ran: list[list[str]] = []

    def run_batch(jobs):
        time.sleep(0.02)
        ran.append([job.payload for job in jobs])
        return [job.payload for job in jobs]

    async def scenario():
        batcher = make_batcher(run_batch, max_batch_size=2)
        batcher.start()
        large = asyncio.ensure_future(batcher.submit_chunks("k", chunks("big", 20), 30))
        await asyncio.sleep(0.05)  # the large request is running
        small = await batcher.submit("k", "small", 1, 5, timeout=30)
        done_before = sum(1 for batch in ran for p in batch if p.startswith("big"))
        result = await large
        await batcher.stop()
        return small, done_before, result

    small, done_before, result = asyncio.run(scenario())
    assert small == "small" and result == [f"big{i}" for i in range(20)]
    assert done_before < 8, done_before  # not behind the 20 chunks of the large request


def test_with_an_express_thread_a_small_request_does_not_wait_for_the_running_chunk():
    threads: dict[str, str] = {}

    def run_batch(jobs):
        time.sleep(0.3 if jobs[0].payload.startswith("big") else 0.01)
        for job in jobs:
            threads[job.payload] = threading.current_thread().name
        return [job.payload for job in jobs]

    async def scenario():
        batcher = make_batcher(run_batch, max_batch_size=2, express=True)
        batcher.start()
        large = asyncio.ensure_future(batcher.submit_chunks("k", chunks("big", 3), 30))
        await asyncio.sleep(0.05)  # a chunk of the large request is running
        t0 = time.perf_counter()
        small = await batcher.submit("k", "small", 1, 5, timeout=30)
        waited = time.perf_counter() - t0
        await large
        await batcher.stop()
        return small, waited

    small, waited = asyncio.run(scenario())
    assert small == "small" and waited < 0.2, waited
    assert "express" in threads["small"] and "express" not in threads["big0"]


def test_chunks_of_a_timed_out_or_cancelled_request_are_dropped_and_its_slot_freed():
    ran: list[str] = []

    def run_batch(jobs):
        time.sleep(0.05)
        ran.extend(job.payload for job in jobs)
        return [None for _ in jobs]

    async def scenario():
        batcher = make_batcher(run_batch, max_batch_size=2, max_queue_size=1)
        batcher.start()
        with pytest.raises(RequestTimeout):
            await batcher.submit_chunks("k", chunks("late", 40), timeout=0.1)
        await asyncio.sleep(0.2)
        after_timeout = len(ran)
        gone = asyncio.ensure_future(batcher.submit_chunks("k", chunks("gone", 40), 30))
        await asyncio.sleep(0.1)
        gone.cancel()  # what a disconnected client's handler does
        await asyncio.sleep(0.001)
        assert batcher.depth == 0  # its place is free at once: the next request is queued
        await batcher.submit("k", "next", 1, 5, timeout=30)
        await batcher.stop()
        return after_timeout

    after_timeout = asyncio.run(scenario())
    assert after_timeout < 80 and ran.count("next") == 1
    assert sum(p.startswith("late") for p in ran) < 40
    assert sum(p.startswith("gone") for p in ran) < 40


def test_the_queue_is_bounded_in_rows():
    async def scenario():
        batcher = make_batcher(lambda jobs: [None] * len(jobs), max_batch_size=4,
                               max_queue_size=100, max_queue_rows=10)
        # not started: what is queued stays queued
        first = asyncio.ensure_future(batcher.submit_chunks("k", chunks("a", 2, 4), 30))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="8 rows waiting; 4 more would pass "
                                             "--max-queue-rows 10"):
            await batcher.submit_chunks("k", chunks("b", 1, 4), 30)
        first.cancel()
        await asyncio.sleep(0.001)
        assert batcher.depth == 0

    asyncio.run(scenario())


def test_abort_answers_what_is_queued_with_503():
    ran: list[str] = []

    def run_batch(jobs):
        time.sleep(0.1)
        ran.extend(job.payload for job in jobs)
        return ["done" for _ in jobs]

    async def scenario():
        batcher = make_batcher(run_batch, max_batch_size=1)
        batcher.start()
        work = asyncio.ensure_future(batcher.submit_chunks("k", chunks("x", 50, 1), 30))
        await asyncio.sleep(0.05)  # the first chunk is running
        batcher.abort("shutting down")
        with pytest.raises(NotReady, match="shutting down"):
            await work
        with pytest.raises(NotReady):
            await batcher.submit("k", "late", 1, 1, timeout=1)
        await batcher.stop()

    asyncio.run(scenario())
    assert len(ran) <= 2  # the chunk running at the abort, and nothing after it


# -- a real server ------------------------------------------------------------------------------

LONG = "a rather long review of a film that goes on and on about the plot " * 4


@pytest.fixture(scope="module")
def bounded_server(exported):
    s = Server(f"m={exported}", "--max-batch-size", "4", "--max-inputs-per-request", "1000",
               "--max-queue-size", "4", "--threads", "1")
    yield s
    s.client.close()
    s.stop()


def predict_body(count: int, text: str = LONG) -> dict:
    return {"inputs": [f"{text} {i}" for i in range(count)]}


def test_too_many_inputs_get_413_naming_the_limit(bounded_server):
    response = bounded_server.client.post("/v1/models/m/predict", json=predict_body(1001, "x"))
    assert response.status_code == 413
    assert "1001 inputs" in response.json()["error"]
    assert "--max-inputs-per-request" in response.json()["error"]
    v2 = {"inputs": [{"name": "text", "shape": [1001], "datatype": "BYTES",
                      "data": ["x"] * 1001}]}
    assert bounded_server.client.post("/v2/models/m/infer", json=v2).status_code == 413


def test_a_one_row_request_is_answered_while_a_maximum_size_request_runs(bounded_server):
    client = bounded_server.client
    started = time.perf_counter()
    alone = [client.post("/v1/models/m/predict", json={"inputs": ["fine"]}) for _ in range(5)]
    unloaded = (time.perf_counter() - started) / 5
    assert all(r.status_code == 200 for r in alone)
    big: dict = {}

    def large() -> None:
        with httpx.Client(base_url=bounded_server.url, timeout=120) as other:
            t0 = time.perf_counter()
            big["response"] = other.post("/v1/models/m/predict", json=predict_body(1000))
            big["seconds"] = time.perf_counter() - t0

    thread = threading.Thread(target=large)
    thread.start()
    wait_until(lambda: 'nlpforge_requests_in_flight{model="m"} 1.0'
               in client.get("/metrics").text, 20, "the large request in flight")
    t0 = time.perf_counter()
    small = client.post("/v1/models/m/predict", json={"inputs": ["fine"]})
    loaded = time.perf_counter() - t0
    thread.join(120)
    assert small.status_code == 200 and big["response"].status_code == 200
    assert len(big["response"].json()["predictions"]) == 1000
    # not behind the 250 chunks of the large request: a turn away, not a request away
    assert loaded < big["seconds"] / 4, (loaded, big["seconds"], unloaded)


def raw_request(url: str, body: bytes, content_length: int | None = None) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    length = len(body) if content_length is None else content_length
    sock.sendall(b"POST /v1/models/m/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\nContent-Length: "
                 + str(length).encode() + b"\r\n\r\n" + body)
    return sock


def test_a_client_that_goes_away_frees_its_queue_slot(bounded_server):
    client = bounded_server.client
    body = json.dumps(predict_body(1000)).encode()
    sockets = [raw_request(bounded_server.url, body) for _ in range(4)]  # fills the queue
    time.sleep(0.3)
    for sock in sockets:
        sock.close()  # fire and forget
    wait_until(lambda: 'nlpforge_requests_in_flight{model="m"} 0.0' in client.get("/metrics").text,
               30, "the abandoned requests to be dropped")
    response = client.post("/v1/models/m/predict", json={"inputs": ["fine"]})
    assert response.status_code == 200, response.text
    metrics = client.get("/metrics").text
    assert 'code="499",model="m",route="predict"' in metrics


def test_an_aborted_upload_is_a_client_error_not_a_500(bounded_server):
    client = bounded_server.client
    before = client.get("/metrics").text.count('code="500"')
    sock = raw_request(bounded_server.url, b'{"inputs": ["fi', content_length=1000)
    time.sleep(0.2)
    sock.close()
    wait_until(lambda: 'nlpforge_requests_in_flight{model="m"} 0.0'
               in client.get("/metrics").text, 20, "the aborted upload to end")
    metrics = client.get("/metrics").text
    assert metrics.count('code="500"') == before
    assert 'code="499",model="m",route="predict"' in metrics


def test_sigterm_keeps_its_deadline_with_a_large_request_in_flight(exported):
    # 20000 inputs in batches of 2 take several seconds even on a fast CPU (2000 took under
    # the 1.5 s between "in flight" and the deadline on one), so the deadline, not the end of
    # the work, ends the request.
    server = Server(f"m={exported}", "--max-batch-size", "2", "--max-inputs-per-request",
                    "20000", "--max-queue-rows", "20000", "--max-request-bytes", "16000000",
                    "--shutdown-timeout-s", "1", "--threads", "1")
    result: dict = {}

    def large() -> None:
        with httpx.Client(base_url=server.url, timeout=120) as other:
            result["response"] = other.post("/v1/models/m/predict", json=predict_body(20000))

    thread = threading.Thread(target=large)
    thread.start()
    try:
        wait_until(lambda: 'nlpforge_requests_in_flight{model="m"} 1.0'
                   in server.client.get("/metrics").text, 20, "the large request in flight")
        time.sleep(0.2)
        sent = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # draining: still listening, not ready
        ready = server.client.get("/v2/health/ready")
        assert ready.status_code != 200 and ready.json() == {"ready": False}
        assert server.client.get("/v2/health/live").status_code == 200
        server.proc.wait(30)
        exited = time.monotonic() - sent
        thread.join(30)
    finally:
        server.client.close()
        server.stop()
    assert exited < 1 + 1.0, exited  # --shutdown-timeout-s + 1 s
    response = result["response"]
    assert response.status_code == 503 and "shutting down" in response.json()["error"]
    assert "Traceback" not in "".join(server.lines) and "CancelledError" not in "".join(
        server.lines)


def test_the_freed_memory_is_handed_back_when_the_queue_empties(monkeypatch):
    from nlpforge.serving import batcher as module

    calls: list[str] = []
    monkeypatch.setattr(module, "release_memory",
                        lambda: calls.append(threading.current_thread().name))

    async def scenario():
        batcher = make_batcher(lambda jobs: [None] * len(jobs), max_batch_size=2)
        batcher.start()
        await batcher.submit_chunks("k", chunks("x", 3), 30)
        await asyncio.sleep(0.05)
        await batcher.stop()

    asyncio.run(scenario())
    assert calls and all(name.startswith("nlpforge-m") for name in calls)  # the model thread
