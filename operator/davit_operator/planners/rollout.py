"""The rollout planner, canary and blue-green: (rollout spec, state, observed facts, now) → one
decision.

Pure: no I/O, no clock, no logging. The caller reads `RolloutState.of(status)`, passes what it
observed, scales stable and canary to the decision's replicas, sets its weight on the traffic
provider, starts a measurement when asked, writes `recorded(status, decision)` and wakes the
model at `decision.wake_at`. Every piece of progress is in the returned state, so a pass that
is repeated (an operator restarted between the decision and its writes) decides the same again.

One pass makes at most one transition: a step ends, or a pause or a measurement begins, or the
traffic starts to return to stable. Steps run in order; `state.step` is the number completed,
and `len(rollout.steps)` means all steps are done and the canary is being promoted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from davit_operator import api
from davit_operator.planners import revision


class Outcome(StrEnum):
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    WAITING_FOR_GPUS = "WaitingForGPUs"
    PROMOTED = "Promoted"
    ABORTED = "Aborted"
    ROLLED_BACK = "RolledBack"


Stopped = Literal[Outcome.ABORTED, Outcome.ROLLED_BACK]


class Verdict(StrEnum):
    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"  # too few requests to judge: not a pass, not a failure


class Control(StrEnum):
    """A person's request, acted on in the pass that sees it."""

    PROMOTE = "promote"  # end the current pause or analysis step
    PROMOTE_FULL = "promoteFull"  # skip every remaining step
    ABORT = "abort"  # return all traffic to stable and stop
    RETRY = "retry"  # start a stopped rollout again from the first step
    PAUSE = "pause"  # hold the rollout where it is until resume (or a promote)
    RESUME = "resume"  # go on from where a pause held it


@dataclass(frozen=True)
class RolloutState:
    """Where the rollout stands, as recorded in status."""

    step: int = 0  # steps completed
    weight: int = 0  # percent of traffic on the canary
    pause_until: datetime | None = None  # the running timed pause ends then
    analysis_since: datetime | None = None  # the running measurement began then (its name)
    analysis_failures: int = 0  # consecutive failed measurements at this step
    stopped: Stopped | None = None  # aborted or rolled back: no step runs again
    paused: bool = False  # held by a person until resume

    @classmethod
    def of(cls, status: api.ModelDeploymentStatus) -> RolloutState:
        """The state `recorded` wrote; a status without rollout fields is a rollout at step 0."""
        canary = next((r for r in status.revisions if r.hash == status.canary_revision), None)
        stopped: Stopped | None = None
        if canary is not None and canary.outcome is api.RevisionOutcome.ABORTED:
            stopped = Outcome.ABORTED
        elif canary is not None and canary.outcome is api.RevisionOutcome.ROLLED_BACK:
            stopped = Outcome.ROLLED_BACK
        return cls(
            step=status.current_step or 0,
            weight=status.canary_weight or 0,
            pause_until=_parse_time(status.pause_until),
            analysis_since=_parse_time(status.analysis_started_at),
            analysis_failures=status.analysis_failures or 0,
            stopped=stopped,
            paused=bool(status.paused),
        )


@dataclass(frozen=True)
class Measured:
    """A finished measurement of the canary: `since` names it (the decision that began it)."""

    since: datetime
    verdict: Verdict
    message: str = ""  # the figures behind the verdict, for people


@dataclass(frozen=True)
class Facts:
    """What the operator observed this pass."""

    total: int  # replicas the ModelDeployment asks for (spec, or the HPA), stable and canary
    stable_ready: int = 0
    canary_ready: int = 0
    canary_pending_for_gpus: bool = False  # a canary pod is Pending: Insufficient nvidia.com/gpu
    measured: Measured | None = None  # the latest finished measurement, if any
    # Why the running measurement, its interval over, has no figures (its source failed).
    measure_problem: str | None = None
    # And whether its source no longer keeps that window (the router keeps ten minutes): then
    # the measurement starts anew instead of asking for the same window forever.
    measure_expired: bool = False
    # Pods the rollout may run beyond `total` (rollout.maxSurgeGPUs over the GPUs of one pod);
    # None: no limit (a model without GPUs).
    surge_pods: int | None = None
    # Whether the current analysis step's settings name a source; without one it holds the
    # rollout (a canary nobody measured is never promoted unasked).
    can_analyse: bool = True


@dataclass(frozen=True)
class Split:
    stable: int
    canary: int


@dataclass(frozen=True)
class Decision:
    """What to do now and the state that records it."""

    state: RolloutState
    stable_replicas: int
    canary_replicas: int
    start_analysis: bool  # begin a measurement named `state.analysis_since`
    outcome: Outcome
    reason: str  # one CamelCase word, for the Progressing condition
    message: str  # for people
    wake_at: datetime | None = None  # plan again then, though nothing else happened


# ---- pure helpers ------------------------------------------------------------------------------


def split_replicas(total: int, weight: int) -> Split:
    """`total` replicas shared by `weight` percent: the canary's share rounded to the nearest
    replica (halves up), at least 1 once weight > 0, and, while weight < 100, leaving stable at
    least 1 when there are two replicas or more. The two always sum to `total`."""
    if total <= 0 or weight <= 0:
        return Split(stable=max(total, 0), canary=0)
    if weight >= 100:
        return Split(stable=0, canary=total)
    canary = (2 * total * weight + 100) // 200
    canary = max(canary, 1)
    if total >= 2:
        canary = min(canary, total - 1)
    return Split(stable=total - canary, canary=canary)


DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h)")
UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> timedelta:
    """`30s`, `2m`, `1h30m`, `500ms` (the API's pattern) as a timedelta."""
    parts = DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r} (e.g. 30s, 2m, 1h30m, 500ms)")
    return timedelta(seconds=sum(int(n) * UNIT_SECONDS[u] for n, u in parts))


def step_analysis(rollout: api.Rollout, step: api.RolloutStep) -> api.Analysis:
    """rollout.analysis with the step's overrides (camelCase keys, as in the manifest)."""
    defaults = rollout.analysis.model_dump(by_alias=True)
    return api.Analysis.model_validate({**defaults, **(step.analysis or {})})


def current_analysis(rollout: api.Rollout, state: RolloutState) -> api.Analysis | None:
    """The settings of the analysis step the rollout stands at; None at any other step, and
    once it stopped."""
    if state.stopped is not None or state.step >= len(rollout.steps):
        return None
    step = rollout.steps[state.step]
    return step_analysis(rollout, step) if step.analysis is not None else None


def surge_pods(max_surge_gpus: int, gpus_per_pod: int) -> int | None:
    """Whole pods that fit in the rollout's GPU budget; None when pods hold no GPUs."""
    return max_surge_gpus // gpus_per_pod if gpus_per_pod > 0 else None


def within_budget(split: Split, facts: Facts, *, give_up: Literal["stable", "canary"]) -> Split:
    """`split` with at most `facts.surge_pods` pods beyond the total: the side named `give_up`
    shrinks by the excess (stable while the canary grows; the canary while stable grows back),
    so that GPUs freed by one side are what the other side's new pods start on."""
    if facts.surge_pods is None:
        return split
    excess = split.stable + split.canary - facts.total - facts.surge_pods
    if excess <= 0:
        return split
    if give_up == "stable":
        return Split(stable=max(split.stable - excess, 0), canary=split.canary)
    return Split(stable=split.stable, canary=max(split.canary - excess, 0))


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _format_time(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _at_step(state: RolloutState, step: int) -> RolloutState:
    """At `step`, the current step's pause and measurements ended with it."""
    return replace(state, step=step, pause_until=None, analysis_since=None, analysis_failures=0)


def _next_step(state: RolloutState) -> RolloutState:
    return _at_step(state, state.step + 1)


def _decide(
    state: RolloutState, facts: Facts, outcome: Outcome, reason: str, message: str,
    wake_at: datetime | None = None, split: Split | None = None, start_analysis: bool = False,
) -> Decision:  # fmt: skip
    """A decision whose replicas are `split`, by default stable and canary split by the
    state's weight."""
    if split is None:
        split = split_replicas(facts.total, state.weight)
    return Decision(
        state=state,
        stable_replicas=split.stable,
        canary_replicas=split.canary,
        start_analysis=start_analysis,
        outcome=outcome,
        reason=reason,
        message=message,
        wake_at=wake_at,
    )


# ---- transitions -------------------------------------------------------------------------------


def apply_control(
    state: RolloutState, control: Control | None, steps: list[api.RolloutStep]
) -> RolloutState:
    """The state after a person's request. A stopped rollout ignores all but retry, which
    starts it again from the first step (retry of a running one changes nothing); a promoted
    one ignores abort and pause; pause holds it and resume lets it go on; promote ends a pause
    or an analysis step only (a setWeight step ends by itself once the canary holds its share)
    and, like promoteFull, lets a paused rollout go on."""
    if control is Control.RETRY:
        return RolloutState() if state.stopped is not None else state
    if control is None or state.stopped is not None:
        return state
    promoted = state.step >= len(steps) and state.weight == 100
    if control is Control.ABORT:
        return state if promoted else replace(state, stopped=Outcome.ABORTED)
    if control is Control.PAUSE:
        return state if promoted else replace(state, paused=True)
    if control is Control.RESUME:
        return replace(state, paused=False)
    if control is Control.PROMOTE_FULL:
        return replace(_at_step(state, max(state.step, len(steps))), paused=False)
    waits = state.step < len(steps) and steps[state.step].set_weight is None
    return replace(_next_step(state) if waits else state, paused=False)


def set_weight(state: RolloutState, weight: int, facts: Facts) -> Decision:
    """Scale the canary to its share of `weight` first; the weight moves, stable shrinks to
    its share and the step ends once that many canary replicas are ready (make before break:
    until then stable keeps the share it had)."""
    before, after = split_replicas(facts.total, state.weight), split_replicas(facts.total, weight)
    if facts.canary_ready >= after.canary:
        return _decide(
            replace(_next_step(state), weight=weight),
            facts,
            Outcome.PROGRESSING,
            "WeightSet",
            f"canary at {weight} %: {after.canary}/{facts.total} replicas",
            split=after,
        )
    growing = Split(stable=max(before.stable, after.stable), canary=after.canary)
    return _decide(
        state,
        facts,
        Outcome.PROGRESSING,
        "ScalingCanary",
        f"canary {facts.canary_ready}/{after.canary} ready before {weight} % moves to it",
        split=within_budget(growing, facts, give_up="stable"),
    )


def pause(state: RolloutState, step: api.Pause, facts: Facts, now: datetime) -> Decision:
    """A pause with a duration begins (until now + duration) and ends in the first pass at or
    after that time; one without a duration waits for a promote."""
    at = f"paused at {state.weight} %"
    if step.duration is None:
        return _decide(state, facts, Outcome.PAUSED, "WaitingForPromote", f"{at} until promoted")
    if state.pause_until is None:
        until = now + parse_duration(step.duration)
        paused = replace(state, pause_until=until)
        return _decide(
            paused, facts, Outcome.PAUSED, "Paused", f"{at} until {until.isoformat()}", until
        )
    if now >= state.pause_until:
        return _decide(_next_step(state), facts, Outcome.PROGRESSING, "PauseEnded", f"{at}: over")
    until = state.pause_until
    return _decide(state, facts, Outcome.PAUSED, "Paused", f"{at} until {until.isoformat()}", until)


def analyse(
    state: RolloutState, rollout: api.Rollout, settings: api.Analysis, facts: Facts,
    now: datetime,
) -> Decision:  # fmt: skip
    """Measure the canary over `settings.interval`, again until a verdict decides: a pass ends
    the step; an inconclusive measurement is taken again and counts for nothing; a failure is
    measured again until more than `failureLimit` fail in a row (see `count_failure`). Only a
    verdict on the measurement the state names counts: older ones are ignored."""
    interval = parse_duration(settings.interval)
    if state.analysis_failures > settings.failure_limit:
        return analysis_failed(state, facts)
    since, measured = state.analysis_since, facts.measured
    if since is None:
        return _measure(state, facts, now, interval, "Analysing", "measuring the canary")
    if measured is None or measured.since != since:
        if since + interval > now:
            return _decide(
                state, facts, Outcome.PROGRESSING, "Analysing", "measuring the canary",
                since + interval,
            )  # fmt: skip
        problem = facts.measure_problem or "no figures yet"
        if facts.measure_expired:
            return _measure(
                state, facts, now, interval, "MetricsUnavailable",
                f"the canary's figures cannot be read ({problem}): measuring again from now",
            )  # fmt: skip
        # Over, with no figures: the same window is read again later (the source keeps it).
        return _decide(
            state, facts, Outcome.PROGRESSING, "MetricsUnavailable",
            f"the canary's figures cannot be read ({problem}): trying again", now + interval,
        )  # fmt: skip
    if measured.verdict is Verdict.PASS:
        return _decide(
            _next_step(state),
            facts,
            Outcome.PROGRESSING,
            "AnalysisPassed",
            f"the canary passed analysis: {measured.message}",
        )
    if measured.verdict is Verdict.INCONCLUSIVE:
        return _measure(
            state,
            facts,
            now,
            interval,
            "AnalysisInconclusive",
            f"cannot judge the canary ({measured.message}): measuring again",
        )
    return count_failure(state, rollout, settings, facts, now, measured.message)


def count_failure(
    state: RolloutState, rollout: api.Rollout, settings: api.Analysis, facts: Facts,
    now: datetime, why: str = "",
) -> Decision:  # fmt: skip
    """One more failed measurement in a row: up to `failureLimit` are tolerated (measured
    again); beyond it the rollout rolls back (autoRollback) or pauses for a person."""
    failed = replace(state, analysis_failures=state.analysis_failures + 1, analysis_since=None)
    count, limit = failed.analysis_failures, settings.failure_limit
    if count <= limit:
        return _measure(
            failed,
            facts,
            now,
            parse_duration(settings.interval),
            "AnalysisFailed",
            f"{count} failed measurements (failureLimit {limit}): measuring again; {why}",
        )
    if rollout.auto_rollback:
        return return_to_stable(replace(failed, stopped=Outcome.ROLLED_BACK), facts)
    return analysis_failed(failed, facts)


def analysis_failed(state: RolloutState, facts: Facts) -> Decision:
    """Failed beyond failureLimit with autoRollback off: held where it is for a person."""
    return _decide(
        state,
        facts,
        Outcome.PAUSED,
        "AnalysisFailed",
        f"{state.analysis_failures} measurements failed in a row and autoRollback is "
        "off: promote to go on, or abort to return to stable",
    )


def _measure(
    state: RolloutState, facts: Facts, now: datetime, interval: timedelta, reason: str,
    message: str,
) -> Decision:  # fmt: skip
    """Begin a measurement named `now`; plan again when its interval is over."""
    begun = replace(state, analysis_since=now)
    return _decide(
        begun, facts, Outcome.PROGRESSING, reason, message, now + interval, start_analysis=True
    )


def finish(state: RolloutState, facts: Facts) -> Decision:
    """Every step done: the canary grows to the whole total (stable keeps its share); once all
    its replicas are ready it takes 100 % and stable goes to 0."""
    if facts.canary_ready >= facts.total:
        return _decide(
            replace(state, weight=100),
            facts,
            Outcome.PROMOTED,
            "Promoted",
            "the canary serves all traffic",
        )
    before = split_replicas(facts.total, state.weight)
    growing = Split(stable=before.stable, canary=facts.total)
    return _decide(
        state,
        facts,
        Outcome.PROGRESSING,
        "ScalingCanary",
        f"canary {facts.canary_ready}/{facts.total} ready before it takes all traffic",
        split=within_budget(growing, facts, give_up="stable"),
    )


def return_to_stable(state: RolloutState, facts: Facts) -> Decision:
    """Aborted or rolled back: stable grows back to the whole total; once all its replicas are
    ready it takes all traffic and the canary goes to 0. The weight never moves to a stable
    that cannot carry it (the canary keeps its share until then)."""
    assert state.stopped is not None
    outcome = state.stopped
    word = "aborted" if outcome is Outcome.ABORTED else "rolled back"
    stopped = replace(state, pause_until=None, analysis_since=None)
    if state.weight == 0 or facts.stable_ready >= facts.total:
        return _decide(
            replace(stopped, weight=0),
            facts,
            outcome,
            outcome.value,
            f"{word}: stable serves all traffic",
        )
    canary = split_replicas(facts.total, state.weight).canary
    growing = Split(stable=facts.total, canary=canary)
    return _decide(
        stopped,
        facts,
        outcome,
        "ScalingUpStable",
        f"{word}: stable {facts.stable_ready}/{facts.total} ready before traffic returns to it",
        split=within_budget(growing, facts, give_up="canary"),
    )


def hold(state: RolloutState, facts: Facts, reason: str, message: str) -> Decision:
    """Nothing advances and nothing fails: the rollout stays at its step and weight until a
    person or a new spec moves it."""
    return _decide(state, facts, Outcome.PAUSED, reason, message)


def held(
    state: RolloutState, proposed: Decision, facts: Facts, outcome: Outcome, reason: str,
    message: str,
) -> Decision:  # fmt: skip
    """`proposed` with nothing advancing (no step ends, no pause or measurement begins) and
    nothing failing: its replicas stay asked for, so a growing canary keeps growing, and
    stable never goes below its share at the current weight unless the GPU budget
    (`surge_pods`) has it give pods up to the canary."""
    current = split_replicas(facts.total, state.weight)
    kept = Split(max(proposed.stable_replicas, current.stable), proposed.canary_replicas)
    return replace(
        proposed,
        state=state,
        stable_replicas=within_budget(kept, facts, give_up="stable").stable,
        start_analysis=False,
        outcome=outcome,
        reason=reason,
        message=message,
        wake_at=None,
    )


def hold_for_gpus(state: RolloutState, proposed: Decision, facts: Facts) -> Decision:
    """Canary pods Pending for GPUs: held (see `held`) until GPUs are freed."""
    if not facts.canary_pending_for_gpus:
        return proposed
    if proposed.outcome not in (Outcome.PROGRESSING, Outcome.PAUSED):
        return proposed
    return held(
        state,
        proposed,
        facts,
        Outcome.WAITING_FOR_GPUS,
        "WaitingForGPUs",
        f"canary pods wait for GPUs (Insufficient nvidia.com/gpu) at {state.weight} %",
    )


def hold_for_person(state: RolloutState, proposed: Decision, facts: Facts) -> Decision:
    """Paused by a person: held (see `held`) until resume or a promote."""
    if not state.paused:
        return proposed
    return held(
        state,
        proposed,
        facts,
        Outcome.PAUSED,
        "PausedByControl",
        f"paused by a person at {state.weight} % ({state.step} steps done): "
        "`kubectl davit resume` goes on",
    )


def run_step(rollout: api.Rollout, state: RolloutState, facts: Facts, now: datetime) -> Decision:
    """The current step's transition, or the promotion once every step is done."""
    if state.step >= len(rollout.steps):
        return finish(state, facts)
    step = rollout.steps[state.step]
    if step.set_weight is not None:
        return set_weight(state, step.set_weight, facts)
    if step.pause is not None:
        return pause(state, step.pause, facts, now)
    if not facts.can_analyse:
        return hold(
            state,
            facts,
            "NoAnalysisSource",
            f"step {state.step + 1} of {len(rollout.steps)} is an analysis step and it has "
            f"no source (rollout.analysis.prometheus.url, or traffic.provider builtin): the "
            f"rollout holds at {state.weight} % (`kubectl davit promote` passes it)",
        )
    return analyse(state, rollout, step_analysis(rollout, step), facts, now)


def blue_green_step(
    rollout: api.Rollout, state: RolloutState, facts: Facts, now: datetime
) -> Decision:
    """Blue-green: the new revision comes up at full size beside stable with no traffic; once
    all of it is ready the steps run (pauses, analysis; the API refuses setWeight here) with
    both at full size, then all traffic switches at once and stable retires. Stable never
    shrinks before the switch: where the GPU budget cannot hold a second full set, the new
    revision grows only as far as the budget goes, and the rollout says so."""
    both = Split(stable=facts.total, canary=facts.total)
    fits = within_budget(both, facts, give_up="canary")
    if facts.canary_ready < facts.total and fits.canary < facts.total:
        return _decide(
            state,
            facts,
            Outcome.PAUSED,
            "GPUBudgetTooSmall",
            f"blueGreen runs {facts.total} new pods beside stable's, and maxSurgeGPUs leaves "
            f"room for {fits.canary}: raise it, or roll out with canary steps",
            split=fits,
        )
    if facts.canary_ready < facts.total:
        return _decide(
            state,
            facts,
            Outcome.PROGRESSING,
            "ScalingNewRevision",
            f"new revision {facts.canary_ready}/{facts.total} ready before traffic switches",
            split=both,
        )
    if state.step < len(rollout.steps):
        step = run_step(rollout, state, facts, now)
        return replace(step, stable_replicas=facts.total, canary_replicas=facts.total)
    return _decide(
        replace(state, weight=100),
        facts,
        Outcome.PROMOTED,
        "Switched",
        "all traffic switched to the new revision",
        split=Split(stable=0, canary=facts.total),
    )


def plan_rollout(
    rollout: api.Rollout,
    state: RolloutState,
    facts: Facts,
    now: datetime,
    control: Control | None = None,
) -> Decision:
    """One pass of a canary or blue-green rollout: a person's request → the step, or the
    return to stable → the holds while new pods wait for GPUs or a person paused it. `now`
    must be timezone-aware. Strategy recreate is refused (ValueError): it has no steps."""
    if rollout.strategy is api.RolloutStrategy.RECREATE:
        raise ValueError(f"rollout strategy {rollout.strategy.value} is not planned here")
    state = apply_control(state, control, rollout.steps)
    if state.stopped is not None:
        return return_to_stable(state, facts)
    if rollout.strategy is api.RolloutStrategy.BLUE_GREEN:
        proposed = blue_green_step(rollout, state, facts, now)
    else:
        proposed = run_step(rollout, state, facts, now)
    return hold_for_person(state, hold_for_gpus(state, proposed, facts), facts)


# How a stopped rollout is recorded on its canary revision.
RECORDED_AS = {
    Outcome.ABORTED: api.RevisionOutcome.ABORTED,
    Outcome.ROLLED_BACK: api.RevisionOutcome.ROLLED_BACK,
}


def retried(record: api.RevisionRecord, state: RolloutState) -> bool:
    """Whether the canary revision's record says it was stopped and the state runs it again
    (a retry this pass)."""
    return state.stopped is None and record.outcome in revision.STOPPED_OUTCOMES


def recorded(status: api.ModelDeploymentStatus, decision: Decision) -> api.ModelDeploymentStatus:
    """A copy of `status` holding the decision's state (what `RolloutState.of` reads back); an
    abort or a rollback is recorded as the canary revision's outcome, and a retry turns it
    back to Progressing and forgets the stopped attempt's measurement (the retried canary is
    judged afresh: CanaryHealthy must not say the old verdict until it is measured again; the
    Events of the stopped attempt keep its figures)."""
    state = decision.state
    if state.stopped is not None:
        outcome = RECORDED_AS[state.stopped]
    else:
        outcome = api.RevisionOutcome.PROGRESSING

    def updated(record: api.RevisionRecord) -> dict[str, Any]:
        if retried(record, state):
            return {"outcome": outcome, "analysis": None}
        return {"outcome": outcome}

    revisions = [
        r.model_copy(update=updated(r))
        if r.hash == status.canary_revision
        and (state.stopped is not None or r.outcome in revision.STOPPED_OUTCOMES)
        else r.model_copy()
        for r in status.revisions
    ]
    return status.model_copy(
        update={
            "current_step": state.step,
            "canary_weight": state.weight,
            "pause_until": _format_time(state.pause_until),
            "analysis_started_at": _format_time(state.analysis_since),
            "analysis_failures": state.analysis_failures,
            "paused": state.paused or None,
            "revisions": revisions,
        }
    )
