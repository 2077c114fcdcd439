"""kopf handlers: thin glue between the watch streams, the cluster cache and the scheduler.

kopf watches the ModelDeployments; the operator's own informers (informers.py) watch their
children and pods, which carry most of the events. Every event updates the cluster cache and
wakes the models it touched; the scheduler runs one `Controller.reconcile` for a burst of them.
No kopf change handlers, timers or finalizers: kopf writes nothing to a ModelDeployment, and
children go with their owner by garbage collection.

The cache is filled by listing every kind before the first pass (so a restart re-plans every
model once, from complete caches). The informers list again after a watch expired; kopf does
too for the ModelDeployments, but reports only the objects that exist, never those deleted
meanwhile, so its re-listing is followed by a LIST of our own that drops such ghosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, TypeVar

import kopf

from davit_operator import api, naming
from davit_operator.caches import CHILD_KINDS, MODEL_KIND, POD_KIND, ClusterCache, Key
from davit_operator.config import OperatorConfig
from davit_operator.controller import Controller
from davit_operator.informers import Informer
from davit_operator.kube import OPTIONAL_KINDS, Kube
from davit_operator.planners import analysis
from davit_operator.planners.children import ROUTER_ADMIN_PORT
from davit_operator.scheduler import Backoff, Scheduler, retry_delay
from davit_operator.sources import FigureSource, Prometheus, RouterFigures
from davit_router.hostport import host_port

logger = logging.getLogger(__name__)

# A re-listing arrives as a burst of events; one snapshot after it has settled is enough.
SNAPSHOT_SETTLE_SECONDS = 2.0
SNAPSHOT_RETRY = Backoff(first_seconds=1, max_seconds=30)
# Kinds watched by the operator's informers rather than by kopf.
INFORMED_KINDS = (*CHILD_KINDS, POD_KIND)


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A detached copy of a kopf body (kopf's bodies are live views that change under us)."""
    return {
        key: _plain(value) if isinstance(value, Mapping) else _copy_list(value)
        for key, value in body.items()
    }


def _copy_list(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(v) if isinstance(v, Mapping) else _copy_list(v) for v in value]
    return value


T = TypeVar("T")


async def until_answered(what: str, call: Callable[[], Awaitable[T]]) -> T:
    """At start the operator can do nothing useful without the API server: `call` is retried,
    with a growing delay, until it answers."""
    failures = 0
    while True:
        try:
            return await call()
        except Exception as error:
            failures += 1
            delay = retry_delay(failures, SNAPSHOT_RETRY)
            logger.warning("%s failed (retry in %.0fs): %r", what, delay, error)
            await asyncio.sleep(delay)


async def list_until_done(informers: list[Informer]) -> None:
    """At start: the operator cannot do anything useful before every kind has been listed."""
    for informer in informers:
        await until_answered(f"listing {informer.name}", informer.list)


class ModelSnapshots:
    """After kopf re-listed the ModelDeployments: a LIST of our own, once it has settled."""

    def __init__(self, listers: list[Informer]) -> None:
        self._listers = listers
        self._pending: asyncio.Task[None] | None = None

    def request(self) -> None:
        if self._pending is None or self._pending.done():
            self._pending = asyncio.create_task(self._settled(), name="davit model snapshot")

    async def _settled(self) -> None:
        await asyncio.sleep(SNAPSHOT_SETTLE_SECONDS)
        try:
            for lister in self._listers:
                await lister.list()
        except Exception as error:  # the next re-listing (kopf retries) asks again
            logger.warning("listing the ModelDeployments failed: %r", error)

    async def stop(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pending


def register(registry: kopf.OperatorRegistry, config: OperatorConfig, kube: Kube) -> None:
    """Attach Davit's handlers to `registry`; everything they need is passed in here."""
    cache = ClusterCache()
    prometheus = Prometheus(timeout_seconds=config.analysis_timeout_seconds)

    async def router_admins(namespace: str, name: str) -> list[str]:
        ips = await kube.ready_pod_ips(namespace, naming.router_selector(name))
        return [host_port(ip, ROUTER_ADMIN_PORT) for ip in ips]

    routers = RouterFigures(router_admins, timeout_seconds=config.analysis_timeout_seconds)
    sources: dict[analysis.Source, FigureSource] = {
        analysis.Source.PROMETHEUS: prometheus,
        analysis.Source.ROUTER: routers,
    }
    controller = Controller(config, kube, cache, sources=sources)
    scheduler: Scheduler[Key] = Scheduler(
        controller.reconcile,
        concurrency=config.worker_limit,
        settle_seconds=config.settle_seconds,
    )
    namespaces = config.namespaces or ("*",)  # "*": the whole cluster

    def wake_settled(key: Key) -> None:
        # Children's and pods' events settle, so that their flurry gives one pass.
        scheduler.wake(key, settle=True)

    informers = [
        Informer(kind, namespace, kube, cache, wake_settled)
        for kind in INFORMED_KINDS
        if kind not in OPTIONAL_KINDS
        for namespace in namespaces
    ]
    # The ModelDeployments are listed the same way, and watched by kopf.
    model_listers = [Informer(MODEL_KIND, ns, kube, cache, scheduler.wake) for ns in namespaces]
    snapshots = ModelSnapshots(model_listers)
    running: list[asyncio.Task[None]] = []

    # A private registry has none of kopf's default login handlers. In a pod the service
    # account wins; on a laptop or in the e2e suite, the kubeconfig (no client library needed).
    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    # Startup handlers finish before kopf starts watching: the first passes see complete caches.
    @kopf.on.startup(registry=registry)
    async def start_scheduler(**_: Any) -> None:
        for kind, provider in OPTIONAL_KINDS.items():
            asked = f"asking whether the cluster serves {kind}"
            if await until_answered(asked, partial(kube.serves, kind, namespaces[0])):
                informers.extend(Informer(kind, ns, kube, cache, wake_settled) for ns in namespaces)
            else:
                logger.info(
                    "the cluster serves no %s (or RBAC hides it): models that need one are "
                    "refused until %s are installed and the operator restarted",
                    kind,
                    provider,
                )
        await list_until_done([*model_listers, *informers])
        for key in cache.models():
            scheduler.wake(key)  # a restart re-plans every model once
        running.append(asyncio.create_task(scheduler.run(), name="davit scheduler"))
        for informer in informers:  # each watches from the version it listed at
            running.append(asyncio.create_task(informer.run(), name=f"davit {informer.name}"))

    @kopf.on.cleanup(registry=registry)
    async def stop_scheduler(**_: Any) -> None:
        await snapshots.stop()
        for task in running:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await prometheus.close()
        await routers.close()

    # async: kopf runs sync handlers in threads, and the cache and scheduler belong to the loop.
    @kopf.on.event(api.GROUP, api.VERSION, api.PLURAL, id="observe-models", registry=registry)
    async def observe_model(*, event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        kind_of_event = event.get("type")
        obj = _plain(body)
        if kind_of_event == "DELETED":
            touched = cache.delete(MODEL_KIND, obj)
        else:
            touched = cache.upsert(MODEL_KIND, obj)
        if kind_of_event is None:  # kopf is (re-)listing
            snapshots.request()
        # A change to the model itself (a user's) runs its pass at once.
        for key in touched:
            scheduler.wake(key)
