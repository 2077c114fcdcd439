"""`davit-operator`: parse flags (and their environment fallbacks) once, then run kopf.

This is the only place that reads the environment; everything below receives an OperatorConfig.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any

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
        "--worker-limit",
        type=int,
        default=int(env.get("DAVIT_WORKERS", "20")),
        help="reconcile passes running at once, across all models (env DAVIT_WORKERS)",
    )
    parser.add_argument(
        "--liveness-endpoint",
        default=env.get("DAVIT_LIVENESS", ""),
        help="e.g. http://0.0.0.0:8080/healthz for the pod's liveness probe",
    )
    parser.add_argument("--verbose", "-v", action="store_true")
    return parser.parse_args(argv)


class EndlessBackoffs:
    """Seconds between attempts of one API request: 1, 2, 5, then every 10 s, forever.

    Re-iterable: kopf iterates it afresh for every request, so each one starts at 1 s.
    """

    def __iter__(self) -> Iterator[float]:
        return itertools.chain((1.0, 2.0, 5.0), itertools.repeat(10.0))


class NoDiffBase(kopf.DiffBaseStorage):
    """Keeps no diff base. kopf deep-copies every watched object on every event to find what
    changed since the last handled version (for on.create/on.update handlers); Davit's handlers
    are on.event only and plan from the whole cached object, so that copy was 12 % of the
    operator's CPU in a burst of a thousand models (py-spy, `make bench-operator`)."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def settings_for(cfg: config_module.OperatorConfig) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # kopf only watches and caches: Davit's scheduler runs the passes and records its own
    # Events (From: davit-operator), so kopf posts none.
    settings.posting.enabled = False
    # kopf's per-object workers only feed the caches and wake the scheduler; they stay cheap,
    # and the scheduler bounds the real work (cfg.worker_limit).
    # Requests that fail (API server gone or restarting) are retried for as long as it takes:
    # an operator that gave up would need a restart by hand once the API server is back.
    settings.networking.error_backoffs = EndlessBackoffs()
    settings.persistence.diffbase_storage = NoDiffBase()
    return settings


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv, dict(os.environ))
    cfg = config_module.OperatorConfig(
        runtime_image=args.runtime_image,
        triton_image=args.triton_image,
        namespaces=tuple(args.namespace),
        worker_limit=args.worker_limit,
    )
    kopf.configure(verbose=args.verbose)
    # kopf reports every handled watch event at INFO ("Handler … succeeded"); here its handlers
    # only cache and wake, so that is one line per pod event: keep its warnings and errors.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # The HTTP client logs every request at INFO: thousands of lines a minute under load, and a
    # cost in the loop; --verbose brings them back.
    if not args.verbose:
        logging.getLogger("httpx2").setLevel(logging.WARNING)
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
