"""nlpforge serve end to end: real servers on loopback, spoken to over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading

import httpx
import numpy as np
import pytest

from tests.conftest import run_cli, wait_until

TEXTS = ["what a lovely film", "the food was cold", "great acting", "a dull, long plot",
         "i loved the music", "nothing works"]


class Server:
    """``nlpforge serve`` in a subprocess on a free loopback port; stderr is collected."""

    def __init__(self, *args: str, env: dict | None = None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nlpforge", "serve", *args, "--port", "0"],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})
        self.lines: list[str] = []
        self.url: str | None = None
        self._url = threading.Event()  # set once the URL is printed, or stderr ends
        threading.Thread(target=self._read, daemon=True).start()
        if not self._url.wait(120) or self.url is None:
            self.stop()
            raise AssertionError("server did not start listening within 120 s:\n"
                                 + "".join(self.lines))
        self.client = httpx.Client(base_url=self.url, timeout=60)

        def ready() -> bool:
            assert self.proc.poll() is None, "server exited:\n" + "".join(self.lines)
            return self.client.get("/v2/health/ready").status_code == 200

        try:
            wait_until(ready, 120, "the server to be ready (/v2/health/ready)", interval=0.05)
        except BaseException:
            self.client.close()
            self.stop()
            raise

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            match = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
            if match and not self._url.is_set():
                self.url = match.group(1)
                self._url.set()
        self._url.set()  # the process has exited: stop waiting for a URL

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


@pytest.fixture(scope="module")
def server(exported):
    s = Server(f"sentiment={exported}", "--max-queue-delay-ms", "20",
               "--max-request-bytes", "20000", "--threads", "1")
    yield s
    s.client.close()
    s.stop()


@pytest.fixture(scope="module")
def predictor(exported):
    import nlpforge

    return nlpforge.load(str(exported), threads=1)


def v2_text(*texts: str, **extra) -> dict:
    return {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES",
                        "data": list(texts)}], **extra}


def outputs_by_name(response: httpx.Response) -> dict:
    return {o["name"]: o for o in response.json()["outputs"]}


# -- protocol ----------------------------------------------------------------------------------

def test_health_and_metadata_follow_the_protocol(server):
    c = server.client
    assert c.get("/v2/health/live").json() == {"live": True}
    assert c.get("/v2/health/ready").json() == {"ready": True}
    assert c.get("/v2").json()["name"] == "nlpforge"
    meta = c.get("/v2/models/sentiment").json()
    assert meta["name"] == "sentiment" and meta["versions"] == ["1"]
    assert {"name": "text", "datatype": "BYTES", "shape": [-1]} in meta["inputs"]
    assert {"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]} in meta["inputs"]
    assert {o["name"] for o in meta["outputs"]} >= {"label", "score", "logits"}
    assert c.get("/v2/models/sentiment/versions/1").json() == meta
    assert c.get("/v2/models/sentiment/ready").json() == {"name": "sentiment", "ready": True}
    assert c.get("/v2/models/sentiment/versions/1/ready").json() == {"name": "sentiment",
                                                                     "ready": True}
    for path in ("/v2/models/nope", "/v2/models/sentiment/versions/2",
                 "/v2/models/..%2F..%2Fetc/ready", "/v2/models/%2e%2e/ready", "/nowhere"):
        response = c.get(path)
        assert response.status_code == 404 and "error" in response.json(), path


def in_process_logits(predictor, rows: list[dict]) -> np.ndarray:
    return predictor.run(predictor.task.encode(rows, predictor.tokenizer))["logits"]


def test_v2_text_infer_matches_the_in_process_predictor(server, predictor):
    expected = predictor.predict(TEXTS)
    response = server.client.post("/v2/models/sentiment/infer", json=v2_text(*TEXTS, id="abc"))
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "abc" and response.json()["model_name"] == "sentiment"
    out = outputs_by_name(response)
    assert out["label"]["datatype"] == "BYTES" and out["label"]["shape"] == [len(TEXTS)]
    assert out["label"]["data"] == [p["label"] for p in expected]
    assert np.allclose(out["score"]["data"], [p["score"] for p in expected], atol=1e-5)
    assert out["logits"]["datatype"] == "FP32" and out["logits"]["shape"] == [len(TEXTS), 2]
    assert np.allclose(np.reshape(out["logits"]["data"], (len(TEXTS), 2)),
                       in_process_logits(predictor, [{"text": t} for t in TEXTS]), atol=1e-4)
    for got, want in zip(out["scores"]["data"], expected):
        got = json.loads(got)
        assert got.keys() == want["scores"].keys()
        assert np.allclose([got[k] for k in want["scores"]], list(want["scores"].values()),
                           atol=1e-5)

    nested = {"inputs": [{"name": "text", "shape": [2, 1], "datatype": "BYTES",
                          "data": [[TEXTS[0]], [TEXTS[1]]]}], "outputs": [{"name": "label"}]}
    response = server.client.post("/v2/models/sentiment/versions/1/infer", json=nested)
    assert [o["name"] for o in response.json()["outputs"]] == ["label"]
    assert response.json()["outputs"][0]["data"] == [p["label"] for p in expected[:2]]
    pair = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [TEXTS[0]]},
                       {"name": "text_pair", "shape": [1], "datatype": "BYTES",
                        "data": [TEXTS[1]]}]}
    response = server.client.post("/v2/models/sentiment/infer", json=pair)
    assert response.status_code == 200, response.text
    (want,) = predictor.predict([{"text": TEXTS[0], "text_pair": TEXTS[1]}])
    out = outputs_by_name(response)
    assert out["label"]["data"] == [want["label"]]
    assert abs(out["score"]["data"][0] - want["score"]) < 1e-5


def test_v2_token_ids_return_the_model_outputs(server, predictor):
    features = predictor.task.encode([{"text": t} for t in TEXTS], predictor.tokenizer)
    expected = predictor.run(features)["logits"]
    request = {"inputs": [{"name": n, "shape": list(a.shape), "datatype": "INT64",
                           "data": a.tolist()} for n, a in features.items()]}
    response = server.client.post("/v2/models/sentiment/infer", json=request)
    assert response.status_code == 200, response.text
    (logits,) = response.json()["outputs"]
    assert logits["name"] == "logits" and logits["shape"] == [len(TEXTS), 2]
    assert np.allclose(np.array(logits["data"]).reshape(len(TEXTS), 2), expected, atol=1e-4)
    only_ids = {"inputs": [request["inputs"][0]]}  # masks default to ones, type ids to zeros
    response = server.client.post("/v2/models/sentiment/infer", json=only_ids)
    assert response.status_code == 200, response.text
    ids = features["input_ids"]
    unmasked = predictor.run({"input_ids": ids, "attention_mask": np.ones_like(ids),
                              "token_type_ids": np.zeros_like(ids)})["logits"]
    (logits,) = response.json()["outputs"]
    assert np.allclose(np.reshape(logits["data"], (len(TEXTS), 2)), unmasked, atol=1e-4)
    # the padding is attended to now (same ONNX session, so any difference is the mask's)
    assert np.abs(unmasked - expected).max() > 1e-6


def test_a_triton_client_works_unchanged(server, predictor):
    import tritonclient.http as tritonclient

    client = tritonclient.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("sentiment")
    assert client.get_model_metadata("sentiment")["platform"] == "onnxruntime_onnx"
    text = tritonclient.InferInput("text", [2, 1], "BYTES")
    text.set_data_from_numpy(np.array([[TEXTS[0]], [TEXTS[1]]], dtype=object))  # binary data
    result = client.infer("sentiment", [text])  # binary outputs
    expected = predictor.predict(TEXTS[:2])
    assert [b.decode() for b in result.as_numpy("label")] == [p["label"] for p in expected]
    assert np.allclose(result.as_numpy("logits"),
                       in_process_logits(predictor, [{"text": t} for t in TEXTS[:2]]), atol=1e-4)
    ids = predictor.task.encode([{"text": TEXTS[0]}], predictor.tokenizer)["input_ids"]
    tokens = tritonclient.InferInput("input_ids", list(ids.shape), "INT64")
    tokens.set_data_from_numpy(ids, binary_data=False)
    wanted = tritonclient.InferRequestedOutput("logits", binary_data=False)
    result = client.infer("sentiment", [tokens], outputs=[wanted], request_id="9")
    assert result.get_response()["id"] == "9"
    assert np.allclose(result.as_numpy("logits"), in_process_logits(predictor, [{"text": TEXTS[0]}]),
                       atol=1e-4)
    client.close()


def test_v1_predict_is_what_nlpforge_predict_prints(server, predictor):
    inputs = [TEXTS[0], {"text": TEXTS[1], "text_pair": "cold"}]
    response = server.client.post("/v1/models/sentiment/predict", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    for got, want in zip(predictions, predictor.predict(inputs)):
        assert got["label"] == want["label"] and abs(got["score"] - want["score"]) < 1e-5
    listing = server.client.get("/v1/models").json()["models"]
    assert listing[0]["name"] == "sentiment" and listing[0]["labels"] == ["negative", "positive"]


# -- bad requests ------------------------------------------------------------------------------

LONG = "word " * 600


@pytest.mark.parametrize("path, payload, status, words", [
    ("/v2/models/sentiment/infer", b"{oops", 400, "not valid JSON"),
    ("/v2/models/sentiment/infer", {"inputs": "x"}, 400, "'inputs'"),
    ("/v2/models/sentiment/infer", {"inputs": [{"name": "text", "shape": [2],
                                                "datatype": "BYTES", "data": ["a"]}]},
     400, "inputs[0].data"),
    ("/v2/models/sentiment/infer", {"inputs": [{"name": "txt", "shape": [1],
                                                "datatype": "FP32", "data": [1.0]}]},
     400, "inputs[0].name"),
    ("/v2/models/sentiment/infer", {"inputs": [{"name": "text", "shape": [1],
                                                "datatype": "BYTES", "data": ["a"]},
                                               {"name": "input_ids", "shape": [1, 1],
                                                "datatype": "INT64", "data": [1]}]},
     400, "not both"),
    ("/v2/models/sentiment/infer", {"inputs": [{"name": "input_ids", "shape": [1, 2],
                                                "datatype": "INT64", "data": [1, 10 ** 9]}]},
     400, "inputs[0].data"),
    ("/v2/models/sentiment/infer", {"inputs": [{"name": "input_ids", "shape": [1, 3],
                                                "datatype": "FP32", "data": [1, 2, 3]}]},
     400, "inputs[0].datatype"),
    ("/v2/models/sentiment/infer", v2_text("a", outputs=[{"name": "nope"}]), 400,
     "outputs[0].name"),
    ("/v2/models/sentiment/infer", v2_text("a", parameters={"truncate": "no"}), 400,
     "parameters.truncate"),
    ("/v2/models/sentiment/infer", v2_text("a", "b", "c", LONG, parameters={"truncate": False}),
     422, "inputs[0].data[3]"),
    ("/v2/models/sentiment/infer", {"inputs": [{"name": "input_ids", "shape": [1, 600],
                                                "datatype": "INT64", "data": [1] * 600}]},
     422, "inputs[0].shape"),
    ("/v1/models/sentiment/predict", {"inputs": [LONG], "parameters": {"truncate": False}},
     422, "inputs[0]"),
    ("/v1/models/sentiment/predict", {"inputs": [{"txt": "a"}]}, 400, "inputs[0]"),
    ("/v1/models/sentiment/predict", {"inputs": [3]}, 400, "inputs[0]"),
    ("/v1/models/sentiment/predict", {}, 400, "'inputs'"),
    ("/v1/models/sentiment/predict", {"inputs": ["a"] * 5000}, 413, "--max-request-bytes"),
    ("/v2/models/sentiment/generate", {"text_input": "hi"}, 400, "does not generate"),
    ("/v2/models/nope/infer", v2_text("a"), 404, "unknown model"),
])
def test_every_bad_request_gets_its_status_and_names_the_field(server, path, payload, status,
                                                               words):
    content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    response = server.client.post(path, content=content,
                                  headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


def test_long_inputs_are_truncated_by_default(server, predictor):
    """The default answer is the one asked for with truncate=true, and the in-process
    Predictor's (which cuts to the model's token limit)."""
    default = server.client.post("/v1/models/sentiment/predict", json={"inputs": [LONG]})
    explicit = server.client.post("/v1/models/sentiment/predict",
                                  json={"inputs": [LONG], "parameters": {"truncate": True}})
    assert default.status_code == explicit.status_code == 200, default.text + explicit.text
    assert default.json() == explicit.json()
    (got,), (want,) = default.json()["predictions"], predictor.predict([LONG])
    assert got["label"] == want["label"] and abs(got["score"] - want["score"]) < 1e-5
    v2_default = server.client.post("/v2/models/sentiment/infer", json=v2_text(LONG))
    v2_explicit = server.client.post("/v2/models/sentiment/infer",
                                     json=v2_text(LONG, parameters={"truncate": True}))
    assert v2_default.status_code == 200, v2_default.text
    assert v2_default.json() == v2_explicit.json()
    assert outputs_by_name(v2_default)["label"]["data"] == [want["label"]]


# -- load ----------------------------------------------------------------------------------------

def test_concurrent_requests_are_batched_and_answered_in_order(server, predictor):
    texts = [f"{TEXTS[i % len(TEXTS)]} {'!' * (i % 7)}" for i in range(32)]
    expected = [p["label"] for p in predictor.predict(texts)]

    async def fire():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v2/models/sentiment/infer",
                                                      json=v2_text(t)) for t in texts))

    before = batch_counts(server)
    responses = asyncio.run(fire())
    assert [r.status_code for r in responses] == [200] * len(texts)
    assert [outputs_by_name(r)["label"]["data"][0] for r in responses] == expected
    runs, rows = (after - before for after, before in zip(batch_counts(server), before))
    assert rows == len(texts) and runs < len(texts)  # several requests shared a model run


def batch_counts(server) -> tuple[float, float]:
    text = server.client.get("/metrics").text
    count = re.search(r'nlpforge_batch_size_count\{model="sentiment"\} (\S+)', text)
    total = re.search(r'nlpforge_batch_size_sum\{model="sentiment"\} (\S+)', text)
    return float(count.group(1)), float(total.group(1))


def test_metrics_count_requests_by_model_and_code(server):
    server.client.post("/v2/models/sentiment/infer", json={"inputs": []})
    text = server.client.get("/metrics").text
    for family in ("nlpforge_requests_total", "nlpforge_request_failures_total",
                   "nlpforge_request_latency_seconds_bucket", "nlpforge_queue_time_seconds_bucket",
                   "nlpforge_batch_size_bucket", "nlpforge_queue_depth",
                   "nlpforge_requests_in_flight"):
        assert family in text, family
    assert re.search(r'nlpforge_requests_total\{code="200",model="sentiment",route="infer"\}',
                     text)
    assert re.search(r'nlpforge_request_failures_total\{code="400",model="sentiment",'
                     r'route="infer"\}', text)


def test_openapi_document_and_interactive_docs(server):
    schema = server.client.get("/openapi.json").json()
    assert "/v2/models/{model_name}/infer" in schema["paths"]
    assert "InferenceRequest" in schema["components"]["schemas"]
    assert "swagger" in server.client.get("/docs").text.lower()


def test_fuzzing_the_openapi_document_finds_no_server_error(server):
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    failures: list = []
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=8, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            def check(case):
                nonlocal calls
                calls += 1
                response = case.call(base_url=server.url, timeout=30)
                if response.status_code >= 500:
                    failures.append((case.method, case.formatted_path, response.status_code,
                                     response.text[:200]))

            try:
                check()
            except Unsatisfiable:  # nothing to make invalid (e.g. GET /v2 takes no input)
                assert mode is GenerationMode.NEGATIVE
    assert calls > 100 and not failures, failures
    assert server.client.get("/v2/health/ready").status_code == 200


# -- overload, timeouts, shutdown --------------------------------------------------------------

@pytest.fixture(scope="module")
def slow_server(exported):
    """Every batch waits a second to fill, and at most 3 requests may wait: easy to overload."""
    s = Server(f"slow={exported}", "--max-batch-size", "64", "--max-queue-delay-ms", "1000",
               "--max-queue-size", "3", "--threads", "1")
    yield s
    s.client.close()
    s.stop()


def fire_threads(url: str, n: int, payload: dict) -> list[httpx.Response]:
    results: list = [None] * n

    def one(i: int) -> None:
        with httpx.Client(timeout=60) as client:
            results[i] = client.post(url, json=payload)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_overload_answers_429_without_crashing_and_recovers(slow_server, predictor):
    url = f"{slow_server.url}/v2/models/slow/infer"
    responses = fire_threads(url, 10, v2_text("fine"))
    codes = sorted(r.status_code for r in responses)
    assert set(codes) == {200, 429} and codes.count(200) >= 3, codes
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["Retry-After"]) >= 1 and "--max-queue-size" in refused.json()["error"]
    assert slow_server.client.get("/v2/health/live").json() == {"live": True}
    again = slow_server.client.post("/v2/models/slow/infer", json=v2_text("again"))
    assert again.status_code == 200, again.text
    assert outputs_by_name(again)["label"]["data"] == [predictor.predict(["again"])[0]["label"]]


def test_a_request_past_its_timeout_gets_504(slow_server):
    payload = v2_text("slow", parameters={"timeout": 50_000})  # Triton's timeout, microseconds
    response = slow_server.client.post("/v2/models/slow/infer", json=payload)
    assert response.status_code == 504 and "within" in response.json()["error"]


def test_sigterm_finishes_requests_in_flight_then_exits(slow_server):
    url = f"{slow_server.url}/v2/models/slow/infer"
    results: list = []
    thread = threading.Thread(target=lambda: results.extend(fire_threads(url, 3, v2_text("x"))))
    thread.start()
    wait_until(lambda: 'nlpforge_requests_in_flight{model="slow"} 3.0' in
               slow_server.client.get("/metrics").text, 20, "3 requests in flight (/metrics)")
    slow_server.client.close()
    slow_server.proc.send_signal(signal.SIGTERM)
    thread.join(60)
    assert [r.status_code for r in results] == [200, 200, 200]
    assert slow_server.proc.wait(60) in (0, -signal.SIGTERM)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{slow_server.url}/v2/health/live")


# -- the command ---------------------------------------------------------------------------------

def test_serve_errors_are_one_line_and_exit_non_zero(tmp_path, exported):
    missing = run_cli("serve", str(tmp_path / "nothing"), "--port", "0")
    assert missing.returncode != 0 and missing.stderr.startswith("Error:")
    assert "Traceback" not in missing.stderr
    bad = run_cli("serve", str(exported), "--max-batch-size", "0")
    assert bad.returncode == 2 and "--max-batch-size" in bad.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = run_cli("serve", str(exported), "--port", str(taken.getsockname()[1]))
    assert busy.returncode == 2 and "in use" in busy.stderr and "Traceback" not in busy.stderr
    twice = run_cli("serve", str(exported), str(exported))
    assert twice.returncode == 2 and "NAME=DIR" in twice.stderr
    no_int8 = run_cli("serve", str(exported), "--variant", "int8", "--port", "0")
    assert no_int8.returncode != 0 and "no int8 variant" in no_int8.stderr
    assert "Traceback" not in no_int8.stderr


def test_bearer_token_guards_everything_but_probes_and_docs(exported, predictor):
    s = Server(f"m={exported}", "--threads", "1", env={"NLPFORGE_SERVE_TOKEN": "s3cret"})
    try:
        c = s.client
        assert c.get("/v2/health/ready").status_code == 200
        assert c.get("/openapi.json").json()["security"] == [{"bearer": []}]
        denied = c.post("/v1/models/m/predict", json={"inputs": ["a"]})
        assert denied.status_code == 401 and denied.headers["WWW-Authenticate"] == "Bearer"
        assert c.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
        allowed = c.post("/v1/models/m/predict", json={"inputs": ["a"]},
                         headers={"Authorization": "Bearer s3cret"})
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["predictions"][0]["label"] == predictor.predict(["a"])[0]["label"]
    finally:
        s.client.close()
        s.stop()
    assert all("s3cret" not in line for line in s.lines)
