"""Table tests of a canary rollout as the reconcile planner drives it: (status, observed, now)
→ the replicas of each revision, the rollout's status, its Events and the next wake-up.

Traffic follows ready replicas (provider none), so each weight is a replica split of the
total: with 4 replicas, 50 % is 2 canary and 2 stable.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from canary_factories import (
    ABORT,
    CANARY,
    GPU_SHORTAGE,
    MODEL,
    PAUSE_END,
    PROMOTE,
    RETRY,
    STABLE,
    START,
    STEPS,
    canary,
    control,
    history,
    rolling,
    stable,
)

from davit_operator import api
from davit_operator.planners import analysis, reconcile
from davit_operator.planners.analysis import Figures
from davit_operator.planners.controls import CONTROL_ANNOTATION
from davit_operator.planners.observe import DeploymentState, PodState
from factories import CONFIG, NOW, deployment, md, observed, pod, target_of


@dataclass(frozen=True)
class Want:
    _: KW_ONLY
    reason: str  # of the Progressing condition (and Ready, while the rollout runs)
    canary_replicas: int | None = None  # the canary Deployment applied or scaled to this
    stable_replicas: int | None = None  # the stable Deployment scaled to this
    status: dict[str, Any] = field(default_factory=dict)  # these fields of the status patch
    events: list[str] = field(default_factory=list)  # reasons of the pass's Events
    # Seconds after NOW the model is planned again: a pause's end, or the pass's own time
    # when it moved the rollout on (the next step may need no child to change).
    wake_in: float | None = None
    deleted: list[str] = field(default_factory=list)  # revisions whose Deployment goes
    health: str | None = None  # the CanaryHealthy condition's status; None: no such condition
    verdict: str | None = None  # of the canary's last measurement, as its record keeps it


@dataclass(frozen=True)
class Case:
    reason: str
    status: dict[str, Any]
    deployments: tuple[DeploymentState, ...]
    want: Want
    _: KW_ONLY
    model: api.ModelDeployment = field(default_factory=lambda: MODEL)
    pods: tuple[PodState, ...] = ()
    now: str = NOW
    control: str | None = None  # the davit.dev/rollout-control annotation
    phase: str = "Progressing"
    # What the source read for the measurement due this pass: (canary, stable) figures, or
    # `problem` where it failed; None: nothing was due (or read).
    figures: tuple[Figures, Figures] | None = None
    problem: str | None = None


def analysed(**settings: Any) -> api.ModelDeployment:
    """MODEL with an analysis step after the 50 % one, measured over 10 s from a Prometheus."""
    defaults = {"interval": "10s", "failureLimit": 0, "prometheus": {"url": "http://prom:9090"}}
    rollout = {"steps": [{"setWeight": 50}, {"analysis": {}}],
               "analysis": {**defaults, **settings.pop("analysis", {})}, **settings}  # fmt: skip
    return md(replicas=4, rollout=rollout)


def measuring(since: float = -10, **fields: Any) -> dict[str, Any]:
    """At the analysis step, a measurement begun `since` seconds from NOW."""
    begun = (START + timedelta(seconds=since)).isoformat()
    return rolling(currentStep=1, canaryWeight=50, analysisStartedAt=begun, **fields)


HEALTH_REASONS = {"Pass": "AnalysisPassed", "Fail": "AnalysisFailed",
                  "Inconclusive": "AnalysisInconclusive"}  # fmt: skip
HEALTHY = Figures(requests=400, errors=0, p99_ms=20)
FAILING = Figures(requests=400, errors=80, p99_ms=20)
QUIET = Figures(requests=3, errors=0, p99_ms=20)


FAILED_RECORD = {
    "startedAt": "2026-12-01T10:00:00Z", "endedAt": "2026-12-01T10:00:10Z", "verdict": "Fail",
    "message": "errorRate 0.30 over max 1 %",
    "canary": {"requests": 100, "errorRate": 0.3, "p99LatencyMs": 12.0},
}  # fmt: skip

CASES = [
    # A new revision beside a stable one: its Deployment starts at its share of 50 %, while
    # stable keeps all 4 until the canary's 2 are ready (make before break).
    Case("a spec change starts the canary at the first step",
         {"stableRevision": STABLE, "revisions": history(canary=None)}, (stable(),),
         Want(reason="ScalingCanary", canary_replicas=2,
              status={"canaryRevision": CANARY, "currentStep": 0, "canaryWeight": 0},
              events=["RevisionCreated"])),
    Case("a canary short of its share waits for it",
         rolling(currentStep=0, canaryWeight=0), (stable(), canary(ready=1, replicas=2)),
         Want(reason="ScalingCanary")),
    # One transition per pass: the weight moves and stable shrinks; the pause begins next pass.
    Case("the canary's share ready ends the setWeight step and shrinks stable",
         rolling(currentStep=0, canaryWeight=0), (stable(), canary(ready=2)),
         Want(reason="WeightSet", stable_replicas=2,
              status={"currentStep": 1, "canaryWeight": 50},
              events=["RolloutStepCompleted"], wake_in=0)),
    Case("a timed pause begins and wakes the model when it ends",
         rolling(currentStep=1, canaryWeight=50), (stable(ready=2), canary(ready=2)),
         Want(reason="Paused", status={"pauseUntil": PAUSE_END}, wake_in=3)),
    Case("a pause not over yet keeps waiting and its wake-up",
         rolling(currentStep=1, canaryWeight=50, pauseUntil=PAUSE_END),
         (stable(ready=2), canary(ready=2)), Want(reason="Paused", wake_in=3)),
    Case("a pause that is over ends its step",
         rolling(currentStep=1, canaryWeight=50, pauseUntil=PAUSE_END),
         (stable(ready=2), canary(ready=2)),
         Want(reason="PauseEnded", status={"currentStep": 2, "pauseUntil": None},
              events=["RolloutStepCompleted"], wake_in=3),
         now="2026-11-23T12:00:03Z"),
    # Every step done: the canary grows to the total before it takes all traffic.
    Case("after the last step the canary grows to the whole total",
         rolling(currentStep=2, canaryWeight=50), (stable(ready=2), canary(ready=2)),
         Want(reason="ScalingCanary", canary_replicas=4)),
    Case("the canary at full size is promoted and stable retired",
         rolling(currentStep=2, canaryWeight=50), (stable(ready=2), canary(ready=4)),
         Want(reason="RolloutComplete", deleted=[STABLE],
              status={"stableRevision": CANARY, "canaryRevision": None, "canaryWeight": 100},
              events=["RevisionAvailable", "RevisionRetired"], wake_in=0),
         phase="Healthy"),
    # Analysis is not acted on yet: passing the step unjudged would promote an unmeasured canary.
    Case("an analysis step holds the rollout where it is",
         rolling(currentStep=1, canaryWeight=50), (stable(ready=2), canary(ready=2)),
         Want(reason="NoAnalysisSource"),
         model=md(replicas=4, rollout={"steps": [{"setWeight": 50}, {"analysis": {}}]})),
    Case("canary pods waiting for GPUs hold the step and keep stable's share",
         rolling(currentStep=0, canaryWeight=0), (stable(), canary(ready=0, replicas=2)),
         Want(reason="WaitingForGPUs", events=["InsufficientGPU"]),  # Scheduled's Warning
         pods=(pod(CANARY, scheduled=False, message=GPU_SHORTAGE),)),
    # Only stable and the newest revision serve side by side; the new one starts afresh, at
    # weight 0, so stable is scaled back to the whole total.
    Case("a newer spec during a canary drops the old canary and starts again",
         rolling(currentStep=1, canaryWeight=50, pauseUntil=PAUSE_END),
         (stable(ready=2), canary(ready=2)),
         Want(reason="ScalingCanary", deleted=[CANARY], canary_replicas=2, stable_replicas=4,
              status={"currentStep": 0, "canaryWeight": 0, "pauseUntil": None},
              events=["RevisionCreated", "RevisionRetired"]),
         model=md(replicas=4, rollout={"steps": STEPS}, model={"uri": "pvc://m/v4"})),
    # No steps, or no stable Deployment to serve beside: the target simply takes over.
    Case("without steps the new revision replaces stable at full size",
         {"stableRevision": STABLE, "revisions": history()}, (stable(),),
         Want(reason="RolloutInProgress", canary_replicas=4), model=md(replicas=4)),
    Case("with stable's Deployment gone the new revision comes up at full size",
         rolling(currentStep=0, canaryWeight=0), (),
         Want(reason="RolloutInProgress", canary_replicas=4)),
    # ---- controls (kubectl davit): each acted on once, its effect kept in status
    # Abort: stable grows back to the whole total before the canary gives up its share.
    Case("abort mid-pause grows stable back before the canary shrinks",
         rolling(currentStep=1, canaryWeight=50, pauseUntil=PAUSE_END),
         (stable(ready=2), canary(ready=2)),
         Want(reason="Aborted", stable_replicas=4,
              status={"lastControl": ABORT, "pauseUntil": None, "revisions": history(
                  outcome="Aborted")},
              events=["ControlAccepted"], wake_in=0),
         control=ABORT, phase="Degraded"),
    Case("aborted with stable at full size: the canary goes to zero",
         rolling(currentStep=1, canaryWeight=50, revisions=history(outcome="Aborted"),
                 lastControl=ABORT),
         (stable(ready=4), canary(ready=2)),
         Want(reason="Aborted", canary_replicas=0, status={"canaryWeight": 0}, wake_in=0),
         control=ABORT, phase="Degraded"),
    # The annotation gone (a GitOps tool replaced the object) or the manifest re-applied: the
    # abort is in status, and the same revision is not rolled out again.
    Case("an abort holds without its annotation and is no new rollout",
         rolling(currentStep=1, canaryWeight=0, revisions=history(outcome="Aborted"),
                 lastControl=ABORT),
         (stable(ready=4), canary(ready=0, replicas=0)),
         Want(reason="Aborted"), phase="Degraded"),
    Case("retry after an abort starts again at the first step",
         rolling(currentStep=1, canaryWeight=0, revisions=history(outcome="Aborted"),
                 lastControl=ABORT),
         (stable(ready=4), canary(ready=0, replicas=0)),
         Want(reason="ScalingCanary", canary_replicas=2,
              status={"currentStep": 0, "lastControl": RETRY, "revisions": history()},
              events=["ControlAccepted"], wake_in=0),
         control=RETRY),
    # The retried canary is judged afresh: the rolled-back attempt's verdict must not stand as
    # its CanaryHealthy until it is measured again (the Events keep the old figures).
    Case("retry after a rollback forgets the failed measurement",
         rolling(currentStep=1, canaryWeight=0, lastControl=ABORT, revisions=[
             {"hash": STABLE, "outcome": "Stable"},
             {"hash": CANARY, "outcome": "RolledBack", "analysis": FAILED_RECORD}]),
         (stable(ready=4), canary(ready=0, replicas=0)),
         Want(reason="ScalingCanary", canary_replicas=2,
              status={"currentStep": 0, "lastControl": RETRY, "revisions": history()},
              events=["ControlAccepted"], wake_in=0),
         control=RETRY),
    # Promote ends the pause; the pass goes on with what the planner does next (grow the canary).
    Case("promote ends a pause before its time",
         rolling(currentStep=1, canaryWeight=50, pauseUntil=PAUSE_END),
         (stable(ready=2), canary(ready=2)),
         Want(reason="ScalingCanary", canary_replicas=4,
              status={"currentStep": 2, "pauseUntil": None, "lastControl": PROMOTE},
              events=["ControlAccepted", "RolloutStepCompleted"], wake_in=0),
         control=PROMOTE),
    Case("promote passes an analysis step that holds",
         rolling(currentStep=1, canaryWeight=50), (stable(ready=2), canary(ready=2)),
         Want(reason="ScalingCanary", canary_replicas=4, status={"currentStep": 2},
              events=["ControlAccepted", "RolloutStepCompleted"], wake_in=0),
         model=md(replicas=4, rollout={"steps": [{"setWeight": 50}, {"analysis": {}}]}),
         control=PROMOTE),
    # A setWeight step ends by itself: a promote there is said to change nothing.
    Case("promote during a setWeight step changes nothing and says so",
         rolling(currentStep=0, canaryWeight=0), (stable(), canary(ready=1, replicas=2)),
         Want(reason="ScalingCanary", status={"lastControl": PROMOTE},
              events=["ControlIgnored"]),
         control=PROMOTE),
    # A person's pause holds even a pause that is over; the status says so for the next pass.
    Case("a person's pause is accepted and held in status",
         rolling(currentStep=1, canaryWeight=50, pauseUntil=PAUSE_END),
         (stable(ready=2), canary(ready=2)),
         Want(reason="PausedByControl", status={"paused": True, "currentStep": 1},
              events=["ControlAccepted"], wake_in=3),
         control=control("pause"), now="2026-11-23T12:00:03Z"),
    Case("a control meant for another revision is ignored",
         rolling(currentStep=1, canaryWeight=50, pauseUntil=PAUSE_END),
         (stable(ready=2), canary(ready=2)),
         Want(reason="Paused", status={"currentStep": 1, "lastControl": control("abort", "0ther")},
              events=["ControlIgnored"], wake_in=3),
         control=control("abort", "0ther")),
    Case("a control acted on already is not acted on again",
         rolling(currentStep=2, canaryWeight=50, lastControl=PROMOTE),
         (stable(ready=2), canary(ready=2)),
         Want(reason="ScalingCanary", canary_replicas=4), control=PROMOTE),
    Case("an annotation that is no control is refused once",
         rolling(currentStep=1, canaryWeight=50, pauseUntil=PAUSE_END),
         (stable(ready=2), canary(ready=2)),
         Want(reason="Paused", status={"lastControl": "promote please"},
              events=["ControlRefused"], wake_in=3),
         control="promote please"),
    # ---- analysis: the figures a source read for the measurement due this pass
    Case("an analysis step with a source begins a measurement, waking when it ends",
         rolling(currentStep=1, canaryWeight=50), (stable(ready=2), canary(ready=2)),
         Want(reason="Analysing", status={"analysisStartedAt": START.isoformat()}, wake_in=10),
         model=analysed()),
    Case("a measurement still running is waited for",
         measuring(since=-4), (stable(ready=2), canary(ready=2)),
         Want(reason="Analysing", wake_in=6), model=analysed()),
    Case("healthy figures pass the step, kept with the canary's record",
         measuring(), (stable(ready=2), canary(ready=2)),
         Want(reason="AnalysisPassed", status={"currentStep": 2, "analysisStartedAt": None},
              events=["RolloutStepCompleted"], wake_in=0, health="True", verdict="Pass"),
         model=analysed(), figures=(HEALTHY, HEALTHY)),
    # Beyond failureLimit (0 here), autoRollback: stable grows back before traffic returns.
    Case("failing figures roll the canary back",
         measuring(), (stable(ready=2), canary(ready=2)),
         Want(reason="RolledBack", stable_replicas=4,
              status={"analysisFailures": 1, "revisions": history(outcome="RolledBack")},
              events=["RolledBack"], wake_in=0, health="False", verdict="Fail"),
         model=analysed(), figures=(FAILING, HEALTHY), phase="Degraded"),
    Case("failing figures within failureLimit are measured again",
         measuring(), (stable(ready=2), canary(ready=2)),
         Want(reason="AnalysisFailed",
              status={"analysisFailures": 1, "analysisStartedAt": START.isoformat()},
              events=["AnalysisFailed"], wake_in=10, health="False", verdict="Fail"),
         model=analysed(analysis={"failureLimit": 1}), figures=(FAILING, HEALTHY)),
    Case("failing figures without autoRollback hold the rollout for a person",
         measuring(), (stable(ready=2), canary(ready=2)),
         Want(reason="AnalysisFailed", status={"analysisFailures": 1},
              events=["AnalysisFailed"], wake_in=0, health="False", verdict="Fail"),
         model=analysed(autoRollback=False), figures=(FAILING, HEALTHY)),
    Case("too few requests are inconclusive and measured again",
         measuring(), (stable(ready=2), canary(ready=2)),
         Want(reason="AnalysisInconclusive", status={"analysisFailures": 0},
              events=["AnalysisInconclusive"], wake_in=10, health="Unknown",
              verdict="Inconclusive"),
         model=analysed(), figures=(QUIET, HEALTHY)),
    Case("a source that fails is no verdict: the window is read again later",
         measuring(), (stable(ready=2), canary(ready=2)),
         Want(reason="MetricsUnavailable", wake_in=10), model=analysed(),
         problem="http://prom:9090/api/v1/query unreachable"),
    Case("a control while no rollout runs is ignored",
         {"stableRevision": CANARY, "revisions": [{"hash": CANARY, "outcome": "Stable"}]},
         (canary(ready=4),),
         Want(reason="RolloutComplete", status={"lastControl": ABORT},
              events=["ControlIgnored", "AllReplicasReady"]),  # Ready first reported, too
         control=ABORT, phase="Healthy"),
]  # fmt: skip


def replicas_of(plan: reconcile.Plan, revision: str) -> int | None:
    """The replicas this plan gives the revision's Deployment (applied or scaled), if any."""
    name = f"resnet-{revision}"
    for manifest in plan.apply:
        if manifest["kind"] == "Deployment" and manifest["metadata"]["name"] == name:
            return int(manifest["spec"]["replicas"])
    return next((s.replicas for s in plan.scale if s.ref.name == name), None)


@pytest.mark.parametrize("case", CASES, ids=[c.reason for c in CASES])
def test_canary_pass(case: Case) -> None:
    annotations = {} if case.control is None else {CONTROL_ANNOTATION: case.control}
    model = case.model.model_copy(
        update={
            "status": api.ModelDeploymentStatus.model_validate(case.status),
            "metadata": {**case.model.metadata, "annotations": annotations},
        }
    )
    obs = observed(*case.deployments, pods=case.pods)
    target = target_of(model)
    due = analysis.measurement_due(model.spec, model.status, datetime.fromisoformat(case.now))
    measurement = None
    if case.figures is not None or case.problem is not None:
        assert due is not None, "the case reads figures for a measurement that is not due"
        canary_figures, stable_figures = case.figures or (None, None)
        measurement = analysis.Measurement(due, canary_figures, stable_figures, case.problem)
    plan = reconcile.plan(model, obs, CONFIG, case.now, measurement)
    want = case.want
    assert replicas_of(plan, target) == want.canary_replicas
    assert replicas_of(plan, STABLE) == want.stable_replicas
    stored = api.ModelDeploymentStatus.model_validate({**case.status, **plan.status})
    progressing = next(c for c in stored.conditions if c.type == "Progressing")
    assert progressing.reason == want.reason
    assert stored.phase == case.phase
    written: dict[str, Any] = {k: plan.status.get(k, case.status.get(k)) for k in want.status}
    if "revisions" in written:  # of the history, only what the rollout changes
        written["revisions"] = [{"hash": r.hash, "outcome": r.outcome} for r in stored.revisions]
    assert written == want.status
    assert [e.reason for e in plan.events] == want.events
    wake_at = None if plan.wake_at is None else plan.wake_at - START.timestamp()
    assert wake_at == want.wake_in
    assert [r.name for r in plan.delete] == [f"resnet-{r}" for r in want.deleted]
    health = next((c for c in stored.conditions if c.type == "CanaryHealthy"), None)
    assert (health.status if health is not None else None) == want.health
    if health is not None:
        assert health.reason == HEALTH_REASONS[want.verdict or ""]
    record = next(r.analysis for r in stored.revisions if r.hash == target)
    assert (record.verdict if record is not None else None) == want.verdict


def test_a_completed_step_says_which_step_and_what_it_did() -> None:
    model = MODEL.model_copy(
        update={"status": api.ModelDeploymentStatus.model_validate(rolling(currentStep=0))}
    )
    plan = reconcile.plan(model, observed(stable(), canary(ready=2)), CONFIG, NOW)
    [event] = plan.events
    assert event.message == "step 1 of 2 (setWeight 50) completed: canary at 50 %: 2/4 replicas"


def test_a_canary_from_a_healthy_model_is_no_warning() -> None:
    """Ready falls while the canary runs: RevisionCreated announces it, nothing warns."""
    first = md(replicas=4, rollout={"steps": STEPS}, model={"uri": "pvc://m/v2"})
    ready = deployment(first, ready=4)
    healthy = reconcile.plan(first, observed(ready), CONFIG, NOW)
    status = api.ModelDeploymentStatus.model_validate(healthy.status)
    assert status.phase is api.Phase.HEALTHY
    model = MODEL.model_copy(update={"status": status})
    plan = reconcile.plan(model, observed(ready), CONFIG, NOW)
    assert [(e.type, e.reason) for e in plan.events] == [("Normal", "RevisionCreated")]
    ready_condition = next(c for c in plan.status["conditions"] if c["type"] == "Ready")
    assert (ready_condition["status"], ready_condition["reason"]) == ("False", "ScalingCanary")


def test_a_measurement_is_due_only_for_the_revision_status_names() -> None:
    at = datetime.fromisoformat(NOW)
    status = api.ModelDeploymentStatus.model_validate(measuring())
    due = analysis.measurement_due(analysed().spec, status, at)
    assert due is not None
    assert (due.canary, due.stable) == (CANARY, STABLE)
    # A newer spec replaced the canary: its old measurement is read for nobody.
    newer = md(replicas=4, rollout=analysed().spec.rollout.model_dump(by_alias=True),
               model={"uri": "pvc://m/v4"})  # fmt: skip
    assert analysis.measurement_due(newer.spec, status, at) is None
