"""nlpforge serve: serve export dirs over HTTP (Open Inference Protocol + plain JSON)."""

from __future__ import annotations

import logging
import math
import re
from importlib.util import find_spec

import click

from nlpforge.errors import UsageError

_AT_LEAST_ONE = ("max_batch_size", "max_queue_size", "max_queue_rows", "max_inputs_per_request",
                 "max_request_bytes", "threads")


class Finite(click.FloatRange):
    """A number in a range, never nan or infinite (click's FloatRange lets nan through: every
    comparison with it is false)."""

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value} is not a finite number.", param, ctx)
        return number


#: An origin as browsers send it: scheme, host and optional port, no path.
_ORIGIN = re.compile(r"https?://[^/\s]+")


@click.command()
@click.argument("export_dirs", nargs=-1, required=True, metavar="[NAME=]EXPORT_DIR...")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 exposes the server to the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="0 picks a free port.")
@click.option("--max-batch-size", type=int, default=32, show_default=True,
              help="Most rows per model run.")
@click.option("--max-queue-delay-ms", type=Finite(0, 60_000), default=0.0, show_default=True,
              help="Longest wait for more requests to fill a batch (0: run what is waiting; "
                   "requests that arrive while the model is busy still share the next run).")
@click.option("--max-queue-size", type=int, default=256, show_default=True,
              help="Requests waiting per model; beyond it, 429 with Retry-After.")
@click.option("--max-queue-rows", type=int, default=8192, show_default=True,
              help="Rows waiting per model (all requests together); beyond it, 429.")
@click.option("--max-inputs-per-request", type=int, default=2048, show_default=True,
              help="Rows one request may carry; more get 413.")
@click.option("--request-timeout-s", type=Finite(0, 86_400, min_open=True), default=30.0, show_default=True,
              help="A request not answered in time gets 504.")
@click.option("--max-request-bytes", type=int, default=4 * 1024 * 1024, show_default=True,
              help="Larger request bodies get 413.")
@click.option("--truncate/--no-truncate", default=True, show_default=True,
              help="Cut inputs over the model's token limit, or reject them with 422; "
                   "a request may choose with parameters.truncate.")
@click.option("--token", envvar="NLPFORGE_SERVE_TOKEN", metavar="TOKEN",
              help="Require 'Authorization: Bearer TOKEN' (health probes and docs excepted). "
                   "Prefer the NLPFORGE_SERVE_TOKEN variable: options show in ps.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--threads", type=int, help="ONNX Runtime CPU threads per model (default: all).")
@click.option("--variant", type=click.Choice(["fp32", "optimized", "int8", "fp16", "tuned"]),
              help="The model file of each export to serve (default: the tuned variant on the "
                   "CPU it was tuned on, else the export's default).")
@click.option("--shutdown-timeout-s", type=Finite(0, 86_400, min_open=True), default=30.0,
              show_default=True,
              help="On SIGTERM, how long requests in flight may take to finish.")
@click.option("--access-log", is_flag=True, help="Log every request.")
@click.option("--max-header-bytes", type=click.IntRange(1024, 1024 * 1024), default=16 * 1024,
              show_default=True, help="Largest request head (request line and headers); "
                                      "larger gets 431.")
@click.option("--max-headers", type=click.IntRange(1, 10_000), default=100, show_default=True,
              help="Most header fields in a request; more get 431.")
@click.option("--header-timeout-s", type=Finite(0, 3600, min_open=True), default=10.0,
              show_default=True, help="A request's head must arrive within this of the "
                                      "connection opening or of its first byte; else 408 and "
                                      "the connection is closed.")
@click.option("--body-timeout-s", type=Finite(0, 3600, min_open=True), default=30.0,
              show_default=True, help="A request's body must arrive within this of its head; "
                                      "else 408 and the connection is closed.")
@click.option("--limit-concurrency", type=click.IntRange(1, 1_000_000), default=256,
              show_default=True, help="Most connections open and requests in flight at once; "
                                      "beyond, 503.")
@click.option("--allowed-hosts", metavar="HOST,...",
              help="Host header names to answer (others get 421), '*' for any. Default: on a "
                   "loopback address localhost, 127.0.0.1 and ::1 (against DNS rebinding); "
                   "on other addresses any.")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Let web pages from ORIGIN (e.g. https://app.example.com) call the server "
                   "(CORS); repeat for several. Default: none.")
@click.option("--playground/--no-playground", default=None,
              help="The web playground at / (try each model in a browser). Default: on when "
                   "--host is a loopback address; on other addresses it needs --playground.")
def serve(export_dirs: tuple[str, ...], host: str, port: int, max_batch_size: int,
          max_queue_delay_ms: float, max_queue_size: int, max_queue_rows: int,
          max_inputs_per_request: int, request_timeout_s: float,
          max_request_bytes: int, truncate: bool, token: str | None, device: str,
          threads: int | None, variant: str | None, shutdown_timeout_s: float,
          access_log: bool, max_header_bytes: int, max_headers: int, header_timeout_s: float,
          body_timeout_s: float, limit_concurrency: int, allowed_hosts: str | None,
          cors_origins: tuple[str, ...], playground: bool | None) -> None:
    """Serve export dirs over HTTP until SIGTERM or Ctrl-C.

    \b
    Each model is served as NAME (default: the dir's name):
      POST /v2/models/NAME/infer      Open Inference Protocol (KServe v2, Triton clients)
      POST /v1/models/NAME/predict    {"inputs": ["some text", ...]}
      GET  /v2/health/ready, /metrics, /docs (interactive API docs)
      GET  /                          the playground (on loopback; see --playground)
    """
    missing = [m for m in ("fastapi", "uvicorn", "httptools", "prometheus_client")
               if find_spec(m) is None]
    if missing:
        raise UsageError(f"nlpforge serve needs the serve extra ({', '.join(missing)} missing): "
                         f"pip install 'nlpforge[serve]'")
    from nlpforge.serving.served import ServedModel, parse_model_arg
    from nlpforge.serving.shutdown import bind, run
    from nlpforge.serving.middleware import allowed_hosts as host_names
    from nlpforge.serving.middleware import is_loopback
    from nlpforge.serving.state import ServeSettings

    values = {"max_batch_size": max_batch_size, "max_queue_size": max_queue_size,
              "max_queue_rows": max_queue_rows, "max_inputs_per_request": max_inputs_per_request,
              "max_request_bytes": max_request_bytes, "threads": threads}
    for name in _AT_LEAST_ONE:
        if values[name] is not None and values[name] < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {values[name]}")
    origins = tuple(origin.rstrip("/") for origin in cors_origins)
    for origin in origins:
        if origin != "*" and not _ORIGIN.fullmatch(origin):
            raise UsageError(f"--cors-origin {origin[:100]!r}: expected an origin such as "
                             f"https://app.example.com (scheme, host, optional port), or '*'")
    specs = [parse_model_arg(arg) for arg in export_dirs]
    names = [name for name, _ in specs]
    for name in names:
        if names.count(name) > 1:
            raise UsageError(f"two models are called '{name}'; name them with NAME=DIR")
    sock = bind(host, port)
    try:
        models = [ServedModel.load(name, path, device=device, threads=threads, variant=variant)
                  for name, path in specs]
    except BaseException:
        sock.close()
        raise
    from nlpforge.serving.app import create_app

    settings = ServeSettings(max_batch_size, max_queue_delay_ms, max_queue_size,
                             request_timeout_s, max_request_bytes, truncate, token,
                             max_inputs_per_request=max_inputs_per_request,
                             max_queue_rows=max_queue_rows,
                             max_header_bytes=max_header_bytes, max_headers=max_headers,
                             header_timeout_s=header_timeout_s, body_timeout_s=body_timeout_s,
                             limit_concurrency=limit_concurrency, cors_origins=origins,
                             allowed_hosts=host_names(host, None if allowed_hosts is None
                                                      else allowed_hosts.split(",")),
                             playground=is_loopback(host) if playground is None else playground)
    app = create_app(models, settings)
    address = sock.getsockname()
    url = f"http://{host if ':' not in host else f'[{host}]'}:{address[1]}"
    serving_log = logging.getLogger("nlpforge.serving")
    if serving_log.getEffectiveLevel() > logging.INFO:  # -v keeps debug: 500s' tracebacks
        serving_log.setLevel(logging.INFO)
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        click.echo(f"warning: listening on {host} without --token: anyone who can reach "
                   f"this machine can use the models", err=True)
    pages = f"playground: {url}/, " if settings.playground else ""
    click.echo(f"serving {', '.join(names)} on {url} ({pages}API docs: {url}/docs); "
               f"ready once warmed up", err=True)
    run(app, sock, shutdown_timeout_s, access_log)
