"""The plain JSON routes for people and scripts: list models, predict."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Optional

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from nlpforge.serving.protocol import check_parameters, validate_json
from nlpforge.serving.routing import DIRECT, ERRORS, json_body, unless_disconnected
from nlpforge.serving.state import ServerState

TAG = "Plain JSON (v1)"


class PredictRequest(BaseModel):
    """``{"inputs": ["some text", {"text": ..., "text_pair": ...}]}``"""

    model_config = ConfigDict(strict=True, json_schema_extra={"examples": [
        {"inputs": ["what a lovely film", {"text": "the food was cold"}]}]})
    inputs: list[Any] = Field(min_length=1, description="strings, or objects with the task's "
                              "request fields", json_schema_extra={
                                  "items": {"anyOf": [{"type": "string"}, {"type": "object"}]}})
    parameters: Optional[dict[str, Any]] = Field(
        None, description="truncate: cut inputs over the token limit (true) or reject them (false)")


class PredictResponse(BaseModel):
    model_name: str
    model_version: str
    predictions: list[dict[str, Any]]


class ModelList(BaseModel):
    models: list[dict[str, Any]]


def v1_routes(state: ServerState) -> APIRouter:
    router = APIRouter(tags=[TAG])
    handler = predict_handler(state)

    @router.get("/v1/models", operation_id="list_models", responses={200: {"model": ModelList}})
    async def list_models() -> Response:
        """The served models: task, labels, token limit, readiness."""
        return JSONResponse({"models": [dict(m.describe(), ready=state.serving)
                                        for m in state.models.values()]})

    @router.post("/v1/models/{model_name}/predict", operation_id="predict",
                 name=f"{DIRECT}:predict",
                 openapi_extra=json_body(PredictRequest),
                 responses={200: {"model": PredictResponse}, **ERRORS})
    async def predict(request: Request, model_name: str) -> Response:
        """One prediction per input, in order — what ``nlpforge predict`` prints."""
        return await handler(request, model_name)

    return router


def predict_handler(state: ServerState) -> Callable[..., Awaitable[Response]]:
    """``POST /v1/models/{name}/predict``."""

    async def predict(request: Request, name: str) -> Response:
        model = state.ready_model(name)
        body = validate_json(PredictRequest, await request.body())
        parameters = check_parameters(body.parameters, "parameters")
        predictions = await unless_disconnected(request, model.predict(
            body.inputs, state.truncate(parameters), state.timeout(parameters)))
        return JSONResponse({"model_name": model.name, "model_version": model.version,
                             "predictions": predictions})

    return predict
