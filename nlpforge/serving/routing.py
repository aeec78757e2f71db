"""What the route modules share: error responses for the OpenAPI document, hand-read JSON
bodies, and model routes registered with and without a version segment."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Awaitable, Callable, TypeVar

from fastapi import APIRouter, Request, Response

from nlpforge.serving.errors import ClientGone
from nlpforge.serving.protocol import ErrorResponse

T = TypeVar("T")

TAG = "Open Inference Protocol (v2)"
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text} for code, text in (
        (400, "malformed request; the message names the field"), (404, "unknown model"),
        (413, "request body over --max-request-bytes"), (422, "input over the token limit"),
        (429, "queue full; retry after Retry-After seconds"), (503, "warming up"),
        (504, "not answered within the request timeout"))
}
#: Routes whose requests go straight to their handler (``DirectRoutes``), by route name.
DIRECT = "direct"

ModelHandler = Callable[[Request, str, "str | None"], Awaitable[Response]]


def json_body(model: type) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON request body read by hand (see ``app.openapi``)."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def add_model_route(router: APIRouter, suffix: str, method: str, handler: ModelHandler,
                    name: str, direct: bool = False, **kwargs: Any) -> None:
    """Register ``handler`` at /v2/models/{model_name}[/versions/{model_version}]{suffix}.
    ``direct``: a hot route that ``DirectRoutes`` dispatches without FastAPI's routing."""

    async def unversioned(request: Request, model_name: str) -> Response:
        return await handler(request, model_name, None)

    async def versioned(request: Request, model_name: str, model_version: str) -> Response:
        return await handler(request, model_name, model_version)

    for path, endpoint, operation in (
        (f"/v2/models/{{model_name}}{suffix}", unversioned, name),
        (f"/v2/models/{{model_name}}/versions/{{model_version}}{suffix}", versioned,
         f"{name}_version"),
    ):
        router.add_api_route(path, endpoint, methods=[method], operation_id=operation,
                             name=f"{DIRECT}:{operation}" if direct else operation,
                             tags=[TAG], **kwargs)


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result, or ClientGone when the client closes the connection first: ``work``
    is then cancelled, which gives its queue slot back and drops its chunks not run yet. Call
    it after the request body has been read."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        raise ClientGone("the client closed the connection before the answer")
    return task.result()


async def _disconnect(request: Request) -> None:
    """Returns when the ASGI server reports the client gone (after the body was read, the
    next message can only be ``http.disconnect``)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
