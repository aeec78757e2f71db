"""Optional bearer-token authentication (ASGI middleware)."""

from __future__ import annotations

import hmac
from typing import Any

from starlette.responses import JSONResponse

from nlpforge.serving.api_docs import ASSET_FILES, ASSETS
from nlpforge.serving.middleware import HttpMiddleware

#: Reachable without a token: probes and the API description (the docs page and its assets).
PUBLIC_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/docs", "/openapi.json",
                          *(f"{ASSETS}/{name}" for name in ASSET_FILES)})


class BearerAuth(HttpMiddleware):
    """Refuse requests without ``Authorization: Bearer <token>`` (401), except PUBLIC_PATHS."""

    def __init__(self, app: Any, token: str):
        super().__init__(app)
        self.token = token.encode("utf-8")

    async def handle(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["path"] in PUBLIC_PATHS or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        response = JSONResponse(
            {"error": "missing or wrong bearer token: send the header "
                      "'Authorization: Bearer TOKEN'"},
            status_code=401, headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)

    def _allowed(self, scope: dict) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                return scheme.lower() == b"bearer" and \
                    hmac.compare_digest(credentials.strip(), self.token)
        return False
