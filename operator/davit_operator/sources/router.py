"""One revision's figures over a measurement window, from the Davit router itself
(traffic.provider builtin, no Prometheus named): every ready router replica's `/figures`,
added up.

Each replica sees its own share of the model's requests, so the figures are sums: requests and
errors, and the latency histogram bucket by bucket, whose 99th percentile is then read the
way the router and Prometheus read one (davit_router.histogram, standard library only, which
the operator's image carries). Each replica is asked for the window that ended at the
measurement's end, so a pass that runs late reads the same figures, as with Prometheus (within
the ten minutes a router keeps). A replica that cannot answer makes the whole measurement
unreadable: a sum without it would judge the canary on part of its traffic.

A router replica that restarted within the window has lost its share: the figures are then
fewer, never wrong (at worst inconclusive).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import aiohttp
import httpx2
from lightkube.core.exceptions import ApiError

from davit_operator import api, naming
from davit_operator.planners.analysis import Figures, Window
from davit_operator.sources.prometheus import SourceError, Subject, WindowGoneError
from davit_router.histogram import FIGURES_HORIZON_SECONDS, quantile

# The admin addresses (host:port) of a model's ready router pods, by namespace and name.
RouterAdmins = Callable[[str, str], Awaitable[list[str]]]


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SourceError(f"{where}: expected a count, got {value!r}")
    return value


def _histogram(found: Mapping[str, Any], bounds: Sequence[float], where: str) -> list[int]:
    counts = found.get("latencyCounts") or []
    if not isinstance(counts, list) or (counts and len(counts) != len(bounds) + 1):
        raise SourceError(f"{where}: expected {len(bounds) + 1} latency counts, got {counts!r}")
    return [_count(c, f"{where}: latency") for c in counts]


def added_up(revision: str, answers: Mapping[str, Any]) -> Figures:
    """`revision`'s figures summed over every router's `/figures` answer (by its address):
    a revision a router has not seen counts nothing there. SourceError where an answer is not
    what a router sends, or routers disagree on the latency buckets."""
    requests = errors = 0
    counts: list[int] = []
    bounds: list[float] | None = None
    for address, answer in sorted(answers.items()):
        its_bounds = answer.get("latencyBoundsSeconds") if isinstance(answer, dict) else None
        if not isinstance(its_bounds, list) or not isinstance(answer.get("revisions"), dict):
            raise SourceError(f"router {address}: not a figures answer")
        if bounds is not None and its_bounds != bounds:
            raise SourceError(f"router {address}: other latency buckets than its peers")
        bounds = its_bounds
        found = answer["revisions"].get(revision)
        if not isinstance(found, dict):
            continue
        where = f"router {address}, revision {revision}"
        its_requests = _count(found.get("requests"), f"{where}: requests")
        requests += its_requests
        errors += _count(found.get("errors"), f"{where}: errors")
        histogram = _histogram(found, bounds, where)
        if not histogram:  # a router that answered none of the revision's requests
            if its_requests:
                raise SourceError(f"{where}: {its_requests} requests and no latency histogram")
            continue
        counts = [a + b for a, b in zip(counts, histogram, strict=True)] if counts else histogram
    seconds = quantile(0.99, counts, bounds) if counts and bounds else math.nan
    p99 = None if math.isnan(seconds) else seconds * 1000
    return Figures(requests=float(requests), errors=float(errors), p99_ms=p99)


class RouterFigures:
    """Reads figures from a model's router replicas (one HTTP session for all). The two reads
    of a measurement (canary and stable, at once) share one round of the routers: every
    router's answer holds every revision, and both are then summed over the same pods."""

    def __init__(self, router_admins: RouterAdmins, *, timeout_seconds: float = 10.0) -> None:
        self._router_admins = router_admins
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None
        # The round of reads in flight for a model's window; gone once it is over, so a later
        # try of the same window (after a failure) asks again.
        self._rounds: dict[tuple[str, str, Window], asyncio.Task[dict[str, Any]]] = {}

    async def figures(self, settings: api.Analysis, subject: Subject, window: Window) -> Figures:
        del settings  # the router needs none: it serves what it saw
        key = (subject.namespace, subject.name, window)
        round_ = self._rounds.get(key)
        if round_ is None:
            round_ = asyncio.create_task(self._round(subject.namespace, subject.name, window))
            self._rounds[key] = round_
            round_.add_done_callback(lambda _: self._rounds.pop(key, None))
        return added_up(subject.revision, await asyncio.shield(round_))

    async def _round(self, namespace: str, name: str, window: Window) -> dict[str, Any]:
        """Every ready router pod's answer for `window`, by its admin address."""
        router = naming.router_name(name)
        kept = time.time() - window.start.timestamp()
        if kept > FIGURES_HORIZON_SECONDS:
            raise WindowGoneError(
                f"the routers keep {FIGURES_HORIZON_SECONDS} s of figures and the window "
                f"began {kept:.0f} s ago"
            )
        try:
            addresses = await self._router_admins(namespace, name)
        except (ApiError, httpx2.HTTPError) as error:  # refused, or the API server is away
            raise SourceError(f"the pods of router {router} cannot be listed: {error}") from error
        if not addresses:
            raise SourceError(f"router {router} has no ready pod to read figures from")
        seconds = (window.end - window.start).total_seconds()
        answers = await asyncio.gather(
            *(self._read(address, seconds, window.end.timestamp()) for address in addresses)
        )
        return dict(zip(addresses, answers, strict=True))

    async def _read(self, address: str, window_seconds: float, end: float) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        url = f"http://{address}/figures"
        params = {"window": f"{window_seconds:.3f}s", "end": f"{end:.3f}"}
        try:
            async with self._session.get(url, params=params) as answer:
                if answer.status != 200 or answer.content_type != "application/json":
                    text = (await answer.text())[:200]
                    raise SourceError(f"router {address} answered {answer.status}: {text}")
                return await answer.json()
        except ValueError as error:  # not JSON after all
            raise SourceError(f"router {address} answered no JSON: {error}") from error
        except (aiohttp.ClientError, TimeoutError) as error:
            raise SourceError(
                f"router {address} unreachable: {error or type(error).__name__}"
            ) from error

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
