"""List, then watch: one kind in one namespace (or all), fed into the cluster cache.

The operator's own informers, in the manner of client-go's, for the children and pods: they
carry most of the cluster's events (a created model's Deployment, Service, PDB and pod change a
dozen times while it comes up), and kopf's per-object machinery for each of them was a fifth of
the operator's CPU in a burst of a thousand models (e2e/opbench/results/analysis.md). kopf keeps
the ModelDeployments (handlers.py).

The contract, per informer:
- `list()` reads every object (in pages) into the cache with `ClusterCache.replace`, which also
  drops objects that went while nobody watched, and wakes every model whose picture changed;
- `run()` lists first if it has never listed, then watches from the last version it saw (a
  list's, an event's or a bookmark's), for ever;
- a watch that expired (HTTP 410 Gone: the version is older than the API server keeps, e.g.
  after it restarted) is answered by listing again at once, never by watching "from now",
  which would lose what happened in between;
- any other failure (the API server unreachable, a dropped connection, a refusal) is retried
  after a growing delay from the same version; the first failure of a streak is logged, and
  the recovery, not every retry; an error that is not the API's or the connection's is a bug,
  logged with its traceback, and retried the same way so that one bad event cannot stop the
  operator's view of a kind.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import httpx2
from lightkube.core.exceptions import ApiError

from davit_operator.caches import ClusterCache, Key
from davit_operator.kube import WatchEvent
from davit_operator.scheduler import Backoff, retry_delay

logger = logging.getLogger(__name__)

WATCH_RETRY = Backoff(first_seconds=1, max_seconds=30)
# The API server ends each watch request after this long (client-go uses 5 to 10 minutes), so
# a connection that died without a word is noticed, and reopened from the last version.
WATCH_TIMEOUT_SECONDS = 300


class WatchSource(Protocol):
    """What an informer needs of the API (kube.Kube)."""

    async def list_kind(
        self, kind: str, namespace: str
    ) -> tuple[list[dict[str, Any]], str | None]: ...

    def watch_kind(
        self, kind: str, namespace: str, resource_version: str | None, timeout_seconds: int
    ) -> AsyncIterator[WatchEvent]: ...


def _version_of(obj: dict[str, Any]) -> str | None:
    return (obj.get("metadata") or {}).get("resourceVersion") or None


def _as_int(version: str | None) -> int | None:
    try:
        return None if version is None else int(version)
    except ValueError:
        return None


class Informer:
    def __init__(
        self,
        kind: str,
        namespace: str,
        source: WatchSource,
        cache: ClusterCache,
        wake: Callable[[Key], None],
        *,
        backoff: Backoff = WATCH_RETRY,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._kind, self._namespace = kind, namespace
        self._source, self._cache, self._wake = source, cache, wake
        self._backoff, self._sleep = backoff, sleep
        self._version: str | None = None
        self._listed = False

    @property
    def name(self) -> str:
        return self._kind if self._namespace == "*" else f"{self._kind} in {self._namespace}"

    async def list(self) -> None:
        objects, version = await self._source.list_kind(self._kind, self._namespace)
        scope = None if self._namespace == "*" else self._namespace
        for key in self._cache.replace(self._kind, objects, _as_int(version), namespace=scope):
            self._wake(key)
        self._version, self._listed = version, True

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                if not self._listed:
                    await self.list()
                    failures = self._recovered(failures)
                async for event_type, obj in self._source.watch_kind(
                    self._kind, self._namespace, self._version, WATCH_TIMEOUT_SECONDS
                ):
                    failures = self._recovered(failures)
                    self._observe(event_type, obj)
            except ApiError as error:
                if error.status.code == 410:
                    logger.info("the watch of %s expired (410 Gone): listing again", self.name)
                    self._listed = False
                    continue
                failures += 1
                self._report(failures, f"the API server answered {error.status.code}: {error}")
            except httpx2.HTTPError as error:
                failures += 1
                self._report(failures, repr(error))
            except Exception as error:
                failures += 1
                self._report(failures, repr(error), unexpected=True)
            else:
                continue  # the watch ended cleanly: reopen it from where it ended
            await self._sleep(retry_delay(failures, self._backoff))

    def _recovered(self, failures: int) -> int:
        if failures:
            logger.info("watching %s again after %d failures", self.name, failures)
        return 0

    def _report(self, failures: int, what: str, *, unexpected: bool = False) -> None:
        """Once per streak of failures: a retry loop must not flood the log."""
        if failures > 1:
            logger.debug("watching %s failed again (%d): %s", self.name, failures, what)
        elif unexpected:
            logger.exception("watching %s failed unexpectedly, retrying: %s", self.name, what)
        else:
            logger.warning("watching %s failed, retrying until it works: %s", self.name, what)

    def _observe(self, event_type: str, obj: dict[str, Any]) -> None:
        if event_type == "DELETED":
            touched = self._cache.delete(self._kind, obj)
        elif event_type in ("ADDED", "MODIFIED"):
            touched = self._cache.upsert(self._kind, obj)
        else:
            touched = set()  # BOOKMARK: only the version moves on
        self._version = _version_of(obj) or self._version
        if logger.isEnabledFor(logging.DEBUG):  # which side stalls, when a model does
            name = (obj.get("metadata") or {}).get("name")
            logger.debug(
                "%s: %s %s at %s wakes %s", self.name, event_type, name, self._version, touched
            )
        for key in touched:
            self._wake(key)
