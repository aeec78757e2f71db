"""The Open Inference Protocol (KServe v2) routes: health, metadata, infer."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from nlpforge.serving.protocol import (
    HEADER_LENGTH, InferenceRequest, InferenceResponse, ModelMetadata, ServerMetadata,
    encode_infer_response, parse_infer_request,
)
from nlpforge.serving.routing import (ERRORS, TAG, ModelHandler, add_model_route, json_body,
                                      unless_disconnected)
from nlpforge.serving.state import ServerState
from nlpforge.version import __version__

EXTENSIONS = ["binary_tensor_data", "generate"]


def infer_handler(state: ServerState) -> ModelHandler:
    """``POST /v2/models/{name}[/versions/{version}]/infer``."""

    async def infer(request: Request, name: str, version: str | None = None) -> Response:
        model = state.ready_model(name, version)
        parsed = parse_infer_request(await request.body(), request.headers.get(HEADER_LENGTH))
        outputs = await unless_disconnected(request, model.infer(
            parsed, state.truncate(parsed.parameters), state.timeout(parsed.parameters)))
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
    add_model_route(router, "/infer", "POST", infer, "model_infer", direct=True,
                    responses={200: {"model": InferenceResponse}, **ERRORS},
                    openapi_extra=json_body(InferenceRequest),
                    summary="Inference: BYTES text in → predictions, or INT64 token ids in → "
                            "model outputs")
    return router
