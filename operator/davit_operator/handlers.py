"""kopf handlers: thin glue between the watch streams, the cluster cache and the scheduler.

kopf only watches. Every watch event of a ModelDeployment, or of a child or pod carrying the
model label, updates the cluster cache and wakes the models it touched; the scheduler runs one
`Controller.reconcile` for a burst of them. No kopf change handlers, timers or finalizers: kopf
writes nothing to a ModelDeployment, and children go with their owner by garbage collection.

The cache is filled from LIST snapshots before the first pass (so a restart re-plans every model
once, from complete caches), and again whenever kopf re-lists a kind (after a watch expired, e.g.
when the API server was away): kopf reports the objects that exist, never those deleted meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from davit_operator import api, naming
from davit_operator.caches import MODEL_KIND, POD_KIND, ClusterCache, Key
from davit_operator.config import OperatorConfig
from davit_operator.controller import Controller
from davit_operator.kube import Kube
from davit_operator.scheduler import Backoff, Scheduler, retry_delay

logger = logging.getLogger(__name__)

CHILDREN = {naming.MODEL_LABEL: kopf.PRESENT}
# A re-listing arrives as a burst of events; one snapshot after it has settled is enough.
SNAPSHOT_SETTLE_SECONDS = 2.0
SNAPSHOT_RETRY = Backoff(first_seconds=1, max_seconds=30)

# (group, version, plural) per kind the operator watches.
WATCHED_KINDS: dict[str, tuple[str, str, str]] = {
    MODEL_KIND: (api.GROUP, api.VERSION, api.PLURAL),
    "Deployment": ("apps", "v1", "deployments"),
    "Service": ("", "v1", "services"),
    "PodDisruptionBudget": ("policy", "v1", "poddisruptionbudgets"),
    "HorizontalPodAutoscaler": ("autoscaling", "v2", "horizontalpodautoscalers"),
    POD_KIND: ("", "v1", "pods"),
}


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


class Snapshots:
    """LIST snapshots of every watched kind into the cache, waking the models that changed."""

    def __init__(
        self, kube: Kube, cache: ClusterCache, scheduler: Scheduler[Key], config: OperatorConfig
    ) -> None:
        self._kube, self._cache, self._scheduler = kube, cache, scheduler
        self._namespaces = config.namespaces
        self._pending: asyncio.Task[None] | None = None

    async def take(self) -> None:
        for kind in WATCHED_KINDS:
            objects, version = await self._kube.list_kind(kind, self._namespaces)
            for key in self._cache.replace(kind, objects, version):
                self._scheduler.wake(key)

    async def take_until_done(self) -> None:
        """At start: the operator cannot do anything useful before one snapshot succeeded."""
        failures = 0
        while True:
            try:
                await self.take()
                return
            except Exception as error:
                failures += 1
                delay = retry_delay(failures, SNAPSHOT_RETRY)
                logger.warning("listing the cluster failed (retry in %.0fs): %r", delay, error)
                await asyncio.sleep(delay)

    def request(self) -> None:
        """A re-listing is under way: take a snapshot once it has settled."""
        if self._pending is None or self._pending.done():
            self._pending = asyncio.create_task(self._settled(), name="davit snapshot")

    async def _settled(self) -> None:
        await asyncio.sleep(SNAPSHOT_SETTLE_SECONDS)
        try:
            await self.take()
        except Exception as error:  # the next re-listing (kopf retries) asks again
            logger.warning("listing the cluster failed: %r", error)

    async def stop(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pending


def register(registry: kopf.OperatorRegistry, config: OperatorConfig, kube: Kube) -> None:
    """Attach Davit's handlers to `registry`; everything they need is passed in here."""
    cache = ClusterCache()
    controller = Controller(config, kube, cache)
    scheduler: Scheduler[Key] = Scheduler(
        controller.reconcile,
        concurrency=config.worker_limit,
        settle_seconds=config.settle_seconds,
    )
    snapshots = Snapshots(kube, cache, scheduler, config)
    running: list[asyncio.Task[None]] = []

    # A private registry has none of kopf's default login handlers. In a pod the service
    # account wins; on a laptop or in the e2e suite, the kubeconfig (no client library needed).
    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    # Startup handlers finish before kopf starts watching: the first passes see complete caches.
    @kopf.on.startup(registry=registry)
    async def start_scheduler(**_: Any) -> None:
        await snapshots.take_until_done()
        for key in cache.models():
            scheduler.wake(key)  # a restart re-plans every model once
        running.append(asyncio.create_task(scheduler.run(), name="davit scheduler"))

    @kopf.on.cleanup(registry=registry)
    async def stop_scheduler(**_: Any) -> None:
        await snapshots.stop()
        for task in running:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def watch(kind: str) -> None:
        group, version, plural = WATCHED_KINDS[kind]
        resource = (group, version, plural) if group else (version, plural)
        labels = None if kind == MODEL_KIND else CHILDREN

        # async: kopf runs sync handlers in threads, and the cache and scheduler belong to the loop.
        async def observe_event(*, event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
            kind_of_event = event.get("type")
            obj = _plain(body)
            if kind_of_event == "DELETED":
                touched = cache.delete(kind, obj)
            else:
                touched = cache.upsert(kind, obj)
            if kind_of_event is None:  # kopf is (re-)listing this kind
                snapshots.request()
            # A change to the model itself (a user's) runs at once; children's and pods' events
            # settle, so that their flurry gives one pass.
            for key in touched:
                scheduler.wake(key, settle=kind != MODEL_KIND)

        kopf.on.event(*resource, id=f"observe-{plural}", labels=labels, registry=registry)(
            observe_event
        )

    for kind in WATCHED_KINDS:
        watch(kind)
