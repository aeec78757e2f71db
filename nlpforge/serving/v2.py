"""The Open Inference Protocol (KServe v2) routes: health, metadata, infer."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from nlpforge import __version__
from nlpforge.serving.protocol import (
    HEADER_LENGTH, ErrorResponse, InferenceRequest, InferenceResponse, ModelMetadata,
    ServerMetadata, encode_infer_response, parse_infer_request,
)
from nlpforge.serving.state import ServerState

TAG = "Open Inference Protocol (v2)"
EXTENSIONS = ["binary_tensor_data", "generate"]
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text} for code, text in (
        (400, "malformed request; the message names the field"), (404, "unknown model"),
        (413, "request body over --max-request-bytes"), (422, "input over the token limit"),
        (429, "queue full; retry after Retry-After seconds"), (503, "warming up"),
        (504, "not answered within the request timeout"))
}

ModelHandler = Callable[[Request, str, "str | None"], Awaitable[Response]]


def json_body(model: type) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON request body read by hand (see ``app.openapi``)."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def add_model_route(router: APIRouter, suffix: str, method: str, handler: ModelHandler,
                    name: str, **kwargs: Any) -> None:
    """Register ``handler`` at /v2/models/{model_name}[/versions/{model_version}]{suffix}."""

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
                             tags=[TAG], **kwargs)


#: The infer routes' paths, as ``DirectRoutes`` matches them (see ``infer_handler``).
INFER_PATH = r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer"


def infer_handler(state: ServerState) -> ModelHandler:
    """``POST /v2/models/{name}[/versions/{version}]/infer``."""

    async def infer(request: Request, name: str, version: str | None = None) -> Response:
        model = state.ready_model(name, version)
        parsed = parse_infer_request(await request.body(), request.headers.get(HEADER_LENGTH))
        outputs = await model.infer(parsed, state.truncate(parsed.parameters),
                                    state.timeout(parsed.parameters))
        body, headers = encode_infer_response(model.name, model.version, parsed.id, outputs)
        return Response(body, headers=headers)

    return infer


def v2_routes(state: ServerState) -> APIRouter:
    router = APIRouter()

    @router.get("/v2", tags=[TAG], operation_id="server_metadata",
                responses={200: {"model": ServerMetadata}})
    async def server_metadata() -> Response:
        """Server name, version and protocol extensions."""
        return JSONResponse({"name": "nlpforge", "version": __version__,
                             "extensions": EXTENSIONS})

    @router.get("/v2/health/live", tags=[TAG], operation_id="server_live")
    async def live() -> Response:
        """200 while the process answers."""
        return JSONResponse({"live": True})

    @router.get("/v2/health/ready", tags=[TAG], operation_id="server_ready",
                responses={400: {"description": "not ready: warming up or shutting down"}})
    async def ready() -> Response:
        """200 once every model is loaded and warmed up; 400 before, and while shutting down."""
        return JSONResponse({"ready": state.serving}, status_code=200 if state.serving else 400)

    async def model_metadata(request: Request, name: str, version: str | None) -> Response:
        return JSONResponse(state.model(name, version).metadata())

    async def model_ready(request: Request, name: str, version: str | None) -> Response:
        model = state.model(name, version)
        return JSONResponse({"name": model.name, "ready": state.serving},
                            status_code=200 if state.serving else 400)

    infer = infer_handler(state)

    add_model_route(router, "", "GET", model_metadata, "model_metadata",
                    responses={200: {"model": ModelMetadata}, 404: ERRORS[404]},
                    summary="Model metadata: inputs (text or token ids) and outputs")
    add_model_route(router, "/ready", "GET", model_ready, "model_ready",
                    responses={404: ERRORS[404]}, summary="200 when the model is ready")
    add_model_route(router, "/infer", "POST", infer, "model_infer",
                    responses={200: {"model": InferenceResponse}, **ERRORS},
                    openapi_extra=json_body(InferenceRequest),
                    summary="Inference: BYTES text in → predictions, or INT64 token ids in → "
                            "model outputs")
    return router
