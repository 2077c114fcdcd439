"""Operator configuration: built once in `main` from flags and environment, then passed in."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_RUNTIME_IMAGE = "ghcr.io/davit-dev/davit-runtime:0.1.0"
DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.01-py3"


@dataclass(frozen=True)
class OperatorConfig:
    runtime_image: str = DEFAULT_RUNTIME_IMAGE
    triton_image: str = DEFAULT_TRITON_IMAGE
    # How often each ModelDeployment is re-planned from the watch caches. A pass that finds
    # nothing to change makes no API call, so this bounds reaction time, not API load.
    resync_seconds: float = 5.0
    # Namespaces to watch; empty means the whole cluster.
    namespaces: tuple[str, ...] = ()
    # kopf's bound on concurrently reconciled objects (it has no client-side rate limit).
    worker_limit: int = 20
    service_http_port: int = 8080
    service_grpc_port: int = 8081
