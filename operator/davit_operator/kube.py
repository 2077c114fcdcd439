"""The only module that talks to the Kubernetes API server for Davit's own writes.

Reads come from kopf's watch-backed indices (handlers.py), so an idle pass costs nothing; writes
are server-side apply with one field manager, and deletes that tolerate "already gone".
"""

from __future__ import annotations

from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.core.resource import NamespacedResource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.core_v1 import Service
from lightkube.resources.policy_v1 import PodDisruptionBudget
from lightkube.types import PatchType

from davit_operator import naming
from davit_operator.planners.reconcile import ChildRef

# Every kind Davit creates, and the RBAC rule in charts/ that allows it (apply = patch + create).
RESOURCES: dict[tuple[str, str], type[NamespacedResource]] = {
    ("apps/v1", "Deployment"): Deployment,
    ("v1", "Service"): Service,
    ("policy/v1", "PodDisruptionBudget"): PodDisruptionBudget,
    ("autoscaling/v2", "HorizontalPodAutoscaler"): HorizontalPodAutoscaler,
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

    async def apply(self, manifest: dict[str, Any]) -> None:
        """Server-side apply, forcing ownership of the fields Davit sets (it is their owner)."""
        metadata = manifest["metadata"]
        try:
            await self._client.patch(
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

    async def delete(self, ref: ChildRef) -> None:
        try:
            await self._client.delete(
                _resource(ref.api_version, ref.kind), ref.name, namespace=ref.namespace
            )
        except ApiError as error:
            if error.status.code != 404:
                raise

    async def close(self) -> None:
        await self._client.close()
