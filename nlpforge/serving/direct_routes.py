"""DirectRoutes: the hot routes straight to their handlers, around FastAPI's router.

FastAPI finds a route by trying each in turn, then builds and solves the endpoint's
dependencies, on every request. The routes registered as direct (``routing.add_model_route(...,
direct=True)``: infer, predict) are taken from the routers the app includes — their path
regex and endpoint — so a request to one goes to the very endpoint FastAPI would call, and its
errors become the same ``{"error": ...}`` responses; every other request goes on to FastAPI,
which also documents the direct routes in the OpenAPI document.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nlpforge.serving.middleware import HttpMiddleware
from nlpforge.serving.routing import DIRECT

ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]


def direct_routes(routes: Sequence[Any]) -> list[Route]:
    """The routes registered as direct among ``routes`` (a router's, mounted without a
    prefix)."""
    return [r for r in routes if isinstance(r, Route) and r.name.startswith(f"{DIRECT}:")]


class DirectRoutes(HttpMiddleware):
    """``routes``: Starlette/FastAPI routes; a request matching one's path regex and method
    calls its endpoint with the path parameters as keywords."""

    def __init__(self, app: Any, routes: Sequence[Route], on_error: ErrorHandler):
        super().__init__(app)
        self.routes = [(route.path_regex, route.methods or set(), route.endpoint)
                       for route in routes]
        self.on_error = on_error

    async def handle(self, scope: dict, receive: Any, send: Any) -> None:
        for pattern, methods, endpoint in self.routes:
            match = pattern.match(scope["path"])
            if match and scope["method"] in methods:
                request = Request(scope, receive)
                try:
                    response = await endpoint(request, **match.groupdict())
                except Exception as exc:
                    response = await self.on_error(request, exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
