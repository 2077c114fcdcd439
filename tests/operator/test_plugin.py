"""`kubectl davit`'s pure parts: which request a command makes, and the status tree."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from davit_operator.planners.rollout import Control
from davit_operator.plugin import PluginError, parse_args, render_status, request_for

CANARY, STABLE = "232d26766d", "0ld57ab1e"


def md(canary_outcome: str | None = "Progressing", *, paused: bool = False) -> dict[str, Any]:
    """resnet mid-pause at 50 % (canary_outcome None: no rollout running)."""
    revisions = [{"hash": STABLE, "version": "v1", "outcome": "Stable"}]
    if canary_outcome is not None:
        revisions.append({"hash": CANARY, "version": "v2", "outcome": canary_outcome})
    status: dict[str, Any] = {
        "phase": "Progressing",
        "ready": "2/4",
        "stableRevision": STABLE,
        "revisions": revisions,
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "Paused", "message": "paused at 50 %"},
            {"type": "Progressing", "status": "True", "reason": "Paused",
             "message": "paused at 50 % until 2026-12-03T14:00:03+00:00"},
        ],
    }  # fmt: skip
    if canary_outcome is not None:
        status.update(canaryRevision=CANARY, canaryWeight=50, currentStep=1)
    if paused:
        status["paused"] = True
    return {
        "metadata": {"name": "resnet", "namespace": "ml"},
        "spec": {"rollout": {"steps": [{"setWeight": 50}, {"pause": {"duration": "3s"}}]}},
        "status": status,
    }


def deployment(revision: str, replicas: int, ready: int) -> dict[str, Any]:
    return {
        "metadata": {"name": f"resnet-{revision}", "labels": {"davit.dev/revision": revision}},
        "spec": {"replicas": replicas},
        "status": {"readyReplicas": ready},
    }


@dataclass(frozen=True)
class RequestCase:
    reason: str
    canary_outcome: str | None
    control: Control
    refused: str = ""  # part of the error the user reads; "" means the request is made
    paused: bool = False


REQUESTS = [
    RequestCase("promote a running canary", "Progressing", Control.PROMOTE),
    RequestCase("abort a running canary", "Progressing", Control.ABORT),
    RequestCase("retry an aborted canary", "Aborted", Control.RETRY),
    # Each refusal says what would work instead.
    RequestCase("nothing to abort without a rollout", None, Control.ABORT,
                "no rollout running (stable revision: 0ld57ab1e): nothing to abort"),
    RequestCase("a running rollout has nothing to retry", "Progressing", Control.RETRY,
                "is not stopped: nothing to retry"),
    RequestCase("an aborted rollout is retried, not promoted", "Aborted", Control.PROMOTE,
                "is aborted: `kubectl davit retry resnet` starts it again"),
    RequestCase("pause a running canary", "Progressing", Control.PAUSE),
    RequestCase("resume a paused canary", "Progressing", Control.RESUME, paused=True),
    RequestCase("nothing to resume unless paused", "Progressing", Control.RESUME,
                "is not paused: nothing to resume"),
    RequestCase("no second pause", "Progressing", Control.PAUSE, "is paused already",
                paused=True),
]  # fmt: skip


@pytest.mark.parametrize("case", REQUESTS, ids=[c.reason for c in REQUESTS])
def test_request_for(case: RequestCase) -> None:
    if case.refused:
        with pytest.raises(PluginError) as error:
            request_for(md(case.canary_outcome, paused=case.paused), case.control, "id-1")
        assert case.refused in str(error.value)
        return
    request = request_for(md(case.canary_outcome, paused=case.paused), case.control, "id-1")
    assert (request.control, request.revision, request.id) == (case.control, CANARY, "id-1")


def test_the_status_tree_shows_revisions_weights_and_steps() -> None:
    text = render_status(md(), [deployment(CANARY, 2, 2), deployment(STABLE, 2, 1)])
    lines = [line.rstrip() for line in text.splitlines()]
    assert lines[0] == "ml/resnet  phase Progressing  ready 2/4"
    assert lines[1] == "  Paused: paused at 50 % until 2026-12-03T14:00:03+00:00"
    assert lines[3].split() == [CANARY, "v2", "canary", "weight", "50", "%", "replicas", "2/2",
                                "ready"]  # fmt: skip
    assert lines[4].split() == [STABLE, "v1", "stable", "weight", "50", "%", "replicas", "1/2",
                                "ready"]  # fmt: skip
    assert lines[5:8] == ["  steps (1 of 2 completed)", "    [x] 1. setWeight 50",
                          "    [>] 2. pause 3s"]  # fmt: skip
    assert lines[8] == "  conditions"
    assert lines[9].split()[:3] == ["Ready", "False", "Paused"]


def test_promote_full_and_the_wait_are_flags() -> None:
    args = parse_args(["-n", "ml", "promote", "--full", "resnet", "--wait", "3"])
    assert (args.namespace, args.command, args.full, args.name, args.wait) == (
        "ml", "promote", True, "resnet", 3.0
    )  # fmt: skip
    assert parse_args(["status", "-w", "resnet"]).watch
