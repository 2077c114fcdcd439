"""`kubectl davit`'s pure parts: which request a command makes, and the status tree."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from davit_operator import api
from davit_operator.planners.revision import revision_hash
from davit_operator.planners.rollout import Control
from davit_operator.plugin import (
    PluginError,
    parse_args,
    render_history,
    render_status,
    request_for,
    undo_patch,
    undo_target,
)

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


def test_the_status_tree_shows_the_weight_traffic_gets_beside_the_one_set() -> None:
    model = md()
    model["status"]["actualWeight"] = 33  # stable not shrunk yet: 2 of 6 ready pods
    text = render_status(model, [deployment(CANARY, 2, 2), deployment(STABLE, 4, 4)])
    lines = [line.split() for line in text.splitlines()]
    assert lines[3] == [CANARY, "v2", "canary", "weight", "33", "%", "replicas", "2/2", "ready",
                        "(set", "50", "%)"]  # fmt: skip
    assert lines[4] == [STABLE, "v1", "stable", "weight", "67", "%", "replicas", "4/4", "ready"]


def test_status_shows_the_canarys_last_measurement() -> None:
    model = md()
    model["status"]["revisions"][1]["analysis"] = {
        "startedAt": "2026-12-04T15:31:55+00:00", "endedAt": "2026-12-04T15:31:59+00:00",
        "verdict": "Fail",
        "message": "error rate 24 % over max 5 %; p99 2.85 ms within max 1000 ms",
        "canary": {"requests": 100, "errorRate": 0.24, "p99LatencyMs": 2.9},
        "stable": {"requests": 98, "errorRate": 0.0},
    }  # fmt: skip
    lines = render_status(model, [deployment(CANARY, 2, 2), deployment(STABLE, 2, 1)]).splitlines()
    at = lines.index(f"  analysis of {CANARY}: Fail  (2026-12-04T15:31:55+00:00 → "
                     "2026-12-04T15:31:59+00:00)")  # fmt: skip
    assert lines[at + 1].split() == ["canary", "100", "requests", "errors", "24", "%", "p99",
                                     "2.9", "ms"]  # fmt: skip
    assert lines[at + 2].split() == ["stable", "98", "requests", "errors", "0", "%", "p99", "-"]
    assert lines[at + 3] == "    error rate 24 % over max 5 %; p99 2.85 ms within max 1000 ms"


def test_status_without_a_measurement_has_no_analysis() -> None:
    text = render_status(md(), [deployment(CANARY, 2, 2), deployment(STABLE, 2, 1)])
    assert "analysis" not in text


def test_promote_full_and_the_wait_are_flags() -> None:
    args = parse_args(["-n", "ml", "promote", "--full", "resnet", "--wait", "3"])
    assert (args.namespace, args.command, args.full, args.name, args.wait) == (
        "ml", "promote", True, "resnet", 3.0
    )  # fmt: skip
    assert parse_args(["status", "-w", "resnet"]).watch


def with_history(spec_uri: str) -> dict[str, Any]:
    """resnet whose spec is the model at `spec_uri`, after revisions 1 (v1) and 2 (v2)."""
    spec = {"model": {"uri": spec_uri, "version": "x"}, "runtime": {"kind": "triton"}}
    model = {**md(None), "spec": spec}
    from_spec = revision_hash(api.ModelDeploymentSpec.model_validate(spec))
    model["status"]["revisions"] = [
        {"hash": "1111111111", "number": 1, "version": "v1", "outcome": "Superseded"},
        {"hash": from_spec, "number": 2, "version": "v2", "outcome": "Stable"},
    ]
    return model


def test_undo_goes_back_to_the_previous_revision_or_the_one_named() -> None:
    model = with_history("s3://m/v2")
    assert undo_target(model, None)["number"] == 1
    assert undo_target(model, 1)["hash"] == "1111111111"
    with pytest.raises(PluginError, match="no revision 7 in the history \\(kept: 1, 2"):
        undo_target(model, 7)
    with pytest.raises(PluginError, match="what the spec asks for already"):
        undo_target(model, 2)


def test_undo_restores_the_pod_fields_only() -> None:
    spec = {"model": {"uri": "s3://m/v2"}, "scheduling": {"nodeSelector": {"a": "b"}},
            "replicas": 3}  # fmt: skip
    restored = {"model": {"uri": "s3://m/v1"}, "runtime": {"kind": "torch"}}
    assert undo_patch(spec, restored) == [
        {"op": "add", "path": "/spec/model", "value": {"uri": "s3://m/v1"}},
        {"op": "add", "path": "/spec/runtime", "value": {"kind": "torch"}},
        {"op": "remove", "path": "/spec/scheduling"},  # absent then: the defaults again
    ]


def test_history_marks_the_revision_the_spec_asks_for() -> None:
    lines = render_history(with_history("s3://m/v2")).splitlines()
    assert lines[0].split()[:4] == ["REVISION", "HASH", "VERSION", "OUTCOME"]
    assert lines[1].split()[:4] == ["1", "1111111111", "v1", "Superseded"]
    assert lines[2].endswith("(spec)")
    assert not lines[1].endswith("(spec)")
