"""Which status patches wait for the progress that follows, and until when (a simulated clock)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from davit_operator import api
from davit_operator.planners import status_pacing
from davit_operator.planners.reconcile import Event

HOLD = 2.0


STORED_CONDITIONS = {"Ready": "False", "Available": "True", "Scheduled": "Unknown",
                     "ModelLoaded": "Unknown"}  # fmt: skip


def conditions(**changed: str) -> list[dict[str, Any]]:
    """The stored conditions with some statuses changed (reasons and messages change too)."""
    return [
        {"type": kind, "status": status, "reason": f"{kind}{status}", "message": "",
         "lastTransitionTime": "2026-12-03T08:00:00Z"}
        for kind, status in {**STORED_CONDITIONS, **changed}.items()
    ]  # fmt: skip


STORED = api.ModelDeploymentStatus.model_validate(
    {
        "observedGeneration": 1,
        "phase": "Progressing",
        "conditions": conditions(),
        "replicas": 0,
        "ready": "0/3",
    }
)
NEW_REVISION = Event("Normal", "RevisionCreated", "revision abc rolling out")


@dataclass(frozen=True)
class ProgressCase:
    reason: str
    patch: dict[str, Any]
    events: list[Event]
    want: bool  # True: progress on the way, may wait


PROGRESS = [
    ProgressCase("nothing to write", {}, [], want=False),
    ProgressCase("pods created: counts only", {"replicas": 3, "gpus": 3}, [], want=True),
    ProgressCase("one more replica ready", {"readyReplicas": 1, "ready": "1/3"}, [], want=True),
    # A condition's reason or message moved, its status did not: still on the way.
    ProgressCase("a pod is waiting for the scheduler", {"conditions": conditions()}, [],
                 want=True),
    # A step towards Ready: a condition other than Ready turning True.
    ProgressCase("every pod is bound", {"conditions": conditions(Scheduled="True")}, [],
                 want=True),
    # Ready changing, or a condition falling, is what a user or `kubectl wait` waits for.
    ProgressCase("Ready turns True", {"conditions": conditions(Ready="True")}, [], want=False),
    ProgressCase("a pod cannot be scheduled", {"conditions": conditions(Scheduled="False")}, [],
                 want=False),
    ProgressCase("a condition falls from True to Unknown",
                 {"conditions": conditions(Available="Unknown")}, [], want=False),
    ProgressCase("a condition the stored status lacks",
                 {"conditions": [*conditions(), *conditions(Progressing="True")[-1:]]}, [],
                 want=False),
    ProgressCase("the phase changes", {"phase": "Healthy", "ready": "3/3"}, [], want=False),
    ProgressCase("a new generation seen", {"observedGeneration": 2}, [], want=False),
    ProgressCase("a revision recorded", {"revisions": []}, [], want=False),
    # Its Event and its status go together: an Event whose status was not written would be
    # planned, and posted, again.
    ProgressCase("counts with an Event", {"replicas": 3}, [NEW_REVISION], want=False),
]  # fmt: skip


@pytest.mark.parametrize("case", PROGRESS, ids=[c.reason for c in PROGRESS])
def test_is_progress(case: ProgressCase) -> None:
    assert status_pacing.is_progress(STORED, case.patch, case.events) is case.want


@dataclass(frozen=True)
class DueCase:
    reason: str
    progress: bool
    held_until: float | None  # the time a held patch is due, if one is held
    now: float
    want: float | None  # None: write now; otherwise hold it until then


DUE = [
    DueCase("a transition is written at once", False, None, 100.0, None),
    # A held patch is overtaken by the transition that follows it: one write for both.
    DueCase("a transition while progress is held", False, 101.0, 100.5, None),
    DueCase("progress starts a hold", True, None, 100.0, 100.0 + HOLD),
    # More progress while held keeps the first due time: a stream of pod events delays the
    # write by no more than the hold.
    DueCase("more progress while held", True, 102.0, 101.0, 102.0),
    DueCase("the hold is over", True, 102.0, 102.0, None),
    DueCase("long over (the pass ran late)", True, 102.0, 130.0, None),
]


@pytest.mark.parametrize("case", DUE, ids=[c.reason for c in DUE])
def test_write_due(case: DueCase) -> None:
    assert status_pacing.write_due(case.progress, case.held_until, case.now, HOLD) == case.want
