"""Prometheus metrics of one server: requests, latency, queueing and batching, per model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

#: The ``model`` label of requests that name no served model (kept out of the label space).
NO_MODEL = ""

CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass
class ModelMetrics:
    """The batcher's instruments for one model."""

    queue_time: Any
    batch_size: Any
    batch_seconds: Any
    queue_depth: Any


class Metrics:
    """Every instrument lives in a registry of its own, so several apps can run in one process."""

    def __init__(self, model_names: Iterable[str]):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("nlpforge_requests", "HTTP requests by model, route and status",
                                ["model", "route", "code"], registry=r)
        self.failures = Counter("nlpforge_request_failures",
                                "HTTP requests answered with a 4xx or 5xx status",
                                ["model", "route", "code"], registry=r)
        self.latency = Histogram("nlpforge_request_latency_seconds",
                                 "Time from request to response, by model and route",
                                 ["model", "route"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("nlpforge_requests_in_flight", "Requests being handled",
                               ["model"], registry=r)
        queue_time = Histogram("nlpforge_queue_time_seconds",
                               "Time a request waited in the model's queue", ["model"],
                               buckets=LATENCY_BUCKETS, registry=r)
        batch_size = Histogram("nlpforge_batch_size", "Rows per model run", ["model"],
                               buckets=BATCH_BUCKETS, registry=r)
        batch_seconds = Histogram("nlpforge_batch_seconds",
                                  "Time to tokenize, run and postprocess one batch", ["model"],
                                  buckets=LATENCY_BUCKETS, registry=r)
        queue_depth = Gauge("nlpforge_queue_depth", "Requests waiting in the model's queue",
                            ["model"], registry=r)
        self.models = {
            name: ModelMetrics(queue_time.labels(name), batch_size.labels(name),
                               batch_seconds.labels(name), queue_depth.labels(name))
            for name in model_names
        }
        self.in_flight_of = {name: self.in_flight.labels(name) for name in self.models}
        #: Requests to a model's routes being answered now (the drain on SIGTERM waits for 0).
        self.model_requests = 0
        self._children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}

    def observe_request(self, model: str, route: str, code: int, seconds: float) -> None:
        key = (model, route, code)
        children = self._children.get(key)
        if children is None:  # labels() costs a lock and a tuple hash: look each up once
            labels = (model, route, str(code))
            children = self._children[key] = (
                self.requests.labels(*labels),
                self.failures.labels(*labels) if code >= 400 else None,
                self.latency.labels(model, route) if model != NO_MODEL else None)
        requests, failures, latency = children
        requests.inc()
        if failures is not None:
            failures.inc()
        if latency is not None:
            latency.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
