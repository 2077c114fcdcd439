"""The reconcile planner: (ModelDeployment, observed children, now) → what to change.

Pure: no I/O, no clock. The handler applies `Plan.apply`, deletes `Plan.delete`, writes
`Plan.status` and records `Plan.events`; a plan with nothing in it means no API call at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from davit_operator import api, naming
from davit_operator.config import OperatorConfig
from davit_operator.planners import children, revision
from davit_operator.planners.diff import SPEC_HASH_ANNOTATION, semantic_diff
from davit_operator.planners.observe import DeploymentState, Observed, PodState

GPU_SHORTAGE_MARKER = f"Insufficient {children.GPU_RESOURCE}"
# Ready's reason when the API server refuses a child that the spec asks for.
INVALID_SPEC = "InvalidSpec"


@dataclass(frozen=True)
class ChildRef:
    api_version: str
    kind: str
    namespace: str
    name: str


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Plan:
    apply: list[dict[str, Any]] = field(default_factory=list)
    delete: list[ChildRef] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    # Wall-clock time (epoch seconds) of the next time-based step, if any: the loop wakes the
    # model then. Child and spec changes wake it anyway; this is only for work no event starts.
    wake_at: float | None = None


def with_spec_hash(manifest: dict[str, Any]) -> dict[str, Any]:
    metadata = dict(manifest["metadata"])
    metadata["annotations"] = {
        **metadata.get("annotations", {}),
        SPEC_HASH_ANNOTATION: revision.object_hash(manifest),
    }
    return {**manifest, "metadata": metadata}


def needs_apply(desired: dict[str, Any], observed: dict[str, Any] | None) -> bool:
    if observed is None:
        return True
    observed_hash = (observed.get("metadata", {}).get("annotations") or {}).get(
        SPEC_HASH_ANNOTATION
    )
    desired_hash = desired["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    return observed_hash != desired_hash or bool(semantic_diff(desired, observed))


def _ref(manifest: dict[str, Any]) -> ChildRef:
    return ChildRef(
        manifest["apiVersion"],
        manifest["kind"],
        manifest["metadata"]["namespace"],
        manifest["metadata"]["name"],
    )


def _is_available(deployment: DeploymentState | None, replicas: int) -> bool:
    return (
        deployment is not None
        and deployment.up_to_date
        and deployment.spec_replicas == replicas
        and deployment.updated_replicas >= replicas
        and deployment.available_replicas >= replicas
    )


# ---- conditions --------------------------------------------------------------------------------


def _condition(
    kind: api.ConditionType,
    ok: bool | None,
    reason: str,
    message: str,
    previous: list[api.Condition],
    now: str,
    generation: int | None,
) -> api.Condition:
    status = "Unknown" if ok is None else ("True" if ok else "False")
    before = next((c for c in previous if c.type == kind.value), None)
    since = before.last_transition_time if before and before.status == status else now
    return api.Condition(
        type=kind.value,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )


def scheduling_verdict(pods: list[PodState], replicas: int) -> tuple[bool | None, str, str]:
    """(scheduled?, reason, message) for the target revision's pods."""
    if replicas == 0:
        return True, "NoPodsRequested", "the model is scaled to zero"
    stuck = [p for p in pods if p.scheduled is False]
    if stuck:
        message = stuck[0].scheduling_message or stuck[0].scheduling_reason
        reason = "InsufficientGPU" if GPU_SHORTAGE_MARKER in message else "Unschedulable"
        return False, reason, f"{len(stuck)} of {len(pods)} pods unschedulable: {message}"
    if not pods:
        return None, "PodsNotCreated", "waiting for the revision's pods to be created"
    if all(p.scheduled for p in pods):
        return True, "AllPodsScheduled", f"{len(pods)} pods bound to nodes"
    return None, "SchedulingInProgress", "waiting for the scheduler"


# ---- the planner -------------------------------------------------------------------------------


def plan(
    md: api.ModelDeployment,
    observed: Observed,
    config: OperatorConfig,
    now: str,
) -> Plan:
    meta = md.metadata
    owner = children.Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
    generation = meta.get("generation")
    spec, status = md.spec, md.status
    target = revision.revision_hash(spec)
    replicas = children.desired_replicas(spec)
    result = Plan()

    # Children: the target revision's Deployment, the Service, the PDB, the HPA if autoscaling.
    desired = [
        children.build_deployment(owner, spec, target, replicas, config),
        children.build_service(owner, config),
        children.build_pdb(owner),
    ]
    if spec.autoscaling is not None:
        desired.append(children.build_hpa(owner, spec.autoscaling))
    else:
        for hpa in observed.of_kind("HorizontalPodAutoscaler"):
            result.delete.append(
                ChildRef(
                    "autoscaling/v2", "HorizontalPodAutoscaler", owner.namespace, hpa_name(hpa)
                )
            )
    target_deployment = observed.deployment(target)
    for manifest in map(with_spec_hash, desired):
        existing = (
            (target_deployment.manifest if target_deployment else None)
            if manifest["kind"] == "Deployment"
            else observed.child(manifest["kind"], manifest["metadata"]["name"])
        )
        if needs_apply(manifest, existing):
            result.apply.append(manifest)

    # Revisions: the target becomes stable once it is fully available; older ones then go.
    history, started = revision.record_target(status.revisions, target, spec, now)
    if started:
        version = f" ({spec.model.version})" if spec.model.version else ""
        result.events.append(
            Event("Normal", "RevisionCreated", f"revision {target}{version} rolling out")
        )
    target_available = _is_available(target_deployment, replicas)
    stable = status.stable_revision
    retired = [d for d in observed.deployments if d.revision != target]
    if target_available:
        if stable != target:
            history = revision.promote(history, target)
            result.events.append(
                Event("Normal", "RevisionAvailable", f"revision {target} serves all traffic")
            )
        stable = target
        for old in retired:
            result.delete.append(ChildRef("apps/v1", "Deployment", owner.namespace, old.name))
            result.events.append(
                Event("Normal", "RevisionRetired", f"revision {old.revision} removed")
            )
    elif stable is not None and observed.deployment(stable) is None and observed.deployments:
        stable = None  # its Deployment is gone (deleted by hand): nothing stable serves
    history = revision.trim(history, spec.rollout.revision_history_limit)

    # Status.
    target_pods = [p for p in observed.pods if p.revision == target]
    target_ready = target_deployment.ready_replicas if target_deployment else 0
    total_ready = sum(d.ready_replicas for d in observed.deployments)
    total_available = sum(d.available_replicas for d in observed.deployments)
    rolling = stable != target
    scheduled, sched_reason, sched_message = scheduling_verdict(target_pods, replicas)

    if replicas == 0 and not rolling:
        phase, ready_reason, ready_message = api.Phase.HEALTHY, "ScaledToZero", "0 replicas"
    elif scheduled is False and total_ready == 0:
        phase, ready_reason, ready_message = api.Phase.PENDING, sched_reason, sched_message
    elif rolling:
        phase = api.Phase.PROGRESSING
        ready_reason = sched_reason if scheduled is False else "RolloutInProgress"
        ready_message = f"revision {target}: {target_ready}/{replicas} ready"
    elif target_ready >= replicas:
        phase, ready_reason = api.Phase.HEALTHY, "AllReplicasReady"
        ready_message = f"{target_ready}/{replicas} replicas ready"
    else:
        phase, ready_reason = api.Phase.DEGRADED, "ReplicasNotReady"
        ready_message = f"{target_ready}/{replicas} replicas ready"

    previous = status.conditions
    conditions = [
        _condition(
            api.ConditionType.READY,
            phase is api.Phase.HEALTHY,
            ready_reason,
            ready_message,
            previous,
            now,
            generation,
        ),
        _condition(
            api.ConditionType.AVAILABLE,
            total_available > 0,
            "MinimumReplicasAvailable" if total_available > 0 else "NoReplicasAvailable",
            f"{total_available} replicas available",
            previous,
            now,
            generation,
        ),
        _condition(
            api.ConditionType.PROGRESSING,
            rolling,
            "RolloutInProgress" if rolling else "RolloutComplete",
            f"revision {target} rolling out" if rolling else f"revision {target} is serving",
            previous,
            now,
            generation,
        ),
        _condition(
            api.ConditionType.SCHEDULED,
            scheduled,
            sched_reason,
            sched_message,
            previous,
            now,
            generation,
        ),
    ]
    result.events += transition_events(previous, conditions)

    new_status = api.ModelDeploymentStatus(
        observed_generation=generation,
        phase=phase,
        conditions=conditions,
        stable_revision=stable,
        canary_revision=target if rolling else None,
        # Until canary steps drive the split, traffic follows the replica ratio of ready pods.
        canary_weight=100 if not rolling else _share(target_ready, total_ready),
        current_step=len(spec.rollout.steps) if not rolling else 0,
        revisions=history,
        replicas=sum(d.replicas for d in observed.deployments),
        ready_replicas=total_ready,
        ready=f"{target_ready}/{replicas}",
        gpus=sum(d.replicas * d.gpus_per_pod for d in observed.deployments),
        selector=naming.selector_string(naming.model_selector(owner.name)),
        url=f"http://{naming.service_name(owner.name)}.{owner.namespace}.svc:"
        f"{config.service_http_port}",
    )
    result.status = status_patch(status, new_status)
    return result


def refusal(md: api.ModelDeployment, message: str, now: str) -> Plan:
    """What to write when the API server refuses a child: the spec cannot be realised as it is.

    Ready turns False with reason InvalidSpec and the server's message, the phase Failed; one
    Warning Event per distinct refusal (not per retry). The other conditions stay as they were.
    """
    status, generation = md.status, md.metadata.get("generation")
    previous = status.conditions
    ready = _condition(
        api.ConditionType.READY, False, INVALID_SPEC, message, previous, now, generation
    )
    conditions = [ready, *(c for c in previous if c.type != api.ConditionType.READY)]
    refused = status.model_copy(
        update={
            "phase": api.Phase.FAILED,
            "conditions": conditions,
            "observed_generation": generation,
        }
    )
    before = next((c for c in previous if c.type == api.ConditionType.READY), None)
    repeated = before is not None and (before.reason, before.message) == (INVALID_SPEC, message)
    events = [] if repeated else [Event("Warning", INVALID_SPEC, message)]
    return Plan(status=status_patch(status, refused), events=events)


def _share(part: int, whole: int) -> int:
    return round(100 * part / whole) if whole else 0


def hpa_name(hpa: dict[str, Any]) -> str:
    return str(hpa["metadata"]["name"])


def transition_events(previous: list[api.Condition], current: list[api.Condition]) -> list[Event]:
    """An Event each time Ready or Scheduled changes status (not on every pass)."""
    before = {c.type: c.status for c in previous}
    events = []
    for condition in current:
        if before.get(condition.type, "Unknown") == condition.status:
            continue
        if condition.type == api.ConditionType.SCHEDULED and condition.status == "False":
            events.append(Event("Warning", condition.reason, condition.message))
        elif condition.type == api.ConditionType.READY:
            kind = "Normal" if condition.status == "True" else "Warning"
            if condition.status == "True" or before.get(condition.type) == "True":
                events.append(Event(kind, condition.reason, condition.message))
    return events


def _status_json(status: api.ModelDeploymentStatus) -> dict[str, Any]:
    return status.model_dump(mode="json", by_alias=True)


def status_patch(
    before: api.ModelDeploymentStatus, after: api.ModelDeploymentStatus
) -> dict[str, Any]:
    """Only the top-level status fields that changed (a merge patch); None clears a field."""
    old, new = _status_json(before), _status_json(after)
    return {key: value for key, value in new.items() if old.get(key) != value}
