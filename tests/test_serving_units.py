"""The serving pieces without a server: v2 parsing and encoding, the batcher, model names."""

from __future__ import annotations

import asyncio
import json
import struct

import numpy as np
import pytest

from nlpforge.errors import UsageError
from nlpforge.serving.batcher import DynamicBatcher, Job
from nlpforge.serving.errors import BadRequest, Overloaded, RequestTimeout
from nlpforge.serving.prometheus import Metrics
from nlpforge.serving.served import parse_model_arg
from nlpforge.serving.protocol import Tensor, encode_infer_response, parse_infer_request


def body(*inputs, **extra) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def tensor(name="input_ids", shape=(1, 2), datatype="INT64", data=None, **extra) -> dict:
    return {"name": name, "shape": list(shape), "datatype": datatype,
            "data": [1, 2] if data is None else data, **extra}


def test_flat_and_nested_data_decode_alike():
    flat = parse_infer_request(body(tensor(shape=[2, 2], data=[1, 2, 3, 4])))
    nested = parse_infer_request(body(tensor(shape=[2, 2], data=[[1, 2], [3, 4]])))
    assert flat.inputs[0].data.tolist() == nested.inputs[0].data.tolist() == [[1, 2], [3, 4]]
    text = parse_infer_request(body(tensor("text", [2, 1], "BYTES", [["a"], ["b"]])), None)
    assert text.inputs[0].data == ["a", "b"]


@pytest.mark.parametrize("request_body, field", [
    (b"{not json", "not valid JSON"),
    (b"[]", "request body"),
    (json.dumps({"inputs": []}).encode(), "field 'inputs'"),
    (body({"name": "x", "shape": [1], "datatype": "INT64"}), "inputs[0].data"),
    (body(tensor(shape="2")), "inputs[0].shape"),
    (body(tensor(datatype="INT65")), "inputs[0].datatype"),
    (body(tensor(shape=[3])), "inputs[0].data"),
    (body(tensor(data=[[1], [2, 3]])), "inputs[0].data"),
    (body(tensor(data=["a", "b"])), "inputs[0].data"),
    (body(tensor(data=[1.5, 2])), "inputs[0].data"),
    (body(tensor(data=[2 ** 70, 1])), "inputs[0].data"),
    (body(tensor(shape=[-1, 2])), "inputs[0].shape"),
    (body(tensor("text", [1], "BYTES", [3])), "inputs[0].data[0]"),
    (body(tensor(), tensor()), "inputs[1].name"),
    (body(tensor(), parameters={"x": [1]}), "parameters.x"),
    (body(tensor(), outputs=[{"name": "y", "parameters": {"classification": 2}}]),
     "outputs[0].parameters.classification"),
    (body(tensor(), id=7), "field 'id'"),
])
def test_malformed_requests_name_the_field(request_body, field):
    with pytest.raises(BadRequest) as info:
        parse_infer_request(request_body)
    assert field in str(info.value)


def test_binary_tensor_extension_round_trip():
    ids = np.array([[5, 6, 7]], dtype=np.int64)
    texts = [b"caf\xc3\xa9", b"x"]
    raw_text = b"".join(struct.pack("<I", len(t)) + t for t in texts)
    head = json.dumps({"inputs": [
        {"name": "input_ids", "shape": [1, 3], "datatype": "INT64",
         "parameters": {"binary_data_size": ids.nbytes}},
        {"name": "text", "shape": [2], "datatype": "BYTES",
         "parameters": {"binary_data_size": len(raw_text)}}],
        "outputs": [{"name": "logits", "parameters": {"binary_data": True}}, {"name": "label"}],
    }).encode()
    parsed = parse_infer_request(head + ids.tobytes() + raw_text, str(len(head)))
    assert parsed.inputs[0].data.tolist() == [[5, 6, 7]]
    assert parsed.inputs[1].data == ["café", "x"]
    assert parsed.outputs == [("logits", True), ("label", False)]
    with pytest.raises(BadRequest, match="binary_data_size"):
        parse_infer_request(head + ids.tobytes(), str(len(head)))
    with pytest.raises(BadRequest, match="Inference-Header-Content-Length"):
        parse_infer_request(head, "many")

    logits = np.array([[0.5, -1.0]], dtype=np.float32)
    outputs = [(Tensor.from_array("logits", logits), True),
               (Tensor("label", "BYTES", (1,), ["positive"]), False)]
    data, headers = encode_infer_response("m", "1", "7", outputs)
    size = int(headers["Inference-Header-Content-Length"])
    response = json.loads(data[:size])
    assert response["id"] == "7" and response["outputs"][1]["data"] == ["positive"]
    assert response["outputs"][0]["parameters"]["binary_data_size"] == 8
    assert np.frombuffer(data[size:], dtype="<f4").tolist() == [0.5, -1.0]


def test_model_names_are_safe_path_segments():
    assert parse_model_arg("exports/sentiment/") == ("sentiment", __import__("pathlib").Path(
        "exports/sentiment/"))
    assert parse_model_arg("sst=exports/x")[0] == "sst"
    for bad in ("../x=exports/x", "a/b=exports/x", "..", "=exports/x", "x y=exports/x"):
        with pytest.raises(UsageError, match="model name"):
            parse_model_arg(bad)


def make_batcher(run_batch, **kwargs) -> DynamicBatcher:
    metrics = Metrics(["m"])
    return DynamicBatcher("m", run_batch, metrics.models["m"], **kwargs)


def test_batcher_groups_by_length_and_bounds_its_queue():
    seen: list[list[int]] = []

    def run_batch(jobs):
        seen.append([job.length for job in jobs])
        return [job.payload * 10 for job in jobs]

    async def scenario():
        batcher = make_batcher(run_batch, max_batch_size=2, max_queue_delay_ms=50,
                               max_queue_size=6)
        batcher.start()
        lengths = [9, 1, 8, 2, 7, 3]
        calls = [batcher.submit("k", i, 1, n, timeout=10) for i, n in enumerate(lengths)]
        results = await asyncio.gather(*calls, batcher.submit("k", 0, 1, 1, timeout=10),
                                       return_exceptions=True)
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert results[:6] == [0, 10, 20, 30, 40, 50]
    assert isinstance(results[6], Overloaded) and results[6].headers["Retry-After"]
    assert sorted(n for batch in seen for n in batch) == [1, 2, 3, 7, 8, 9]
    assert all(len(batch) <= 2 and batch == sorted(batch) for batch in seen)
    # grouped by length; the batch of the oldest request first (9 came first, then 1, ...)
    assert seen == [[8, 9], [1], [2, 3], [7]]


def test_batcher_splits_by_length_to_limit_padding():
    batcher = make_batcher(lambda jobs: [], max_batch_size=8)
    jobs = [Job("k", None, 1, n, None, 0.0) for n in (10, 11, 12, 13, 100, 101, 102, 103)]
    assert [[j.length for j in b] for b in batcher._group(jobs)] == [
        [10, 11, 12, 13], [100, 101, 102, 103]]  # not one batch padded to 103
    same = [Job("k", None, 1, 50, None, 0.0) for _ in range(8)]
    assert [len(b) for b in batcher._group(same)] == [8]  # equal lengths: one run


def test_batcher_times_out_and_isolates_failures():
    def run_batch(jobs):
        return [ValueError("bad row") if job.payload == "bad" else "ok" for job in jobs]

    async def scenario():
        batcher = make_batcher(run_batch, max_batch_size=8, max_queue_delay_ms=200)
        batcher.start()
        late = batcher.submit("k", "x", 1, 1, timeout=0.01)
        both = asyncio.gather(batcher.submit("k", "bad", 1, 1, timeout=10),
                              batcher.submit("k", "good", 1, 1, timeout=10),
                              return_exceptions=True)
        with pytest.raises(RequestTimeout):
            await late
        assert batcher.depth == 2  # the timed-out request gave its place back at once
        results = await both
        await batcher.stop()
        return results

    bad, good = asyncio.run(scenario())
    assert isinstance(bad, ValueError) and good == "ok"


def test_batcher_answers_a_request_that_timed_out_while_its_batch_ran():
    import time

    def run_batch(jobs):
        time.sleep(0.2)
        return ["done" for _ in jobs]

    async def scenario():
        loop_errors = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: loop_errors.append(ctx))
        batcher = make_batcher(run_batch, max_batch_size=8)
        batcher.start()
        with pytest.raises(RequestTimeout, match="within 0.05 s"):
            await batcher.submit("k", "x", 1, 1, timeout=0.05)
        after = await batcher.submit("k", "y", 1, 1, timeout=10)  # the thread is free again
        await batcher.stop()
        return after, loop_errors

    after, loop_errors = asyncio.run(scenario())
    assert after == "done" and loop_errors == []


def test_direct_routes_call_the_handler_and_leave_the_rest_to_the_app():
    from fastapi import APIRouter
    from starlette.responses import JSONResponse, PlainTextResponse

    from nlpforge.serving.direct_routes import DirectRoutes, direct_routes
    from nlpforge.serving.routing import add_model_route

    async def handler(request, name, version=None):
        if name == "broken":
            raise BadRequest("field 'inputs': broken")
        return JSONResponse({"name": name, "version": version, "body": (await request.body())
                             .decode()})

    async def on_error(request, exc):
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    async def fallback(scope, receive, send):
        await PlainTextResponse(f"app {scope['method']} {scope['path']}")(scope, receive, send)

    router = APIRouter()
    add_model_route(router, "/infer", "POST", handler, "model_infer", direct=True)
    add_model_route(router, "/ready", "GET", handler, "model_ready")
    assert [r.path for r in direct_routes(router.routes)] == [
        "/v2/models/{model_name}/infer", "/v2/models/{model_name}/versions/{model_version}/infer"]
    app = DirectRoutes(fallback, direct_routes(router.routes), on_error)

    def call(method, path, body=b"{}"):
        sent = []
        scope = {"type": "http", "method": method, "path": path, "headers": [],
                 "query_string": b""}

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            sent.append(message)

        asyncio.run(app(scope, receive, send))
        return sent[0]["status"], sent[1]["body"].decode()

    assert call("POST", "/v2/models/m/infer") == (
        200, '{"name":"m","version":null,"body":"{}"}')
    assert call("POST", "/v2/models/m/versions/1/infer", b"x") == (
        200, '{"name":"m","version":"1","body":"x"}')
    assert call("POST", "/v2/models/broken/infer") == (400, '{"error":"field \'inputs\': broken"}')
    for method, path in (("GET", "/v2/models/m/infer"), ("POST", "/v2/models/m/infer/"),
                         ("POST", "/v2/models/a/b/infer"), ("POST", "/v2/models/m")):
        assert call(method, path) == (200, f"app {method} {path}")


def test_request_labels_stay_bounded():
    from nlpforge.serving.middleware import classify

    models = {"m": object()}
    assert classify("/v2/models/m/infer", models) == ("m", "infer")
    assert classify("/v2/models/m/versions/1/ready", models) == ("m", "ready")
    assert classify("/v2/models/m", models) == ("m", "metadata")
    assert classify("/v1/models/m/predict", models) == ("m", "predict")
    assert classify("/v2/models/x/infer", models) == ("", "infer")  # unknown model: no label
    assert classify("/v2/models/m/made_up_route", models) == ("", "other")
    assert classify("/somewhere", models) == ("", "other")


def test_the_app_sends_infer_and_predict_straight_to_their_handlers():
    from nlpforge.serving.app import create_app
    from nlpforge.serving.direct_routes import DirectRoutes

    app = create_app([])
    (options,) = [o for m, o in app.outer_middleware if m is DirectRoutes]
    assert sorted(r.path for r in options["routes"]) == [
        "/v1/models/{model_name}/predict", "/v2/models/{model_name}/infer",
        "/v2/models/{model_name}/versions/{model_version}/infer"]


def test_a_refused_prompt_fails_only_its_own_generation_request():
    from nlpforge.serving.generating import GeneratorModel
    from nlpforge.serving.served import RowsJob

    class Generator:
        def predict(self, rows, checked):
            if any(not row["prompt"] for row in rows):
                raise UsageError("prompt 2 is empty: nothing to continue")
            return [{"generated_text": row["prompt"] + "!"} for row in rows]

    model = GeneratorModel.__new__(GeneratorModel)  # the batching logic only
    model.generator = Generator()
    jobs = [Job("k", RowsJob([{"prompt": p}], True, "inputs"), 1, 1, None, 0.0)
            for p in ("a", "", "b")]
    first, refused, last = model.run_batch(jobs)
    assert first == ([{"generated_text": "a!"}], {}) and last == ([{"generated_text": "b!"}], {})
    assert isinstance(refused, UsageError) and "empty" in str(refused)
