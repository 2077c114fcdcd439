"""The router's Prometheus metrics (`davit_router_*`), in a registry of its own per router so
tests and several routers in one process do not share counts."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# The runtime's buckets (its metrics module imports no torch), so the router's and the
# runtime's latency histograms compare bucket by bucket.
from davit_runtime.metrics import CONTENT_TYPE, LATENCY_BUCKETS

__all__ = ["CONTENT_TYPE", "RouterMetrics"]


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "davit_router_requests",
            "Client requests answered, by the revision that served them ('none': the router "
            "answered itself) and status class.",
            ["revision", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "davit_router_request_duration_seconds",
            "Time from a client request to its answer, retries included.",
            ["revision"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.attempts = Counter(
            "davit_router_upstream_attempts",
            "Requests sent to endpoints, by outcome (success, error, gateway, backpressure).",
            ["revision", "outcome"],
            registry=self.registry,
        )
        self.retries = Counter(
            "davit_router_retries", "Attempts after the first.", ["revision"],
            registry=self.registry,
        )  # fmt: skip
        self.ejections = Counter(
            "davit_router_ejections",
            "Endpoints ejected by outlier detection.",
            ["revision", "endpoint"],
            registry=self.registry,
        )
        self.shadow = Counter(
            "davit_router_shadow",
            "Requests copied to the shadow revision (their answers thrown away), by outcome "
            "(success, error, gateway, backpressure; dropped: too many copies in flight).",
            ["revision", "outcome"],
            registry=self.registry,
        )
        self.shed = Counter(
            "davit_router_shed",
            "Requests the router refused by their criticality (429, never sent): `reason` "
            "saturated (every endpoint queued past sheddableQueueDepth) or concurrency (the "
            "class's share of breaker.maxConcurrent taken).",
            ["revision", "criticality", "reason"],
            registry=self.registry,
        )
        self.breaker_open = Gauge(
            "davit_router_breaker_open",
            "1 while the revision's breaker is open or half-open.",
            ["revision"],
            registry=self.registry,
        )

        # Label children by their values: a labels() lookup costs microseconds, and the hot
        # path would pay it several times a request (the runtime pre-binds its own likewise).
        self._bound: dict[tuple[object, ...], Any] = {}

    def bound(self, metric: Counter | Histogram, *values: str) -> Any:
        """`metric.labels(*values)`, looked up once."""
        key = (id(metric), *values)
        child = self._bound.get(key)
        if child is None:
            child = self._bound[key] = metric.labels(*values)
        return child

    def render(self) -> bytes:
        return generate_latest(self.registry)
