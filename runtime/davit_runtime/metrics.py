"""Prometheus metrics with pre-bound label children so each request pays microseconds."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
    0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256, 512)


class Metrics:
    """The runtime's metric families, registered in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "davit_requests",
            "Inference requests by model and result code (HTTP status; gRPC maps to the same).",
            ["model", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "davit_request_duration_seconds",
            "Inference request latency from parsed request to response, in seconds.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "davit_batch_size",
            "Samples per executed batch.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "davit_queue_depth", "Requests waiting in the batch queue.", ["model"],
            registry=self.registry,
        )  # fmt: skip
        self.inflight = Gauge(
            "davit_inflight", "Requests accepted and not yet answered.", ["model"],
            registry=self.registry,
        )  # fmt: skip

    def for_model(
        self, model: str, queue_depth: Callable[[], float], inflight: Callable[[], float]
    ) -> ModelMetrics:
        self.queue_depth.labels(model).set_function(queue_depth)
        self.inflight.labels(model).set_function(inflight)
        return ModelMetrics(self, model)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class ModelMetrics:
    """One model's children; `record` costs a dict lookup, a counter inc and a histogram observe."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        self._metrics = metrics
        self._model = model
        self._requests: dict[int, Counter] = {}
        self._duration = metrics.duration.labels(model)
        self._batch_size = metrics.batch_size.labels(model)

    def record(self, code: int, seconds: float) -> None:
        counter = self._requests.get(code)
        if counter is None:
            counter = self._metrics.requests.labels(self._model, str(code))
            self._requests[code] = counter
        counter.inc()
        self._duration.observe(seconds)

    def observe_batch(self, size: int) -> None:
        self._batch_size.observe(size)
