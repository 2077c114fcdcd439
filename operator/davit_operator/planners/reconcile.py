"""The reconcile planner: (ModelDeployment, observed children, now) → what to change.

Pure: no I/O, no clock. The handler applies `Plan.apply`, deletes `Plan.delete`, writes
`Plan.status` and records `Plan.events`; a plan with nothing in it means no API call at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from davit_operator import api, naming
from davit_operator.config import OperatorConfig
from davit_operator.planners import analysis, children, controls, observe, revision, rollout
from davit_operator.planners.diff import SPEC_HASH_ANNOTATION, semantic_diff
from davit_operator.planners.observe import DeploymentState, Observed, PodState

GPU_SHORTAGE_MARKER = f"Insufficient {children.GPU_RESOURCE}"
# Ready's reason when the API server refuses a child that the spec asks for.
INVALID_SPEC = "InvalidSpec"
# Ready's reason while a new revision rolls out, and the Event of the revision taking over.
ROLLOUT_IN_PROGRESS = "RolloutInProgress"
REVISION_AVAILABLE = "RevisionAvailable"


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


@dataclass(frozen=True)
class Scale:
    """Set a child's replicas through its scale subresource, leaving its template alone."""

    ref: ChildRef
    replicas: int


@dataclass
class Plan:
    apply: list[dict[str, Any]] = field(default_factory=list)
    scale: list[Scale] = field(default_factory=list)
    delete: list[ChildRef] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    # Wall-clock time (epoch seconds) of the next time-based step, if any: the loop wakes the
    # model then. Child and spec changes wake it anyway; this is only for work no event starts.
    wake_at: float | None = None


def without_replicas(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest minus spec.replicas: replicas change through the scale subresource."""
    spec = {k: v for k, v in (manifest.get("spec") or {}).items() if k != "replicas"}
    return {**manifest, "spec": spec}


def with_spec_hash(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with a fingerprint of itself (replicas excluded: a scale is not a change
    of the object Davit applied)."""
    metadata = dict(manifest["metadata"])
    metadata["annotations"] = {
        **metadata.get("annotations", {}),
        SPEC_HASH_ANNOTATION: revision.object_hash(without_replicas(manifest)),
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


def loading_verdict(pods: list[PodState], replicas: int) -> tuple[bool | None, str, str]:
    """(model loaded?, reason, message) for the target revision's pods."""
    if replicas == 0:
        return True, "NoPodsRequested", "the model is scaled to zero"
    troubled = [p for p in pods if p.problem is not None]
    if troubled:
        problem = troubled[0].problem
        assert problem is not None
        detail = f": {problem.message}" if problem.message else ""
        return (
            False,
            problem.reason,
            f"{len(troubled)} of {len(pods)} pods {problem.reason}{detail}",
        )
    if pods and all(p.ready for p in pods):
        return True, "ModelServing", f"{len(pods)} pods serve the model"
    return None, "Loading", "waiting for the model to load"


# ---- the planner: named steps ------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What the spec asks for, computed once per pass."""

    owner: children.Owner
    revision: str
    replicas: int
    generation: int | None

    @classmethod
    def of(cls, md: api.ModelDeployment) -> Target:
        meta = md.metadata
        return cls(
            owner=children.Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"]),
            revision=revision.revision_hash(md.spec),
            replicas=children.desired_replicas(md.spec),
            generation=meta.get("generation"),
        )


@dataclass(frozen=True)
class Canary:
    """A canary rollout under way: the rollout planner's decision for this pass."""

    stable: str  # the revision that serves beside the canary
    decision: rollout.Decision
    events: list[Event]  # the steps this pass completed
    controlled: bool  # a person's control changed the rollout's state
    # Plan again then: the decision's own time (a pause's end), or now when this pass moved
    # the rollout on, because the next step may be one that no child's change would wake.
    wake_at: datetime | None
    # The measurement judged this pass, as status keeps it with the canary's revision.
    analysis: api.AnalysisRecord | None = None

    @property
    def promoted(self) -> bool:
        return self.decision.outcome is rollout.Outcome.PROMOTED

    @property
    def stopped(self) -> bool:
        """Aborted or rolled back: stable serves, the canary waits for a retry or a new spec."""
        return self.decision.state.stopped is not None


def plan_canary(
    target: Target, spec: api.ModelDeploymentSpec, status: api.ModelDeploymentStatus,
    observed: Observed, now: datetime, control: rollout.Control | None = None,
    measurement: analysis.Measurement | None = None,
) -> Canary | None:  # fmt: skip
    """The rollout planner's decision when the target replaces a stable revision step by step:
    strategy canary with steps, and a stable revision whose Deployment is there to serve beside
    it. None otherwise: the target then simply takes over once all its replicas are available.

    A weight is a replica split (provider none) or the route's (gatewayAPI). An analysis step
    judges the figures of `measurement` (read for `analysis.measurement_due`); one without a
    source holds the rollout where it is until a person promotes it, since passing it
    unjudged would promote a canary nobody measured. `control` is a person's request for this
    canary, applied first.
    """
    steps, stable, strategy = spec.rollout.steps, status.stable_revision, spec.rollout.strategy
    if strategy is api.RolloutStrategy.RECREATE:
        return None
    if strategy is api.RolloutStrategy.CANARY and not steps:
        return None
    if stable is None or stable == target.revision:
        return None
    stable_deployment = observed.deployment(stable)
    if stable_deployment is None:
        return None
    fresh = status.canary_revision != target.revision
    recorded = rollout.RolloutState() if fresh else rollout.RolloutState.of(status)
    state = rollout.apply_control(recorded, control, steps)
    assessed = analysis.assess(measurement) if measurement is not None else None
    current = rollout.current_analysis(spec.rollout, state)
    facts = replace(
        canary_facts(target, spec, stable_deployment, observed),
        can_analyse=current is not None and analysis.source_of(spec, current) is not None,
        measured=assessed[0] if assessed is not None else None,
        measure_problem=measurement.problem if measurement is not None else None,
        measure_expired=measurement is not None and measurement.expired,
    )
    decision = rollout.plan_rollout(spec.rollout, state, facts, now)

    moved = decision.state != recorded
    events = step_events(steps, recorded, state, decision, control)
    # A verdict acted on ends the measurement the state named (a control may have ended it
    # first, and then the figures are moot).
    acted = assessed if decision.state.analysis_since != state.analysis_since else None
    if acted is not None:
        events += analysis_events(acted[0], decision, stable)
    return Canary(
        stable=stable,
        decision=decision,
        events=events,
        controlled=state != recorded,
        wake_at=decision.wake_at or (now if moved else None),
        analysis=acted[1] if acted is not None else None,
    )


def analysis_events(
    measured: rollout.Measured, decision: rollout.Decision, stable: str
) -> list[Event]:
    """A failed or inconclusive measurement, with its figures; a rollback it caused. (A pass
    ends the step, and that step's own Event says so.)"""
    if decision.state.stopped is rollout.Outcome.ROLLED_BACK:
        return [Event("Warning", "RolledBack", f"analysis failed ({measured.message}): "
                      f"traffic returns to stable revision {stable}")]  # fmt: skip
    if measured.verdict is rollout.Verdict.FAIL:
        return [Event("Warning", "AnalysisFailed", decision.message)]
    if measured.verdict is rollout.Verdict.INCONCLUSIVE:
        return [Event("Normal", "AnalysisInconclusive", decision.message)]
    return []


def canary_facts(
    target: Target, spec: api.ModelDeploymentSpec, stable: DeploymentState, observed: Observed
) -> rollout.Facts:
    """What the rollout planner decides on, from the observed revisions."""
    canary = observed.deployment(target.revision)
    return rollout.Facts(
        total=target.replicas,
        stable_ready=stable.ready_replicas,
        canary_ready=canary.ready_replicas if canary else 0,
        canary_pending_for_gpus=any(
            p.scheduled is False and GPU_SHORTAGE_MARKER in p.scheduling_message
            for p in observed.pods
            if p.revision == target.revision
        ),
        # The budget is counted in the canary's pods: they are the ones that need room.
        surge_pods=rollout.surge_pods(spec.rollout.max_surge_gpus, spec.resources.gpu),
    )


def step_events(
    steps: list[api.RolloutStep], recorded: rollout.RolloutState,
    controlled: rollout.RolloutState, decision: rollout.Decision,
    control: rollout.Control | None,
) -> list[Event]:  # fmt: skip
    """One Event per step this pass completed: those a promote ended (from the state as
    `recorded` to the state as `controlled`), then the one the planner ended, in its words."""

    def completed(step: int, how: str) -> Event:
        what = f"step {step + 1} of {len(steps)} ({_describe(steps[step])})"
        return Event("Normal", "RolloutStepCompleted", f"{what} completed: {how}")

    promoted_past = range(recorded.step, min(controlled.step, len(steps)))
    ended = range(controlled.step, min(decision.state.step, len(steps)))
    return [completed(n, f"{control} requested") for n in promoted_past] + [
        completed(n, decision.message) for n in ended
    ]


def _describe(step: api.RolloutStep) -> str:
    if step.set_weight is not None:
        return f"setWeight {step.set_weight}"
    if step.pause is not None:
        return f"pause {step.pause.duration}" if step.pause.duration else "pause"
    return "analysis"


@dataclass(frozen=True)
class ChildChanges:
    apply: list[dict[str, Any]]
    scale: list[Scale]
    delete: list[ChildRef]


def recreates(spec: api.ModelDeploymentSpec) -> bool:
    return spec.rollout.strategy is api.RolloutStrategy.RECREATE


def old_pods_remain(target: Target, observed: Observed) -> bool:
    return any(p.revision != target.revision for p in observed.pods)


def routes(spec: api.ModelDeploymentSpec) -> bool:
    """Whether the Davit router stands between the model's Service and its revisions."""
    return spec.traffic.provider is api.TrafficProvider.BUILTIN


def plan_children(
    target: Target, spec: api.ModelDeploymentSpec, observed: Observed, config: OperatorConfig,
    canary: Canary | None = None,
) -> ChildChanges:  # fmt: skip
    """The target revision's Deployment, the Service, the PDB and (if autoscaling) the HPA:
    those whose Davit-owned fields differ from what is observed are applied; a Deployment that
    differs only in replicas is scaled instead. An HPA goes with autoscaling. During a canary
    the target has the canary's replicas and the stable Deployment is scaled to its share
    (until the promotion retires it). With strategy recreate the target's Deployment is made
    only once no pod of another revision is left."""
    owner = target.owner
    waits_for_old = recreates(spec) and old_pods_remain(target, observed)
    replicas = target.replicas if canary is None else canary.decision.canary_replicas
    desired = [
        children.build_deployment(owner, spec, target.revision, replicas, config),
        # The Service moves to the router only once a router pod serves: a model switched to
        # the builtin provider keeps answering from its own pods while its router starts.
        children.build_service(
            owner, config, routed=routes(spec) and router_verdict(target, spec, observed) is None
        ),
        children.build_pdb(owner),
    ]
    delete = []
    if spec.autoscaling is not None:
        desired.append(children.build_hpa(owner, spec.autoscaling))
    else:
        delete = [
            ChildRef("autoscaling/v2", "HorizontalPodAutoscaler", owner.namespace, hpa_name(hpa))
            for hpa in observed.of_kind("HorizontalPodAutoscaler")
        ]
    target_deployment = observed.deployment(target.revision)
    apply, scale = [], []
    for manifest in map(with_spec_hash, desired):
        if manifest["kind"] != "Deployment":
            existing = observed.child(manifest["kind"], manifest["metadata"]["name"])
            if needs_apply(manifest, existing):
                apply.append(manifest)
        elif target_deployment is None and waits_for_old:
            continue
        elif target_deployment is None or needs_apply(
            without_replicas(manifest), target_deployment.manifest
        ):
            apply.append(manifest)
        elif target_deployment.spec_replicas != replicas:
            scale.append(Scale(_ref(manifest), replicas))
    if canary is not None and not canary.promoted:  # a promoted canary's stable retires
        stable = observed.deployment(canary.stable)
        share = canary.decision.stable_replicas
        if stable is not None and stable.spec_replicas != share:
            ref = ChildRef("apps/v1", "Deployment", owner.namespace, stable.name)
            scale.append(Scale(ref, share))
    return ChildChanges(apply=apply, scale=scale, delete=delete)


@dataclass(frozen=True)
class RevisionChanges:
    history: list[api.RevisionRecord]
    stable: str | None
    delete: list[ChildRef]
    events: list[Event]


def plan_revisions(
    target: Target, spec: api.ModelDeploymentSpec, status: api.ModelDeploymentStatus,
    observed: Observed, now: str, canary: Canary | None = None,
) -> RevisionChanges:  # fmt: skip
    """The target becomes stable once fully available (during a canary: once the rollout
    planner promotes it); older revisions' Deployments then go. A canary that a newer target
    replaced goes at once: only stable and the target serve beside each other. With strategy
    recreate every other revision goes at once."""
    events = []
    history, started = revision.record_target(
        status.revisions, target.revision, spec, now, rolling_out=status.canary_revision
    )
    if started:
        version = f" ({spec.model.version})" if spec.model.version else ""
        events.append(
            Event("Normal", "RevisionCreated", f"revision {target.revision}{version} rolling out")
        )
    stable = status.stable_revision
    if canary is not None:
        promoted = canary.promoted
    else:
        promoted = _is_available(observed.deployment(target.revision), target.replicas)
    keep = {target.revision} if promoted or recreates(spec) else {target.revision, stable}
    retired = [d for d in observed.deployments if d.revision not in keep]
    if promoted:
        # Also when the target was stable already: a canary dropped by going back to it (an
        # undo mid-rollout) is then Superseded, not left Progressing.
        history = revision.promote(history, target.revision)
        if stable != target.revision:
            events.append(
                Event(
                    "Normal", REVISION_AVAILABLE, f"revision {target.revision} serves all traffic"
                )
            )
        stable = target.revision
    elif recreates(spec):
        stable = None  # the old revision goes first: nothing stable serves meanwhile
    elif canary is None:
        retired = []  # the old revisions serve until the target can carry all traffic
        if stable is not None and observed.deployment(stable) is None and observed.deployments:
            stable = None  # its Deployment is gone (deleted by hand): nothing stable serves
    delete = [ChildRef("apps/v1", "Deployment", target.owner.namespace, d.name) for d in retired]
    events += [
        Event("Normal", "RevisionRetired", f"revision {d.revision} removed") for d in retired
    ]
    history = revision.trim(history, spec.rollout.revision_history_limit, keep=target.revision)
    return RevisionChanges(history=history, stable=stable, delete=delete, events=events)


def plan_weights(
    target: Target, revisions: RevisionChanges, canary: Canary | None, observed: Observed
) -> list[tuple[str, int]]:
    """Percent of the requests for each serving revision, for a provider that weighs them:
    during a canary, stable and canary by the rollout's weight (the planner moves it only once
    the canary's replicas are ready); otherwise the stable revision alone, until a new revision
    without steps is available and becomes stable itself."""
    stable = revisions.stable
    if canary is not None and stable != target.revision:
        weight = canary.decision.state.weight
        return [(canary.stable, 100 - weight), (target.revision, weight)]
    if stable is not None and stable != target.revision and observed.deployment(stable):
        return [(stable, 100)]
    return [(target.revision, 100)]


def actual_weight(
    target: Target, spec: api.ModelDeploymentSpec, weights: list[tuple[str, int]],
    observed: Observed,
) -> int:  # fmt: skip
    """Percent of requests the target revision gets: with gatewayAPI or the router its weight
    in the route or the router's configuration (`weights`, as plan_traffic writes them);
    otherwise the Service spreads requests over every ready pod, so its ready pods' share,
    whatever weight a step has set."""
    provider = spec.traffic.provider
    if routes(spec) or (provider is api.TrafficProvider.GATEWAY_API and spec.traffic.gateway_api):
        return dict(weights).get(target.revision, 0)
    every = sum(d.ready_replicas for d in observed.deployments)
    if every == 0:
        # Nothing serves yet: a model's only revision is the one that will.
        alone = all(d.revision == target.revision for d in observed.deployments)
        return 100 if alone else 0
    deployment = observed.deployment(target.revision)
    return _share(deployment.ready_replicas if deployment else 0, every)


def plan_history(
    target: Target, spec: api.ModelDeploymentSpec, history: list[api.RevisionRecord],
    observed: Observed,
) -> ChildChanges:  # fmt: skip
    """One ControllerRevision per revision in the history, keeping its pod-affecting spec (what
    `kubectl davit undo` restores): the target's is written when it starts rolling out (again
    when an undo gives it a new number); those of revisions trimmed from the history go."""
    owner = target.owner
    record = next(r for r in history if r.hash == target.revision)
    desired = with_spec_hash(
        children.build_controller_revision(
            owner, target.revision, revision.pod_spec_of(spec), record.number or 1
        )
    )
    name = desired["metadata"]["name"]
    apply = [desired] if needs_apply(desired, observed.child("ControllerRevision", name)) else []
    kept = {naming.history_name(owner.name, r.hash) for r in history}
    delete = [
        ChildRef("apps/v1", kind, owner.namespace, child)
        for kind, child in observed.children
        if kind == "ControllerRevision" and child not in kept
    ]
    return ChildChanges(apply=apply, scale=[], delete=delete)


# Kinds a traffic provider creates, by their API version (LIST items come without one).
# The kinds of what traffic providers make, by apiVersion (for deleting them).
TRAFFIC_KINDS = {
    "Service": "v1",
    "HTTPRoute": children.HTTP_ROUTE_API_VERSION,
    "ConfigMap": "v1",
    "Deployment": "apps/v1",
    "PodDisruptionBudget": "policy/v1",
    "ServiceAccount": "v1",
    "Role": "rbac.authorization.k8s.io/v1",
    "RoleBinding": "rbac.authorization.k8s.io/v1",
}


def plan_traffic(
    target: Target, spec: api.ModelDeploymentSpec, weights: list[tuple[str, int]],
    observed: Observed, config: OperatorConfig,
) -> ChildChanges:  # fmt: skip
    """The provider's children: a Service per weighted revision, and with gatewayAPI an
    HTTPRoute carrying `weights`, with builtin the router's ConfigMap carrying them; with none,
    nothing. Revision Services, routes and router configurations no longer wanted (a retired
    revision, another provider) are deleted."""
    owner, gateway, provider = target.owner, spec.traffic.gateway_api, spec.traffic.provider
    desired = []
    weighed = provider is api.TrafficProvider.BUILTIN or (
        provider is api.TrafficProvider.GATEWAY_API and gateway is not None
    )
    if weighed:
        desired = [
            children.build_revision_service(owner, revision, config) for revision, _ in weights
        ]
    if provider is api.TrafficProvider.GATEWAY_API and gateway is not None:
        desired.append(children.build_http_route(owner, gateway, weights, config))
    if routes(spec):
        desired += [
            children.build_router_config(owner, spec.traffic, weights),
            *children.build_router_access(owner),
            children.build_router_deployment(owner, config, spec.traffic),
            children.build_router_pdb(owner),
        ]
    wanted = {(m["kind"], m["metadata"]["name"]) for m in desired}
    apply = [
        manifest
        for manifest in map(with_spec_hash, desired)
        if needs_apply(manifest, observed.child(manifest["kind"], manifest["metadata"]["name"]))
    ]
    delete = [
        ChildRef(TRAFFIC_KINDS[kind], kind, owner.namespace, name)
        for kind, name in observed.children
        if is_traffic_child(kind, name, owner.name) and (kind, name) not in wanted
    ]
    return ChildChanges(apply=apply, scale=[], delete=delete)


def is_traffic_child(kind: str, name: str, model: str) -> bool:
    """Whether a child of the model is one a traffic provider makes: a revision's Service, the
    HTTPRoute, or any of the router's objects; the model's own Service, PDB and HPA are not."""
    if kind not in TRAFFIC_KINDS:
        return False
    if name == naming.router_name(model):
        return True
    if kind == "Service":
        return name != naming.service_name(model)
    return kind == "HTTPRoute"


@dataclass(frozen=True)
class Verdict:
    """The phase and what the Ready and Scheduled conditions say about it."""

    phase: api.Phase
    ready_reason: str
    ready_message: str
    scheduled: bool | None
    scheduled_reason: str
    scheduled_message: str
    loaded: bool | None
    loaded_reason: str
    loaded_message: str


def plan_phase(
    target: Target, spec: api.ModelDeploymentSpec, stable: str | None, observed: Observed,
    canary: Canary | None = None,
) -> Verdict:  # fmt: skip
    """Pending (unschedulable, nothing ready), Degraded (a container cannot serve: crash loop,
    image pull, OOM — with the kubelet's and the runtime's own words), Progressing (a revision
    rolling out, in the rollout planner's words during a canary), Healthy, or Degraded (the
    serving revision short of ready replicas)."""
    replicas, rev = target.replicas, target.revision
    deployment = observed.deployment(rev)
    target_ready = deployment.ready_replicas if deployment else 0
    total_ready = sum(d.ready_replicas for d in observed.deployments)
    rolling = stable != rev
    pods = [p for p in observed.pods if p.revision == rev]
    scheduled, sched_reason, sched_message = scheduling_verdict(pods, replicas)
    loaded, load_reason, load_message = loading_verdict(pods, replicas)

    def verdict(phase: api.Phase, reason: str, message: str) -> Verdict:
        return Verdict(
            phase, reason, message, scheduled, sched_reason, sched_message,
            loaded, load_reason, load_message,
        )  # fmt: skip

    if replicas == 0 and not rolling:
        return verdict(api.Phase.HEALTHY, "ScaledToZero", "0 replicas")
    if scheduled is False and total_ready == 0:
        return verdict(api.Phase.PENDING, sched_reason, sched_message)
    if loaded is False and target_ready < replicas:
        return verdict(api.Phase.DEGRADED, load_reason, load_message)
    if rolling and canary is not None:
        # A stopped canary leaves the spec's revision unserved: degraded, until a retry or a
        # new spec (stable serves meanwhile).
        phase = api.Phase.DEGRADED if canary.stopped else api.Phase.PROGRESSING
        return verdict(phase, canary.decision.reason, canary.decision.message)
    if recreates(spec) and (
        any(d.revision != rev for d in observed.deployments) or old_pods_remain(target, observed)
    ):
        # Honest about the downtime it chose: nothing serves until the new revision does.
        return verdict(
            api.Phase.PROGRESSING,
            "Recreating",
            f"revision {rev}: the old revision's pods go first (strategy recreate: nothing "
            f"serves until {rev} is ready)",
        )
    if rolling:
        reason = sched_reason if scheduled is False else ROLLOUT_IN_PROGRESS
        return verdict(
            api.Phase.PROGRESSING, reason, f"revision {rev}: {target_ready}/{replicas} ready"
        )
    ready = f"{target_ready}/{replicas} replicas ready"
    router = router_verdict(target, spec, observed)
    if router is not None and target_ready >= replicas:
        return verdict(*router)
    if target_ready >= replicas:
        return verdict(api.Phase.HEALTHY, "AllReplicasReady", ready)
    return verdict(api.Phase.DEGRADED, "ReplicasNotReady", ready)


def router_verdict(
    target: Target, spec: api.ModelDeploymentSpec, observed: Observed
) -> tuple[api.Phase, str, str] | None:
    """Why a model behind the Davit router cannot be reached although its replicas are ready:
    no router pod is ready yet (Progressing, reason RouterNotReady); None when one serves, or
    no router stands in front of the model."""
    if not routes(spec):
        return None
    name = naming.router_name(target.owner.name)
    found = observed.child("Deployment", name)
    router = observe.deployment_state(found) if found is not None else None
    if router is not None and router.ready_replicas > 0:
        return None
    wanted = router.spec_replicas if router is not None else children.ROUTER_REPLICAS
    return (
        api.Phase.PROGRESSING,
        "RouterNotReady",
        f"0/{wanted} pods of the Davit router {name} ready: requests reach the model once one is",
    )


def plan_conditions(
    target: Target, verdict: Verdict, stable: str | None, observed: Observed,
    previous: list[api.Condition], now: str, canary: Canary | None = None,
    measured: api.AnalysisRecord | None = None,
) -> list[api.Condition]:  # fmt: skip
    """Ready, Available, Progressing, Scheduled, ModelLoaded, and CanaryHealthy while a
    canary that was `measured` rolls out; transition times kept while a status holds."""
    rolling = stable != target.revision
    available = sum(d.available_replicas for d in observed.deployments)
    rev = target.revision
    progressing = rolling
    if rolling and canary is not None and canary.stopped:
        # The rollout ended, and not with the canary serving: Aborted or RolledBack.
        progressing = False
        progress = (canary.decision.outcome.value, canary.decision.message)
    elif rolling and canary is not None:
        progress = (canary.decision.reason, canary.decision.message)
    elif rolling:
        progress = (ROLLOUT_IN_PROGRESS, f"revision {rev} rolling out")
    else:
        progress = ("RolloutComplete", f"revision {rev} is serving")

    def condition(
        kind: api.ConditionType, ok: bool | None, reason: str, message: str
    ) -> api.Condition:
        return _condition(kind, ok, reason, message, previous, now, target.generation)

    return [
        condition(
            api.ConditionType.READY,
            verdict.phase is api.Phase.HEALTHY,
            verdict.ready_reason,
            verdict.ready_message,
        ),
        condition(
            api.ConditionType.AVAILABLE,
            available > 0,
            "MinimumReplicasAvailable" if available > 0 else "NoReplicasAvailable",
            f"{available} replicas available",
        ),
        condition(api.ConditionType.PROGRESSING, progressing, *progress),
        condition(
            api.ConditionType.SCHEDULED,
            verdict.scheduled,
            verdict.scheduled_reason,
            verdict.scheduled_message,
        ),
        condition(
            api.ConditionType.MODEL_LOADED,
            verdict.loaded,
            verdict.loaded_reason,
            verdict.loaded_message,
        ),
    ] + (
        [condition(api.ConditionType.CANARY_HEALTHY, *canary_health(measured))]
        if rolling and canary is not None and measured is not None
        else []
    )


def canary_health(measured: api.AnalysisRecord) -> tuple[bool | None, str, str]:
    """CanaryHealthy from the canary's last measurement: True (passed), False (failed) or
    Unknown (inconclusive), with the figures."""
    health = {
        rollout.Verdict.PASS: (True, "AnalysisPassed"),
        rollout.Verdict.FAIL: (False, "AnalysisFailed"),
        rollout.Verdict.INCONCLUSIVE: (None, "AnalysisInconclusive"),
    }
    ok, reason = health[rollout.Verdict(measured.verdict)]
    return ok, reason, measured.message


def build_status(
    target: Target, spec: api.ModelDeploymentSpec, revisions: RevisionChanges, verdict: Verdict,
    conditions: list[api.Condition], observed: Observed, config: OperatorConfig,
    canary: Canary | None = None, last_control: str | None = None,
) -> api.ModelDeploymentStatus:  # fmt: skip
    """The whole status; during a canary its step, weight and timers as the rollout planner
    recorded them (what `RolloutState.of` reads back next pass)."""
    owner, rev = target.owner, target.revision
    rolling = revisions.stable != rev
    deployment = observed.deployment(rev)
    target_ready = deployment.ready_replicas if deployment else 0
    total_ready = sum(d.ready_replicas for d in observed.deployments)
    status = api.ModelDeploymentStatus(
        observed_generation=target.generation,
        phase=verdict.phase,
        conditions=conditions,
        stable_revision=revisions.stable,
        canary_revision=rev if rolling else None,
        # A rollout without canary steps: traffic follows the replica ratio of ready pods (a
        # canary's own weight replaces this below).
        canary_weight=100 if not rolling else _share(target_ready, total_ready),
        current_step=len(spec.rollout.steps) if not rolling else 0,
        revisions=revisions.history,
        last_control=last_control,
        replicas=sum(d.replicas for d in observed.deployments),
        ready_replicas=total_ready,
        ready=f"{target_ready}/{target.replicas}",
        gpus=sum(d.replicas * d.gpus_per_pod for d in observed.deployments),
        selector=naming.selector_string(naming.model_selector(owner.name)),
        url=f"http://{naming.service_name(owner.name)}.{owner.namespace}.svc:"
        f"{config.service_http_port}",
    )
    if canary is None or not rolling:
        return status
    status = rollout.recorded(status, canary.decision)
    if canary.analysis is None:
        return status
    return status.model_copy(
        update={"revisions": revision.record_analysis(status.revisions, rev, canary.analysis)}
    )


def plan(
    md: api.ModelDeployment,
    observed: Observed,
    config: OperatorConfig,
    now: str,
    measurement: analysis.Measurement | None = None,
) -> Plan:
    """One pass: canary → children → revisions → traffic → history → phase → conditions →
    status, each step pure; `now` is an RFC 3339 UTC time (as status records it), and
    `measurement` the figures read for `analysis.measurement_due` (if one was)."""
    spec, status = md.spec, md.status
    target = Target.of(md)
    request = controls.pending(md.metadata.get("annotations") or {}, status.last_control)
    control = for_target(request, target)
    moment = datetime.fromisoformat(now)
    canary = plan_canary(target, spec, status, observed, moment, control, measurement)
    child_changes = plan_children(target, spec, observed, config, canary)
    revisions = plan_revisions(target, spec, status, observed, now, canary)
    weights = plan_weights(target, revisions, canary, observed)
    traffic = plan_traffic(target, spec, weights, observed, config)
    kept = plan_history(target, spec, revisions.history, observed)
    verdict = plan_phase(target, spec, revisions.stable, observed, canary)
    conditions = plan_conditions(
        target, verdict, revisions.stable, observed, status.conditions, now, canary,
        latest_analysis(target, revisions.history, canary),
    )  # fmt: skip
    last_control = request.value if request is not None else status.last_control
    new_status = build_status(
        target, spec, revisions, verdict, conditions, observed, config, canary, last_control
    ).model_copy(update={"actual_weight": actual_weight(target, spec, weights, observed)})
    step_events = control_events(request, target, canary)
    step_events += canary.events if canary is not None else []
    wake_at = canary.wake_at if canary is not None else None
    return Plan(
        apply=child_changes.apply + traffic.apply + kept.apply,
        scale=child_changes.scale,
        delete=child_changes.delete + revisions.delete + traffic.delete + kept.delete,
        status=status_patch(status, new_status),
        events=revisions.events
        + step_events
        + transition_events(status.conditions, conditions, revisions.events),
        wake_at=wake_at.timestamp() if wake_at is not None else None,
    )


def latest_analysis(
    target: Target, history: list[api.RevisionRecord], canary: Canary | None
) -> api.AnalysisRecord | None:
    """The target's last canary measurement: this pass's, or the one its record keeps (none
    when this pass retries it: the stopped attempt's verdict is not the new attempt's)."""
    if canary is not None and canary.analysis is not None:
        return canary.analysis
    record = next((r for r in history if r.hash == target.revision), None)
    if record is None or (canary is not None and rollout.retried(record, canary.decision.state)):
        return None
    return record.analysis


def for_target(request: controls.Pending | None, target: Target) -> rollout.Control | None:
    """The control a pending request asks of the target's rollout, if it is meant for it."""
    if request is None or request.request is None:
        return None
    return request.request.control if request.request.revision == target.revision else None


def control_events(
    request: controls.Pending | None, target: Target, canary: Canary | None
) -> list[Event]:
    """What became of a person's control, said once (the request is then recorded as done):
    accepted, or ignored with the reason (meant for another revision, no rollout running, or
    nothing it could change), or refused (an annotation that cannot be read)."""
    if request is None:
        return []
    if request.request is None:
        return [Event("Warning", "ControlRefused", request.problem)]
    control, revision_meant = request.request.control, request.request.revision
    if canary is None:
        why = "no canary rollout is running"
    elif revision_meant != target.revision:
        why = f"it was meant for revision {revision_meant}, but {target.revision} is rolling out"
    elif canary.controlled:
        return [Event("Normal", "ControlAccepted", f"{control}: {canary.decision.message}")]
    else:
        why = f"it changes nothing now: {canary.decision.message}"
    return [Event("Warning", "ControlIgnored", f"{control} ignored: {why}")]


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


def transition_events(
    previous: list[api.Condition], current: list[api.Condition], revision_events: list[Event]
) -> list[Event]:
    """An Event when Ready changes to or from True, and when Scheduled or ModelLoaded turns
    False (once per transition, not on every pass).

    Ready's own Event is left out where another Event says it, so that `kubectl describe`
    tells each thing once: Ready rising with its revision's RevisionAvailable (this pass);
    Ready falling for the reason a False Scheduled or ModelLoaded gives (this pass or an
    earlier one); Ready falling while a rollout runs (Progressing True), which RevisionCreated
    announces and which is no cause for a Warning.
    """
    before = {c.type: c.status for c in previous}
    warn_when_false = {api.ConditionType.SCHEDULED, api.ConditionType.MODEL_LOADED}
    told = {
        (c.reason, c.message) for c in current if c.type in warn_when_false and c.status == "False"
    }
    revision_available = any(e.reason == REVISION_AVAILABLE for e in revision_events)
    rolling = any(c.type == api.ConditionType.PROGRESSING and c.status == "True" for c in current)
    events = []
    for condition in current:
        if before.get(condition.type, "Unknown") == condition.status:
            continue
        if condition.type in warn_when_false and condition.status == "False":
            events.append(Event("Warning", condition.reason, condition.message))
        elif condition.type == api.ConditionType.READY:
            if condition.status == "True":
                if not revision_available:
                    events.append(Event("Normal", condition.reason, condition.message))
            elif (
                before.get(condition.type) == "True"
                and not rolling
                and (condition.reason, condition.message) not in told
            ):
                events.append(Event("Warning", condition.reason, condition.message))
    return events


def _status_json(status: api.ModelDeploymentStatus) -> dict[str, Any]:
    dumped = status.model_dump(mode="json", by_alias=True)
    # A top-level None clears its field; inside a revision's record, absent says the same.
    dumped["revisions"] = [
        r.model_dump(mode="json", by_alias=True, exclude_none=True) for r in status.revisions
    ]
    return dumped


def status_patch(
    before: api.ModelDeploymentStatus, after: api.ModelDeploymentStatus
) -> dict[str, Any]:
    """Only the top-level status fields that changed (a merge patch); None clears a field."""
    old, new = _status_json(before), _status_json(after)
    return {key: value for key, value in new.items() if old.get(key) != value}
