"""The only module that talks to the Kubernetes API server for Davit's own writes.

Reads come from kopf's watch-backed indices (handlers.py), so an idle pass costs nothing; writes
are server-side apply with one field manager, status merge patches, deletes that tolerate
"already gone", and Events recorded as davit-operator. Each write returns what the server
answered, so a pass can believe its own write before the watch event arrives.
"""

from __future__ import annotations

import contextlib
import datetime
import uuid
from typing import Any, cast

from lightkube import AsyncClient, operators
from lightkube.core.exceptions import ApiError, NotReadyError
from lightkube.core.resource import NamespacedResource
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.core_v1 import Event as EventResource
from lightkube.resources.core_v1 import Pod, Service
from lightkube.resources.policy_v1 import PodDisruptionBudget
from lightkube.types import PatchType

from davit_operator import api, naming
from davit_operator.planners.reconcile import ChildRef, Event

ModelDeploymentResource = create_namespaced_resource(api.GROUP, api.VERSION, api.KIND, api.PLURAL)

# Every kind Davit creates, and the RBAC rule in charts/ that allows it (apply = patch + create).
RESOURCES: dict[tuple[str, str], type[NamespacedResource]] = {
    ("apps/v1", "Deployment"): Deployment,
    ("v1", "Service"): Service,
    ("policy/v1", "PodDisruptionBudget"): PodDisruptionBudget,
    ("autoscaling/v2", "HorizontalPodAutoscaler"): HorizontalPodAutoscaler,
}


# What the operator watches, by kind: what it creates, plus pods and ModelDeployments.
WATCHED: dict[str, tuple[str, type[NamespacedResource]]] = {
    api.KIND: (f"{api.GROUP}/{api.VERSION}", ModelDeploymentResource),
    **{kind: (api_version, resource) for (api_version, kind), resource in RESOURCES.items()},
    "Pod": ("v1", Pod),
}


class UnknownKindError(ValueError):
    pass


class NamespaceTerminatingError(RuntimeError):
    """The namespace is being deleted: nothing may be created in it, and nothing needs to be."""


def _is_namespace_terminating(error: ApiError) -> bool:
    details = error.status.details
    causes = (details.causes if details else None) or []
    return error.status.code == 403 and any(c.reason == "NamespaceTerminating" for c in causes)


def _resource(api_version: str, kind: str) -> type[NamespacedResource]:
    try:
        return RESOURCES[(api_version, kind)]
    except KeyError:
        raise UnknownKindError(f"Davit does not manage {api_version} {kind}") from None


class Kube:
    def __init__(self, client: AsyncClient, field_manager: str = naming.FIELD_MANAGER) -> None:
        self._client = client
        self._field_manager = field_manager

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply, forcing ownership of the fields Davit sets (it is their owner)."""
        metadata = manifest["metadata"]
        try:
            applied = await self._client.patch(
                _resource(manifest["apiVersion"], manifest["kind"]),
                metadata["name"],
                manifest,
                namespace=metadata["namespace"],
                patch_type=PatchType.APPLY,
                field_manager=self._field_manager,
                force=True,
            )
        except ApiError as error:
            if _is_namespace_terminating(error):
                raise NamespaceTerminatingError(str(error.status.message)) from error
            raise
        return cast(dict[str, Any], cast(Any, applied).to_dict())

    async def scale(self, ref: ChildRef, replicas: int) -> str:
        """Set a Deployment's replicas through its scale subresource; its new resourceVersion."""
        if (ref.api_version, ref.kind) != ("apps/v1", "Deployment"):
            raise UnknownKindError(f"Davit scales only Deployments, not {ref.kind}")
        scaled = await self._client.patch(
            Deployment.Scale,
            ref.name,
            {"spec": {"replicas": replicas}},
            namespace=ref.namespace,
            patch_type=PatchType.MERGE,
        )
        return str(scaled.metadata.resourceVersion if scaled.metadata else "")

    async def patch_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch the ModelDeployment's status subresource; the object as stored after it."""
        patched = await self._client.patch(
            ModelDeploymentResource.Status,
            name,
            {"status": status},
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )
        return cast(dict[str, Any], cast(Any, patched).to_dict())

    async def patch_metadata(
        self, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch the ModelDeployment itself (metadata only: finalizers, annotations)."""
        patched = await self._client.patch(
            ModelDeploymentResource, name, patch, namespace=namespace, patch_type=PatchType.MERGE
        )
        return cast(dict[str, Any], cast(Any, patched).to_dict())

    async def record_event(self, involved: dict[str, Any], event: Event) -> None:
        """A core/v1 Event about `involved` (a ModelDeployment), from davit-operator."""
        metadata = involved["metadata"]
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{metadata['name']}.{uuid.uuid4().hex[:16]}",
                "namespace": metadata["namespace"],
            },
            "involvedObject": {
                "apiVersion": f"{api.GROUP}/{api.VERSION}",
                "kind": api.KIND,
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "uid": metadata.get("uid"),
                "resourceVersion": metadata.get("resourceVersion"),
            },
            "type": event.type,
            "reason": event.reason,
            "message": event.message[:1024],
            "source": {"component": naming.MANAGED_BY},
            "reportingComponent": naming.MANAGED_BY,
            "reportingInstance": naming.MANAGED_BY,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self._client.create(cast(EventResource, EventResource.from_dict(body)))
        except ApiError as error:
            if _is_namespace_terminating(error):
                return  # nobody will read it
            raise

    async def delete(self, ref: ChildRef) -> None:
        try:
            await self._client.delete(
                _resource(ref.api_version, ref.kind), ref.name, namespace=ref.namespace
            )
        except ApiError as error:
            if error.status.code != 404:
                raise

    async def list_kind(
        self, kind: str, namespaces: tuple[str, ...]
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Every watched object of `kind` (children: those with the model label) and the
        snapshot's resourceVersion (the smallest, over several namespaces)."""
        api_version, resource = WATCHED[kind]
        labels: dict[str, Any] | None = (
            None if kind == api.KIND else {naming.MODEL_LABEL: operators.exists()}
        )
        objects: list[dict[str, Any]] = []
        versions: list[int] = []
        for namespace in namespaces or ("*",):
            listing = self._client.list(resource, namespace=namespace, labels=labels)
            async for item in listing:
                obj = cast(dict[str, Any], cast(Any, item).to_dict())
                objects.append({**obj, "apiVersion": api_version, "kind": kind})
            # An empty list may carry no version: then there is nothing to compare against.
            with contextlib.suppress(ValueError, TypeError, NotReadyError):
                versions.append(int(listing.resourceVersion))
        return objects, (min(versions) if versions else None)

    async def close(self) -> None:
        await self._client.close()
