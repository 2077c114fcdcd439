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
class ContainerProblem:
    """Why a pod's server container does not serve, as the kubelet reports it."""

    reason: str  # CrashLoopBackOff, ImagePullBackOff, OOMKilled, Error, …
    message: str


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
    problem: ContainerProblem | None = None


# Waiting reasons that mean the container will not start without a change (or a long wait);
# ContainerCreating and PodInitializing are progress, not problems.
WAITING_PROBLEMS = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


def container_problem(status: dict[str, Any]) -> ContainerProblem | None:
    """The first container that cannot serve, with the best message there is for it.

    The message of the last termination comes first: that is where the runtime writes why it
    refused to serve (its termination log), and where the kubelet writes OOMKilled's story.
    """
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        last = (container.get("lastState") or {}).get("terminated") or {}
        waiting = state.get("waiting") or {}
        terminated = state.get("terminated") or {}
        if waiting.get("reason") in WAITING_PROBLEMS:
            reason = str(waiting["reason"])
            if last.get("reason") == "OOMKilled":
                reason = "OOMKilled"
            detail = last.get("message") or waiting.get("message") or ""
            exit_code = last.get("exitCode")
            if not detail and exit_code is not None:
                detail = f"the server exited with code {exit_code}"
            return ContainerProblem(reason, str(detail).strip())
        if terminated and terminated.get("exitCode", 0) != 0:
            detail = terminated.get("message") or f"exited with code {terminated.get('exitCode')}"
            return ContainerProblem(str(terminated.get("reason") or "Error"), str(detail).strip())
    return None


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
        problem=container_problem(status),
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


ChildKey = tuple[str, str]  # (kind, name): a model may own several children of one kind


@dataclass(frozen=True)
class Observed:
    """Everything of one ModelDeployment that exists in the cluster right now."""

    deployments: tuple[DeploymentState, ...] = ()
    # The other children (Service, PodDisruptionBudget, HorizontalPodAutoscaler) by kind and name.
    children: dict[ChildKey, dict[str, Any]] = field(default_factory=dict)
    pods: tuple[PodState, ...] = ()

    def deployment(self, revision: str) -> DeploymentState | None:
        return next((d for d in self.deployments if d.revision == revision), None)

    def child(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.children.get((kind, name))

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [obj for (k, _), obj in sorted(self.children.items()) if k == kind]


def child_key(obj: dict[str, Any]) -> ChildKey:
    return (str(obj.get("kind", "")), str((obj.get("metadata") or {}).get("name", "")))


def controller_uid(obj: dict[str, Any]) -> str | None:
    """The uid of the object's controlling owner, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid", ""))
    return None


def _is_revision_deployment(key: ChildKey, obj: dict[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return key[0] == "Deployment" and naming.REVISION_LABEL in labels


def assemble(
    owner_uid: str, children: dict[ChildKey, dict[str, Any]], pods: tuple[PodState, ...]
) -> Observed:
    """The Observed snapshot of the children that `owner_uid` controls.

    A child that merely carries the model's label (made by hand, or by another controller) is
    not this model's: it is neither diffed against nor deleted.
    """
    owned = {key: obj for key, obj in children.items() if controller_uid(obj) == owner_uid}
    revisions = {key for key, obj in owned.items() if _is_revision_deployment(key, obj)}
    deployments = tuple(deployment_state(owned[key]) for key in sorted(revisions))
    # The rest, the router's Deployment among them (it serves no revision of its own).
    others = {key: obj for key, obj in owned.items() if key not in revisions}
    owned_revisions = {d.revision for d in deployments}
    return Observed(
        deployments=deployments,
        children=others,
        pods=tuple(p for p in pods if p.revision in owned_revisions),
    )


# ---- bookkeeping of earlier Davit versions ------------------------------------------------------

# Davit up to 0.1 reconciled with kopf timers: a finalizer and kopf's annotations on every object.
LEGACY_FINALIZER = "davit.dev/finalizer"
LEGACY_ANNOTATIONS = (
    "davit.dev/last-handled-configuration",
    "davit.dev/reconcile",
    "davit.dev/resync",
)


def legacy_cleanup(metadata: dict[str, Any]) -> dict[str, Any] | None:
    """A merge patch removing earlier versions' finalizer and annotations, or None if clean.

    It carries the resourceVersion, so a finalizer that someone else adds meanwhile is not
    dropped by the list replacement (the API server answers 409 and the pass is retried).
    """
    finalizers = list(metadata.get("finalizers") or [])
    annotations = metadata.get("annotations") or {}
    stale = [a for a in LEGACY_ANNOTATIONS if a in annotations]
    if LEGACY_FINALIZER not in finalizers and not stale:
        return None
    patch: dict[str, Any] = {"resourceVersion": metadata.get("resourceVersion")}
    if LEGACY_FINALIZER in finalizers:
        remaining = [f for f in finalizers if f != LEGACY_FINALIZER]
        patch["finalizers"] = remaining or None
    if stale:
        patch["annotations"] = dict.fromkeys(stale)
    return {"metadata": patch}
