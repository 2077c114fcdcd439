"""Snapshots of observed children: the small, immutable facts the planner decides on.

Built from raw API objects by pure functions, so the watch caches hold little and tests can
construct snapshots directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from davit_operator import naming
from davit_operator.planners.children import GPU_RESOURCE


@dataclass(frozen=True)
class PodState:
    name: str
    revision: str
    phase: str = "Pending"
    ready: bool = False
    # PodScheduled condition: None until the scheduler has said anything.
    scheduled: bool | None = None
    scheduling_reason: str = ""
    scheduling_message: str = ""


@dataclass(frozen=True)
class DeploymentState:
    """One revision's Deployment, with the raw manifest kept for the semantic diff."""

    revision: str
    name: str
    spec_replicas: int
    replicas: int
    ready_replicas: int
    available_replicas: int
    updated_replicas: int
    gpus_per_pod: int
    up_to_date: bool  # the Deployment controller has seen the latest spec
    manifest: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def _condition(conditions: list[dict[str, Any]] | None, kind: str) -> dict[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == kind), None)


def pod_state(pod: dict[str, Any]) -> PodState:
    status = pod.get("status") or {}
    conditions = status.get("conditions")
    scheduled = _condition(conditions, "PodScheduled")
    ready = _condition(conditions, "Ready")
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return PodState(
        name=pod["metadata"]["name"],
        revision=labels.get(naming.REVISION_LABEL, ""),
        phase=status.get("phase", "Pending"),
        ready=bool(ready and ready.get("status") == "True"),
        scheduled=None if scheduled is None else scheduled.get("status") == "True",
        scheduling_reason=(scheduled or {}).get("reason", "") or "",
        scheduling_message=(scheduled or {}).get("message", "") or "",
    )


def _gpus_per_pod(deployment: dict[str, Any]) -> int:
    pod_spec = deployment.get("spec", {}).get("template", {}).get("spec", {})
    total = 0
    for container in pod_spec.get("containers", []):
        limits = (container.get("resources") or {}).get("limits") or {}
        total += int(str(limits.get(GPU_RESOURCE, 0)))
    return total


def deployment_state(deployment: dict[str, Any]) -> DeploymentState:
    metadata = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    return DeploymentState(
        revision=(metadata.get("labels") or {}).get(naming.REVISION_LABEL, ""),
        name=metadata.get("name", ""),
        spec_replicas=int(spec.get("replicas", 1)),
        replicas=int(status.get("replicas", 0)),
        ready_replicas=int(status.get("readyReplicas", 0)),
        available_replicas=int(status.get("availableReplicas", 0)),
        updated_replicas=int(status.get("updatedReplicas", 0)),
        gpus_per_pod=_gpus_per_pod(deployment),
        up_to_date=int(status.get("observedGeneration", 0)) >= int(metadata.get("generation", 1)),
        manifest=deployment,
    )


@dataclass(frozen=True)
class Observed:
    """Everything of one ModelDeployment that exists in the cluster right now."""

    deployments: tuple[DeploymentState, ...] = ()
    # Service, PodDisruptionBudget, HorizontalPodAutoscaler by kind.
    singletons: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: tuple[PodState, ...] = ()

    def deployment(self, revision: str) -> DeploymentState | None:
        return next((d for d in self.deployments if d.revision == revision), None)
