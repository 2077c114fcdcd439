"""What a pass believes about its children: the caches, Davit's own writes, and ownership."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from davit_operator.planners import observe
from davit_operator.planners.observe import Written


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


@dataclass(frozen=True)
class NewestCase:
    reason: str
    cached: dict[str, Any] | None
    written: Written
    want_version: str | None  # the resourceVersion believed; None: believed absent
    want_ahead: bool


NEWEST = [
    NewestCase(
        "the watch has not delivered a fresh create yet: believe the write",
        None, Written("u1", "12", obj(version="12")), "12", True,
    ),
    NewestCase(
        "the cache still holds the object as it was before the write",
        obj(version="10"), Written("u1", "12", obj(version="12")), "12", True,
    ),
    NewestCase(
        "the watch caught up with the write",
        obj(version="12"), Written("u1", "12", obj(version="12")), "12", False,
    ),
    NewestCase(
        "someone changed it after the write: the cache is newer",
        obj(version="15"), Written("u1", "12", obj(version="12")), "15", False,
    ),
    NewestCase(
        "versions that are not numbers: trust the cache",
        obj(version="abc"), Written("u1", "12", obj(version="12")), "abc", False,
    ),
    NewestCase(
        "deleted by Davit, the cache still shows it: believe it gone",
        obj(version="10"), Written("u1", "11", None), None, True,
    ),
    NewestCase(
        "deleted by Davit and the cache agrees",
        None, Written("u1", "11", None), None, False,
    ),
    NewestCase(
        "deleted, then created again (another uid): the new one is real",
        obj(version="14", uid="u2"), Written("u1", "11", None), "14", False,
    ),
]  # fmt: skip


@pytest.mark.parametrize("case", NEWEST, ids=[c.reason for c in NEWEST])
def test_newest(case: NewestCase) -> None:
    believed, ahead = observe.newest(case.cached, case.written)
    version = None if believed is None else believed["metadata"]["resourceVersion"]
    assert (version, ahead) == (case.want_version, case.want_ahead)


def test_overlay_lays_writes_over_the_cache_and_reports_caught_up_ones() -> None:
    cached = {("Service", "a"): obj(name="a", version="5"), ("Service", "b"): obj(name="b")}
    written = {
        ("Service", "a"): Written("u1", "7", obj(name="a", version="7")),  # ahead
        ("Service", "b"): Written("u1", "3", obj(name="b", version="3")),  # caught up
        ("PodDisruptionBudget", "a"): Written("u9", "8", None),  # deleted, cache agrees
    }
    believed, caught_up = observe.overlay(cached, written)
    assert believed[("Service", "a")]["metadata"]["resourceVersion"] == "7"
    assert believed[("Service", "b")]["metadata"]["resourceVersion"] == "10"
    assert set(believed) == {("Service", "a"), ("Service", "b")}
    assert caught_up == {("Service", "b"), ("PodDisruptionBudget", "a")}


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
