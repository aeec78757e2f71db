"""Listening and stopping: bind the socket early, drain gracefully on SIGTERM or Ctrl-C.

On SIGTERM the server reports not ready, stops accepting connections, lets every request in
flight finish (up to the shutdown timeout), drains the batchers and exits. uvicorn then
re-raises the signal, so the process ends as "terminated by SIGTERM" (status 143), as
process managers expect.
"""

from __future__ import annotations

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


class GracefulServer(uvicorn.Server):
    """uvicorn's server, which also marks the app as draining when asked to stop."""

    def __init__(self, config: uvicorn.Config, state: Any):
        super().__init__(config)
        self.server_state_ref = state

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.server_state_ref.draining = True  # /v2/health/ready answers 400 from now on
        super().handle_exit(sig, frame)


def run(app: Any, sock: socket.socket, shutdown_timeout_s: float, access_log: bool) -> None:
    """Serve ``app`` on ``sock`` until SIGTERM/SIGINT, then drain."""
    config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=access_log,
                            timeout_graceful_shutdown=shutdown_timeout_s, lifespan="on",
                            server_header=False, **uvicorn_options(app.state.server.settings))
    GracefulServer(config, app.state.server).run(sockets=[sock])
