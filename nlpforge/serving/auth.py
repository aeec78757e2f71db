"""Optional bearer-token authentication (ASGI middleware)."""

from __future__ import annotations

import hmac
from typing import Any, Callable

from starlette.responses import JSONResponse

from nlpforge.serving.api_docs import ASSET_FILES, ASSETS
from nlpforge.serving.middleware import HttpMiddleware

#: Reachable without a token: probes and the API description (the docs page and its assets).
PUBLIC_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/docs", "/openapi.json",
                          *(f"{ASSETS}/{name}" for name in ASSET_FILES)})


class BearerAuth(HttpMiddleware):
    """Refuse requests without ``Authorization: Bearer <token>`` (401), except PUBLIC_PATHS
    and the paths ``public`` accepts (the playground's pages, which hold no data: their
    scripts call the API with the token)."""

    def __init__(self, app: Any, token: str, public: Callable[[str], bool] | None = None):
        super().__init__(app)
        self.token = token.encode("utf-8")
        self.public = public

    async def handle(self, scope: dict, receive: Any, send: Any) -> None:
        if self._public(scope) or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        response = JSONResponse(
            {"error": "missing or wrong bearer token: send the header "
                      "'Authorization: Bearer TOKEN'"},
            status_code=401, headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)

    def _public(self, scope: dict) -> bool:
        path = scope["path"]
        return path in PUBLIC_PATHS or self.public is not None and \
            scope["method"] in ("GET", "HEAD") and self.public(path)

    def _allowed(self, scope: dict) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                return scheme.lower() == b"bearer" and \
                    hmac.compare_digest(credentials.strip(), self.token)
        return False
