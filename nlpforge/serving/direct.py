"""The hot routes straight to their handlers, around FastAPI's router.

FastAPI finds a route by trying each in turn, then builds and solves the endpoint's
dependencies, on every request. A ``POST`` to a path matched here (infer, predict) goes to the very handler FastAPI would call,
and its errors become the same ``{"error": ...}`` responses; every other request, and every path
not matched exactly, goes on to FastAPI. The routes stay registered with FastAPI, which
documents them in the OpenAPI document.
"""

from __future__ import annotations

import re
from typing import Any, Awaitable, Callable, Sequence

from starlette.requests import Request
from starlette.responses import Response

from nlpforge.serving.middleware import HttpMiddleware

Handler = Callable[..., Awaitable[Response]]
ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]


class DirectRoutes(HttpMiddleware):
    """``routes``: (path regex with named groups, handler taking them as keywords)."""

    def __init__(self, app: Any, routes: Sequence[tuple[str, Handler]], on_error: ErrorHandler):
        super().__init__(app)
        self.routes = [(re.compile(pattern), handler) for pattern, handler in routes]
        self.on_error = on_error

    async def handle(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["method"] == "POST":
            for pattern, handler in self.routes:
                match = pattern.fullmatch(scope["path"])
                if match:
                    request = Request(scope, receive)
                    try:
                        response = await handler(request, **match.groupdict())
                    except Exception as exc:
                        response = await self.on_error(request, exc)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
