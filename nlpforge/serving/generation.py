"""Text generation routes (the Open Inference Protocol's generate extension), streaming by SSE.

A generative export (decoder-only or encoder-decoder) is served as a ``GeneratedModel``: its
``Generator`` has ``generate_stream(text_input, parameters)`` (yielding text pieces token by
token); ``/generate`` returns the whole text, ``/generate_stream`` sends one server-sent event
per piece and a last one with ``"done": true``. Its text predictions (``/v1/…/predict``, v2
``infer`` with BYTES inputs) go through the dynamic batcher and return ``generated_text``.
Other models answer 400 on these routes.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, AsyncIterator, Iterator, Optional, Protocol, runtime_checkable

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict

from nlpforge.errors import NlpforgeError
from nlpforge.serving.errors import BadRequest
from nlpforge.serving.models import ServedModel
from nlpforge.serving.protocol import ErrorResponse, check_parameters, validate_json
from nlpforge.serving.state import ServerState
from nlpforge.serving.v2 import ERRORS, add_model_route, json_body


@runtime_checkable
class TextGenerator(Protocol):
    def generate_stream(self, text_input: str, parameters: dict[str, Any]) -> Iterator[str]:
        """Yield the generated text piece by piece (token by token); runs on the model thread."""


def find_generator(predictor: Any) -> TextGenerator | None:
    """The predictor itself when it can generate text, else None (every task today)."""
    return predictor if isinstance(predictor, TextGenerator) else None


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


_END = object()


async def generated_pieces(model: ServedModel, text: str,
                           parameters: dict[str, Any]) -> AsyncIterator[str]:
    """The generator's pieces, produced on the model thread and handed to the event loop."""
    assert model.batcher is not None and model.generator is not None
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()

    def produce() -> None:
        try:
            for piece in model.generator.generate_stream(text, parameters):
                if stop.is_set():  # the client went away
                    break
                loop.call_soon_threadsafe(queue.put_nowait, piece)
        except Exception as exc:
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _END)

    running = asyncio.ensure_future(model.batcher.run_on_model_thread(produce))
    try:
        while (item := await queue.get()) is not _END:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()
        del running  # it ends on its own once the generator sees ``stop``


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
        check = getattr(model.generator, "check_parameters", None)
        if check is not None:  # before the stream's status line goes out
            try:
                check(parameters)
            except NlpforgeError as exc:
                raise BadRequest(f"field 'parameters': {exc}")
        return model, body.text_input, parameters

    async def generate(request: Request, name: str, version: str | None) -> Response:
        model, text, parameters = await parse(request, name, version)
        pieces = [p async for p in generated_pieces(model, text, parameters)]
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


class GeneratedModel(ServedModel):
    """A generative export served by its ``Generator`` (no single ONNX session to expose)."""

    def __init__(self, name: str, generator: Any):
        self.name = name
        self.generator = generator
        self.predictor = generator  # as_rows() for the shared request parsing
        self.task = generator.task
        self.batcher = None
        self.max_batch_size = 32
        self.limit = generator.tokenizer.max_length
        self.text_fields = [f.name for f in self.task.request_fields if f.type is str]
        self.tensor_inputs: list[str] = []
        self.row_outputs: list[str] = []
        self.example = self.task.example_request()
        self.prediction_outputs = {"generated_text": "BYTES"}
        generator.generate([self.example], max_new_tokens=2)  # checks the model end to end

    @classmethod
    def load(cls, name: str, path: Any, device: str = "auto", threads: int | None = None,
             variant: str | None = None) -> "GeneratedModel":
        from nlpforge.runtime.generation.generator import Generator

        return cls(name, Generator.load(path, device=device, threads=threads, variant=variant))

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "versions": [self.version], "platform": "onnxruntime_onnx",
                "inputs": [{"name": n, "datatype": "BYTES", "shape": [-1]}
                           for n in self.text_fields],
                "outputs": [{"name": "generated_text", "datatype": "BYTES", "shape": [-1]}],
                "parameters": {"task": self.task.id, "max_tokens": self.limit,
                               "generation": json.dumps(self.generator.config.to_dict())}}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "generation": self.generator.config.to_dict()}

    def run_batch(self, jobs: list[Any]) -> list[Any]:
        """Generate for the rows of every job in one pass (the Generator batches them)."""
        rows = [row for job in jobs for row in job.payload.rows]
        try:
            predictions = self.generator.predict(rows, checked=True)
        except Exception as exc:
            return [exc] * len(jobs)
        results, start = [], 0
        for job in jobs:
            results.append((predictions[start:start + job.size], {}))
            start += job.size
        return results

    def warm_up(self) -> None:
        self.generator.generate([self.example] * min(self.max_batch_size, 8), max_new_tokens=4)
