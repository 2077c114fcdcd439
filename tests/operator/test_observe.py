"""What a pass believes about its children: the caches, Davit's own writes, and ownership."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from davit_operator.planners import observe


def obj(
    kind: str = "Service",
    name: str = "resnet",
    *,
    version: str = "10",
    uid: str = "u1",
    owner: str | None = "md-uid",
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "uid": uid,
        "resourceVersion": version,
        "labels": labels or {},
    }
    if owner is not None:
        metadata["ownerReferences"] = [{"uid": owner, "controller": True, "kind": "X"}]
    return {"kind": kind, "metadata": metadata}


def test_assemble_keeps_only_children_this_model_controls() -> None:
    children = {
        ("Service", "resnet"): obj(),
        ("Service", "impostor"): obj(name="impostor", owner="someone-else"),
        ("PodDisruptionBudget", "handmade"): obj("PodDisruptionBudget", "handmade", owner=None),
        ("Deployment", "resnet-abc"): obj(
            "Deployment", "resnet-abc", labels={"davit.dev/revision": "abc"}
        ),
        ("Deployment", "resnet-zzz"): obj(
            "Deployment", "resnet-zzz", owner="someone-else", labels={"davit.dev/revision": "zzz"}
        ),
    }
    pods = (
        observe.PodState(name="p1", revision="abc"),
        observe.PodState(name="p2", revision="zzz"),  # a pod of the foreign Deployment
    )
    snapshot = observe.assemble("md-uid", children, pods)
    assert [d.name for d in snapshot.deployments] == ["resnet-abc"]
    assert list(snapshot.children) == [("Service", "resnet")]
    assert [p.name for p in snapshot.pods] == ["p1"]


@dataclass(frozen=True)
class CleanupCase:
    reason: str
    metadata: dict[str, Any]
    want: dict[str, Any] | None


CLEANUP = [
    CleanupCase("a clean object needs no patch", {"resourceVersion": "3"}, None),
    CleanupCase(
        "others' finalizers and annotations are not ours to touch",
        {"finalizers": ["x/y"], "annotations": {"team": "a"}, "resourceVersion": "3"},
        None,
    ),
    CleanupCase(
        "the old finalizer alone: the list is cleared",
        {"finalizers": ["davit.dev/finalizer"], "resourceVersion": "3"},
        {"metadata": {"resourceVersion": "3", "finalizers": None}},
    ),
    CleanupCase(
        "the old finalizer beside another: the other stays",
        {"finalizers": ["x/y", "davit.dev/finalizer"], "resourceVersion": "3"},
        {"metadata": {"resourceVersion": "3", "finalizers": ["x/y"]}},
    ),
    CleanupCase(
        "kopf's bookkeeping annotations go, the user's stay",
        {
            "annotations": {"davit.dev/last-handled-configuration": "{}", "team": "a"},
            "resourceVersion": "4",
        },
        {
            "metadata": {
                "resourceVersion": "4",
                "annotations": {"davit.dev/last-handled-configuration": None},
            }
        },
    ),
]


@pytest.mark.parametrize("case", CLEANUP, ids=[c.reason for c in CLEANUP])
def test_legacy_cleanup(case: CleanupCase) -> None:
    assert observe.legacy_cleanup(case.metadata) == case.want


@dataclass(frozen=True)
class ProblemCase:
    reason: str
    container: dict[str, Any]
    want: tuple[str, str] | None  # (reason, message)


REFUSAL = "refusing to serve: config.json: inputs[0].name: must match ^[A-Za-z_]"
PROBLEMS = [
    ProblemCase("running and ready: no problem", {"ready": True, "state": {"running": {}}}, None),
    ProblemCase(
        "still creating is progress, not a problem",
        {"state": {"waiting": {"reason": "ContainerCreating"}}},
        None,
    ),
    ProblemCase(
        "crash loop: the runtime's termination message says why",
        {
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": REFUSAL}},
        },
        ("CrashLoopBackOff", REFUSAL),
    ),
    ProblemCase(
        "crash loop without a message: the exit code",
        {
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 2, "reason": "Error"}},
        },
        ("CrashLoopBackOff", "the server exited with code 2"),
    ),
    ProblemCase(
        "out of memory, restarting: OOMKilled is the reason that matters",
        {
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
        },
        ("OOMKilled", "the server exited with code 137"),
    ),
    ProblemCase(
        "image cannot be pulled: the kubelet's message",
        {"state": {"waiting": {"reason": "ImagePullBackOff", "message": "pull access denied"}}},
        ("ImagePullBackOff", "pull access denied"),
    ),
    ProblemCase(
        "terminated with an error and not restarted",
        {"state": {"terminated": {"exitCode": 1, "reason": "Error", "message": REFUSAL}}},
        ("Error", REFUSAL),
    ),
]


@pytest.mark.parametrize("case", PROBLEMS, ids=[c.reason for c in PROBLEMS])
def test_container_problem(case: ProblemCase) -> None:
    problem = observe.container_problem(
        {"containerStatuses": [{"name": "server", **case.container}]}
    )
    assert (None if problem is None else (problem.reason, problem.message)) == case.want
