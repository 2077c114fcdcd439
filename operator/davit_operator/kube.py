"""The only module that talks to the Kubernetes API server for Davit's own writes.

Its lists and watches feed the informers (informers.py), so a pass reads a cache and an idle one
costs nothing; writes are server-side apply with one field manager, status merge patches,
deletes that tolerate "already gone", and Events recorded as davit-operator. Each write returns
what the server answered, so a pass can believe its own write before the watch event arrives.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from lightkube import AsyncClient, operators
from lightkube.core.exceptions import ApiError, NotReadyError
from lightkube.core.selector import build_selector
from lightkube.generic_resource import GenericNamespacedResource, create_namespaced_resource
from lightkube.types import PatchType, on_error_raise

from davit_operator import api, naming
from davit_operator.planners.reconcile import ChildRef, Event

# Every resource is generic: its objects are the plain dicts the server sent (lightkube decodes
# them with msgspec, no model classes), because the operator keeps and diffs dicts. Parsing into
# lightkube's models and back with to_dict() cost more than the request itself under load.
ModelDeploymentResource = create_namespaced_resource(api.GROUP, api.VERSION, api.KIND, api.PLURAL)
Deployment = create_namespaced_resource("apps", "v1", "Deployment", "deployments")
Service = create_namespaced_resource("", "v1", "Service", "services")
PodDisruptionBudget = create_namespaced_resource(
    "policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets"
)
HorizontalPodAutoscaler = create_namespaced_resource(
    "autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"
)
HTTPRoute = create_namespaced_resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")
ConfigMap = create_namespaced_resource("", "v1", "ConfigMap", "configmaps")
ServiceAccount = create_namespaced_resource("", "v1", "ServiceAccount", "serviceaccounts")
Role = create_namespaced_resource("rbac.authorization.k8s.io", "v1", "Role", "roles")
RoleBinding = create_namespaced_resource(
    "rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"
)
ControllerRevision = create_namespaced_resource(
    "apps", "v1", "ControllerRevision", "controllerrevisions"
)
Pod = create_namespaced_resource("", "v1", "Pod", "pods")
EventResource = create_namespaced_resource("", "v1", "Event", "events")

# Every kind Davit creates, and the RBAC rule in charts/ that allows it (apply = patch + create).
RESOURCES: dict[tuple[str, str], type[GenericNamespacedResource]] = {
    ("apps/v1", "Deployment"): Deployment,
    ("v1", "Service"): Service,
    ("policy/v1", "PodDisruptionBudget"): PodDisruptionBudget,
    ("autoscaling/v2", "HorizontalPodAutoscaler"): HorizontalPodAutoscaler,
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): HTTPRoute,
    ("apps/v1", "ControllerRevision"): ControllerRevision,
    ("v1", "ConfigMap"): ConfigMap,
    ("v1", "ServiceAccount"): ServiceAccount,
    ("rbac.authorization.k8s.io/v1", "Role"): Role,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): RoleBinding,
}

# Kinds a cluster may not serve (their CRDs are installed apart from Kubernetes), and what
# serves them: the operator watches them only where they exist, and says what is missing.
OPTIONAL_KINDS = {"HTTPRoute": "the Gateway API CRDs (gateway.networking.k8s.io)"}


# What the operator watches, by kind: what it creates, plus pods and ModelDeployments.
WATCHED: dict[str, tuple[str, type[GenericNamespacedResource]]] = {
    api.KIND: (f"{api.GROUP}/{api.VERSION}", ModelDeploymentResource),
    **{kind: (api_version, resource) for (api_version, kind), resource in RESOURCES.items()},
    "Pod": ("v1", Pod),
}

# Objects per LIST request: a start-up or relist of thousands comes in pages, not one response
# the size of the whole cluster.
LIST_PAGE = 500

WatchEvent = tuple[str, dict[str, Any]]  # (ADDED | MODIFIED | DELETED | BOOKMARK, object)


def _selector(kind: str) -> dict[str, Any] | None:
    """Children and pods are watched by the model label; ModelDeployments all."""
    return None if kind == api.KIND else {naming.MODEL_LABEL: operators.exists()}


class UnknownKindError(ValueError):
    pass


class NamespaceTerminatingError(RuntimeError):
    """The namespace is being deleted: nothing may be created in it, and nothing needs to be."""


def is_model_gone(error: ApiError) -> bool:
    """404 for the ModelDeployment itself or for its namespace: deleted (a namespace with
    everything in it) before the watch said so."""
    details = error.status.details
    if error.status.code != 404 or details is None:
        return False
    return details.kind == "namespaces" or (
        details.kind == api.PLURAL and details.group == api.GROUP
    )


def _is_namespace_terminating(error: ApiError) -> bool:
    details = error.status.details
    causes = (details.causes if details else None) or []
    return error.status.code == 403 and any(c.reason == "NamespaceTerminating" for c in causes)


def _resource(api_version: str, kind: str) -> type[GenericNamespacedResource]:
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
        return dict(applied)

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
        metadata = scaled.metadata
        return str(metadata.resourceVersion if metadata else "")

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
        return dict(patched)

    async def patch_metadata(
        self, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch the ModelDeployment itself (metadata only: finalizers, annotations)."""
        patched = await self._client.patch(
            ModelDeploymentResource, name, patch, namespace=namespace, patch_type=PatchType.MERGE
        )
        return dict(patched)

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
            await self._client.create(EventResource.from_dict(body))
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

    async def serves(self, kind: str, namespace: str) -> bool:
        """Whether the API server serves `kind` (an optional kind: its CRD may be absent) and
        lets the operator read it (a chart older than the kind may not grant it)."""
        _, resource = WATCHED[kind]
        try:
            async for _ in self._client.list(resource, namespace=namespace, chunk_size=1):
                break
        except ApiError as error:
            if error.status.code in (403, 404):
                return False
            raise
        return True

    async def list_kind(self, kind: str, namespace: str) -> tuple[list[dict[str, Any]], str | None]:
        """Every watched object of `kind` in `namespace` ("*": all of them; children: those with
        the model label), read in pages, and the resourceVersion to watch from after it."""
        api_version, resource = WATCHED[kind]
        listing = self._client.list(
            resource, namespace=namespace, labels=_selector(kind), chunk_size=LIST_PAGE
        )
        objects = [{**item, "apiVersion": api_version, "kind": kind} async for item in listing]
        # An empty list may carry no version: the watch then starts from the present.
        try:
            version: str | None = listing.resourceVersion
        except NotReadyError:
            version = None
        return objects, version or None

    async def watch_kind(
        self, kind: str, namespace: str, resource_version: str | None, timeout_seconds: int
    ) -> AsyncIterator[WatchEvent]:
        """The changes to `kind` in `namespace` after `resource_version`, with bookmarks, for as
        long as it takes: the server ends each watch request after about `timeout_seconds` and
        the next one starts where it ended. Raises ApiError 410 when the version has expired
        (list again), or whatever the connection raises when the API server is gone."""
        _, resource = WATCHED[kind]
        # lightkube's own watch() has no parameter for bookmarks; its request builder and watch
        # loop do. Bookmarks keep the version fresh on quiet kinds, so that a reconnect after an
        # outage resumes instead of relisting.
        generic = self._client._client
        request = generic.prepare_request(
            "list",
            res=resource,
            namespace=namespace,
            watch=True,
            params={
                "resourceVersion": resource_version,
                "labelSelector": build_selector(labels) if (labels := _selector(kind)) else None,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": timeout_seconds,
            },
        )
        async for event_type, obj in generic.watch(request, on_error=on_error_raise):
            yield event_type, dict(obj)

    async def ready_pod_ips(self, namespace: str, labels: Mapping[str, str]) -> list[str]:
        """The IPs of the ready pods in `namespace` that carry `labels`, sorted: one LIST, for
        the pods the informers do not watch (the router's, read at an analysis measurement)."""
        listing = self._client.list(Pod, namespace=namespace, labels=dict(labels))
        return sorted([ip async for pod in listing if (ip := _ready_ip(pod))])

    async def close(self) -> None:
        await self._client.close()


def _ready_ip(pod: dict[str, Any]) -> str | None:
    """A pod's IP, if it has one and its Ready condition is True (and it is not going)."""
    status = pod.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    )
    deleting = (pod.get("metadata") or {}).get("deletionTimestamp") is not None
    ip = status.get("podIP")
    return ip if ready and not deleting and isinstance(ip, str) and ip else None
