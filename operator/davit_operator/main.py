"""`davit-operator`: parse flags (and their environment fallbacks) once, then run kopf.

This is the only place that reads the environment; everything below receives an OperatorConfig.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

import kopf
from lightkube import AsyncClient

from davit_operator import config as config_module
from davit_operator import handlers, naming
from davit_operator.kube import Kube


def parse_args(argv: list[str], env: dict[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="davit-operator", description="Run the Davit ModelDeployment operator."
    )
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[n for n in env.get("DAVIT_NAMESPACES", "").split(",") if n],
        help="watch only this namespace (repeatable; env DAVIT_NAMESPACES=a,b); default: all",
    )
    parser.add_argument(
        "--runtime-image",
        default=env.get("DAVIT_RUNTIME_IMAGE", config_module.DEFAULT_RUNTIME_IMAGE),
        help="image for runtime.kind=torch (env DAVIT_RUNTIME_IMAGE)",
    )
    parser.add_argument(
        "--triton-image",
        default=env.get("DAVIT_TRITON_IMAGE", config_module.DEFAULT_TRITON_IMAGE),
        help="image for runtime.kind=triton (env DAVIT_TRITON_IMAGE)",
    )
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=float(env.get("DAVIT_RESYNC_SECONDS", "5")),
        help="how often each ModelDeployment is re-planned from the watch caches",
    )
    parser.add_argument("--worker-limit", type=int, default=int(env.get("DAVIT_WORKERS", "20")))
    parser.add_argument(
        "--liveness-endpoint",
        default=env.get("DAVIT_LIVENESS", ""),
        help="e.g. http://0.0.0.0:8080/healthz for the pod's liveness probe",
    )
    parser.add_argument("--verbose", "-v", action="store_true")
    return parser.parse_args(argv)


def settings_for(cfg: config_module.OperatorConfig) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # kopf's bookkeeping goes to annotations under Davit's own prefix: the CRD's status schema
    # is structural and would prune anything kopf wrote there.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="davit.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="davit.dev", key="last-handled-configuration"
    )
    settings.persistence.finalizer = "davit.dev/finalizer"
    settings.posting.level = logging.WARNING  # only Davit's own events, not kopf's chatter
    settings.batching.worker_limit = cfg.worker_limit
    # Errors from the API server (conflicts, throttling) are retried with a bounded backoff.
    settings.networking.error_backoffs = [1, 2, 5, 10, 20]
    return settings


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv, dict(os.environ))
    cfg = config_module.OperatorConfig(
        runtime_image=args.runtime_image,
        triton_image=args.triton_image,
        resync_seconds=args.resync_seconds,
        namespaces=tuple(args.namespace),
        worker_limit=args.worker_limit,
    )
    kopf.configure(verbose=args.verbose)
    asyncio.run(run(cfg, args.liveness_endpoint or None))
    return 0


async def run(cfg: config_module.OperatorConfig, liveness_endpoint: str | None) -> None:
    kube = Kube(AsyncClient(field_manager=naming.FIELD_MANAGER))
    registry = kopf.OperatorRegistry()
    handlers.register(registry, cfg, kube)
    try:
        await kopf.operator(
            registry=registry,
            settings=settings_for(cfg),
            standalone=True,
            clusterwide=not cfg.namespaces,
            namespaces=cfg.namespaces,
            liveness_endpoint=liveness_endpoint,
        )
    finally:
        await kube.close()


if __name__ == "__main__":
    raise SystemExit(main())
