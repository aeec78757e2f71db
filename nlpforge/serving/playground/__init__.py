"""The playground: web pages of ``nlpforge serve`` to try each served model in a browser.

``GET /`` lists the served models; ``GET /models/{name}`` is a form for one model, shaped by its
task (bars per label, highlighted entities, the answer marked in its context, fill-mask
fillers, streamed generation, a similarity matrix of embeddings). The pages are static files
shipped in this package (``static/``: HTML, CSS, JavaScript; no build step, nothing from
another host) and hold no data: their script reads the model list and runs requests through the
server's public API (``GET /v1/models``, ``POST /v1/models/{name}/predict``,
``POST /v2/models/{name}/generate_stream``), with the bearer token when the server has one.
So with ``--token`` the pages load without it and ask for it once (kept in the tab's
sessionStorage); every API call still needs it.

Every page and asset carries a strict Content-Security-Policy (scripts, styles, images and
requests from this origin only; no inline script or style; no framing) and the usual
hardening headers; the API's own headers and CORS rules are unchanged.
"""

from __future__ import annotations

import html
from importlib import resources

from fastapi import APIRouter, Request, Response

from nlpforge.serving.served import NAME_PATTERN
from nlpforge.serving.state import ServerState

#: Where the static assets are served.
ASSETS = "/playground/assets"
#: The assets served, by name, with their media types.
ASSET_FILES = {"playground.js": "text/javascript; charset=utf-8",
               "playground.css": "text/css; charset=utf-8",
               "icon.svg": "image/svg+xml"}
PAGES = ("index.html", "model.html")

#: The pages' Content-Security-Policy: everything from this origin only, nothing inline.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
#: Headers of every playground response.
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


def static_file(name: str) -> bytes:
    """The bytes of ``static/NAME`` shipped in this package."""
    return (resources.files(__name__) / "static" / name).read_bytes()


def is_page(path: str) -> bool:
    """Whether ``path`` is one of the playground's pages or assets (served without a token:
    they hold no data)."""
    if path == "/" or path.startswith(ASSETS + "/") and path[len(ASSETS) + 1:] in ASSET_FILES:
        return True
    prefix, _, name = path.partition("/models/")
    return prefix == "" and NAME_PATTERN.fullmatch(name) is not None


def playground_routes(state: ServerState) -> APIRouter:
    """``GET /``, ``GET /models/{name}`` and the assets (none of them in the OpenAPI
    document)."""
    router = APIRouter(include_in_schema=False)
    pages = {name: static_file(name).decode("utf-8") for name in PAGES}
    assets = {name: static_file(name) for name in ASSET_FILES}

    def page(request: Request, name: str, status: int = 200) -> Response:
        root = html.escape(request.scope.get("root_path", "").rstrip("/"), quote=True)
        return Response(pages[name].replace("{{root}}", root), status_code=status,
                        media_type="text/html; charset=utf-8", headers=HEADERS)

    @router.get("/")
    async def index(request: Request) -> Response:
        return page(request, "index.html")

    @router.get("/models/{model_name}")
    async def model(request: Request, model_name: str) -> Response:
        # An unknown name gets the same page with 404: its script says which models exist.
        return page(request, "model.html", 200 if model_name in state.models else 404)

    @router.get(ASSETS + "/{name}")
    async def asset(name: str) -> Response:
        if name not in assets:
            return Response(f"no playground asset {name[:64]!r}", status_code=404,
                            media_type="text/plain; charset=utf-8", headers=HEADERS)
        return Response(assets[name], media_type=ASSET_FILES[name], headers=HEADERS)

    return router
