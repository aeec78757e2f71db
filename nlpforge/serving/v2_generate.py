"""Text generation routes (the Open Inference Protocol's generate extension), streaming by SSE.

``/generate`` returns the whole text, ``/generate_stream`` sends one server-sent event per piece
and a last one with ``"done": true``. Models that do not generate text (``ServedModel.generator``
is None) answer 400 on these routes.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Optional

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict

from nlpforge.errors import NlpforgeError
from nlpforge.serving.errors import BadRequest
from nlpforge.serving.generating import generated_pieces
from nlpforge.serving.protocol import ErrorResponse, check_parameters, validate_json
from nlpforge.serving.routing import ERRORS, add_model_route, json_body, unless_disconnected
from nlpforge.serving.served import ServedModel
from nlpforge.serving.state import ServerState


class GenerateRequest(BaseModel):
    model_config = ConfigDict(strict=True, json_schema_extra={"examples": [
        {"text_input": "Once upon a time", "parameters": {"max_tokens": 20}}]})
    text_input: str
    parameters: Optional[dict[str, Any]] = None


class GenerateResponse(BaseModel):
    model_name: str
    model_version: str
    text_output: str


class GenerateStreamEvent(GenerateResponse):
    done: bool


def _event(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode("utf-8")


async def _sse(model: ServedModel, text: str, parameters: dict[str, Any]) -> AsyncIterator[bytes]:
    head = {"model_name": model.name, "model_version": model.version}
    try:
        async for piece in generated_pieces(model, text, parameters):
            yield _event({**head, "text_output": piece, "done": False})
    except Exception as exc:  # the status line is sent already: report in the stream
        message = str(exc) if isinstance(exc, NlpforgeError) else "incomplete generation"
        yield _event({"error": message})
        return
    yield _event({**head, "text_output": "", "done": True})


async def _collect(model: ServedModel, text: str, parameters: dict[str, Any]) -> list[str]:
    return [piece async for piece in generated_pieces(model, text, parameters)]


def generation_routes(state: ServerState) -> APIRouter:
    router = APIRouter()

    async def parse(request: Request, name: str,
                    version: str | None) -> tuple[ServedModel, str, dict]:
        model = state.ready_model(name, version)
        body = validate_json(GenerateRequest, await request.body())
        parameters = check_parameters(body.parameters, "parameters")
        if model.generator is None:
            raise BadRequest(f"model '{model.name}' ({model.task.id}) does not generate text; "
                             f"use POST /v2/models/{model.name}/infer or "
                             f"/v1/models/{model.name}/predict")
        try:  # before the stream's status line goes out
            model.generator.check_parameters(parameters)
        except NlpforgeError as exc:
            raise BadRequest(f"field 'parameters': {exc}")
        return model, body.text_input, parameters

    async def generate(request: Request, name: str, version: str | None) -> Response:
        model, text, parameters = await parse(request, name, version)
        pieces = await unless_disconnected(request, _collect(model, text, parameters))
        return JSONResponse({"model_name": model.name, "model_version": model.version,
                             "text_output": "".join(pieces)})

    async def generate_stream(request: Request, name: str, version: str | None) -> Response:
        model, text, parameters = await parse(request, name, version)
        return StreamingResponse(_sse(model, text, parameters), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    add_model_route(router, "/generate", "POST", generate, "generate",
                    openapi_extra=json_body(GenerateRequest),
                    responses={200: {"model": GenerateResponse}, **ERRORS},
                    summary="Generate text (generation models only)")
    add_model_route(router, "/generate_stream", "POST", generate_stream, "generate_stream",
                    openapi_extra=json_body(GenerateRequest),
                    responses={200: {"content": {"text/event-stream": {"schema": {
                        "$ref": "#/components/schemas/GenerateStreamEvent"}}},
                        "description": "one server-sent event per generated piece"},
                        400: {"model": ErrorResponse, "description": "not a generation model"}},
                    summary="Stream generated text token by token (server-sent events)")
    return router


