"""Table tests of the canary rollout planner: (rollout, state, facts, now, control) → decision."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from davit_operator import api
from davit_operator.planners.rollout import (
    Control,
    Decision,
    Facts,
    Measured,
    Outcome,
    RolloutState,
    Verdict,
    parse_duration,
    plan_rollout,
    recorded,
    split_replicas,
)

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
INTERVAL = timedelta(seconds=30)  # Analysis.interval's default


def later(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


# Steps 0..4; len 5 means every step is done. Total 10: 10 % is 1 canary, 50 % is 5.
STEPS: list[dict[str, Any]] = [
    {"setWeight": 10},
    {"pause": {"duration": "30s"}},
    {"analysis": {}},
    {"setWeight": 50},
    {"pause": {}},
]
AT_PAUSE = RolloutState(step=1, weight=10)
AT_ANALYSIS = RolloutState(step=2, weight=10)
MEASURING = RolloutState(step=2, weight=10, analysis_since=later(-30))
DONE = len(STEPS)


def rollout(steps: list[dict[str, Any]] | None = None, **fields: Any) -> api.Rollout:
    return api.Rollout.model_validate({"steps": STEPS if steps is None else steps, **fields})


BLUE_GREEN = rollout([{"pause": {"duration": "30s"}}], strategy="blueGreen")


@dataclass(frozen=True)
class Want:
    outcome: Outcome
    reason: str
    _: KW_ONLY
    stable: int
    canary: int
    weight: int
    step: int
    wake_at: datetime | None = None
    start_analysis: bool = False
    failures: int = 0
    pause_until: datetime | None = None
    analysis_since: datetime | None = None
    paused: bool = False


def got(decision: Decision) -> Want:
    state = decision.state
    return Want(
        outcome=decision.outcome,
        reason=decision.reason,
        stable=decision.stable_replicas,
        canary=decision.canary_replicas,
        weight=state.weight,
        step=state.step,
        wake_at=decision.wake_at,
        start_analysis=decision.start_analysis,
        failures=state.analysis_failures,
        pause_until=state.pause_until,
        analysis_since=state.analysis_since,
        paused=state.paused,
    )


@dataclass(frozen=True)
class Case:
    reason: str
    state: RolloutState
    facts: Facts
    want: Want
    control: Control | None = None
    rollout: api.Rollout = field(default_factory=rollout)


P, S, WAIT = Outcome.PROGRESSING, Outcome.PAUSED, Outcome.WAITING_FOR_GPUS
CASES = [
    # ---- setWeight
    Case(
        # Make before break: the canary's replica starts while stable keeps all ten; no weight
        # moves to a canary that has nothing ready.
        "setWeight scales the canary first and stable keeps its replicas",
        RolloutState(),
        Facts(total=10),
        Want(P, "ScalingCanary", stable=10, canary=1, weight=0, step=0),
    ),
    Case(
        # The canary holds its share: the weight moves, stable drops to its share, step ends.
        "setWeight ends once the canary's share is ready",
        RolloutState(),
        Facts(total=10, stable_ready=10, canary_ready=1),
        Want(P, "WeightSet", stable=9, canary=1, weight=10, step=1),
    ),
    Case(
        # From 10 % to 50 %: stable keeps 9 (its 10 % share) until 5 canaries are ready.
        "a later setWeight keeps stable's previous share until the canary grows",
        RolloutState(step=3, weight=10),
        Facts(total=10, stable_ready=9, canary_ready=2),
        Want(P, "ScalingCanary", stable=9, canary=5, weight=10, step=3),
    ),
    Case(
        # A model scaled to zero has no replicas to wait for: the step ends at once.
        "scaled to zero every setWeight ends without replicas",
        RolloutState(),
        Facts(total=0),
        Want(P, "WeightSet", stable=0, canary=0, weight=10, step=1),
    ),
    # ---- pause
    Case(
        # The pause's end is recorded in the state (resumable) and is the wake-up time.
        "a timed pause begins and wakes at now plus its duration",
        AT_PAUSE,
        Facts(total=10, stable_ready=9, canary_ready=1),
        Want(
            S,
            "Paused",
            stable=9,
            canary=1,
            weight=10,
            step=1,
            wake_at=later(30),
            pause_until=later(30),
        ),
    ),
    Case(
        # A pass before the end (a pod event woke the model): the same pause, the same time.
        "a timed pause before its end stays paused with the same wake-up",
        RolloutState(step=1, weight=10, pause_until=later(10)),
        Facts(total=10, stable_ready=9, canary_ready=1),
        Want(
            S,
            "Paused",
            stable=9,
            canary=1,
            weight=10,
            step=1,
            wake_at=later(10),
            pause_until=later(10),
        ),
    ),
    Case(
        # Now has reached the recorded end: the step ends and the pause is cleared.
        "a timed pause ends at its time",
        RolloutState(step=1, weight=10, pause_until=later(-1)),
        Facts(total=10, stable_ready=9, canary_ready=1),
        Want(P, "PauseEnded", stable=9, canary=1, weight=10, step=2),
    ),
    Case(
        # No duration: nothing but a promote ends it, so there is no time to wake at.
        "a pause without a duration waits for a promote",
        RolloutState(step=4, weight=50),
        Facts(total=10, stable_ready=5, canary_ready=5),
        Want(S, "WaitingForPromote", stable=5, canary=5, weight=50, step=4),
    ),
    # ---- promote
    Case(
        # Promote ends the untimed pause; the last step is done, so the canary grows to all ten.
        "promote ends a pause without a duration",
        RolloutState(step=4, weight=50),
        Facts(total=10, stable_ready=5, canary_ready=5),
        Want(P, "ScalingCanary", stable=5, canary=10, weight=50, step=DONE),
        control=Control.PROMOTE,
    ),
    Case(
        # Promote cuts a timed pause short; the next step (analysis) begins in the same pass.
        "promote ends a timed pause early",
        RolloutState(step=1, weight=10, pause_until=later(20)),
        Facts(total=10, stable_ready=9, canary_ready=1),
        Want(
            P,
            "Analysing",
            stable=9,
            canary=1,
            weight=10,
            step=2,
            wake_at=later(30),
            start_analysis=True,
            analysis_since=NOW,
        ),
        control=Control.PROMOTE,
    ),
    Case(
        # A setWeight step ends by itself once the canary is ready: promote does not skip it.
        "promote on a setWeight step changes nothing",
        RolloutState(),
        Facts(total=10, stable_ready=10),
        Want(P, "ScalingCanary", stable=10, canary=1, weight=0, step=0),
        control=Control.PROMOTE,
    ),
    Case(
        # --full: every remaining step is skipped; the weight still waits for a ready canary.
        "promote full skips every remaining step",
        AT_PAUSE,
        Facts(total=10, stable_ready=9, canary_ready=1),
        Want(P, "ScalingCanary", stable=9, canary=10, weight=10, step=DONE),
        control=Control.PROMOTE_FULL,
    ),
    Case(
        # All steps done and all ten canary replicas ready: 100 % and stable to zero.
        "all steps done and the canary ready promotes it",
        RolloutState(step=DONE, weight=50),
        Facts(total=10, stable_ready=5, canary_ready=10),
        Want(Outcome.PROMOTED, "Promoted", stable=0, canary=10, weight=100, step=DONE),
    ),
    Case(
        # No steps: the canary replaces stable once all its replicas are ready (today's rule).
        "a rollout without steps grows the canary to the total first",
        RolloutState(),
        Facts(total=3, stable_ready=3),
        Want(P, "ScalingCanary", stable=3, canary=3, weight=0, step=0),
        rollout=rollout([]),
    ),
    # ---- analysis
    Case(
        # The measurement is named by when it began; the planner wakes when its interval ends.
        "an analysis step begins a measurement",
        AT_ANALYSIS,
        Facts(total=10, stable_ready=9, canary_ready=1),
        Want(
            P,
            "Analysing",
            stable=9,
            canary=1,
            weight=10,
            step=2,
            wake_at=later(30),
            start_analysis=True,
            analysis_since=NOW,
        ),
    ),
    Case(
        # Begun 10 s ago, no verdict yet: no second measurement, wake when the first is due.
        "a running measurement is waited for",
        RolloutState(step=2, weight=10, analysis_since=later(-10)),
        Facts(total=10, stable_ready=9, canary_ready=1),
        Want(
            P,
            "Analysing",
            stable=9,
            canary=1,
            weight=10,
            step=2,
            wake_at=later(20),
            analysis_since=later(-10),
        ),
    ),
    Case(
        # Over with no figures (the source is slow or down): the same window is read again an
        # interval later, not in the past; nothing counts as a failure.
        "an overdue measurement is waited for an interval more",
        RolloutState(step=2, weight=10, analysis_since=later(-45)),
        Facts(total=10, stable_ready=9, canary_ready=1, measure_problem="unreachable"),
        Want(
            P,
            "MetricsUnavailable",
            stable=9,
            canary=1,
            weight=10,
            step=2,
            wake_at=later(30),
            analysis_since=later(-45),
        ),
    ),
    Case(
        # The router keeps ten minutes of figures: a window it no longer has is never read,
        # so the measurement starts again from now instead of waiting for it forever.
        "a window its source no longer keeps is measured anew from now",
        RolloutState(step=2, weight=10, analysis_since=later(-700)),
        Facts(
            total=10, stable_ready=9, canary_ready=1, measure_problem="gone", measure_expired=True
        ),
        Want(
            P,
            "MetricsUnavailable",
            stable=9,
            canary=1,
            weight=10,
            step=2,
            wake_at=later(30),
            start_analysis=True,
            analysis_since=later(0),
        ),
    ),
    Case(
        # A failure of some earlier measurement (an earlier step's) must not count here.
        "a verdict on another measurement is ignored",
        MEASURING,
        Facts(total=10, canary_ready=1, measured=Measured(later(-300), Verdict.FAIL)),
        Want(
            P,
            "MetricsUnavailable",
            stable=9,
            canary=1,
            weight=10,
            step=2,
            wake_at=later(30),
            analysis_since=later(-30),
        ),
    ),
    Case(
        # A pass ends the step and clears the failure count.
        "analysis passes and the step ends",
        RolloutState(step=2, weight=10, analysis_since=later(-30), analysis_failures=1),
        Facts(total=10, canary_ready=1, measured=Measured(later(-30), Verdict.PASS)),
        Want(P, "AnalysisPassed", stable=9, canary=1, weight=10, step=3),
    ),
    Case(
        # Too few requests is not a pass, nor a failure: measure again, the count unchanged.
        "an inconclusive measurement is taken again and not counted",
        RolloutState(step=2, weight=10, analysis_since=later(-30), analysis_failures=1),
        Facts(total=10, canary_ready=1, measured=Measured(later(-30), Verdict.INCONCLUSIVE)),
        Want(
            P,
            "AnalysisInconclusive",
            stable=9,
            canary=1,
            weight=10,
            step=2,
            wake_at=later(30),
            start_analysis=True,
            failures=1,
            analysis_since=NOW,
        ),
    ),
    Case(
        # failureLimit 2 (the default) tolerates a first failure: measure again.
        "a first failure within failureLimit is measured again",
        MEASURING,
        Facts(total=10, canary_ready=1, measured=Measured(later(-30), Verdict.FAIL)),
        Want(
            P,
            "AnalysisFailed",
            stable=9,
            canary=1,
            weight=10,
            step=2,
            wake_at=later(30),
            start_analysis=True,
            failures=1,
            analysis_since=NOW,
        ),
    ),
    Case(
        # failureLimit failures in a row are tolerated: the second of two still measures again.
        "failureLimit failures in a row are still tolerated",
        RolloutState(step=2, weight=10, analysis_since=later(-30), analysis_failures=1),
        Facts(total=10, canary_ready=1, measured=Measured(later(-30), Verdict.FAIL)),
        Want(
            P,
            "AnalysisFailed",
            stable=9,
            canary=1,
            weight=10,
            step=2,
            wake_at=later(30),
            start_analysis=True,
            failures=2,
            analysis_since=NOW,
        ),
    ),
    Case(
        # One beyond the limit with autoRollback: stable (9 ready of 10) grows before any
        # weight moves back, so the canary keeps its replica and its 10 % meanwhile.
        "a failure beyond failureLimit rolls back and stable grows first",
        RolloutState(step=2, weight=10, analysis_since=later(-30), analysis_failures=2),
        Facts(
            total=10, stable_ready=9, canary_ready=1, measured=Measured(later(-30), Verdict.FAIL)
        ),
        Want(
            Outcome.ROLLED_BACK,
            "ScalingUpStable",
            stable=10,
            canary=1,
            weight=10,
            step=2,
            failures=3,
        ),
    ),
    Case(
        # Stable can carry everything already: all traffic back and the canary to zero at once.
        "a failure beyond failureLimit with stable ready rolls back in one pass",
        RolloutState(step=2, weight=10, analysis_since=later(-30), analysis_failures=2),
        Facts(
            total=10, stable_ready=10, canary_ready=1, measured=Measured(later(-30), Verdict.FAIL)
        ),
        Want(Outcome.ROLLED_BACK, "RolledBack", stable=10, canary=0, weight=0, step=2, failures=3),
    ),
    Case(
        # failureLimit 0 tolerates nothing: the first failure rolls back.
        "failureLimit 0 rolls back on the first failure",
        MEASURING,
        Facts(
            total=10, stable_ready=10, canary_ready=1, measured=Measured(later(-30), Verdict.FAIL)
        ),
        Want(Outcome.ROLLED_BACK, "RolledBack", stable=10, canary=0, weight=0, step=2, failures=1),
        rollout=rollout(analysis={"failureLimit": 0}),
    ),
    Case(
        # autoRollback off: held at 10 % for a person (promote or abort); nothing is measured.
        "a failure beyond failureLimit without autoRollback pauses",
        RolloutState(step=2, weight=10, analysis_since=later(-30), analysis_failures=2),
        Facts(
            total=10, stable_ready=9, canary_ready=1, measured=Measured(later(-30), Verdict.FAIL)
        ),
        Want(S, "AnalysisFailed", stable=9, canary=1, weight=10, step=2, failures=3),
        rollout=rollout(auto_rollback=False),
    ),
    Case(
        # A later pass of that held rollout: still held, no new measurement begins.
        "failed analysis without autoRollback stays paused",
        RolloutState(step=2, weight=10, analysis_failures=3),
        Facts(total=10, stable_ready=9, canary_ready=1),
        Want(S, "AnalysisFailed", stable=9, canary=1, weight=10, step=2, failures=3),
        rollout=rollout(auto_rollback=False),
    ),
    Case(
        # The step's own settings override rollout.analysis: here a 2-minute interval.
        "a step's analysis overrides rollout.analysis",
        AT_ANALYSIS,
        Facts(total=10, canary_ready=1),
        Want(
            P,
            "Analysing",
            stable=9,
            canary=1,
            weight=10,
            step=2,
            wake_at=later(120),
            start_analysis=True,
            analysis_since=NOW,
        ),
        rollout=rollout([{"setWeight": 10}, {"pause": {}}, {"analysis": {"interval": "2m"}}]),
    ),
    # ---- abort
    Case(
        # Abort mid-pause: the pause ends, stable grows to ten before traffic returns to it.
        "abort during a pause grows stable before traffic returns",
        RolloutState(step=1, weight=10, pause_until=later(20)),
        Facts(total=10, stable_ready=9, canary_ready=1),
        Want(Outcome.ABORTED, "ScalingUpStable", stable=10, canary=1, weight=10, step=1),
        control=Control.ABORT,
    ),
    Case(
        # Stable is ready at full size: all traffic on it, the canary scaled to zero.
        "aborted with stable ready returns all traffic",
        RolloutState(step=1, weight=10, stopped=Outcome.ABORTED),
        Facts(total=10, stable_ready=10, canary_ready=1),
        Want(Outcome.ABORTED, "Aborted", stable=10, canary=0, weight=0, step=1),
    ),
    Case(
        # Abort is kept in status: a promote does not resume it (retry would), nor would a
        # re-applied manifest, which changes nothing the planner reads.
        "an aborted rollout ignores promote",
        RolloutState(step=1, weight=0, stopped=Outcome.ABORTED),
        Facts(total=10, stable_ready=10),
        Want(Outcome.ABORTED, "Aborted", stable=10, canary=0, weight=0, step=1),
        control=Control.PROMOTE,
    ),
    Case(
        # Once weight is 0 a stable pod restarting does not bring the canary back.
        "aborted at weight 0 stays there while stable recovers a pod",
        RolloutState(step=1, weight=0, stopped=Outcome.ABORTED),
        Facts(total=10, stable_ready=9),
        Want(Outcome.ABORTED, "Aborted", stable=10, canary=0, weight=0, step=1),
    ),
    Case(
        # Retry forgets the stopped rollout: from the first step, at weight 0, as a new one.
        "retry after an abort starts again at the first step",
        RolloutState(step=1, weight=0, stopped=Outcome.ABORTED),
        Facts(total=10, stable_ready=10),
        Want(P, "ScalingCanary", stable=10, canary=1, weight=0, step=0),
        control=Control.RETRY,
    ),
    Case(
        # Nothing to retry: the running rollout goes on where it is.
        "retry of a running rollout changes nothing",
        AT_PAUSE,
        Facts(total=10, stable_ready=9, canary_ready=1),
        Want(
            S,
            "Paused",
            stable=9,
            canary=1,
            weight=10,
            step=1,
            wake_at=later(30),
            pause_until=later(30),
        ),
        control=Control.RETRY,
    ),
    Case(
        # The canary already serves everything: there is nothing left to abort.
        "abort after promotion is ignored",
        RolloutState(step=DONE, weight=100),
        Facts(total=10, canary_ready=10),
        Want(Outcome.PROMOTED, "Promoted", stable=0, canary=10, weight=100, step=DONE),
        control=Control.ABORT,
    ),
    # ---- GPUs
    Case(
        # The canary's pod cannot be scheduled: wait (never fail), stable keeps all ten.
        "canary pods Pending for GPUs wait and never fail",
        RolloutState(),
        Facts(total=10, stable_ready=10, canary_pending_for_gpus=True),
        Want(WAIT, "WaitingForGPUs", stable=10, canary=1, weight=0, step=0),
    ),
    Case(
        # A pause does not begin while the canary waits for GPUs.
        "WaitingForGPUs holds a timed pause from beginning",
        AT_PAUSE,
        Facts(total=10, stable_ready=9, canary_ready=1, canary_pending_for_gpus=True),
        Want(WAIT, "WaitingForGPUs", stable=9, canary=1, weight=10, step=1),
    ),
    Case(
        # A canary short of pods is not measured.
        "WaitingForGPUs starts no measurement",
        AT_ANALYSIS,
        Facts(total=10, stable_ready=9, canary_pending_for_gpus=True),
        Want(WAIT, "WaitingForGPUs", stable=9, canary=1, weight=10, step=2),
    ),
    Case(
        # Growing to the whole total for promotion waits too; stable keeps its 5.
        "WaitingForGPUs holds the promotion",
        RolloutState(step=DONE, weight=50),
        Facts(total=10, stable_ready=5, canary_ready=7, canary_pending_for_gpus=True),
        Want(WAIT, "WaitingForGPUs", stable=5, canary=10, weight=50, step=DONE),
    ),
    # ---- pause and resume (a person's)
    Case(
        # The canary's share is ready, but the step does not end; stable keeps all ten.
        "a person's pause holds a setWeight step that could end",
        RolloutState(),
        Facts(total=10, stable_ready=10, canary_ready=1),
        Want(S, "PausedByControl", stable=10, canary=1, weight=0, step=0, paused=True),
        control=Control.PAUSE,
    ),
    Case(
        "while paused a timed pause does not begin",
        replace(AT_PAUSE, paused=True),
        Facts(total=10, stable_ready=9, canary_ready=1),
        Want(S, "PausedByControl", stable=9, canary=1, weight=10, step=1, paused=True),
    ),
    Case(
        "resume goes on where the pause held it",
        RolloutState(paused=True),
        Facts(total=10, stable_ready=10, canary_ready=1),
        Want(P, "WeightSet", stable=9, canary=1, weight=10, step=1),
        control=Control.RESUME,
    ),
    Case(
        # Promote ends the timed pause and the person's: the analysis step begins measuring.
        "promote lets a paused rollout go on",
        replace(AT_PAUSE, paused=True, pause_until=later(20)),
        Facts(total=10, stable_ready=9, canary_ready=1),
        Want(
            P,
            "Analysing",
            stable=9,
            canary=1,
            weight=10,
            step=2,
            wake_at=later(30),
            start_analysis=True,
            analysis_since=NOW,
        ),
        control=Control.PROMOTE,
    ),
    Case(
        "a stopped rollout ignores pause",
        RolloutState(step=1, weight=0, stopped=Outcome.ABORTED),
        Facts(total=10, stable_ready=10),
        Want(Outcome.ABORTED, "Aborted", stable=10, canary=0, weight=0, step=1),
        control=Control.PAUSE,
    ),
    Case(
        "a promoted rollout ignores pause",
        RolloutState(step=DONE, weight=100),
        Facts(total=10, canary_ready=10),
        Want(Outcome.PROMOTED, "Promoted", stable=0, canary=10, weight=100, step=DONE),
        control=Control.PAUSE,
    ),
    # ---- blueGreen: the new revision at full size with no traffic, its steps, one switch
    Case(
        "blueGreen brings the new revision up at full size beside stable with no traffic",
        RolloutState(),
        Facts(total=4, stable_ready=4, canary_ready=1),
        Want(P, "ScalingNewRevision", stable=4, canary=4, weight=0, step=0),
        rollout=BLUE_GREEN,
    ),
    Case(
        # Both at full size while the steps run; the pause begins once the new one is ready.
        "blueGreen runs its steps with both at full size",
        RolloutState(),
        Facts(total=4, stable_ready=4, canary_ready=4),
        Want(
            S,
            "Paused",
            stable=4,
            canary=4,
            weight=0,
            step=0,
            wake_at=later(30),
            pause_until=later(30),
        ),
        rollout=BLUE_GREEN,
    ),
    Case(
        "blueGreen switches all traffic at once when its steps are done",
        RolloutState(step=1),
        Facts(total=4, stable_ready=4, canary_ready=4),
        Want(Outcome.PROMOTED, "Switched", stable=0, canary=4, weight=100, step=1),
        rollout=BLUE_GREEN,
    ),
    Case(
        # Stable never shrinks before the switch: the new revision grows as far as the budget.
        "a GPU budget short of a second full set holds blueGreen and says so",
        RolloutState(),
        Facts(total=4, stable_ready=4, surge_pods=2),
        Want(S, "GPUBudgetTooSmall", stable=4, canary=2, weight=0, step=0),
        rollout=BLUE_GREEN,
    ),
    Case(
        # Nothing ever moved to the new revision: an abort drops it at once.
        "an aborted blueGreen drops the new revision at once",
        RolloutState(),
        Facts(total=4, stable_ready=4, canary_ready=4),
        Want(Outcome.ABORTED, "Aborted", stable=4, canary=0, weight=0, step=0),
        control=Control.ABORT,
        rollout=BLUE_GREEN,
    ),
    Case(
        # Without a measurement source an analysis step holds (the reconcile's case today).
        "an analysis step with nothing to measure holds the rollout",
        AT_ANALYSIS,
        Facts(total=10, stable_ready=9, canary_ready=1, can_analyse=False),
        Want(S, "NoAnalysisSource", stable=9, canary=1, weight=10, step=2),
    ),
    # ---- the GPU budget (maxSurgeGPUs over the GPUs of one pod: surge_pods)
    Case(
        # No room for an extra pod: stable gives one up, and the canary starts on its GPUs.
        "a zero GPU budget shrinks stable as the canary grows",
        RolloutState(),
        Facts(total=10, stable_ready=10, surge_pods=0),
        Want(P, "ScalingCanary", stable=9, canary=1, weight=0, step=0),
    ),
    Case(
        # Room for the canary's one pod beside all of stable: make before break.
        "a budget of one pod lets stable keep its share",
        RolloutState(),
        Facts(total=10, stable_ready=10, surge_pods=1),
        Want(P, "ScalingCanary", stable=10, canary=1, weight=0, step=0),
    ),
    Case(
        # 10 % → 50 %: 9 stable + 5 canary is 4 over the total; the budget covers 2.
        "a budget short of the step's growth shrinks stable by the rest",
        RolloutState(step=3, weight=10),
        Facts(total=10, stable_ready=9, canary_ready=1, surge_pods=2),
        Want(P, "ScalingCanary", stable=7, canary=5, weight=10, step=3),
    ),
    Case(
        "the promotion grows the canary within the budget",
        RolloutState(step=DONE, weight=50),
        Facts(total=10, stable_ready=5, canary_ready=5, surge_pods=0),
        Want(P, "ScalingCanary", stable=0, canary=10, weight=50, step=DONE),
    ),
    Case(
        # Going back, the canary gives its GPUs up to stable's returning pods.
        "an abort with a zero budget shrinks the canary as stable grows",
        RolloutState(step=1, weight=10, stopped=Outcome.ABORTED),
        Facts(total=10, stable_ready=9, canary_ready=1, surge_pods=0),
        Want(Outcome.ABORTED, "ScalingUpStable", stable=10, canary=0, weight=10, step=1),
    ),
    Case(
        # Waiting for GPUs does not take back the pod stable gave up for the canary.
        "WaitingForGPUs keeps within the budget",
        RolloutState(),
        Facts(total=10, stable_ready=10, canary_pending_for_gpus=True, surge_pods=0),
        Want(WAIT, "WaitingForGPUs", stable=9, canary=1, weight=0, step=0),
    ),
    Case(
        # A rollback is never held back by the canary's Pending pods.
        "a GPU shortage does not hold an abort",
        RolloutState(step=1, weight=10),
        Facts(total=10, stable_ready=10, canary_pending_for_gpus=True),
        Want(Outcome.ABORTED, "Aborted", stable=10, canary=0, weight=0, step=1),
        control=Control.ABORT,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.reason for c in CASES])
def test_plan_rollout(case: Case) -> None:
    decision = plan_rollout(case.rollout, case.state, case.facts, NOW, case.control)
    assert got(decision) == case.want
    assert decision.message


@pytest.mark.parametrize("case", CASES, ids=[c.reason for c in CASES])
def test_status_records_what_the_planner_reads_back(case: Case) -> None:
    # Everything the next pass needs survives the round trip through status.
    status = api.ModelDeploymentStatus(
        canary_revision="new",
        revisions=[api.RevisionRecord(hash="old", outcome=api.RevisionOutcome.STABLE),
                   api.RevisionRecord(hash="new")],
    )  # fmt: skip
    decision = plan_rollout(case.rollout, case.state, case.facts, NOW, case.control)
    assert RolloutState.of(recorded(status, decision)) == decision.state


def test_a_rollback_is_recorded_on_the_canary_revision() -> None:
    status = api.ModelDeploymentStatus(
        canary_revision="new",
        revisions=[api.RevisionRecord(hash="old", outcome=api.RevisionOutcome.STABLE),
                   api.RevisionRecord(hash="new")],
    )  # fmt: skip
    state = RolloutState(step=2, weight=10, analysis_since=later(-30), analysis_failures=2)
    facts = Facts(total=10, stable_ready=10, measured=Measured(later(-30), Verdict.FAIL))
    after = recorded(status, plan_rollout(rollout(), state, facts, NOW))
    assert [(r.hash, r.outcome) for r in after.revisions] == [
        ("old", api.RevisionOutcome.STABLE),
        ("new", api.RevisionOutcome.ROLLED_BACK),
    ]
    assert status.revisions[1].outcome is api.RevisionOutcome.PROGRESSING  # a copy, not mutated


def test_a_retry_records_the_canary_revision_as_progressing_again() -> None:
    status = api.ModelDeploymentStatus(
        canary_revision="new",
        revisions=[api.RevisionRecord(hash="old", outcome=api.RevisionOutcome.STABLE),
                   api.RevisionRecord(hash="new", outcome=api.RevisionOutcome.ABORTED)],
    )  # fmt: skip
    state = RolloutState.of(status)
    assert state.stopped is Outcome.ABORTED
    after = recorded(status, plan_rollout(rollout(), state, Facts(total=10), NOW, Control.RETRY))
    assert [r.outcome for r in after.revisions] == [
        api.RevisionOutcome.STABLE,
        api.RevisionOutcome.PROGRESSING,
    ]
    assert RolloutState.of(after).stopped is None


def test_a_rollout_driven_pass_by_pass_through_status_is_promoted() -> None:
    """Pods start at once, measurements pass, a person promotes at the untimed pause."""
    spec, status, now = rollout(), api.ModelDeploymentStatus(), NOW
    weights, outcomes = [], []
    ready = (10, 0)
    for _ in range(30):
        state = RolloutState.of(status)
        since = state.analysis_since
        facts = Facts(
            total=10,
            stable_ready=ready[0],
            canary_ready=ready[1],
            measured=Measured(since, Verdict.PASS) if since else None,
        )
        waiting = state.step == 4
        decision = plan_rollout(spec, state, facts, now, Control.PROMOTE if waiting else None)
        status = recorded(status, decision)
        ready = (decision.stable_replicas, decision.canary_replicas)
        weights.append(decision.state.weight)
        outcomes.append(decision.outcome)
        now = decision.wake_at or now
        if decision.outcome is Outcome.PROMOTED:
            break
    assert outcomes[-1] is Outcome.PROMOTED
    assert sorted(set(weights)) == [0, 10, 50, 100]
    assert weights == sorted(weights)  # never backwards


def test_recreate_is_not_planned_here() -> None:
    with pytest.raises(ValueError, match="recreate"):
        plan_rollout(rollout(strategy="recreate"), RolloutState(), Facts(total=1), NOW)


# ---- the replica split -------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitCase:
    reason: str
    total: int
    weight: int
    want_canary: int


SPLITS = [
    # 10 % of 10 is exactly 1.
    SplitCase("an exact share", 10, 10, 1),
    # 1.5 replicas: halves round up.
    SplitCase("half a replica rounds up", 3, 50, 2),
    # 0.1 of a replica rounds to 0, but a canary with weight has a replica.
    SplitCase("a small weight still gets one canary", 10, 1, 1),
    # 99 % of 4 rounds to 4, but stable keeps one until 100 %.
    SplitCase("stable keeps one replica below 100 %", 4, 99, 3),
    # One replica cannot be shared: any weight puts it on the canary.
    SplitCase("a single replica goes to the canary", 1, 10, 1),
]


@pytest.mark.parametrize("case", SPLITS, ids=[c.reason for c in SPLITS])
def test_split_replicas(case: SplitCase) -> None:
    split = split_replicas(case.total, case.weight)
    assert (split.stable, split.canary) == (case.total - case.want_canary, case.want_canary)


TOTALS = range(0, 41)
WEIGHTS = range(0, 101)


def test_split_sums_to_the_total() -> None:
    for total in TOTALS:
        for weight in WEIGHTS:
            split = split_replicas(total, weight)
            assert split.stable + split.canary == total, (total, weight)
            assert split.stable >= 0
            assert split.canary >= 0


def test_split_gives_the_canary_a_replica_once_it_has_weight() -> None:
    for total in range(1, 41):
        for weight in range(1, 101):
            assert split_replicas(total, weight).canary >= 1, (total, weight)


def test_split_at_the_ends() -> None:
    for total in TOTALS:
        assert split_replicas(total, 0).canary == 0
        assert split_replicas(total, 100).stable == 0


def test_split_grows_the_canary_with_the_weight() -> None:
    for total in TOTALS:
        canaries = [split_replicas(total, weight).canary for weight in WEIGHTS]
        assert canaries == sorted(canaries), total


def test_split_keeps_a_stable_replica_below_100_percent() -> None:
    for total in range(2, 41):
        for weight in range(0, 100):
            assert split_replicas(total, weight).stable >= 1, (total, weight)


# ---- durations ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DurationCase:
    reason: str
    text: str
    want: timedelta | None  # None: refused


DURATIONS = [
    DurationCase("seconds", "30s", timedelta(seconds=30)),
    DurationCase("minutes", "2m", timedelta(minutes=2)),
    DurationCase("milliseconds are not minutes", "500ms", timedelta(milliseconds=500)),
    DurationCase("parts add up", "1h30m5s", timedelta(hours=1, minutes=30, seconds=5)),
    DurationCase("a bare number has no unit", "30", None),
    DurationCase("empty", "", None),
    DurationCase("trailing junk", "30sx", None),
]


@pytest.mark.parametrize("case", DURATIONS, ids=[c.reason for c in DURATIONS])
def test_parse_duration(case: DurationCase) -> None:
    if case.want is None:
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(case.text)
    else:
        assert parse_duration(case.text) == case.want
