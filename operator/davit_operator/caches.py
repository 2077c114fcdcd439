"""The operator's picture of the cluster: ModelDeployments and their children, by model.

Fed by watch events (kopf's for the models, informers.py for the rest) and by LIST snapshots
(informers.py). Pure data: no I/O, no clock. Each feed returns the models whose picture changed,
for the scheduler to wake.

Why snapshots as well as events: when a watch expires (HTTP 410, e.g. after the API server was
away), kopf lists again but reports only the objects that exist — an object deleted meanwhile is
never reported gone. `replace` with a LIST snapshot drops such ghosts, as an informer's relist
does; the snapshot's resourceVersion keeps it from dropping objects created after it was taken.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from davit_operator import api, naming
from davit_operator.planners.observe import ChildKey, PodState, pod_state

Key = tuple[str, str]  # (namespace, model name)
ObjectKey = tuple[str, str]  # (namespace, object name) within one kind

MODEL_KIND = api.KIND
POD_KIND = "Pod"
# Kinds the operator creates and diffs (pods are observed only, as PodState).
CHILD_KINDS = (
    "Deployment",
    "Service",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "HTTPRoute",
    "ControllerRevision",
    "ConfigMap",
    "ServiceAccount",
    "Role",
    "RoleBinding",
)


def _version(obj: dict[str, Any]) -> int | None:
    try:
        return int(str(obj["metadata"].get("resourceVersion")))
    except (KeyError, ValueError):
        return None


# Strings up to this long are shared between cached objects: keys, names, labels, enum values.
# Longer ones (messages, embedded configuration) are rarely repeated and are kept as they come.
SHARED_STRING_MAX = 64


def shared(value: Any) -> Any:
    """An equal copy of a decoded JSON value in which dict keys and short strings are one
    object each, process-wide (`sys.intern`).

    Each watch event is its own JSON document, so a thousand children of one template would
    each hold their own copy of every key and of values such as "IfNotPresent"; about a third
    of a cached Deployment is such strings. Interned strings are freed with their last user.
    """
    if isinstance(value, dict):
        return {sys.intern(key): shared(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shared(item) for item in value]
    if isinstance(value, str) and len(value) <= SHARED_STRING_MAX:
        return sys.intern(value)
    return value


def slim(obj: dict[str, Any]) -> dict[str, Any]:
    """What the cache keeps of an object: all but managedFields (often its largest part), with
    its strings shared."""
    metadata = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return dict(shared({**obj, "metadata": metadata}))


@dataclass(frozen=True)
class Entry:
    model: Key
    uid: str
    version: int | None
    value: Any  # the slim object; PodState for pods


def _model_of(kind: str, obj: dict[str, Any]) -> Key | None:
    metadata = obj.get("metadata") or {}
    namespace = metadata.get("namespace") or ""
    if kind == MODEL_KIND:
        return (namespace, metadata.get("name") or "")
    model = (metadata.get("labels") or {}).get(naming.MODEL_LABEL)
    return (namespace, model) if model else None


class ClusterCache:
    def __init__(self) -> None:
        self._objects: dict[str, dict[ObjectKey, Entry]] = {}
        self._by_model: dict[Key, set[tuple[str, ObjectKey]]] = {}

    # ---- feeds -------------------------------------------------------------------------------

    def upsert(self, kind: str, obj: dict[str, Any]) -> set[Key]:
        """An object as a watch event or a write reported it; older versions are ignored."""
        metadata = obj.get("metadata") or {}
        ref: ObjectKey = (metadata.get("namespace") or "", metadata.get("name") or "")
        model = _model_of(kind, obj)
        current = self._objects.get(kind, {}).get(ref)
        version = _version(obj)
        if (
            current is not None
            and current.uid == metadata.get("uid")
            and current.version is not None
            and version is not None
            and version <= current.version
        ):
            return set()  # not newer than what we hold (a replayed or late event)
        touched = self._drop(kind, ref)
        if model is None:  # the model label was removed: no longer anyone's child
            return touched
        # The kind is set here because LIST items and some write answers come without one.
        # Of a pod only the few facts of its PodState are kept, so it is not slimmed first.
        value = pod_state(obj) if kind == POD_KIND else {**slim(obj), "kind": kind}
        self._objects.setdefault(kind, {})[ref] = Entry(
            model, str(metadata.get("uid", "")), version, value
        )
        self._by_model.setdefault(model, set()).add((kind, ref))
        return touched | {model}

    def delete(self, kind: str, obj: dict[str, Any]) -> set[Key]:
        """A watch reported the object gone (only that uid: a re-created one stays)."""
        metadata = obj.get("metadata") or {}
        ref: ObjectKey = (metadata.get("namespace") or "", metadata.get("name") or "")
        current = self._objects.get(kind, {}).get(ref)
        if current is None or current.uid != metadata.get("uid"):
            return set()
        return self._drop(kind, ref)

    def replace(
        self,
        kind: str,
        objects: Iterable[dict[str, Any]],
        list_version: int | None,
        namespace: str | None = None,
    ) -> set[Key]:
        """A LIST snapshot of every object of `kind` (that the operator watches) in `namespace`,
        or in every namespace when it is None.

        Objects of that scope absent from it are dropped unless they are newer than the snapshot.
        """
        listed: set[ObjectKey] = set()
        touched: set[Key] = set()
        for obj in objects:
            metadata = obj.get("metadata") or {}
            listed.add((metadata.get("namespace") or "", metadata.get("name") or ""))
            touched |= self.upsert(kind, obj)
        for ref, entry in list(self._objects.get(kind, {}).items()):
            if ref in listed or (namespace is not None and ref[0] != namespace):
                continue
            newer = (
                list_version is not None
                and entry.version is not None
                and entry.version > list_version
            )
            if not newer:
                touched |= self._drop(kind, ref)
        return touched

    def _drop(self, kind: str, ref: ObjectKey) -> set[Key]:
        entry = self._objects.get(kind, {}).pop(ref, None)
        if entry is None:
            return set()
        members = self._by_model.get(entry.model, set())
        members.discard((kind, ref))
        if not members:
            self._by_model.pop(entry.model, None)
        return {entry.model}

    # ---- reads (the controller's Caches protocol) ---------------------------------------------

    def _entries(self, key: Key, kinds: tuple[str, ...]) -> list[Entry]:
        refs = sorted(self._by_model.get(key, ()))
        return [self._objects[kind][ref] for kind, ref in refs if kind in kinds]

    def model(self, key: Key) -> dict[str, Any] | None:
        entry = self._objects.get(MODEL_KIND, {}).get(key)
        return None if entry is None else dict(entry.value)

    def children(self, key: Key) -> dict[ChildKey, dict[str, Any]]:
        return {
            (str(e.value["kind"]), str(e.value["metadata"]["name"])): e.value
            for e in self._entries(key, CHILD_KINDS)
        }

    def pods(self, key: Key) -> tuple[PodState, ...]:
        return tuple(e.value for e in self._entries(key, (POD_KIND,)))

    def models(self) -> list[Key]:
        return sorted(self._objects.get(MODEL_KIND, {}))
