"""The ASGI app: routes, error handling, middleware, OpenAPI, and the warm-up at start."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, AsyncIterator, Sequence

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect

from nlpforge.errors import NlpforgeError
from nlpforge.serving import playground, protocol, v1, v2, v2_generate
from nlpforge.serving.api_docs import docs_routes
from nlpforge.serving.auth import BearerAuth
from nlpforge.serving.batcher import DynamicBatcher
from nlpforge.serving.direct_routes import DirectRoutes, direct_routes
from nlpforge.serving.errors import ClientGone
from nlpforge.serving.middleware import (
    BINARY_HEADER, AnsweredErrors, CheckTarget, LimitBody, ObserveRequests, RequireJson,
)
from nlpforge.serving.prometheus import CONTENT_TYPE
from nlpforge.serving.served import ServedModel
from nlpforge.serving.state import ServerState, ServeSettings
from nlpforge.version import __version__

log = logging.getLogger("nlpforge.serving")

#: Request bodies read by hand (for Triton's binary extension and field-naming errors),
#: documented in the OpenAPI components.
BODY_MODELS = (protocol.InferenceRequest, v1.PredictRequest, v2_generate.GenerateRequest,
               v2_generate.GenerateStreamEvent)

DESCRIPTION = """Serves nlpforge export dirs. Clients of the Open Inference Protocol (KServe v2,
Triton) work unchanged under `/v2`; `/v1/models/{name}/predict` takes plain JSON."""


class ServingApp(FastAPI):
    """FastAPI with nlpforge's middleware (metrics, auth, body limit, direct routes) around
    its whole stack rather than inside it: a request to a direct route meets no FastAPI code.
    ``outer_middleware``: (class, options), innermost first."""

    outer_middleware: Sequence[tuple[type, dict[str, Any]]] = ()

    def build_middleware_stack(self) -> Any:
        app = super().build_middleware_stack()
        for middleware, options in self.outer_middleware:
            app = middleware(app, **options)
        return app


def create_app(models: Sequence[ServedModel], settings: ServeSettings | None = None) -> FastAPI:
    """The app serving ``models``; batchers start, and warm-up runs, when the app starts."""
    state = ServerState(models, settings or ServeSettings())
    app = ServingApp(title="nlpforge serve", version=__version__, description=DESCRIPTION,
                  lifespan=_lifespan, redoc_url=None, docs_url=None)
    app.state.server = state
    app.include_router(docs_routes(app))
    routers = [v2.v2_routes(state), v2_generate.generation_routes(state), v1.v1_routes(state)]
    for router in routers:
        app.include_router(router)
    if state.settings.playground:
        app.include_router(playground.playground_routes(state))

    @app.get("/metrics", tags=["Operations"], operation_id="metrics",
             response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Response:
        """Prometheus metrics: requests by model/route/code, latency, queue time, batch size,
        queue depth, in-flight requests."""
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    _add_error_handlers(app)
    outer: list[tuple[type, dict[str, Any]]] = [
        (AnsweredErrors, {}),
        (DirectRoutes, {"routes": direct_routes([r for router in routers for r in router.routes]),
                        "on_error": error_response}),
        (LimitBody, {"limit": state.settings.max_request_bytes}),
        (RequireJson, {}),
    ]
    if state.settings.token:
        outer.append((BearerAuth, {"token": state.settings.token, "public":
                                   playground.is_page if state.settings.playground else None}))
    if state.settings.cors_origins:  # outside auth: a CORS preflight carries no token
        outer.append((CORSMiddleware, cors_options(state.settings.cors_origins)))
    outer.append((CheckTarget, {"allowed": state.settings.allowed_hosts}))
    outer.append((ObserveRequests, {"metrics": state.metrics, "models": state.models}))
    app.outer_middleware = outer
    app.openapi = lambda: _openapi(app, state)  # type: ignore[method-assign]
    return app


def cors_options(origins: Sequence[str]) -> dict[str, Any]:
    """Starlette's CORSMiddleware for pages from ``origins``: the routes' methods, the headers
    clients send (token, JSON, Triton's binary extension) and read (binary extension, retry
    hint); no cookies (the token is a header)."""
    binary = BINARY_HEADER.decode()
    return {"allow_origins": list(origins), "allow_methods": ["GET", "POST"],
            "allow_headers": ["Authorization", "Content-Type", binary],
            "expose_headers": [binary, "Retry-After", "WWW-Authenticate"], "max_age": 600}


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ServerState = app.state.server
    for model in state.models.values():
        s = state.settings
        batcher = DynamicBatcher(model.name, model.run_batch, state.metrics.models[model.name],
                                 s.max_batch_size, s.max_queue_delay_ms, s.max_queue_size,
                                 s.max_queue_rows, s.max_inputs_per_request,
                                 express=model.concurrent_runs)
        model.attach(batcher)
        batcher.start()
    warming = asyncio.create_task(_warm_up(state))
    try:
        yield
    finally:
        state.draining = True
        warming.cancel()
        for model in state.models.values():
            if model.batcher is not None:
                await model.batcher.stop()


async def _warm_up(state: ServerState) -> None:
    """Readiness comes only after every model has run full and long batches once."""
    for model in state.models.values():
        try:
            assert model.batcher is not None
            await model.batcher.run_on_model_thread(model.warm_up)
        except Exception as exc:
            log.error("warm-up of model '%s' failed (%s: %s); the server stays not ready",
                      model.name, type(exc).__name__, exc, exc_info=log.isEnabledFor(10))
            return
    state.ready = True
    log.info("ready: %s warmed up", ", ".join(state.models))


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": protocol.clip_message(message)}, status_code=status,
                        headers=headers)


def log_internal_error(request: Request, exc: BaseException) -> None:
    """A 500's cause in the log: the exception's type and message; its traceback at debug
    level (``nlpforge -v serve``)."""
    log.error("internal error on %s %s: %s: %s", request.method,
              protocol.clip(request.url.path, 200), type(exc).__name__,
              protocol.clip_message(str(exc), 500))
    log.debug("traceback of the internal error", exc_info=exc)


async def error_response(request: Request, exc: Exception) -> Response:
    """``{"error": message}`` with the error's status: a ServingError carries its own, a
    DataError is a request that does not fit the task (400); anything else is a logged 500."""
    if isinstance(exc, ClientDisconnect):  # the upload was cut off: the client's doing
        exc = ClientGone("the client closed the connection while sending the request")
    if isinstance(exc, NlpforgeError):
        status = getattr(exc, "status", 400)
        if status == 500:
            log_internal_error(request, exc)
        return _error(status, str(exc), getattr(exc, "headers", None))
    log_internal_error(request, exc)
    return _error(500, f"internal error: {type(exc).__name__}")


def _add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(NlpforgeError, error_response)
    app.add_exception_handler(Exception, error_response)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _error(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        error = exc.errors()[0]
        return _error(400, f"field '{protocol.field_path(error['loc'])}': {error['msg']}")


def _openapi(app: FastAPI, state: ServerState) -> dict[str, Any]:
    """FastAPI's document, plus the hand-read request bodies and this server's model names."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in BODY_MODELS:
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        components[model.__name__] = body
    for name in ("HTTPValidationError", "ValidationError"):  # errors are 400s named above
        components.pop(name, None)
    enums = {"model_name": sorted(state.models), "model_version": [ServedModel.version]}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if "HTTPValidationError" in json.dumps(responses.get("422", {})):
                del responses["422"]
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "path" and parameter["name"] in enums:
                    parameter["schema"]["enum"] = enums[parameter["name"]]
    if state.settings.token:
        schema["components"]["securitySchemes"] = {"bearer": {"type": "http",
                                                              "scheme": "bearer"}}
        schema["security"] = [{"bearer": []}]
    app.openapi_schema = schema
    return schema
