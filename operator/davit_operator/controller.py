"""One reconcile pass of one ModelDeployment: read the cache, plan, write only what differs.

The scheduler calls `Controller.reconcile(key)`, never twice at once for a key. The pass reads
the cluster cache (and, once a canary measurement's interval is over, both revisions' figures
from the analysis source), plans, and writes: children by server-side apply, status in one
merge patch when it differs (progress alone may wait a little for the next step:
planners/status_pacing.py), one Event per transition. Every write's answer goes straight into
the cache, so the next pass sees it even before its watch event arrives (which the cache then
ignores as not newer): nothing is applied or deleted twice.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import httpx2
import pydantic
from lightkube.core.exceptions import ApiError

from davit_operator import api
from davit_operator.caches import ClusterCache, Key
from davit_operator.config import OperatorConfig
from davit_operator.kube import (
    OPTIONAL_KINDS,
    Kube,
    NamespaceTerminatingError,
    is_model_gone,
)
from davit_operator.planners import analysis, observe, status_pacing
from davit_operator.planners.observe import ChildKey
from davit_operator.planners.reconcile import ChildRef, Event, Plan, Scale, plan, refusal
from davit_operator.planners.rollout import parse_duration
from davit_operator.scheduler import RetryLaterError
from davit_operator.sources import FigureSource, SourceError, Subject, WindowGoneError

logger = logging.getLogger(__name__)

# The API server is busy, restarting or racing another writer: the same pass will do later.
TRANSIENT_CODES = frozenset({409, 429, 500, 502, 503, 504})
# The API server refuses the object itself: the spec asks for something that cannot exist.
REFUSED_CODES = frozenset({400, 422})


class ChildRefusedError(Exception):
    def __init__(self, kind: str, name: str, message: str) -> None:
        super().__init__(f"the API server refused {kind} {name}: {message}")


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Controller:
    def __init__(
        self,
        config: OperatorConfig,
        kube: Kube,
        cache: ClusterCache,
        clock: Callable[[], float] = time.time,
        *,
        sources: Mapping[analysis.Source, FigureSource],
    ) -> None:
        self._config = config
        self._kube = kube
        self._cache = cache
        self._sources = sources  # where a measurement's figures are read, by its source
        self._clock = clock
        # Per model, when the progress-only status patch it holds is due (status_pacing): a
        # fact of this process's writes, which a restart need not remember.
        self._status_held: dict[Key, float] = {}
        # Per model, a measurement its source could not give, and until when that answer
        # stands: other passes meanwhile (any child's event) do not ask the source again.
        self._unreadable: dict[Key, tuple[float, analysis.Measurement]] = {}

    async def reconcile(self, key: Key) -> float | None:
        """One pass; returns the wall-clock time of the next time-based step, if any.

        Raises RetryLaterError when the API server is unreachable or busy, or refuses a child
        (that refusal is then in status and an Event); anything else is a bug and propagates.
        """
        try:
            return await self._pass(key)
        except ApiError as error:
            if is_model_gone(error):
                # Deleted (maybe with its namespace) before the cache heard of it, e.g. while a
                # status patch was held: nothing to do, and the DELETED events clean the cache.
                self._status_held.pop(key, None)
                return None
            if error.status.code in TRANSIENT_CODES:
                raise RetryLaterError(
                    f"API server answered {error.status.code}: {error.status.message}"
                ) from error
            raise
        except httpx2.TransportError as error:
            raise RetryLaterError(f"API server unreachable: {error!r}") from error

    async def _pass(self, key: Key) -> float | None:
        body = self._cache.model(key)
        if body is None:
            self._status_held.pop(key, None)
            self._unreadable.pop(key, None)
            return None  # deleted; its children go by garbage collection
        namespace, name = key
        cleanup = observe.legacy_cleanup(body["metadata"])
        if cleanup is not None:
            body = await self._kube.patch_metadata(namespace, name, cleanup)
            self._cache.upsert(api.KIND, body)
        if body["metadata"].get("deletionTimestamp"):
            return None  # garbage collection removes the children; do not recreate them
        try:
            md = api.ModelDeployment.model_validate(body)
        except pydantic.ValidationError as error:
            # The CRD schema should have refused it; nothing but a new spec can fix it, and a
            # new spec wakes the model again.
            logger.error("%s/%s: not a valid ModelDeployment: %s", namespace, name, error)
            return None
        children = self._cache.children(key)
        observed = observe.assemble(md.metadata["uid"], children, self._cache.pods(key))
        now = utc_now()
        due = analysis.measurement_due(md.spec, md.status, datetime.datetime.fromisoformat(now))
        measurement = await self._measure(key, due) if due is not None else None
        if measurement is None:
            self._unreadable.pop(key, None)
        changes = plan(md, observed, self._config, now, measurement)
        try:
            await self._write_children(changes, children)
        except NamespaceTerminatingError:
            return None  # the namespace and everything in it are going away
        except ChildRefusedError as refused:
            # Nothing but a new spec helps, and a new spec wakes the model: say why in status
            # and an Event, then back off (the scheduler retries, slower and slower).
            report = refusal(md, str(refused), utc_now())
            answer = await self._write_status(key, report.status)
            await self._record(body, report.events)
            if _spec_moved(answer, body):
                return self._clock()  # fixed meanwhile: the new spec is planned at once
            raise RetryLaterError(str(refused)) from refused
        progress = status_pacing.is_progress(md.status, changes.status, changes.events)
        held_until = status_pacing.write_due(
            progress, self._status_held.get(key), self._clock(), self._config.status_hold_seconds
        )
        if held_until is not None:
            self._status_held[key] = held_until
            return held_until if changes.wake_at is None else min(held_until, changes.wake_at)
        answer = await self._write_status(key, changes.status)
        await self._record(body, changes.events)
        if _spec_moved(answer, body):
            # A spec change landed between this pass's read and its status patch: the patch's
            # answer carries it into the cache, and the change's own watch event, older than
            # that answer, will be ignored and wake nobody. So plan it now.
            return self._clock()
        return changes.wake_at

    async def _measure(self, key: Key, due: analysis.Due) -> analysis.Measurement:
        """Both revisions' figures over the due window; a source that fails is no verdict (the
        planner reads the same window again an interval later), and is said once per try."""
        failed = self._unreadable.get(key)
        if failed is not None and failed[1].due == due and self._clock() < failed[0]:
            return failed[1]
        measurement = await self._read(key, due)
        if measurement.problem is None:
            self._unreadable.pop(key, None)
        else:
            retry = self._clock() + parse_duration(due.settings.interval).total_seconds()
            self._unreadable[key] = (retry, measurement)
        return measurement

    async def _read(self, key: Key, due: analysis.Due) -> analysis.Measurement:
        namespace, name = key
        source = self._sources[due.source]
        try:
            canary, stable = await asyncio.gather(
                source.figures(due.settings, Subject(namespace, name, due.canary), due.window),
                source.figures(due.settings, Subject(namespace, name, due.stable), due.window),
            )
        except SourceError as error:
            logger.warning("%s/%s: canary analysis: %s", namespace, name, error)
            expired = isinstance(error, WindowGoneError)
            return analysis.Measurement(due, None, None, str(error), expired)
        return analysis.Measurement(due, canary, stable)

    async def _write_status(self, key: Key, status: dict[str, Any]) -> dict[str, Any] | None:
        """Patch the model's status (if anything is to be written); the API server's answer."""
        answer = None
        if status:
            answer = await self._kube.patch_status(*key, status)
            self._cache.upsert(api.KIND, answer)
        self._status_held.pop(key, None)  # whatever was held is in this patch, or moot
        return answer

    async def _write_children(
        self, changes: Plan, children: Mapping[ChildKey, dict[str, Any]]
    ) -> None:
        # The children are independent objects: written at once, a pass takes as long as its
        # slowest write, not their sum (a Service's ClusterIP allocation is the slow one).
        # Scales go first: where a rollout's GPU budget has stable give up pods, they are gone
        # before the canary's are asked for.
        await _all(self._scale(scale, children) for scale in changes.scale)
        # A RoleBinding is checked against its Role (the operator may bind only what it holds),
        # so a Role goes before the rest.
        first = [m for m in changes.apply if m["kind"] in APPLIED_FIRST]
        await _all(self._apply(manifest) for manifest in first)
        await _all(self._apply(m) for m in changes.apply if m["kind"] not in APPLIED_FIRST)
        await _all(self._delete(ref, children) for ref in changes.delete)

    async def _apply(self, manifest: dict[str, Any]) -> None:
        try:
            applied = await self._kube.apply(manifest)
        except ApiError as error:
            kind, child = observe.child_key(manifest)
            if is_model_gone(error):
                raise
            if error.status.code in REFUSED_CODES:
                raise ChildRefusedError(kind, child, str(error.status.message)) from error
            if error.status.code == 404 and kind in OPTIONAL_KINDS:
                missing = (
                    f"the cluster serves no {manifest['apiVersion']} {kind}: install "
                    f"{OPTIONAL_KINDS[kind]}, then restart the operator"
                )
                raise ChildRefusedError(kind, child, missing) from error
            raise
        self._cache.upsert(manifest["kind"], applied)

    async def _scale(self, scale: Scale, children: Mapping[ChildKey, dict[str, Any]]) -> None:
        scaled = children.get((scale.ref.kind, scale.ref.name))
        try:
            version = await self._kube.scale(scale.ref, scale.replicas)
        except ApiError as error:
            if error.status.code != 404 or is_model_gone(error):
                raise
            # Deleted (by a person, say) after this pass read the cache: its DELETED event
            # wakes the model, and that pass creates it again from the spec.
            logger.info("%s/%s was gone before its scale", scale.ref.namespace, scale.ref.name)
            if scaled is not None:
                self._cache.delete(scale.ref.kind, scaled)
            return
        if scaled is not None:  # what the watch will report, in short
            metadata = scaled["metadata"]
            generation = int(metadata.get("generation", 1)) + 1
            self._cache.upsert(
                scale.ref.kind,
                {
                    **scaled,
                    "metadata": {**metadata, "resourceVersion": version, "generation": generation},
                    "spec": {**scaled["spec"], "replicas": scale.replicas},
                },
            )

    async def _delete(self, ref: ChildRef, children: Mapping[ChildKey, dict[str, Any]]) -> None:
        await self._kube.delete(ref)
        gone = children.get((ref.kind, ref.name))
        if gone is not None:
            self._cache.delete(ref.kind, gone)

    async def _record(self, body: dict[str, Any], events: list[Event]) -> None:
        # After the status patch: a transition whose status write failed is planned again (and
        # its Event with it); an Event that fails to post is lost, never the pass.
        await asyncio.gather(*(self._record_one(body, event) for event in events))

    async def _record_one(self, body: dict[str, Any], event: Event) -> None:
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


APPLIED_FIRST = frozenset({"Role"})


def _spec_moved(answer: Mapping[str, Any] | None, read: Mapping[str, Any]) -> bool:
    """Whether a write's `answer` carries a newer spec than the pass `read`: the cache now
    holds it, and the change's own (older) watch event will wake nobody."""
    return answer is not None and _generation(answer) != _generation(read)


def _generation(body: Mapping[str, Any]) -> int:
    return int((body.get("metadata") or {}).get("generation") or 0)


async def _all(writes: Iterable[Awaitable[None]]) -> None:
    """Run the writes at once; when any fails, let the others finish, then raise the first."""
    results = await asyncio.gather(*writes, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
