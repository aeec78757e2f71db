"""ASGI middleware: request metrics per model and route, and the request body size limit."""

from __future__ import annotations

import re
import time
from typing import Any

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
        try:
            await self.app(scope, receive, send_status)
        finally:
            if gauge is not None:
                gauge.dec()
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
