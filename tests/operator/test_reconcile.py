"""Table tests of the reconcile planner: each case is (ModelDeployment, observed) → expectations."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field, replace
from typing import Any

import pytest

from davit_operator import api, naming
from davit_operator.planners import children, reconcile
from davit_operator.planners.observe import ContainerProblem, Observed
from factories import CONFIG, NOW, deployment, md, observed, pod, target_of

GPU_SHORTAGE = (
    "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
    "2 Insufficient nvidia.com/gpu."
)


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def settle(model: api.ModelDeployment, obs: Observed) -> api.ModelDeployment:
    """The ModelDeployment after the plan's status patch was written."""
    first = reconcile.plan(model, obs, CONFIG, NOW)
    merged = {**model.status.model_dump(mode="json", by_alias=True), **first.status}
    return model.model_copy(update={"status": api.ModelDeploymentStatus.model_validate(merged)})


def test_new_model_creates_children_and_records_its_revision() -> None:
    model = md(replicas=2, resources={"gpu": 1, "gpuProduct": "NVIDIA-H100-80GB-HBM3"})
    plan = reconcile.plan(model, Observed(), CONFIG, NOW)
    assert [m["kind"] for m in plan.apply] == [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ControllerRevision",
    ]
    assert plan.delete == []
    assert plan.status["phase"] == "Progressing"
    assert plan.status["revisions"] == [
        {
            "hash": target_of(model),
            "number": 1,
            "version": "v3",
            "modelUri": "pvc://models/resnet/v3",
            "createdAt": NOW,
            "outcome": "Progressing",
        }
    ]
    assert plan.status["selector"] == "davit.dev/model=resnet"
    assert plan.status["url"] == "http://resnet.ml.svc:8080"
    assert [e.reason for e in plan.events] == ["RevisionCreated"]


def test_autoscaling_adds_an_hpa_and_removing_it_deletes_the_hpa() -> None:
    scaled = md(autoscaling={"minReplicas": 1, "maxReplicas": 3})
    kinds = [m["kind"] for m in reconcile.plan(scaled, Observed(), CONFIG, NOW).apply]
    assert "HorizontalPodAutoscaler" in kinds
    fixed = md()
    hpa = {"kind": "HorizontalPodAutoscaler", "metadata": {"name": "resnet"}}
    obs = Observed(children={("HorizontalPodAutoscaler", "resnet"): hpa})
    plan = reconcile.plan(fixed, obs, CONFIG, NOW)
    assert [(r.kind, r.name) for r in plan.delete] == [("HorizontalPodAutoscaler", "resnet")]


@dataclass
class Case:
    name: str
    replicas: int
    ready: int
    pods: list[tuple[bool | None, str]] = field(default_factory=list)
    phase: str = ""
    ready_condition: tuple[str, str] = ("", "")
    scheduled: tuple[str, str] = ("", "")


CASES = [
    Case("all ready", 2, 2, [(True, ""), (True, "")], "Healthy", ("True", "AllReplicasReady"),
         ("True", "AllPodsScheduled")),
    Case("gpu shortage", 1, 0, [(False, GPU_SHORTAGE)], "Pending", ("False", "InsufficientGPU"),
         ("False", "InsufficientGPU")),
    Case("other shortage", 1, 0, [(False, "0/3 nodes are available: 3 Insufficient cpu.")],
         "Pending", ("False", "Unschedulable"), ("False", "Unschedulable")),
    Case("starting", 2, 0, [(True, ""), (None, "")], "Progressing",
         ("False", "RolloutInProgress"), ("Unknown", "SchedulingInProgress")),
    Case("no pods yet", 1, 0, [], "Progressing", ("False", "RolloutInProgress"),
         ("Unknown", "PodsNotCreated")),
    Case("scaled to zero", 0, 0, [], "Healthy", ("True", "ScaledToZero"),
         ("True", "NoPodsRequested")),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_first_rollout_status(case: Case) -> None:
    model = md(replicas=case.replicas, resources={"gpu": 1})
    target = target_of(model)
    pods = tuple(pod(target, scheduled=s, message=m) for s, m in case.pods)
    plan = reconcile.plan(
        model, observed(deployment(model, ready=case.ready, gpus=1), pods=pods), CONFIG, NOW
    )
    status = plan.status
    assert status["phase"] == case.phase
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == case.ready_condition
    scheduled = condition(status, "Scheduled")
    assert (scheduled["status"], scheduled["reason"]) == case.scheduled
    if case.scheduled[1] == "InsufficientGPU":
        assert "Insufficient nvidia.com/gpu" in scheduled["message"]
        assert any(e.type == "Warning" and e.reason == "InsufficientGPU" for e in plan.events)
    assert status["ready"] == f"{case.ready}/{case.replicas}"
    assert status["gpus"] == case.replicas


def test_available_target_becomes_stable() -> None:
    model = md(replicas=2)
    plan = reconcile.plan(model, observed(deployment(model, ready=2)), CONFIG, NOW)
    assert plan.status["stableRevision"] == target_of(model)
    assert plan.status["revisions"][0]["outcome"] == "Stable"
    # Ready turning True is not a third Event: RevisionAvailable says it.
    assert [e.reason for e in plan.events] == ["RevisionCreated", "RevisionAvailable"]


def test_idle_pass_changes_nothing() -> None:
    """A healthy model whose children match: no apply, no delete, no status write, no event."""
    model = md(replicas=2)
    first = reconcile.plan(model, Observed(), CONFIG, NOW)
    # What the server holds after the first pass: the applied manifests, the target ready.
    server_side = {(m["kind"], m["metadata"]["name"]): m for m in first.apply}
    ready = deployment(model, ready=2)
    ready = replace(ready, manifest=server_side.pop(("Deployment", ready.name)))
    obs = Observed(deployments=(ready,), children=server_side)
    settled = settle(model, obs)
    again = reconcile.plan(settled, obs, CONFIG, "2026-11-23T12:05:00Z")
    assert again.apply == []
    assert again.delete == []
    assert again.status == {}
    assert again.events == []


def test_spec_change_keeps_old_revision_until_new_is_available() -> None:
    old_model = md(replicas=2)
    stable = settle(old_model, observed(deployment(old_model, ready=2)))
    new_spec = stable.spec.model_copy(
        update={"model": api.ModelSource(uri="pvc://models/resnet/v4", version="v4")}
    )
    changed = stable.model_copy(update={"spec": new_spec})
    old_state = deployment(old_model, ready=2)
    new_target = target_of(changed)
    assert new_target != target_of(old_model)

    # 1. The new revision's Deployment is created; the old one keeps serving.
    rolling = reconcile.plan(changed, observed(old_state), CONFIG, NOW)
    assert rolling.delete == []
    assert rolling.apply[0]["metadata"]["name"] == f"resnet-{new_target}"
    assert rolling.status["phase"] == "Progressing"
    assert rolling.status["canaryRevision"] == new_target
    assert [r["outcome"] for r in rolling.status["revisions"]] == ["Stable", "Progressing"]

    # 2. The new one is available: the old Deployment goes, the history keeps both.
    mid = settle(changed, observed(old_state))
    done = reconcile.plan(mid, observed(old_state, deployment(changed, ready=2)), CONFIG, NOW)
    assert [(r.kind, r.name) for r in done.delete] == [
        ("Deployment", f"resnet-{target_of(old_model)}")
    ]
    assert done.status["stableRevision"] == new_target
    assert [(r["hash"], r["outcome"]) for r in done.status["revisions"]] == [
        (target_of(old_model), "Superseded"),
        (new_target, "Stable"),
    ]
    assert done.status["phase"] == "Healthy"


def test_scaling_changes_replicas_of_the_same_revision() -> None:
    model = md(replicas=2)
    settled = settle(model, observed(deployment(model, ready=2)))
    scaled = settled.model_copy(update={"spec": settled.spec.model_copy(update={"replicas": 3})})
    assert target_of(scaled) == target_of(model)
    plan = reconcile.plan(scaled, observed(deployment(model, ready=2)), CONFIG, NOW)
    assert plan.apply[0]["spec"]["replicas"] == 3
    assert plan.delete == []


def test_history_is_trimmed_but_live_revisions_stay() -> None:
    records = [{"hash": f"r{i}", "outcome": "Superseded", "createdAt": NOW} for i in range(5)] + [
        {"hash": "live", "outcome": "Stable", "createdAt": NOW}
    ]
    model = md(status={"revisions": records}, rollout={"revisionHistoryLimit": 3})
    plan = reconcile.plan(model, Observed(), CONFIG, NOW)
    hashes = [r["hash"] for r in plan.status["revisions"]]
    assert len(hashes) == 3
    assert "live" in hashes
    assert hashes[-1] == target_of(model)


def test_the_controller_revisions_of_trimmed_revisions_are_deleted_and_the_kept_stay() -> None:
    records = [{"hash": f"r{i}", "outcome": "Superseded", "createdAt": NOW} for i in range(5)] + [
        {"hash": "live", "outcome": "Stable", "createdAt": NOW}
    ]
    model = md(status={"revisions": records}, rollout={"revisionHistoryLimit": 3})
    owner = reconcile.Target.of(model).owner
    stored = {
        ("ControllerRevision", naming.history_name(owner.name, record["hash"])):
            children.build_controller_revision(owner, record["hash"], {}, number)
        for number, record in enumerate(records, start=1)
    }  # fmt: skip
    plan = reconcile.plan(model, Observed(children=stored), CONFIG, NOW)
    kept = {r["hash"] for r in plan.status["revisions"]}
    deleted = {r.name for r in plan.delete if r.kind == "ControllerRevision"}
    # Every revision trimmed from status.revisions loses its ControllerRevision, and only those.
    assert deleted == {naming.history_name(owner.name, h) for h in
                       {r["hash"] for r in records} - kept}  # fmt: skip
    assert "live" in kept
    assert len(deleted) == len(records) + 1 - len(kept)  # the target's record is new


@dataclass(frozen=True)
class RefusalCase:
    reason: str
    previous_ready: dict[str, Any] | None
    message: str
    want_event: bool


REFUSED = "the API server refused Deployment resnet-abc: spec.template.spec.tolerations[0]: bad"
REFUSALS = [
    RefusalCase("a first refusal is reported", None, REFUSED, want_event=True),
    RefusalCase(
        "a healthy model whose new spec is refused",
        {"type": "Ready", "status": "True", "reason": "AllReplicasReady"},
        REFUSED,
        want_event=True,
    ),
    RefusalCase(
        "the same refusal again (a retry): no second Event",
        {"type": "Ready", "status": "False", "reason": "InvalidSpec", "message": REFUSED},
        REFUSED,
        want_event=False,
    ),
    RefusalCase(
        "another refusal (the user changed the spec, still wrong): a new Event",
        {"type": "Ready", "status": "False", "reason": "InvalidSpec", "message": "other"},
        REFUSED,
        want_event=True,
    ),
]


@pytest.mark.parametrize("case", REFUSALS, ids=[c.reason for c in REFUSALS])
def test_refusal(case: RefusalCase) -> None:
    scheduled = {"type": "Scheduled", "status": "True", "reason": "AllPodsScheduled"}
    conditions = [c for c in (case.previous_ready, scheduled) if c]
    model = md(status={"phase": "Healthy", "conditions": conditions})
    plan = reconcile.refusal(model, case.message, NOW)
    assert plan.apply == []
    assert plan.delete == []
    status = {**model.status.model_dump(mode="json", by_alias=True), **plan.status}
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", "InvalidSpec", REFUSED)
    assert status["phase"] == "Failed"
    assert condition(status, "Scheduled")["reason"] == "AllPodsScheduled"  # left as it was
    assert [(e.type, e.reason) for e in plan.events] == (
        [("Warning", "InvalidSpec")] if case.want_event else []
    )


# ---- the steps on their own --------------------------------------------------------------


@dataclass(frozen=True)
class PhaseCase:
    reason: str
    replicas: int
    stable_is_target: bool
    target_ready: int
    pods: tuple[bool | None, ...]  # PodScheduled per target pod
    want: tuple[str, str]  # (phase, Ready's reason)


PHASES = [
    PhaseCase("serving revision fully ready", 2, True, 2, (True, True),
              ("Healthy", "AllReplicasReady")),
    PhaseCase("serving revision lost a replica", 2, True, 1, (True, True),
              ("Degraded", "ReplicasNotReady")),
    PhaseCase("nothing ready and a pod unschedulable", 1, False, 0, (False,),
              ("Pending", "Unschedulable")),
    PhaseCase("a new revision on its way", 2, False, 1, (True, True),
              ("Progressing", "RolloutInProgress")),
    PhaseCase("scaled to zero and settled", 0, True, 0, (), ("Healthy", "ScaledToZero")),
]  # fmt: skip


@pytest.mark.parametrize("case", PHASES, ids=[c.reason for c in PHASES])
def test_plan_phase(case: PhaseCase) -> None:
    model = md(replicas=case.replicas)
    target = reconcile.Target.of(model)
    pods = tuple(
        replace(pod(target.revision, scheduled=s), name=f"p{i}") for i, s in enumerate(case.pods)
    )
    obs = observed(deployment(model, ready=case.target_ready), pods=pods)
    stable = target.revision if case.stable_is_target else "older"
    verdict = reconcile.plan_phase(target, model.spec, stable, obs)
    assert (verdict.phase.value, verdict.ready_reason) == case.want


def test_plan_revisions_retires_older_deployments_only_once_the_target_is_available() -> None:
    old_model = md(replicas=1)
    new_model = md(replicas=1, model={"uri": "pvc://models/resnet/v4", "version": "v4"})
    target = reconcile.Target.of(new_model)
    old = deployment(old_model, ready=1)
    waiting = reconcile.plan_revisions(
        target, new_model.spec, new_model.status, observed(old, deployment(new_model)), NOW
    )
    assert waiting.delete == []
    assert [e.reason for e in waiting.events] == ["RevisionCreated"]
    done = reconcile.plan_revisions(
        target, new_model.spec, new_model.status,
        observed(old, deployment(new_model, ready=1)), NOW,
    )  # fmt: skip
    assert [r.name for r in done.delete] == [old.name]
    assert done.stable == target.revision
    assert [e.reason for e in done.events] == [
        "RevisionCreated", "RevisionAvailable", "RevisionRetired",
    ]  # fmt: skip


def test_a_crash_looping_model_is_degraded_with_the_runtimes_words_and_one_event() -> None:
    model = md(replicas=1)
    target = target_of(model)
    problem = ContainerProblem("CrashLoopBackOff", "refusing to serve: bad tensor name")
    healthy = settle(model, observed(deployment(model, ready=1), pods=(pod(target, ready=True),)))
    crashing = observed(deployment(model, ready=0), pods=(replace(pod(target), problem=problem),))
    plan = reconcile.plan(healthy, crashing, CONFIG, NOW)
    status = {**healthy.status.model_dump(mode="json", by_alias=True), **plan.status}
    assert status["phase"] == "Degraded"
    loaded = condition(status, "ModelLoaded")
    assert (loaded["status"], loaded["reason"]) == ("False", "CrashLoopBackOff")
    assert loaded["message"] == "1 of 1 pods CrashLoopBackOff: refusing to serve: bad tensor name"
    assert condition(status, "Ready")["message"] == loaded["message"]
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "CrashLoopBackOff")]


def test_a_replica_change_scales_the_deployment_and_leaves_its_template_alone() -> None:
    model = md(replicas=2)
    applied = {(m["kind"], m["metadata"]["name"]): m for m in reconcile.plan(
        model, Observed(), CONFIG, NOW).apply}  # fmt: skip
    ready = deployment(model, ready=2)
    ready = replace(ready, manifest=applied.pop(("Deployment", ready.name)))
    obs = Observed(deployments=(ready,), children=applied)
    settled = settle(model, obs)

    scaled_up = settled.model_copy(update={"spec": settled.spec.model_copy(update={"replicas": 3})})
    plan = reconcile.plan(scaled_up, obs, CONFIG, NOW)
    assert plan.apply == []
    assert [(s.ref.kind, s.ref.name, s.replicas) for s in plan.scale] == [
        ("Deployment", ready.name, 3)
    ]
    # By hand, someone scaled the Deployment to 5: scaled back, not re-applied.
    by_hand = replace(ready, spec_replicas=5)
    plan = reconcile.plan(settled, Observed(deployments=(by_hand,), children=applied), CONFIG, NOW)
    assert plan.apply == []
    assert [s.replicas for s in plan.scale] == [2]


# ---- Events over a model's life: one per transition, none a user would call noise ----------

V3 = md(replicas=2)
V4 = md(replicas=2, model={"uri": "pvc://models/resnet/v4", "version": "v4"})
NOTHING = Observed()
V3_READY = observed(deployment(V3, ready=2))
V3_SHORT = observed(deployment(V3, ready=1))
V4_STARTING = observed(deployment(V3, ready=2), deployment(V4))
V4_READY = observed(deployment(V3, ready=2), deployment(V4, ready=2))


@dataclass(frozen=True)
class LifeCase:
    reason: str
    # (the spec as the user left it, what the cache holds) per pass; status carries over.
    passes: list[tuple[api.ModelDeployment, Observed]]
    want: list[tuple[str, str]]  # the last pass's Events: (type, reason)


LIFE = [
    LifeCase("a new model's first pass announces its revision",
             [(V3, NOTHING)], [("Normal", "RevisionCreated")]),
    # Ready turning True says the same as RevisionAvailable: one Event, not two.
    LifeCase("the first revision comes up",
             [(V3, NOTHING), (V3, V3_READY)], [("Normal", "RevisionAvailable")]),
    # Ready falls to RolloutInProgress; the rollout is not a Warning, RevisionCreated says it.
    LifeCase("a spec change starts a rollout",
             [(V3, NOTHING), (V3, V3_READY), (V4, V3_READY)], [("Normal", "RevisionCreated")]),
    LifeCase("a rollout still on its way says nothing more",
             [(V3, NOTHING), (V3, V3_READY), (V4, V3_READY), (V4, V4_STARTING)], []),
    LifeCase("the new revision takes over and the old one goes",
             [(V3, NOTHING), (V3, V3_READY), (V4, V3_READY), (V4, V4_READY)],
             [("Normal", "RevisionAvailable"), ("Normal", "RevisionRetired")]),
    LifeCase("a serving model loses a replica",
             [(V3, NOTHING), (V3, V3_READY), (V3, V3_SHORT)], [("Warning", "ReplicasNotReady")]),
    LifeCase("and gets it back",
             [(V3, NOTHING), (V3, V3_READY), (V3, V3_SHORT), (V3, V3_READY)],
             [("Normal", "AllReplicasReady")]),
    LifeCase("an idle pass",
             [(V3, NOTHING), (V3, V3_READY), (V3, V3_READY)], []),
]  # fmt: skip


@pytest.mark.parametrize("case", LIFE, ids=[c.reason for c in LIFE])
def test_events_over_a_models_life(case: LifeCase) -> None:
    status: dict[str, Any] = {}
    events: list[tuple[str, str]] = []
    for spec_of, obs in case.passes:
        model = spec_of.model_copy(
            update={"status": api.ModelDeploymentStatus.model_validate(status)}
        )
        plan = reconcile.plan(model, obs, CONFIG, NOW)
        status = {**status, **plan.status}
        events = [(e.type, e.reason) for e in plan.events]
    assert events == case.want


# ---- strategy recreate: the old revision goes first, honest about the downtime

RECREATE = md(replicas=2, rollout={"strategy": "recreate"}, model={"uri": "pvc://m/v2"})
OLD = "0ld57ab1e"


@dataclass(frozen=True)
class RecreateCase:
    reason: str
    old_deployment: bool  # the old revision's Deployment still exists
    old_pods: int  # its pods not yet gone
    new_ready: int | None  # the new revision's Deployment, with this many ready; None: absent
    _: KW_ONLY
    creates_new: bool = False
    deletes_old: bool = False
    phase: str = "Progressing"
    ready_reason: str = "Recreating"


RECREATES = [
    # Nothing new until the old pods are gone: the two never serve side by side.
    RecreateCase("the old revision is deleted first and the new one waits", True, 2, None,
                 deletes_old=True),
    RecreateCase("the new revision waits while the old pods terminate", False, 1, None),
    RecreateCase("with the old pods gone the new revision is created", False, 0, None,
                 creates_new=True, ready_reason="RolloutInProgress"),
    RecreateCase("the new revision ready is stable and healthy", False, 0, 2,
                 phase="Healthy", ready_reason="AllReplicasReady"),
]  # fmt: skip


@pytest.mark.parametrize("case", RECREATES, ids=[c.reason for c in RECREATES])
def test_recreate(case: RecreateCase) -> None:
    status = {"stableRevision": OLD, "revisions": [{"hash": OLD, "outcome": "Stable"}]}
    model = RECREATE.model_copy(update={"status": api.ModelDeploymentStatus.model_validate(status)})
    new = target_of(model)
    deployments = [deployment(model, OLD, ready=2)] if case.old_deployment else []
    if case.new_ready is not None:
        applied = deployment(model, ready=case.new_ready)
        deployments.append(replace(applied, manifest=reconcile.with_spec_hash(applied.manifest)))
    pods = tuple(replace(pod(OLD), name=f"old-{n}") for n in range(case.old_pods))
    plan = reconcile.plan(model, observed(*deployments, pods=pods), CONFIG, NOW)
    created = [m["metadata"]["name"] for m in plan.apply if m["kind"] == "Deployment"]
    assert created == ([f"resnet-{new}"] if case.creates_new else [])
    deleted = [r.name for r in plan.delete if r.kind == "Deployment"]
    assert deleted == ([f"resnet-{OLD}"] if case.deletes_old else [])
    stored = api.ModelDeploymentStatus.model_validate({**status, **plan.status})
    ready = next(c for c in stored.conditions if c.type == "Ready")
    assert (stored.phase, ready.reason) == (case.phase, case.ready_reason)


def test_going_back_to_stable_mid_canary_supersedes_the_dropped_canary() -> None:
    """The spec returns to the stable revision while a canary runs (an undo): stable serves at
    full size, the canary's Deployment goes, and its record is not left Progressing."""
    model = md(replicas=2)
    current = target_of(model)
    status = {
        "stableRevision": current,
        "canaryRevision": "dr0pped123",
        "revisions": [{"hash": current, "outcome": "Stable"},
                      {"hash": "dr0pped123", "outcome": "Progressing"}],
    }  # fmt: skip
    model = model.model_copy(update={"status": api.ModelDeploymentStatus.model_validate(status)})
    obs = observed(deployment(model, ready=2), deployment(model, "dr0pped123", ready=1))
    plan = reconcile.plan(model, obs, CONFIG, NOW)
    assert [r.name for r in plan.delete] == ["resnet-dr0pped123"]
    outcomes = {r["hash"]: r["outcome"] for r in plan.status["revisions"]}
    assert outcomes == {current: "Stable", "dr0pped123": "Superseded"}
    assert "RevisionAvailable" not in [e.reason for e in plan.events]  # it served all along
