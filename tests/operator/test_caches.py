"""The cluster cache: watch events, LIST snapshots (no ghosts after a 410), and who to wake."""

from __future__ import annotations

import json
from typing import Any

from davit_operator.caches import ClusterCache

ML = "ml"


def svc(name: str = "resnet", *, model: str | None = "resnet", version: int = 10, uid: str = "u1",
        namespace: str = ML) -> dict[str, Any]:  # fmt: skip
    labels = {"davit.dev/model": model} if model else {}
    return {
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "resourceVersion": str(version),
            "labels": labels,
            "managedFields": [{"manager": "x"}],
        },
    }


def test_an_event_files_the_child_under_its_model_without_managed_fields() -> None:
    cache = ClusterCache()
    assert cache.upsert("Service", svc()) == {(ML, "resnet")}
    [(key, stored)] = cache.children((ML, "resnet")).items()
    assert key == ("Service", "resnet")
    assert "managedFields" not in stored["metadata"]


def test_a_replayed_or_older_event_changes_nothing_and_wakes_no_one() -> None:
    cache = ClusterCache()
    cache.upsert("Service", svc(version=10))
    assert cache.upsert("Service", svc(version=10)) == set()
    assert cache.upsert("Service", svc(version=9)) == set()
    assert cache.children((ML, "resnet"))[("Service", "resnet")]["metadata"]["resourceVersion"] == (
        "10"
    )


def test_relabelling_moves_a_child_and_wakes_both_models() -> None:
    cache = ClusterCache()
    cache.upsert("Service", svc(model="a"))
    assert cache.upsert("Service", svc(model="b", version=11)) == {(ML, "a"), (ML, "b")}
    assert cache.children((ML, "a")) == {}
    assert list(cache.children((ML, "b"))) == [("Service", "resnet")]
    assert cache.upsert("Service", svc(model=None, version=12)) == {(ML, "b")}
    assert cache.children((ML, "b")) == {}


def test_delete_drops_only_that_uid() -> None:
    cache = ClusterCache()
    cache.upsert("Service", svc(uid="new"))
    assert cache.delete("Service", svc(uid="old")) == set()  # a late event of a previous object
    assert cache.delete("Service", svc(uid="new")) == {(ML, "resnet")}
    assert cache.children((ML, "resnet")) == {}


def test_a_snapshot_drops_ghosts_but_keeps_objects_newer_than_itself() -> None:
    cache = ClusterCache()
    cache.upsert("Service", svc("gone", model="a", version=5))  # deleted while the watch was down
    cache.upsert("Service", svc("fresh", model="b", version=30))  # created after the LIST
    cache.upsert("Service", svc("kept", model="c", version=7))
    touched = cache.replace("Service", [svc("kept", model="c", version=7)], list_version=20)
    assert touched == {(ML, "a")}
    assert cache.children((ML, "a")) == {}
    assert list(cache.children((ML, "b"))) == [("Service", "fresh")]
    assert list(cache.children((ML, "c"))) == [("Service", "kept")]


def test_a_snapshot_of_one_kind_leaves_other_kinds_alone() -> None:
    cache = ClusterCache()
    cache.upsert("Service", svc())
    pdb = {**svc(), "kind": "PodDisruptionBudget"}
    cache.upsert("PodDisruptionBudget", pdb)
    assert cache.replace("Service", [], list_version=100) == {(ML, "resnet")}
    assert list(cache.children((ML, "resnet"))) == [("PodDisruptionBudget", "resnet")]


def test_models_and_pods() -> None:
    cache = ClusterCache()
    metadata = {"name": "resnet", "namespace": ML, "uid": "m", "resourceVersion": "3"}
    model = {"kind": "ModelDeployment", "metadata": metadata}
    assert cache.upsert("ModelDeployment", model) == {(ML, "resnet")}
    pod = {**svc("resnet-abc-1"), "kind": "Pod"}
    pod["metadata"]["labels"]["davit.dev/revision"] = "abc"
    cache.upsert("Pod", pod)
    assert cache.model((ML, "resnet")) is not None
    assert [(p.name, p.revision) for p in cache.pods((ML, "resnet"))] == [("resnet-abc-1", "abc")]
    assert cache.children((ML, "resnet")) == {}
    assert cache.models() == [(ML, "resnet")]


def test_a_snapshot_of_one_namespace_leaves_the_other_namespaces_alone() -> None:
    # With a list of watched namespaces, each namespace is listed (and relisted after a 410)
    # on its own: its snapshot says nothing of the others.
    cache = ClusterCache()
    cache.upsert("Service", svc(namespace="a"))
    cache.upsert("Service", svc(namespace="b"))
    assert cache.replace("Service", [], list_version=100, namespace="a") == {("a", "resnet")}
    assert cache.children(("a", "resnet")) == {}
    assert list(cache.children(("b", "resnet"))) == [("Service", "resnet")]


def test_objects_of_one_template_share_their_keys_and_short_strings() -> None:
    """A thousand children of one template repeat the same keys and values: the cache keeps
    one copy of each string (what it holds still equals what the API server sent)."""

    def parsed(name: str) -> dict[str, Any]:  # each as its own JSON document, as watches give
        body = svc(name, uid=f"uid-{name}")
        body["spec"] = {"ports": [{"name": "http", "protocol": "TCP", "port": 8080}]}
        return dict(json.loads(json.dumps(body)))

    cache = ClusterCache()
    first, second = parsed("resnet"), parsed("resnet-b")
    cache.upsert("Service", first)
    cache.upsert("Service", second)
    stored = cache.children((ML, "resnet"))
    one, other = stored[("Service", "resnet")], stored[("Service", "resnet-b")]
    assert one == {**first, "metadata": {k: v for k, v in first["metadata"].items()
                                          if k != "managedFields"}}  # fmt: skip
    [port], [other_port] = one["spec"]["ports"], other["spec"]["ports"]
    assert port.keys() == other_port.keys()
    assert all(a is b for a, b in zip(port, other_port, strict=True))  # the keys
    assert port["protocol"] is other_port["protocol"]  # a short value
