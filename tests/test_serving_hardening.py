"""nlpforge serve against hostile clients: request heads, slow clients, connection limits,
cross-site requests and DNS rebinding, bounded shapes and messages, option values, the docs
page offline, and 500s logged with their cause. Real servers on loopback; raw sockets where a
client must misbehave; every wait has a deadline."""

from __future__ import annotations

import json
import logging
import os
import re
import select
import socket
import struct
import time

import httpx
import pytest
from click.testing import CliRunner

from nlpforge.cli.main import cli
from nlpforge.serving.protocol import MAX_MESSAGE, field_path
from tests.conftest import wait_until
from tests.test_serving import Server

HEADER_TIMEOUT_S = BODY_TIMEOUT_S = 1.0
MAX_HEADER_BYTES = 8192
MAX_HEADERS = 40
LIMIT_CONCURRENCY = 8


@pytest.fixture(scope="module")
def server(exported):
    s = Server(f"m={exported}", "--threads", "1",
               "--header-timeout-s", str(HEADER_TIMEOUT_S),
               "--body-timeout-s", str(BODY_TIMEOUT_S),
               "--max-header-bytes", str(MAX_HEADER_BYTES), "--max-headers", str(MAX_HEADERS),
               "--limit-concurrency", str(LIMIT_CONCURRENCY))
    yield s
    s.client.close()
    s.stop()


# -- raw HTTP ------------------------------------------------------------------------------------

def address(server: Server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def connect(server: Server) -> socket.socket:
    return socket.create_connection(address(server), timeout=5)


def send_all(sock: socket.socket, data: bytes) -> int:
    """Send ``data`` in pieces; how much went out before the server closed the connection."""
    sent = 0
    try:
        while sent < len(data):
            sent += sock.send(data[sent:sent + 65536])
    except OSError:  # reset or broken pipe: the server has answered and closed
        pass
    return sent


def read_response(sock: socket.socket, timeout: float) -> tuple[int | None, dict, bytes]:
    """(status, headers, body) of one response; status None when the server closed the
    connection without one."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no complete response within {timeout:g} s (got {data[:200]!r})"
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            break
        data += chunk
        head, found, body = data.partition(b"\r\n\r\n")
        if found:
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            if length and len(body) >= int(length.group(1)):
                break
    if not data:
        return None, {}, b""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def request_head(path: str = "/v2/health/live", method: str = "GET",
                 host: str = "127.0.0.1", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode("latin-1")


def assert_healthy(server: Server) -> None:
    assert server.client.get("/v2/health/live").json() == {"live": True}


# -- 5: request heads, slow clients, connections ------------------------------------------------

def test_an_oversized_request_head_gets_431_before_it_is_read_whole(server):
    with connect(server) as sock:  # one 1 MB header
        sent = send_all(sock, b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
                        + b"a" * 1_000_000 + b"\r\n\r\n")
        status, headers, body = read_response(sock, 10)
    assert status == 431 and headers["content-type"] == "application/json", (status, body)
    assert "--max-header-bytes" in json.loads(body)["error"]
    with connect(server) as sock:  # a header that never ends: cut off, not buffered
        sent = send_all(sock, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Endless: "
                        + b"a" * 50_000_000)
        status, _, _ = read_response(sock, 10)
    assert status == 431 and sent < 50_000_000
    assert_healthy(server)


def test_too_many_header_fields_get_431(server):
    many = "".join(f"X-{i}: {i}\r\n" for i in range(MAX_HEADERS + 1))
    with connect(server) as sock:
        send_all(sock, request_head(extra=many))
        status, headers, body = read_response(sock, 10)
    assert status == 431 and "--max-headers" in json.loads(body)["error"], body
    with connect(server) as sock:  # 5,000 headers: over both limits, refused all the same
        send_all(sock, request_head(extra="".join(f"X-{i}: 1\r\n" for i in range(5000))))
        status, _, _ = read_response(sock, 10)
    assert status == 431
    few = "".join(f"X-{i}: {i}\r\n" for i in range(MAX_HEADERS - 2))  # Host is one more
    with connect(server) as sock:
        send_all(sock, request_head(extra=few))
        status, _, body = read_response(sock, 10)
    assert status == 200 and json.loads(body) == {"live": True}


def test_a_head_that_does_not_arrive_in_time_gets_408(server):
    with connect(server) as sock:  # half a head, then nothing
        started = time.monotonic()
        send_all(sock, b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Wait: ")
        status, headers, body = read_response(sock, HEADER_TIMEOUT_S + 10)
        waited = time.monotonic() - started
    assert status == 408 and "--header-timeout-s" in json.loads(body)["error"], body
    assert HEADER_TIMEOUT_S * 0.5 < waited < HEADER_TIMEOUT_S + 5
    with connect(server) as sock:  # nothing at all: closed without an answer
        status, _, _ = read_response(sock, HEADER_TIMEOUT_S + 10)
    assert status is None


def test_a_client_sending_a_byte_at_a_time_is_cut_off(server):
    with connect(server) as sock:
        started = time.monotonic()
        send_all(sock, b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        while time.monotonic() - started < HEADER_TIMEOUT_S + 10:
            if select.select([sock], [], [], 0.2)[0]:  # the server has answered
                break
            if send_all(sock, b"a") == 0:
                break
        status, _, body = read_response(sock, 10)
        waited = time.monotonic() - started
    assert status == 408 and waited < HEADER_TIMEOUT_S + 5, (status, waited)
    assert_healthy(server)


def test_a_body_that_does_not_arrive_in_time_gets_408(server):
    with connect(server) as sock:
        started = time.monotonic()
        send_all(sock, request_head("/v1/models/m/predict", "POST", extra=(
            "Content-Type: application/json\r\nContent-Length: 100\r\n")) + b'{"inputs": ')
        status, _, body = read_response(sock, BODY_TIMEOUT_S + 10)
        waited = time.monotonic() - started
    assert status == 408 and "--body-timeout-s" in json.loads(body)["error"], body
    assert waited < BODY_TIMEOUT_S + 5
    assert_healthy(server)


def test_connections_over_the_limit_get_503_and_the_server_recovers(server):
    idle = [connect(server) for _ in range(LIMIT_CONCURRENCY)]
    try:
        with connect(server) as sock:
            send_all(sock, request_head())
            status, headers, body = read_response(sock, 10)
        assert status == 503 and headers["retry-after"] == "1", (status, body)
        assert "--limit-concurrency" in json.loads(body)["error"]
    finally:
        for sock in idle:
            sock.close()

    def answers() -> bool:
        with connect(server) as sock:
            send_all(sock, request_head())
            return read_response(sock, 10)[0] == 200

    wait_until(answers, 10, "a request to be served again after the idle connections closed")


# -- 7: cross-site requests and DNS rebinding ---------------------------------------------------

def binary_infer_body(text: str) -> tuple[bytes, int]:
    raw = text.encode()
    header = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": 4 + len(raw)}}],
                         "outputs": [{"name": "label"}]}).encode()
    return header + struct.pack("<I", len(raw)) + raw, len(header)


@pytest.mark.parametrize("headers, status", [
    ({"Content-Type": "text/plain"}, 415),
    ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
    ({"Content-Type": "multipart/form-data; boundary=x"}, 415),
    ({"Origin": "https://evil.example"}, 415),  # a page's fetch of a Blob: no Content-Type
    ({"Content-Type": "application/json; charset=utf-8"}, 200),
    ({"Content-Type": "Application/JSON"}, 200),
    ({}, 200),  # no Content-Type and no Origin: not a browser (tritonclient sends none)
])
def test_json_routes_take_json_only(server, headers, status):
    body = json.dumps({"inputs": ["what a lovely film"]}).encode()
    response = server.client.post("/v1/models/m/predict", content=body, headers=headers)
    assert response.status_code == status, response.text
    if status == 415:
        assert "Content-Type: application/json" in response.json()["error"]
        assert response.headers["content-type"] == "application/json"
    else:
        assert len(response.json()["predictions"]) == 1


def test_the_binary_extension_is_served_without_a_json_content_type(server):
    body, header_length = binary_infer_body("what a lovely film")
    for content_type in ("application/octet-stream", None):
        headers = {"Inference-Header-Content-Length": str(header_length)}
        if content_type:
            headers["Content-Type"] = content_type
        response = server.client.post("/v2/models/m/infer", content=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["name"] == "label"


@pytest.mark.parametrize("host, status", [
    ("evil.example", 421), ("evil.example:{port}", 421), ("127.0.0.1.evil.example", 421),
    ("127.0.0.1:{port}", 200), ("localhost:{port}", 200), ("LOCALHOST.", 200),
    ("[::1]:{port}", 200),
])
def test_a_loopback_server_refuses_foreign_host_headers(server, host, status):
    host = host.format(port=address(server)[1])
    response = server.client.get("/v2/models/m", headers={"Host": host})
    assert response.status_code == status, response.text
    if status == 421:
        assert "--allowed-hosts" in response.json()["error"]
    for path in ("/v2/health/ready", "/docs"):  # probes and docs are checked alike
        assert server.client.get(path, headers={"Host": host}).status_code == status


def test_no_cors_headers_unless_asked_for(server):
    preflight = server.client.options("/v1/models/m/predict", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code >= 400
    simple = server.client.get("/v2/models/m", headers={"Origin": "https://evil.example"})
    assert simple.status_code == 200
    for response in (preflight, simple):
        assert not any(k.lower().startswith("access-control-") for k in response.headers)


@pytest.fixture(scope="module")
def guarded(exported):
    """A token, one CORS origin, and an allowed-hosts list."""
    s = Server(f"m={exported}", "--threads", "1", "--cors-origin", "https://app.example",
               "--allowed-hosts", "api.internal,127.0.0.1",
               env={"NLPFORGE_SERVE_TOKEN": "s3cret"})
    yield s
    s.client.close()
    s.stop()


def test_cors_for_the_given_origin_only_preflight_included(guarded):
    c = guarded.client
    asks = {"Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"}
    preflight = c.options("/v1/models/m/predict", headers={"Origin": "https://app.example",
                                                           **asks})
    assert preflight.status_code == 200, preflight.text  # answered before the token check
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    other = c.options("/v1/models/m/predict", headers={"Origin": "https://evil.example", **asks})
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers
    page = {"Origin": "https://app.example", "Authorization": "Bearer s3cret"}
    response = c.post("/v1/models/m/predict", json={"inputs": ["fine"]}, headers=page)
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    denied = c.post("/v1/models/m/predict", json={"inputs": ["fine"]},
                    headers={"Origin": "https://app.example"})
    assert denied.status_code == 401  # and the page may read why
    assert denied.headers["access-control-allow-origin"] == "https://app.example"


def test_allowed_hosts_replace_the_loopback_names(guarded):
    token = {"Authorization": "Bearer s3cret"}
    assert guarded.client.get("/v2", headers={"Host": "api.internal:80", **token}
                              ).status_code == 200
    refused = guarded.client.get("/v2", headers={"Host": "localhost", **token})
    assert refused.status_code == 421
    assert refused.json()["error"].endswith("(served: 127.0.0.1, api.internal; see "
                                            "--allowed-hosts)")


# -- 8: shapes, messages, encoded slashes, options, docs, 500s -----------------------------------

@pytest.mark.parametrize("shape, datatype", [
    ([0, 2 ** 62], "INT64"), ([0, 2 ** 62], "BYTES"), ([2 ** 31, 0, 2 ** 31], "INT64"),
    ([1] * 9, "INT64"), ([0] * 100_000, "BYTES"),
])
def test_every_dimension_is_bounded(server, shape, datatype):
    request = {"inputs": [{"name": "input_ids", "shape": shape, "datatype": datatype,
                           "data": []}]}
    response = server.client.post("/v2/models/m/infer", json=request)
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith("field 'inputs[0].shape'")


def test_error_messages_clip_what_the_client_sent(server):
    long = "x" * 100_000
    text = {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}
    for request, where in (
        ({"inputs": [dict(text, datatype=long)]}, "inputs[0].datatype"),
        ({"inputs": [dict(text, name=long), dict(text, name=long)]}, "inputs[1].name"),
        ({"inputs": [text], "parameters": {long: [1]}}, "parameters.xxx"),
        ({"inputs": [dict(text, parameters={"binary_data_size": long})]}, "binary_data_size"),
        ({"inputs": [text], "parameters": {"truncate": long}}, "parameters.truncate"),
        ({"inputs": [dict(text, name=long, datatype="INT64", data=[1])]}, "inputs[0].name"),
    ):
        response = server.client.post("/v2/models/m/infer", json=request)
        assert response.status_code == 400, response.text[:300]
        message = response.json()["error"]
        assert where in message and len(message) < MAX_MESSAGE + 100, message[:300]
    response = server.client.get(f"/v2/models/{'n' * 4000}")
    assert response.status_code == 404 and len(response.json()["error"]) < 300
    assert len(field_path(("parameters", long, 0))) < 100


def test_an_encoded_slash_addresses_no_route(server):
    assert server.client.get("/v2/models/m/versions/1/ready").status_code == 200
    for method, path in (("GET", "/v2/models/m%2Fversions%2F1/ready"),
                         ("GET", "/v2/models/m%2fversions%2f1"),
                         ("POST", "/v2/models/m%2Fversions%2F1/infer")):
        with connect(server) as sock:  # raw: no client library re-encodes the path
            send_all(sock, request_head(path, method, extra="Content-Length: 0\r\n"))
            status, _, body = read_response(sock, 10)
        assert status == 404 and "%2F" in json.loads(body)["error"], (path, body)


FLOAT_OPTIONS = ("--max-queue-delay-ms", "--request-timeout-s", "--shutdown-timeout-s",
                 "--header-timeout-s", "--body-timeout-s")


@pytest.mark.parametrize("option, value", [
    *((o, v) for o in FLOAT_OPTIONS for v in ("nan", "inf", "-1")),
    ("--request-timeout-s", "0"), ("--shutdown-timeout-s", "0"), ("--max-queue-delay-ms", "1e9"),
    ("--port", "65536"), ("--port", "-1"), ("--max-batch-size", "0"), ("--max-queue-size", "0"),
    ("--max-request-bytes", "0"), ("--threads", "0"), ("--max-header-bytes", "100"),
    ("--max-headers", "0"), ("--limit-concurrency", "0"),
])
def test_every_numeric_option_is_checked(tmp_path, option, value):
    result = CliRunner().invoke(cli, ["serve", str(tmp_path / "none"), option, value])
    assert result.exit_code == 2, result.output
    assert option in result.output and "Traceback" not in result.output


def test_the_docs_page_loads_nothing_from_other_hosts(guarded):
    c = guarded.client  # a token server: the page and its assets stay public
    page = c.get("/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text) + re.findall(r"url: '([^']+)'",
                                                                           page.text)
    assert len(urls) == 4 and all(u.startswith("/") for u in urls), urls
    assert '"validatorUrl": null' in page.text  # no online validator either
    for url, kind in (("/docs/assets/swagger-ui-bundle.js", "javascript"),
                      ("/docs/assets/swagger-ui.css", "text/css"),
                      ("/docs/assets/favicon-32x32.png", "image/png")):
        assert url in urls
        asset = c.get(url)
        assert asset.status_code == 200 and kind in asset.headers["content-type"], url
        assert len(asset.content) > 100
    assert "SwaggerUIBundle" in c.get("/docs/assets/swagger-ui-bundle.js").text
    assert c.get("/docs/assets/nothing.js").status_code == 401  # only the assets are public
    missing = c.get("/docs/assets/nothing.js", headers={"Authorization": "Bearer s3cret"})
    assert missing.status_code == 404 and "error" in missing.json()


FAULT = """import nlpforge.serving.predicting as predicting, nlpforge.serving.v1 as v1

def metadata(self):
    raise ZeroDivisionError("metadata broke on purpose")

def check_parameters(parameters, where):
    raise KeyError("predict broke on purpose")

predicting.PredictorModel.metadata = metadata
v1.check_parameters = check_parameters
"""


def test_a_500_is_logged_with_its_cause(exported, tmp_path):
    """Without -v: the exception's type and message, on a FastAPI route and a direct one
    (the model's code is made to fail by a sitecustomize module)."""
    (tmp_path / "sitecustomize.py").write_text(FAULT)
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    s = Server(f"m={exported}", "--threads", "1", env={"PYTHONPATH": path})
    try:
        assert s.client.get("/v2/models/m").status_code == 500
        response = s.client.post("/v1/models/m/predict", json={"inputs": ["a"]})
        assert response.status_code == 500
        assert response.json() == {"error": "internal error: KeyError"}
        wait_until(lambda: sum("internal error on" in line for line in s.lines) >= 2, 10,
                   "both 500s in the log")
    finally:
        s.client.close()
        s.stop()
    log = "".join(s.lines)
    assert "error: internal error on GET /v2/models/m: ZeroDivisionError: metadata broke " \
           "on purpose" in log, log
    assert "error: internal error on POST /v1/models/m/predict: KeyError: 'predict broke on " \
           "purpose'" in log, log
    assert "Traceback" not in log  # that is for -v (debug level)


def test_the_traceback_of_a_500_is_logged_at_debug(caplog):
    from starlette.requests import Request

    from nlpforge.serving.app import log_internal_error

    request = Request({"type": "http", "method": "POST", "path": "/v2/models/m/infer",
                       "headers": [], "query_string": b""})
    exc = ValueError("x" * 10_000)
    try:
        raise exc
    except ValueError:
        with caplog.at_level(logging.DEBUG, logger="nlpforge.serving"):
            log_internal_error(request, exc)
    error, debug = caplog.records
    assert error.levelno == logging.ERROR and not error.exc_info
    assert error.getMessage().startswith("internal error on POST /v2/models/m/infer: "
                                         "ValueError: xxx")
    assert len(error.getMessage()) < 700  # the message is clipped too
    assert debug.levelno == logging.DEBUG and debug.exc_info[1] is exc
