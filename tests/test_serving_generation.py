"""nlpforge serve with generative exports: a GPT-2 (decoder) and a T5 (encoder-decoder) export
served by one real server on loopback, spoken to over HTTP. Greedy decoding is deterministic,
so every answer must be exactly what the in-process ``nlpforge.load(export)`` gives."""

from __future__ import annotations

import json

import pytest

from tests.conftest import GENERATION_PROMPTS, SEQ2SEQ_ROWS
from tests.test_serving import Server

#: Served model name → a prompt it is asked to continue.
PROMPTS = {"lm": GENERATION_PROMPTS[0], "t2t": SEQ2SEQ_ROWS[0]["source"]}
#: Greedy in both; the second set changes the search (beams, n-gram blocking).
SETTINGS = [{"max_tokens": 8}, {"max_new_tokens": 6, "num_beams": 2, "no_repeat_ngram_size": 2}]


@pytest.fixture(scope="module")
def server(gpt2_export, t5_export):
    s = Server(f"lm={gpt2_export[1]}", f"t2t={t5_export[1]}", "--threads", "1", "--device",
               "cpu")
    yield s
    s.client.close()
    s.stop()


@pytest.fixture(scope="module")
def generators(gpt2_export, t5_export):
    import nlpforge

    return {"lm": nlpforge.load(str(gpt2_export[1]), device="cpu", threads=1),
            "t2t": nlpforge.load(str(t5_export[1]), device="cpu", threads=1)}


def sse_events(response) -> list[dict]:
    return [json.loads(line[len("data: "):]) for line in response.iter_lines()
            if line.startswith("data: ")]


@pytest.mark.parametrize("settings", SETTINGS, ids=["greedy", "beams2"])
@pytest.mark.parametrize("name", ["lm", "t2t"])
def test_generate_returns_the_in_process_text(server, generators, name, settings):
    expected = generators[name].generate([PROMPTS[name]], **settings)[0]
    assert expected  # an empty text would prove little
    body = {"text_input": PROMPTS[name], "parameters": settings}
    response = server.client.post(f"/v2/models/{name}/generate", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"model_name": name, "model_version": "1",
                               "text_output": expected}


@pytest.mark.parametrize("settings", SETTINGS, ids=["greedy", "beams2"])
@pytest.mark.parametrize("name", ["lm", "t2t"])
def test_generate_stream_sends_the_in_process_pieces(server, generators, name, settings):
    generator = generators[name]
    expected = generator.generate([PROMPTS[name]], **settings)[0]
    pieces = list(generator.stream(PROMPTS[name], **settings))
    body = {"text_input": PROMPTS[name], "parameters": settings}
    with server.client.stream("POST", f"/v2/models/{name}/generate_stream",
                              json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert [e["text_output"] for e in events] == pieces + [""]
    assert "".join(e["text_output"] for e in events) == expected
    assert [e["done"] for e in events] == [False] * len(pieces) + [True]
    assert {(e["model_name"], e["model_version"]) for e in events} == {(name, "1")}
    if name == "lm" and settings.get("num_beams", 1) == 1:
        assert len(pieces) > 1  # greedy GPT-2 text comes word by word, not all at the end


@pytest.mark.parametrize("name, field", [("lm", "prompt"), ("t2t", "source")])
def test_v1_predict_and_v2_infer_return_generated_text(server, generators, name, field):
    prompts = [PROMPTS[name], GENERATION_PROMPTS[1]]
    expected = generators[name].predict(prompts)  # the export's generation defaults
    assert [set(p) for p in expected] == [{"generated_text"}] * 2 and expected[0]["generated_text"]
    response = server.client.post(f"/v1/models/{name}/predict", json={"inputs": prompts})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == expected

    request = {"inputs": [{"name": field, "datatype": "BYTES", "shape": [2], "data": prompts}]}
    response = server.client.post(f"/v2/models/{name}/infer", json=request)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["name"] == "generated_text" and output["datatype"] == "BYTES"
    assert output["shape"] == [2] and output["data"] == [p["generated_text"] for p in expected]

    meta = server.client.get(f"/v2/models/{name}").json()
    assert meta["inputs"] == [{"name": field, "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "generated_text", "datatype": "BYTES", "shape": [-1]}]


@pytest.mark.parametrize("route", ["generate", "generate_stream"])
@pytest.mark.parametrize("body, words", [
    ({"text_input": "hi", "parameters": {"temperature": -1}}, "temperature must be > 0"),
    ({"text_input": "hi", "parameters": {"max_tokens": 0}}, "max_new_tokens must be"),
    ({"text_input": "hi", "parameters": {"temprature": 1.0}},
     "unknown generation parameter 'temprature'"),
    ({"text_input": "hi", "parameters": {"num_beams": 2, "num_return_sequences": 3}},
     "must not exceed"),
    ({"text_input": 3}, "text_input"),
])
def test_a_bad_request_gets_400_with_a_json_error(server, route, body, words):
    response = server.client.post(f"/v2/models/lm/{route}", json=body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    assert words in response.json()["error"]
