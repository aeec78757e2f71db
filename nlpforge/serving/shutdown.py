"""Listening and stopping: bind the socket early, drain gracefully on SIGTERM or Ctrl-C.

On SIGTERM (or Ctrl-C) the server keeps listening but reports not ready (/v2/health/ready
answers ``{"ready": false}``, so probes see not-ready rather than a refused connection) and
answers requests that arrive from then on with a JSON 503, while the requests that came
before it are answered. At the shutdown timeout whatever is still queued is answered with a JSON 503 and dropped; the batch on the
model thread finishes (one chunk of at most ``--max-batch-size`` rows) and nothing runs after
it. Then uvicorn closes the connections and exits, re-raising the signal, so the process ends
as "terminated by SIGTERM" (status 143), as process managers expect. A second signal stops at
once.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from types import FrameType
from typing import Any

import uvicorn

from nlpforge.errors import UsageError
from nlpforge.serving.connections import uvicorn_options


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; a port in use is a UsageError, not a traceback."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: cannot resolve it ({exc.strerror})")
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"port {port} on {host} is in use; choose another with --port "
                             f"(--port 0 picks a free one)")
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}")
    sock.set_inheritable(True)
    return sock


#: Seconds uvicorn waits for connections to close once the models are drained.
CLOSE_SECONDS = 0.5
#: How often the drain looks whether the requests in flight are answered.
DRAIN_POLL_S = 0.02


class GracefulServer(uvicorn.Server):
    """uvicorn's server, draining the app's models before uvicorn's own shutdown starts."""

    def __init__(self, config: uvicorn.Config, state: Any, shutdown_timeout_s: float):
        super().__init__(config)
        self.server_state_ref = state
        self.shutdown_timeout_s = shutdown_timeout_s
        self._drain: asyncio.Future | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain is not None or self.should_exit:  # a second signal: stop now
            self.force_exit = True
            super().handle_exit(sig, frame)
            return
        # Readiness answers not ready, and requests that arrive from now on get 503.
        self.server_state_ref.draining = True
        loop = asyncio.get_event_loop()
        self._drain = loop.create_future()  # marks the drain as started
        # A signal handler runs between two bytecodes of the loop's thread: start the drain
        # from the loop itself.
        loop.call_soon_threadsafe(self._start_drain, sig, frame)

    def _start_drain(self, sig: int, frame: FrameType | None) -> None:
        self._drain = asyncio.ensure_future(self._drain_then_exit(sig, frame))

    async def _drain_then_exit(self, sig: int, frame: FrameType | None) -> None:
        """Wait (up to the shutdown timeout) until the requests that came before the signal
        are answered; then answer what still waits with 503 and let uvicorn close."""
        state = self.server_state_ref
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shutdown_timeout_s
        while state.metrics.model_requests and loop.time() < deadline:
            await asyncio.sleep(DRAIN_POLL_S)
        for model in state.models.values():
            if model.batcher is not None:
                model.batcher.abort("the server is shutting down; retry on another instance")
        super().handle_exit(sig, frame)


def run(app: Any, sock: socket.socket, shutdown_timeout_s: float, access_log: bool) -> None:
    """Serve ``app`` on ``sock`` until SIGTERM/SIGINT, then drain."""
    config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=access_log,
                            timeout_graceful_shutdown=CLOSE_SECONDS, lifespan="on",
                            server_header=False, **uvicorn_options(app.state.server.settings))
    GracefulServer(config, app.state.server, shutdown_timeout_s).run(sockets=[sock])
