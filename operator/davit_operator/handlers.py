"""kopf handlers: thin glue between the watch streams, the planner and the kube module.

Children are observed through kopf indices (watch-backed caches keyed by (namespace, model)),
so a reconcile pass reads no API; it writes only what the planner says differs.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf
import pydantic

from davit_operator import api, naming
from davit_operator.config import OperatorConfig
from davit_operator.kube import Kube, NamespaceTerminatingError
from davit_operator.planners import observe, reconcile

Key = tuple[str, str]  # (namespace, model)
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


DeploymentIndex = kopf.Index[Key, observe.DeploymentState]
PodIndex = kopf.Index[Key, observe.PodState]
ObjectIndex = kopf.Index[Key, dict[str, Any]]


@dataclass(frozen=True)
class Caches:
    """The indices one reconcile reads; kopf hands them to handlers by function name."""

    deployments: DeploymentIndex
    pods: PodIndex
    singletons: tuple[ObjectIndex, ...]

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> Caches:
        return cls(
            deployments=kwargs["davit_deployments"],
            pods=kwargs["davit_pods"],
            singletons=(kwargs["davit_services"], kwargs["davit_pdbs"], kwargs["davit_hpas"]),
        )

    def observe(self, key: Key) -> observe.Observed:
        singletons = [obj for index in self.singletons for obj in _store(index, key)]
        return observe.Observed(
            deployments=tuple(_store(self.deployments, key)),
            singletons={obj["kind"]: obj for obj in singletons},
            pods=tuple(_store(self.pods, key)),
        )


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def register(registry: kopf.OperatorRegistry, config: OperatorConfig, kube: Kube) -> None:
    """Attach Davit's handlers to `registry`; everything they need is passed in here."""

    # A private registry has none of kopf's default login handlers. In a pod the service
    # account wins; on a laptop or in the e2e suite, the kubeconfig (no client library needed).
    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    # ---- observation: watch-backed caches of every child, keyed by (namespace, model) -------

    @kopf.index(
        "apps", "v1", "deployments", id="davit_deployments", labels=CHILDREN, registry=registry
    )
    def davit_deployments(
        *, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
    ) -> dict[Key, observe.DeploymentState]:
        return {_key(namespace, labels): observe.deployment_state(_cached(body))}

    @kopf.index("v1", "pods", id="davit_pods", labels=CHILDREN, registry=registry)
    def davit_pods(
        *, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
    ) -> dict[Key, observe.PodState]:
        return {_key(namespace, labels): observe.pod_state(_cached(body))}

    @kopf.index("v1", "services", id="davit_services", labels=CHILDREN, registry=registry)
    def davit_services(
        *, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
    ) -> dict[Key, dict[str, Any]]:
        return {_key(namespace, labels): _cached(body)}

    @kopf.index(
        "policy", "v1", "poddisruptionbudgets", id="davit_pdbs", labels=CHILDREN, registry=registry
    )
    def davit_pdbs(
        *, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
    ) -> dict[Key, dict[str, Any]]:
        return {_key(namespace, labels): _cached(body)}

    @kopf.index(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        id="davit_hpas",
        labels=CHILDREN,
        registry=registry,
    )
    def davit_hpas(
        *, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
    ) -> dict[Key, dict[str, Any]]:
        return {_key(namespace, labels): _cached(body)}

    # ---- reconcile ---------------------------------------------------------------------------

    async def reconcile_one(body: kopf.Body, patch: kopf.Patch, caches: Caches) -> None:
        if body.metadata.get("deletionTimestamp"):
            return  # being deleted: garbage collection removes the children, don't recreate them
        try:
            md = api.ModelDeployment.model_validate(_plain(body))
        except pydantic.ValidationError as error:
            # The CRD schema should have refused it; do not retry what cannot succeed.
            raise kopf.PermanentError(f"invalid ModelDeployment: {error}") from error
        key: Key = (body.metadata.namespace or "", body.metadata.name or "")
        plan = reconcile.plan(md, caches.observe(key), config, utc_now())
        try:
            for manifest in plan.apply:
                await kube.apply(manifest)
            for ref in plan.delete:
                await kube.delete(ref)
        except NamespaceTerminatingError:
            return  # the namespace and everything in it are going away

        for field, value in plan.status.items():
            patch.status[field] = value
        for event in plan.events:
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)

    # kopf hands each index to handlers as a keyword argument named after its function.
    md = (api.GROUP, api.VERSION, api.PLURAL)

    # One handler id for all three causes: they run the same idempotent pass. A failed pass
    # (API server busy, conflict) is retried after a few seconds, not kopf's default minute.
    @kopf.on.resume(*md, id="reconcile", backoff=5.0, registry=registry)
    @kopf.on.create(*md, id="reconcile", backoff=5.0, registry=registry)
    @kopf.on.update(*md, id="reconcile", backoff=5.0, registry=registry)
    async def on_change(*, body: kopf.Body, patch: kopf.Patch, **indices: Any) -> None:
        await reconcile_one(body, patch, Caches.from_kwargs(indices))

    # Children change without the ModelDeployment changing (pods scheduled, replicas ready):
    # re-plan from the caches. A pass that finds nothing to change makes no API call.
    @kopf.timer(*md, id="resync", interval=config.resync_seconds, backoff=5.0, registry=registry)
    async def resync(*, body: kopf.Body, patch: kopf.Patch, **indices: Any) -> None:
        await reconcile_one(body, patch, Caches.from_kwargs(indices))
