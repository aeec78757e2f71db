"""Serving imports no torch or transformers, loads nothing with pickle, and streams generations."""

from __future__ import annotations

import json
import textwrap
import threading

import httpx

from tests.conftest import wait_until
from tests.test_torch_free import run_python

NO_PICKLE = '''
    import pickle
    def refuse(*args, **kwargs):
        raise AssertionError("pickle used while loading or serving")
    pickle.load = pickle.loads = refuse
    pickle.Unpickler = refuse
'''


def test_the_server_runs_with_torch_unimportable_and_without_pickle(exported):
    result = run_python(textwrap.dedent(NO_PICKLE) + textwrap.dedent(f'''
        import json, sys, time
        import nlpforge.serving, nlpforge.cli.serve
        from nlpforge.cli.main import cli
        try:
            cli.main(args=["serve", "--help"], prog_name="nlpforge")
        except SystemExit:
            pass
        from fastapi.testclient import TestClient
        from nlpforge.serving import ServedModel, create_app
        app = create_app([ServedModel.load("m", {str(exported)!r})])
        with TestClient(app) as client:
            deadline = time.monotonic() + 60
            while client.get("/v2/health/ready").status_code != 200:
                assert time.monotonic() < deadline, "not ready within 60 s"
                time.sleep(0.02)
            body = {{"inputs": [{{"name": "text", "shape": [1], "datatype": "BYTES",
                                  "data": ["a fine film"]}}]}}
            response = client.post("/v2/models/m/infer", json=body)
            print("STATUS", response.status_code, response.json()["outputs"][0]["data"])
        heavy = [m for m in ("torch", "transformers", "optimum") if m in sys.modules]
        print("HEAVY", heavy)
    '''))
    assert result.returncode == 0, result.stderr
    assert "STATUS 200" in result.stdout and "HEAVY []" in result.stdout


class EchoGenerator:
    """Stands in for a generation model (the ``TextGenerator`` protocol): streams the prompt
    back word by word."""

    def check_parameters(self, parameters):
        pass

    def generate_stream(self, text_input, parameters):
        for word in text_input.split()[: parameters.get("max_tokens", 100)]:
            yield word + " "


def test_generation_routes_stream_server_sent_events(exported):
    import uvicorn

    from nlpforge.runtime.predictor import Predictor
    from nlpforge.serving import create_app
    from nlpforge.serving.predicting import PredictorModel

    model = PredictorModel("echo", Predictor.load(str(exported), threads=1))
    model.generator = EchoGenerator()
    app = create_app([model])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        def started() -> bool:
            assert thread.is_alive(), "uvicorn stopped before it started"
            return server.started

        wait_until(started, 60, "uvicorn to start")
        port = server.servers[0].sockets[0].getsockname()[1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            wait_until(lambda: client.get("/v2/health/ready").status_code == 200, 60,
                       "the app to be ready (/v2/health/ready)")
            body = {"text_input": "one two three four", "parameters": {"max_tokens": 3}}
            whole = client.post("/v2/models/echo/generate", json=body).json()
            assert whole == {"model_name": "echo", "model_version": "1",
                             "text_output": "one two three "}
            with client.stream("POST", "/v2/models/echo/generate_stream", json=body) as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                events = [json.loads(line[len("data: "):]) for line in stream.iter_lines()
                          if line.startswith("data: ")]
            assert [e["text_output"] for e in events] == ["one ", "two ", "three ", ""]
            assert [e["done"] for e in events] == [False, False, False, True]
            bad = client.post("/v2/models/echo/generate_stream", json={"text_input": 3})
            assert bad.status_code == 400 and "text_input" in bad.json()["error"]
    finally:
        server.should_exit = True
        thread.join(30)
