"""HTTP connections: what a client may send before the app sees its request.

uvicorn's httptools protocol with bounds (``nlpforge serve`` options in brackets):

- a request head (request line and header fields) of at most ``max_header_bytes`` bytes
  [``--max-header-bytes``] and ``max_headers`` fields [``--max-headers``]: 431 otherwise. The
  bytes are counted before the parser sees them, so no header grows without bound;
- the head read within ``header_timeout_s`` [``--header-timeout-s``] of the connection
  opening or of the request's first byte, and the body within ``body_timeout_s``
  [``--body-timeout-s``] of the head: 408 (or, when nothing was sent, a plain close)
  otherwise, and the connection is closed;
- at most ``limit_concurrency`` [``--limit-concurrency``] connections open and requests in
  flight: 503 with ``Retry-After`` beyond, and that connection is closed.

Every refusal is ``{"error": message}``, sent before the app runs (so it is not in the
request metrics).
"""

from __future__ import annotations

import functools
import json
from typing import Any

from starlette.responses import JSONResponse
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


class HeaderLimit(Exception):
    """Raised in a parser callback to stop parsing a request refused for its head."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """One HTTP/1.1 connection, with the limits of ``settings`` (a ``ServeSettings``)."""

    def __init__(self, *args: Any, settings: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.settings = settings
        self.served_app = self.app
        self.limit_concurrency = None  # uvicorn's own check (a plain-text 503) is replaced
        self.head_bytes = 0  # bytes of the current request head fed to the parser
        self.header_count = 0
        self.reading_head = True
        self.head_deadline: float | None = None  # loop.time() by which the head must be in
        self.body_deadline: float | None = None  # ... and the body
        self.timer: Any = None  # one TimerHandle at most, for the nearest deadline
        self.refusal: tuple[int, str] | None = None

    # -- connection -----------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.head_deadline = self.loop.time() + self.settings.header_timeout_s
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        while self.reading_head and data:
            room = self.settings.max_header_bytes - self.head_bytes
            if room <= 0:
                self.refuse(431, f"the request head (request line and headers) is over "
                                 f"{self.settings.max_header_bytes} bytes "
                                 f"(the server's --max-header-bytes)")
                return
            chunk = data if room >= len(data) else data[:room]
            data = data[len(chunk):]
            self.head_bytes += len(chunk)
            super().data_received(chunk)
            if self.transport.is_closing():
                return
        if data:
            super().data_received(data)
        self._arm()

    # -- parser callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.header_count = 0
        if self.head_deadline is None:
            self.head_deadline = self.loop.time() + self.settings.header_timeout_s

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        if self.header_count > self.settings.max_headers:
            self.refusal = (431, f"the request has over {self.settings.max_headers} header "
                                 f"fields (the server's --max-headers)")
            raise HeaderLimit()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.reading_head = False
        self.head_deadline = None
        limit = self.settings.limit_concurrency
        busy = len(self.connections) > limit or len(self.tasks) >= limit
        self.app = functools.partial(_busy, limit) if busy else self.served_app
        super().on_headers_complete()
        if not self.pipeline:  # started now (a pipelined request starts when its turn comes)
            self._expect_body()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.reading_head = True
        self.head_bytes = 0
        self.body_deadline = None

    def on_response_complete(self) -> None:
        starts_next = bool(self.pipeline)
        super().on_response_complete()
        if starts_next:
            self._expect_body()
            self._arm()

    # -- refusals and deadlines -----------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request the parser rejects; also ends a refused head."""
        status, message = self.refusal or (400, f"invalid HTTP request ({msg.rstrip('.')})")
        self.refuse(status, message)

    def refuse(self, status: int, message: str) -> None:
        """Answer ``{"error": message}`` outside the app and close the connection."""
        body = json.dumps({"error": message}).encode("utf-8")
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n"
                    b"connection: close\r\n\r\n" % len(body))
        if not self.transport.is_closing():
            self.transport.write(b"".join(head) + body)
            self.transport.close()

    def _expect_body(self) -> None:
        if self.cycle is not None and self.cycle.more_body:
            self.body_deadline = self.loop.time() + self.settings.body_timeout_s

    def _arm(self) -> None:
        pending = [d for d in (self.head_deadline, self.body_deadline) if d is not None]
        if not pending or self.transport is None or self.transport.is_closing():
            return
        deadline = min(pending)
        if self.timer is not None:
            if self.timer.when() <= deadline:
                return  # it fires first, then re-arms for what is still pending
            self.timer.cancel()
        self.timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        now = self.loop.time()
        if self.head_deadline is not None and now >= self.head_deadline:
            self._head_timed_out()
        elif self.body_deadline is not None and now >= self.body_deadline:
            self._body_timed_out()
        else:
            self._arm()

    def _head_timed_out(self) -> None:
        self.head_deadline = None
        cycle = self.cycle
        if self.head_bytes == 0 or (cycle is not None and not cycle.response_complete):
            self.transport.close()  # nothing asked yet, or an answer is under way
            return
        self.refuse(408, f"the request head did not arrive within "
                         f"{self.settings.header_timeout_s:g} s (the server's "
                         f"--header-timeout-s)")

    def _body_timed_out(self) -> None:
        self.body_deadline = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            cycle.disconnected = True  # the app reads a disconnect; its answer goes nowhere
            cycle.message_event.set()
            self.refuse(408, f"the request body did not arrive within "
                             f"{self.settings.body_timeout_s:g} s of its head (the server's "
                             f"--body-timeout-s)")
        self.transport.close()


async def _busy(limit: int, scope: dict, receive: Any, send: Any) -> None:
    response = JSONResponse(
        {"error": f"the server is at its limit of {limit} connections or requests in flight "
                  f"(--limit-concurrency); retry shortly"},
        status_code=503, headers={"Retry-After": "1", "Connection": "close"})
    await response(scope, receive, send)


def uvicorn_options(settings: Any) -> dict[str, Any]:
    """``uvicorn.Config`` keywords that apply the connection limits of ``settings``."""
    return {"http": functools.partial(BoundedHttpToolsProtocol, settings=settings)}
