"""Operator configuration: built once in `main` from flags and environment, then passed in."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_RUNTIME_IMAGE = "ghcr.io/davit-dev/davit-runtime:0.1.0"
DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.01-py3"


@dataclass(frozen=True)
class OperatorConfig:
    runtime_image: str = DEFAULT_RUNTIME_IMAGE
    triton_image: str = DEFAULT_TRITON_IMAGE
    # Namespaces to watch; empty means the whole cluster.
    namespaces: tuple[str, ...] = ()
    # Reconcile passes running at once, across all models (kopf has no client-side rate limit,
    # so this also bounds the operator's concurrent API writes).
    worker_limit: int = 20
    # How long a model woken by a child's or pod's event waits for the rest of their flurry
    # before its pass runs (scheduler.WakeQueue; a change to the model itself runs at once): well
    # under the 2 s in which a deleted or hand-scaled child is corrected, and fewer status writes.
    settle_seconds: float = 0.2
    # How long a status patch that only moves progress (counts, a pod bound) waits for the next
    # step, to be written with it (planners/status_pacing.py); transitions are written at once.
    status_hold_seconds: float = 2.0
    # The longest one query to an analysis source (Prometheus) may take before the
    # measurement is read again later.
    analysis_timeout_seconds: float = 10.0
    service_http_port: int = 8080
    service_grpc_port: int = 8081
