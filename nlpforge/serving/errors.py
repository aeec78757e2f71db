"""Errors a request can hit; each carries its HTTP status and becomes ``{"error": message}``."""

from __future__ import annotations

from nlpforge.errors import NlpforgeError


class ServingError(NlpforgeError):
    """A request the server refuses or cannot finish; ``status`` is the HTTP status code."""

    status = 500

    def __init__(self, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.headers = headers or {}


class BadRequest(ServingError):
    """A malformed request; the message names the field."""

    status = 400


class Unauthorized(ServingError):
    status = 401

    def __init__(self, message: str):
        super().__init__(message, {"WWW-Authenticate": "Bearer"})


class ClientGone(ServingError):
    """The client closed the connection before its answer (nginx's 499: a client error)."""

    status = 499


class NotFound(ServingError):
    """An unknown model, model version or route."""

    status = 404


class PayloadTooLarge(ServingError):
    status = 413


class InputTooLong(ServingError):
    """An input over the model's token limit when truncation was not asked for."""

    status = 422


class Overloaded(ServingError):
    """The model's queue is full; the client should retry after ``Retry-After`` seconds."""

    status = 429

    def __init__(self, message: str, retry_after: int):
        super().__init__(message, {"Retry-After": str(retry_after)})


class NotReady(ServingError):
    """Models still warming up, or the server is shutting down."""

    status = 503

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message, {"Retry-After": str(retry_after)})


class RequestTimeout(ServingError):
    status = 504
