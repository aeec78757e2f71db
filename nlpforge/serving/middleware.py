"""ASGI middleware: request metrics per model and route, the request body size limit, where a
request is addressed (Host header, encoded slashes) and JSON bodies only."""

from __future__ import annotations

import ipaddress
import re
import time
from typing import Any, Iterable

from starlette.responses import JSONResponse

from nlpforge.serving.errors import PayloadTooLarge
from nlpforge.serving.prometheus import NO_MODEL, Metrics

_MODEL_PATH = re.compile(r"/v[12]/models/([^/]+)(?:/versions/[^/]+)?(?:/([a-z_]+))?/?")


#: Route labels of the per-model routes; any other path is "other" (a bounded label space).
MODEL_ROUTES = frozenset({"metadata", "ready", "infer", "predict", "generate", "generate_stream"})


def classify(path: str, models: Any) -> tuple[str, str]:
    """(model label, route label) of a request path; unknown names and routes get no label
    of their own, so no request can grow the metrics without bound."""
    match = _MODEL_PATH.fullmatch(path)
    if match:
        name, route = match.group(1), match.group(2) or "metadata"
        if route not in MODEL_ROUTES:
            return NO_MODEL, "other"
        return (name if name in models else NO_MODEL), route
    if path.startswith("/v2/health/"):
        return NO_MODEL, "health"
    return NO_MODEL, {"/metrics": "metrics", "/v2": "server", "/v1/models": "models"}.get(
        path, "other")


class HttpMiddleware:
    """Base of nlpforge's ASGI middleware: non-HTTP scopes (lifespan) pass straight through."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self.handle(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def handle(self, scope: dict, receive: Any, send: Any) -> None:
        raise NotImplementedError


class AnsweredErrors(HttpMiddleware):
    """Around FastAPI: an exception that its ServerErrorMiddleware has answered with a 500
    (through ``app.error_response``, which logs it) ends there. Starlette re-raises it for
    the server, and uvicorn would log the traceback again at error level and drop the
    connection."""

    async def handle(self, scope: dict, receive: Any, send: Any) -> None:
        answered = False

        async def watched(message: dict) -> None:
            nonlocal answered
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            if not answered:
                raise


class ObserveRequests(HttpMiddleware):
    """Count requests and failures by model, route and status; time them; track in-flight."""

    def __init__(self, app: Any, metrics: Metrics, models: Any):
        super().__init__(app)
        self.metrics = metrics
        self.models = models

    async def handle(self, scope: dict, receive: Any, send: Any) -> None:
        model, route = classify(scope["path"], self.models)
        status = 500
        started = time.perf_counter()

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        gauge = self.metrics.in_flight_of.get(model)
        if gauge is not None:
            gauge.inc()
            self.metrics.model_requests += 1
        try:
            await self.app(scope, receive, send_status)
        finally:
            if gauge is not None:
                gauge.dec()
                self.metrics.model_requests -= 1
            self.metrics.observe_request(model, route, status, time.perf_counter() - started)


class LimitBody(HttpMiddleware):
    """413 for request bodies over ``limit`` bytes, declared or streamed."""

    def __init__(self, app: Any, limit: int):
        super().__init__(app)
        self.limit = limit

    async def handle(self, scope: dict, receive: Any, send: Any) -> None:
        message = f"the request body is over the server's limit of {self.limit} bytes " \
                  f"(--max-request-bytes)"
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await JSONResponse({"error": message}, status_code=413)(scope, receive, send)
                return
        received = 0

        async def counted() -> dict:
            nonlocal received
            event = await receive()
            received += len(event.get("body", b""))
            if received > self.limit:
                raise PayloadTooLarge(message)
            return event

        await self.app(scope, counted, send)


def _refuse(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


#: Host names that reach a server bound to a loopback address from this machine.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    """Whether ``--host`` is a loopback address (or ``localhost``)."""
    if host_name(host) == "localhost":
        return True
    try:
        return ipaddress.ip_address(host_name(host)).is_loopback
    except ValueError:
        return False


def host_name(value: str) -> str:
    """The name part of a Host header value: ``[::1]:8000`` → ``::1``, ``Example.com.:80`` →
    ``example.com``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    name, colon, port = value.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        value = name
    return value.rstrip(".")


def allowed_hosts(host: str, names: Iterable[str] | None) -> frozenset[str] | None:
    """The Host names a server bound to ``host`` answers: ``names`` if given ('*': any), else
    on a loopback address the loopback names (a page whose DNS name points at 127.0.0.1 is
    refused: DNS rebinding), else any (None)."""
    if names is not None:
        names = [host_name(n) for n in names if n.strip()]
        return None if "*" in names else frozenset(names)
    if is_loopback(host):
        return LOOPBACK_NAMES | {host_name(host)}
    return None


class CheckTarget(HttpMiddleware):
    """Refuse a request addressed to another host — a Host header not in ``allowed`` (421) —
    and a path with an encoded '/' (``%2F``, 404): uvicorn decodes it before routing, so
    ``/v2/models/a%2Fversions%2F1/infer`` would reach ``/v2/models/a/versions/1/infer``."""

    def __init__(self, app: Any, allowed: frozenset[str] | None):
        super().__init__(app)
        self.allowed = allowed

    async def handle(self, scope: dict, receive: Any, send: Any) -> None:
        raw = scope.get("raw_path") or b""
        if b"%" in raw and b"%2f" in raw.lower():
            await _refuse(404, "an encoded '/' (%2F) in the path addresses no route: model "
                               "names and versions never contain '/'")(scope, receive, send)
            return
        if self.allowed is not None:
            for name, value in scope["headers"]:
                if name == b"host":
                    host = host_name(value.decode("latin-1"))
                    if host not in self.allowed:
                        await _refuse(421, f"this server does not answer for host "
                                           f"{host[:64]!r} (served: "
                                           f"{', '.join(sorted(self.allowed))}; "
                                           f"see --allowed-hosts)")(scope, receive, send)
                        return
                    break
        await self.app(scope, receive, send)


#: The request header of Triton's binary tensor extension; a browser page cannot send a
#: custom header to another origin without a CORS preflight, so such a request is no
#: cross-site form post.
BINARY_HEADER = b"inference-header-content-length"


class RequireJson(HttpMiddleware):
    """415 for a POST whose body is not declared JSON (``Content-Type: application/json``).
    A web page may post a form or ``text/plain`` to any site without asking; these are
    refused. Also served: Triton's binary extension (``Inference-Header-Content-Length``),
    and a request with no Content-Type and no ``Origin`` header, which no browser sends
    (``tritonclient`` sends no Content-Type)."""

    async def handle(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        content_type, from_page = None, False
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"origin":
                from_page = True
            elif name == BINARY_HEADER:
                await self.app(scope, receive, send)
                return
        if content_type is None and not from_page or content_type is not None and \
                content_type.partition(b";")[0].strip().lower() == b"application/json":
            await self.app(scope, receive, send)
            return
        got = "none" if content_type is None else repr(content_type.decode("latin-1")[:64])
        await _refuse(415, f"send the request body as JSON, with the header 'Content-Type: "
                           f"application/json' (got {got})")(scope, receive, send)
