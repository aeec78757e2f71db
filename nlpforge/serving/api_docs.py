"""The interactive API docs (``GET /docs``): Swagger UI served by the server itself.

FastAPI's own page loads Swagger UI from a CDN, so it is blank without a network. This one
loads the copy that the ``fastapi-swagger`` package ships (in the ``serve`` extra) from
``/docs/assets/``, and asks nothing of any other host (no online validator). Without that
package the page falls back to FastAPI's CDN copy.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse

#: Where the assets are served.
ASSETS = "/docs/assets"
#: The asset files served, by name.
ASSET_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")


def assets_dir() -> Path | None:
    """The directory holding Swagger UI's files, or None without ``fastapi-swagger``."""
    try:
        folder = Path(str(resources.files("fastapi_swagger") / "resources"))
    except ModuleNotFoundError:
        return None
    return folder if all((folder / name).is_file() for name in ASSET_FILES) else None


def docs_routes(app: FastAPI) -> APIRouter:
    """``GET /docs`` and its assets (none of them in the OpenAPI document)."""
    router = APIRouter(include_in_schema=False)
    folder = assets_dir()

    @router.get("/docs")
    async def docs(request: Request) -> Response:
        root = request.scope.get("root_path", "").rstrip("/")
        local = {} if folder is None else {
            "swagger_js_url": f"{root}{ASSETS}/swagger-ui-bundle.js",
            "swagger_css_url": f"{root}{ASSETS}/swagger-ui.css",
            "swagger_favicon_url": f"{root}{ASSETS}/favicon-32x32.png"}
        return get_swagger_ui_html(openapi_url=f"{root}{app.openapi_url}",
                                   title=f"{app.title} - API docs",
                                   swagger_ui_parameters={"validatorUrl": None}, **local)

    @router.get(ASSETS + "/{name}")
    async def asset(name: str) -> Response:
        if folder is None or name not in ASSET_FILES:
            return JSONResponse({"error": f"no docs asset {name[:64]!r}"}, status_code=404)
        return FileResponse(folder / name, headers={"Cache-Control": "public, max-age=86400"})

    return router
