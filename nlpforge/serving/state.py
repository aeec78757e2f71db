"""Server settings and the state the routes share: the models, readiness, draining."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from nlpforge.serving.errors import BadRequest, NotFound, NotReady
from nlpforge.serving.prometheus import Metrics
from nlpforge.serving.served import ServedModel


@dataclass
class ServeSettings:
    """What ``nlpforge serve`` options set; the defaults are the command's."""

    max_batch_size: int = 32
    max_queue_delay_ms: float = 0.0
    max_queue_size: int = 256
    request_timeout_s: float = 30.0
    max_request_bytes: int = 4 * 1024 * 1024
    truncate: bool = True
    token: str | None = None
    max_inputs_per_request: int = 2048
    max_queue_rows: int = 8192
    #: Connections (``connections.py``): request head size and fields, read deadlines, and
    #: connections or requests in flight at once.
    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    limit_concurrency: int = 256
    #: Host header names served (lower case); None serves any (``middleware.CheckTarget``).
    allowed_hosts: frozenset[str] | None = None
    #: Web origins allowed to call the API from a browser (CORS); none by default.
    cors_origins: tuple[str, ...] = ()
    #: The playground's web pages at ``/`` (``nlpforge serve`` turns them on on loopback).
    playground: bool = False


class ServerState:
    """The served models by name, plus readiness (after warm-up) and draining (after SIGTERM)."""

    def __init__(self, models: Iterable[ServedModel], settings: ServeSettings):
        self.models = {m.name: m for m in models}
        self.settings = settings
        self.metrics = Metrics(self.models)
        self.ready = False
        self.draining = False

    @property
    def serving(self) -> bool:
        return self.ready and not self.draining

    def model(self, name: str, version: str | None = None) -> ServedModel:
        """The model called ``name`` (a dict lookup: names never touch the file system)."""
        model = self.models.get(name)
        if model is None:
            raise NotFound(f"unknown model {name[:64]!r} (served: {', '.join(self.models)})")
        model.check_version(version)
        return model

    def ready_model(self, name: str, version: str | None = None) -> ServedModel:
        model = self.model(name, version)
        if self.draining:  # requests that came before SIGTERM are still answered
            raise NotReady("the server is shutting down; retry on another instance")
        if not self.ready:
            raise NotReady(f"model '{name}' is warming up; retry shortly")
        return model

    def timeout(self, parameters: dict[str, Any]) -> float:
        """The request timeout: the server's, or shorter with Triton's ``timeout`` (µs)."""
        limit = self.settings.request_timeout_s
        asked = parameters.get("timeout")
        if isinstance(asked, (int, float)) and not isinstance(asked, bool) and asked > 0:
            return min(limit, asked / 1e6)
        return limit

    def truncate(self, parameters: dict[str, Any]) -> bool:
        """Whether to cut long inputs: ``parameters.truncate`` or the server's default."""
        value = parameters.get("truncate", self.settings.truncate)
        if not isinstance(value, bool):
            raise BadRequest(f"field 'parameters.truncate': expected true or false, got {value!r}")
        return value
