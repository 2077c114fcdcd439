"""kopf handlers: thin glue between the watch streams, the scheduler and the controller.

kopf keeps watch-backed caches (indices keyed by (namespace, model)) of every ModelDeployment
and child; every watch event of either wakes that model in the scheduler, which runs
`Controller.reconcile` once for a burst of events. No kopf change handlers, timers or finalizers:
kopf writes nothing to a ModelDeployment, and children go with their owner by garbage collection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from davit_operator import api, naming
from davit_operator.config import OperatorConfig
from davit_operator.controller import Controller, Key
from davit_operator.kube import Kube
from davit_operator.planners import observe
from davit_operator.planners.observe import ChildKey
from davit_operator.scheduler import Scheduler

CHILDREN = {naming.MODEL_LABEL: kopf.PRESENT}


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


def _cached(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the caches keep of a child: all but managedFields, often its largest part."""
    plain = _plain(body)
    plain.get("metadata", {}).pop("managedFields", None)
    return plain


def _key(namespace: str | None, labels: Mapping[str, str]) -> Key:
    return (namespace or "", labels[naming.MODEL_LABEL])


def _store(index: Mapping[Key, Iterable[Any]], key: Key) -> list[Any]:
    return list(index.get(key, ()))


ObjectIndex = kopf.Index[Key, dict[str, Any]]
PodIndex = kopf.Index[Key, observe.PodState]

# Index ids, which are also the keyword names under which kopf hands the indices to handlers.
MODELS = "davit_models"
CHILD_INDICES = ("davit_deployments", "davit_services", "davit_pdbs", "davit_hpas")
PODS = "davit_pods"


class IndexCaches:
    """The controller's view of kopf's indices; bound once kopf has created them (startup)."""

    def __init__(self) -> None:
        self._models: ObjectIndex | None = None
        self._children: tuple[ObjectIndex, ...] = ()
        self._pods: PodIndex | None = None

    def bind(self, indices: Mapping[str, Any]) -> None:
        self._models = indices[MODELS]
        self._children = tuple(indices[name] for name in CHILD_INDICES)
        self._pods = indices[PODS]

    def model(self, key: Key) -> dict[str, Any] | None:
        assert self._models is not None, "caches used before the operator started"
        return next(iter(_store(self._models, key)), None)

    def children(self, key: Key) -> dict[ChildKey, dict[str, Any]]:
        found = (obj for index in self._children for obj in _store(index, key))
        return {observe.child_key(obj): obj for obj in found}

    def pods(self, key: Key) -> tuple[observe.PodState, ...]:
        assert self._pods is not None, "caches used before the operator started"
        return tuple(_store(self._pods, key))


@dataclass(frozen=True)
class ChildKind:
    group: str
    version: str
    plural: str
    index: str


CHILD_KINDS = (
    ChildKind("apps", "v1", "deployments", "davit_deployments"),
    ChildKind("", "v1", "services", "davit_services"),
    ChildKind("policy", "v1", "poddisruptionbudgets", "davit_pdbs"),
    ChildKind("autoscaling", "v2", "horizontalpodautoscalers", "davit_hpas"),
)


def register(registry: kopf.OperatorRegistry, config: OperatorConfig, kube: Kube) -> None:
    """Attach Davit's handlers to `registry`; everything they need is passed in here."""
    caches = IndexCaches()
    controller = Controller(config, kube, caches)
    scheduler: Scheduler[Key] = Scheduler(controller.reconcile, concurrency=config.worker_limit)
    running: list[asyncio.Task[None]] = []

    # A private registry has none of kopf's default login handlers. In a pod the service
    # account wins; on a laptop or in the e2e suite, the kubeconfig (no client library needed).
    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    # kopf creates the indices before startup handlers run and fills them before any event
    # handler runs, so the first wake finds complete caches: a restart re-plans every model
    # once (each is listed once) and writes only what differs.
    @kopf.on.startup(registry=registry)
    async def start_scheduler(**kwargs: Any) -> None:
        caches.bind(kwargs)
        running.append(asyncio.create_task(scheduler.run(), name="davit scheduler"))

    @kopf.on.cleanup(registry=registry)
    async def stop_scheduler(**_: Any) -> None:
        for task in running:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ---- ModelDeployments: cached, and every event wakes the model --------------------------
    md = (api.GROUP, api.VERSION, api.PLURAL)

    @kopf.index(*md, id=MODELS, registry=registry)
    def davit_models(
        *, namespace: str | None, name: str | None, body: kopf.Body, **_: Any
    ) -> dict[Key, dict[str, Any]]:
        return {(namespace or "", name or ""): _cached(body)}

    @kopf.on.event(*md, id="wake-model", registry=registry)
    def wake_model(*, namespace: str | None, name: str | None, **_: Any) -> None:
        scheduler.wake((namespace or "", name or ""))

    # ---- children: cached by (namespace, model), and every event wakes their model ----------

    def child_index(kind: ChildKind) -> None:
        resource = (
            (kind.group, kind.version, kind.plural) if kind.group else (kind.version, kind.plural)
        )

        def index(
            *, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
        ) -> dict[Key, dict[str, Any]]:
            return {_key(namespace, labels): _cached(body)}

        kopf.index(*resource, id=kind.index, labels=CHILDREN, registry=registry)(index)

        def wake(
            *, event: kopf.RawEvent, namespace: str | None, labels: Mapping[str, str],
            body: kopf.Body, **_: Any,
        ) -> None:  # fmt: skip
            key = _key(namespace, labels)
            if event.get("type") == "DELETED":
                controller.child_deleted(
                    key, observe.child_key(_plain(body)), body.metadata.uid or ""
                )
            scheduler.wake(key)

        kopf.on.event(*resource, id=f"wake-{kind.plural}", labels=CHILDREN, registry=registry)(wake)

    for kind in CHILD_KINDS:
        child_index(kind)

    @kopf.index("v1", "pods", id=PODS, labels=CHILDREN, registry=registry)
    def davit_pods(
        *, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
    ) -> dict[Key, observe.PodState]:
        return {_key(namespace, labels): observe.pod_state(_cached(body))}

    @kopf.on.event("v1", "pods", id="wake-pods", labels=CHILDREN, registry=registry)
    def wake_pods(*, namespace: str | None, labels: Mapping[str, str], **_: Any) -> None:
        scheduler.wake(_key(namespace, labels))
