"""One reconcile pass of one ModelDeployment: read the caches, plan, write only what differs.

The scheduler calls `Controller.reconcile(key)`, never twice at once for a key. The pass reads
the watch caches, lays over them the writes it made that the watches have not delivered yet (so
it never applies or deletes the same child twice), plans, and writes: children by server-side
apply, status in one merge patch when it differs, one Event per transition.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from typing import Any, Protocol

import httpx2
import pydantic
from lightkube.core.exceptions import ApiError

from davit_operator import api
from davit_operator.config import OperatorConfig
from davit_operator.kube import Kube, NamespaceTerminatingError
from davit_operator.planners import observe
from davit_operator.planners.observe import ChildKey, PodState, Written
from davit_operator.planners.reconcile import Event, Plan, plan, refusal
from davit_operator.scheduler import RetryLaterError

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, model name)

# The API server is busy, restarting or racing another writer: the same pass will do later.
TRANSIENT_CODES = frozenset({409, 429, 500, 502, 503, 504})
# The API server refuses the object itself: the spec asks for something that cannot exist.
REFUSED_CODES = frozenset({400, 422})


class ChildRefusedError(Exception):
    def __init__(self, kind: str, name: str, message: str) -> None:
        super().__init__(f"the API server refused {kind} {name}: {message}")


class Caches(Protocol):
    """What the watch caches hold for one model (handlers.py binds them to kopf's indices)."""

    def model(self, key: Key) -> dict[str, Any] | None: ...

    def children(self, key: Key) -> dict[ChildKey, dict[str, Any]]: ...

    def pods(self, key: Key) -> tuple[PodState, ...]: ...


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _written(obj: dict[str, Any]) -> Written:
    metadata = obj.get("metadata") or {}
    metadata.pop("managedFields", None)  # the caches keep no managedFields either
    return Written(str(metadata.get("uid", "")), str(metadata.get("resourceVersion", "")), obj)


class Controller:
    def __init__(self, config: OperatorConfig, kube: Kube, caches: Caches) -> None:
        self._config = config
        self._kube = kube
        self._caches = caches
        # Writes not yet seen in the caches, per model: children by (kind, name), and the model.
        self._children_written: dict[Key, dict[ChildKey, Written]] = {}
        self._model_written: dict[Key, Written] = {}

    def child_deleted(self, key: Key, child: ChildKey, uid: str) -> None:
        """The watch saw `child` go: a write of it that we remember is no longer the truth."""
        written = self._children_written.get(key, {})
        if child in written and written[child].uid == uid:
            del written[child]

    def pending_writes(self, key: Key) -> int:
        """How many of this model's writes the caches have not caught up with (for tests)."""
        return len(self._children_written.get(key, {})) + (key in self._model_written)

    def _model(self, key: Key) -> dict[str, Any] | None:
        cached = self._caches.model(key)
        written = self._model_written.get(key)
        if written is None:
            return cached
        if cached is None:  # deleted: the watch says so, whatever we wrote before
            del self._model_written[key]
            return None
        body, ahead = observe.newest(cached, written)
        if not ahead:
            del self._model_written[key]
        return body

    def _children(self, key: Key) -> dict[ChildKey, dict[str, Any]]:
        written = self._children_written.get(key, {})
        believed, caught_up = observe.overlay(self._caches.children(key), written)
        for child in caught_up:
            del written[child]
        return believed

    async def reconcile(self, key: Key) -> float | None:
        """One pass; returns the wall-clock time of the next time-based step, if any.

        Raises RetryLaterError when the API server is unreachable or busy, or refuses a child (that
        refusal is then in status and an Event); anything else is a bug and propagates.
        """
        try:
            return await self._pass(key)
        except ApiError as error:
            if error.status.code in TRANSIENT_CODES:
                raise RetryLaterError(
                    f"API server answered {error.status.code}: {error.status.message}"
                ) from error
            raise
        except httpx2.TransportError as error:
            raise RetryLaterError(f"API server unreachable: {error!r}") from error

    async def _pass(self, key: Key) -> float | None:
        body = self._model(key)
        if body is None:
            self._children_written.pop(key, None)
            return None
        namespace, name = key
        cleanup = observe.legacy_cleanup(body["metadata"])
        if cleanup is not None:
            body = await self._kube.patch_metadata(namespace, name, cleanup)
            self._model_written[key] = _written(body)
        if body["metadata"].get("deletionTimestamp"):
            return None  # garbage collection removes the children; do not recreate them
        try:
            md = api.ModelDeployment.model_validate(body)
        except pydantic.ValidationError as error:
            # The CRD schema should have refused it; nothing but a new spec can fix it, and a
            # new spec wakes the model again.
            logger.error("%s/%s: not a valid ModelDeployment: %s", namespace, name, error)
            return None
        children = self._children(key)
        observed = observe.assemble(md.metadata["uid"], children, self._caches.pods(key))
        changes = plan(md, observed, self._config, utc_now())
        try:
            await self._write_children(key, changes, children)
        except NamespaceTerminatingError:
            return None  # the namespace and everything in it are going away
        except ChildRefusedError as refused:
            # Nothing but a new spec helps, and a new spec wakes the model: say why in status
            # and an Event, then back off (the scheduler retries, slower and slower).
            report = refusal(md, str(refused), utc_now())
            if report.status:
                stored = await self._kube.patch_status(namespace, name, report.status)
                self._model_written[key] = _written(stored)
            await self._record(body, report.events)
            raise RetryLaterError(str(refused)) from refused
        if changes.status:
            stored = await self._kube.patch_status(namespace, name, changes.status)
            self._model_written[key] = _written(stored)
        await self._record(body, changes.events)
        return changes.wake_at

    async def _write_children(
        self, key: Key, changes: Plan, children: Mapping[ChildKey, dict[str, Any]]
    ) -> None:
        written = self._children_written.setdefault(key, {})
        for manifest in changes.apply:
            try:
                applied = await self._kube.apply(manifest)
            except ApiError as error:
                if error.status.code in REFUSED_CODES:
                    kind, child = observe.child_key(manifest)
                    raise ChildRefusedError(kind, child, str(error.status.message)) from error
                raise
            written[observe.child_key(applied)] = _written(applied)
        for ref in changes.delete:
            gone = children.get((ref.kind, ref.name), {})
            uid = str((gone.get("metadata") or {}).get("uid", ""))
            await self._kube.delete(ref)
            written[(ref.kind, ref.name)] = Written(uid, "", None)

    async def _record(self, body: dict[str, Any], events: list[Event]) -> None:
        # After the status patch: a transition whose status write failed is planned again (and
        # its Event with it); an Event that fails to post is lost, never the pass.
        for event in events:
            try:
                await self._kube.record_event(body, event)
            except ApiError as error:
                meta = body["metadata"]
                logger.warning(
                    "%s/%s: event %s not recorded: %s",
                    meta["namespace"],
                    meta["name"],
                    event.reason,
                    error.status.message,
                )
