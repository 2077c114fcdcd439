"""One request's way through the router: a revision, an endpoint, attempts, the answer.

    revision   pinned by `x-davit-revision`, else the weighted split over the revisions
               that can serve (an endpoint not ejected, a breaker that admits)
    endpoint   the less loaded of two of the revision's endpoints not ejected
    attempt    sent over a kept-alive connection; its outcome goes to the outlier detector
               and the revision's breaker
    retry      only where nothing was answered (connect failure, reset) or 503, on an
               endpoint of the same revision not tried yet, within `retries.attempts` and
               the retry budget; a 429 is back-pressure: tried once more on an endpoint that
               has not said it is full, else passed on with its Retry-After
    deadline   the model's `timeoutMs` over all attempts: 504 when it passes
    shedding   by the request's criticality (`x-davit-criticality`, criticality.py): a
               sheddable request is refused (429) when its revision is saturated or past its
               class's share of the concurrency cap, and not retried on a 429; a critical one
               may go past the cap into a reserve

The decisions are the pure modules' (weights, balancer, outlier, breaker, budget); this holds
their state for the configuration in force. `Router.route` is the way itself, the same for
both transports: it is given how to send one attempt (`Send`) and returns what came of it
(`Routed`). Shadow copies are HTTP's only, for now; the runtime's queue depth comes in an
HTTP answer's header and a gRPC answer's trailers.
`Router.handle` is the HTTP/1.1 front; `grpc_front` the gRPC one. An HTTP answer
carries `x-davit-revision`, the revision that served it (gRPC: in the initial metadata).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import orjson

from davit_router import balancer, criticality
from davit_router.breaker import Breaker, BreakerSettings
from davit_router.budget import BudgetSettings, RetryBudget, retryable
from davit_router.config import RouterConfig
from davit_router.criticality import Criticality, CriticalityError
from davit_router.figures import Figures, Ledger
from davit_router.http1 import Request, Response, header, render_request
from davit_router.metrics import RouterMetrics
from davit_router.outlier import Outcome, OutlierDetector, OutlierSettings, outcome_of
from davit_router.shadow import mirrored
from davit_router.upstream import Pool, UpstreamError
from davit_router.weights import WeightedPicker

logger = logging.getLogger(__name__)

# Copies to the shadow revision in flight at most: beyond, a copy is dropped (and counted), so a
# slow shadow can never hold the router's memory.
MAX_SHADOW_IN_FLIGHT = 64

REVISION_HEADER = b"x-davit-revision"
_STATUS_CLASSES = {n: f"{n}xx" for n in range(1, 6)}
_JSON = [(b"content-type", b"application/json")]


def _error(status: int, message: str, *extra: tuple[bytes, bytes]) -> Response:
    return Response(status, [*_JSON, *extra], orjson.dumps({"error": message}))


A = TypeVar("A")  # an answer as the transport has it (an HTTP response, gRPC bytes)


class Transport(enum.Enum):
    HTTP = "http"
    GRPC = "grpc"


@dataclass(frozen=True)
class Attempt(Generic[A]):
    """What one attempt gave: the answer (None: nothing whole came), the outcome for the
    endpoint's health, whether it may be retried (budget aside), and its status as HTTP
    would say it (for figures and metrics; 0 when nothing was answered)."""

    answer: A | None
    outcome: Outcome
    may_retry: bool
    status: int
    queue_depth: int | None = None  # the endpoint's load, if it said


Send = Callable[[str, float], Awaitable[Attempt[A]]]  # (endpoint, seconds left) → attempt


class Failure(enum.Enum):
    """Why the router answers itself, and the HTTP status it answers with."""

    NO_REVISION = ("no revision can take the request now", 503)  # breakers open, all ejected
    NO_ENDPOINT = ("no endpoint of the revision can take the request", 503)
    # Refused by criticality, never sent: the revision is busy, not failing.
    SATURATED = ("every endpoint is busy: sheddable requests are refused now", 429)
    CONCURRENCY = ("the revision is at its concurrency cap for this criticality", 429)
    TIMEOUT = ("no answer within the model's timeout", 504)
    UNANSWERED = ("no endpoint answered", 502)

    def __init__(self, text: str, status: int) -> None:
        self.text = text
        self.status = status


SHED = (Failure.SATURATED, Failure.CONCURRENCY)  # refused by criticality, never sent


@dataclass(frozen=True)
class Routed(Generic[A]):
    revision: str | None
    answer: A | None  # the endpoint's answer; None when `failure` says why there is none
    failure: Failure | None = None
    message: str = ""


@dataclass
class _Revision:
    """A revision as configured, with what the router learns of it: its breaker, and per
    transport the outlier detector of its endpoints (one per revision, so that
    `maxEjectedPercent` keeps part of every revision serving: a failing canary stays visible
    to its breaker and its figures instead of vanishing from the split)."""

    name: str
    endpoints: dict[Transport, tuple[str, ...]]
    breaker: Breaker
    detectors: dict[Transport, OutlierDetector]

    def available(self, transport: Transport, now: float) -> list[str]:
        return self.detectors[transport].available(self.endpoints[transport], now)


class Router:
    """The router for one model's configuration; `configure` swaps it in place, keeping the
    state (connections, ejections, breakers) of what stays."""

    def __init__(
        self,
        config: RouterConfig,
        metrics: RouterMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._clock = clock
        self._rng = rng or random.Random()
        self._metrics = metrics
        self._pools: dict[str, Pool] = {}
        self._outstanding: dict[str, int] = {}
        self._queue_depth: dict[str, int] = {}
        self._revisions: dict[str, _Revision] = {}
        self.ledger = Ledger()
        self._shadow_count = 0
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self.config = config
        self._picker = WeightedPicker(config.weights)
        self._budget = RetryBudget(self._budget_settings(config))
        self.configure(config)

    @staticmethod
    def _outlier_settings(config: RouterConfig) -> OutlierSettings:
        breaker = config.circuit_breaker
        return OutlierSettings(
            consecutive_errors=breaker.consecutive_errors,
            base_ejection_seconds=breaker.ejection_seconds,
            max_ejected_percent=breaker.max_ejected_percent,
            failure_percentage_threshold=breaker.error_rate_threshold,
        )

    @staticmethod
    def _budget_settings(config: RouterConfig) -> BudgetSettings:
        return BudgetSettings(
            attempts=config.retries.attempts, budget_percent=config.retries.budget_percent
        )

    @staticmethod
    def _breaker_settings(config: RouterConfig) -> BreakerSettings:
        return BreakerSettings(
            error_rate_threshold=config.circuit_breaker.error_rate_threshold,
            min_requests=config.breaker.min_requests,
            open_seconds=config.breaker.open_seconds,
            half_open_probes=config.breaker.half_open_probes,
            max_concurrent=config.breaker.max_concurrent,
        )

    def configure(self, config: RouterConfig) -> None:
        """Apply a new configuration: weights from the next pick, endpoints added and removed
        (a removed endpoint's idle connections close; requests on it finish). A revision that
        stays keeps its breaker and ejections unless their settings changed."""
        first = not self._revisions
        breakers = first or self._breaker_settings(config) != self._breaker_settings(self.config)
        outliers = first or config.circuit_breaker != self.config.circuit_breaker
        if config.retries != self.config.retries:
            self._budget = RetryBudget(self._budget_settings(config))
        self.config = config
        self._picker.set_weights(config.weights)
        revisions = {}
        for revision in config.revisions:
            kept = self._revisions.get(revision.name)
            breaker = (
                kept.breaker
                if kept is not None and not breakers
                else Breaker(self._breaker_settings(config))
            )
            endpoints = {
                Transport.HTTP: revision.endpoints,
                Transport.GRPC: revision.grpc_endpoints,
            }
            detectors = {}
            for transport, listed in endpoints.items():
                detector = (
                    kept.detectors[transport]
                    if kept is not None and not outliers
                    else OutlierDetector(self._outlier_settings(config))
                )
                detector.set_endpoints(listed)
                detectors[transport] = detector
            revisions[revision.name] = _Revision(revision.name, endpoints, breaker, detectors)
        self._revisions = revisions
        # Every endpoint of the configuration in force, either transport (a reload may remove
        # one while its request runs): computed here, not on each attempt.
        self._configured = frozenset(
            e for r in config.revisions for e in (*r.endpoints, *r.grpc_endpoints)
        )
        wanted = {e for r in config.revisions for e in r.endpoints}
        for endpoint in set(self._pools) - wanted:
            self._pools.pop(endpoint).close()
            self._queue_depth.pop(endpoint, None)
        for endpoint in wanted - set(self._pools):
            self._pools[endpoint] = Pool(endpoint)

    def close(self) -> None:
        for task in self._shadow_tasks:
            task.cancel()
        for pool in self._pools.values():
            pool.close()

    def knows(self, revision: str) -> bool:
        return revision in self._revisions

    @property
    def revision_names(self) -> list[str]:
        return list(self._revisions)

    async def route(
        self,
        pinned: str | None,
        transport: Transport,
        send: Send[A],
        started: float,
        admitted: Callable[[str], None] | None = None,
        level: Criticality = Criticality.STANDARD,
    ) -> Routed[A]:
        """One request's way (see the module's docstring), its attempts made by `send`;
        `admitted` is told the revision before the first attempt; `level` is the request's
        criticality. `pinned` must be a revision the router knows (`knows`)."""
        self._budget.on_request()
        for known in self._revisions.values():
            known.detectors[transport].tick(started)
        revision: _Revision | Routed[A] = self._admit(pinned, transport, started, level)
        if isinstance(revision, Routed):
            return revision
        deadline = started + self.config.timeout_ms / 1000
        ok = False
        try:
            if admitted is not None:
                admitted(revision.name)
            routed, ok = await self._attempts(revision, transport, send, deadline, level)
        except asyncio.CancelledError:
            ok = True  # the client gave up (a gRPC cancel): that says nothing of the revision
            raise
        finally:
            revision.breaker.finish(ok, self._clock())  # once per admit, whatever happened
        return routed

    def _admit(
        self, pinned: str | None, transport: Transport, now: float, level: Criticality
    ) -> _Revision | Routed[A]:
        """The revision for the request: the pinned one, or one picked by weight among those
        with an endpoint not ejected; then admitted by its breaker, under the concurrency of
        the request's class (refused: the next pick). A sheddable request picked for a
        saturated revision is refused, not moved to another (that would bend the weights).
        The refusal (a Routed with its failure) where none takes it."""
        candidates = [pinned] if pinned is not None else list(self._revisions)
        serving = {name for name in candidates if self._revisions[name].available(transport, now)}
        limit = criticality.concurrency_limit(level, self.config.breaker.max_concurrent)
        capped: str | None = None  # a revision whose breaker only lacked room for this class
        while serving:
            name = pinned if pinned is not None else self._picker.pick(serving)
            if name is None:
                break
            revision = self._revisions[name]
            if level is Criticality.SHEDDABLE and self._saturated(name, transport, now):
                return self._shed(name, level, Failure.SATURATED)
            if revision.breaker.admit(now, limit):
                return revision
            if revision.breaker.at_capacity(limit):
                capped = name
            serving.discard(name)
        if capped is not None:
            return self._shed(capped, level, Failure.CONCURRENCY)
        return Routed(None, None, Failure.NO_REVISION)

    def _saturated(self, name: str, transport: Transport, now: float) -> bool:
        loads = [
            self._outstanding.get(e, 0) + self._queue_depth.get(e, 0)
            for e in self._endpoints(name, transport, now)
        ]
        return criticality.saturated(loads, self.config.sheddable_queue_depth)

    def _shed(self, name: str, level: Criticality, failure: Failure) -> Routed[A]:
        reason = "saturated" if failure is Failure.SATURATED else "concurrency"
        self._metrics.shed.labels(name, level.value, reason).inc()
        return Routed(name, None, failure)

    async def _attempts(
        self,
        revision: _Revision,
        transport: Transport,
        send: Send[A],
        deadline: float,
        level: Criticality,
    ) -> tuple[Routed[A], bool]:
        """What came of the request, and whether the revision did well by it (its breaker's
        verdict: an answer that is not a server error, a 429 included)."""
        name = revision.name
        tried: set[str] = set()
        attempt = 0
        ok = False
        pushed_back: A | None = None  # a 429 to pass on if its retry finds nothing
        while True:
            now = self._clock()
            endpoint = self._endpoint(name, transport, tried, now)
            if endpoint is None:
                if pushed_back is not None:
                    return Routed(name, pushed_back), True
                return Routed(name, None, Failure.NO_ENDPOINT), ok
            if now >= deadline:
                return Routed(name, None, Failure.TIMEOUT), ok
            tried.add(endpoint)
            result = await self._attempt(revision, transport, endpoint, send, deadline - now)
            ok = result.outcome in (Outcome.SUCCESS, Outcome.BACKPRESSURE, Outcome.ABANDONED)
            may_retry = result.may_retry
            if result.outcome is Outcome.BACKPRESSURE:
                first_push = pushed_back is None
                pushed_back = pushed_back if pushed_back is not None else result.answer
                may_retry = (
                    first_push
                    and criticality.retries_pushback(level)
                    and self._has_room(name, transport, tried, now)
                )
            if may_retry and self._budget.try_retry(attempt + 1):
                attempt += 1
                self._metrics.retries.labels(name).inc()
                continue
            if result.answer is not None:
                return Routed(name, result.answer), ok
            if pushed_back is not None:
                return Routed(name, pushed_back), True
            failure = Failure.TIMEOUT if self._clock() >= deadline else Failure.UNANSWERED
            return Routed(name, None, failure), ok

    def _endpoints(self, name: str, transport: Transport, now: float) -> list[str]:
        """The revision's endpoints that can take a request now, by the configuration in
        force (a retry after a reload never goes to an endpoint that was removed)."""
        revision = self._revisions.get(name)
        if revision is None:
            return []
        available = revision.available(transport, now)
        if transport is Transport.HTTP:
            return [e for e in available if e in self._pools]
        return available

    def _endpoint(self, name: str, transport: Transport, tried: set[str], now: float) -> str | None:
        fresh = [e for e in self._endpoints(name, transport, now) if e not in tried]
        return balancer.choose(
            [
                balancer.EndpointLoad(e, self._outstanding.get(e, 0), self._queue_depth.get(e, 0))
                for e in fresh
            ],
            self._rng,
        )

    def _has_room(self, name: str, transport: Transport, tried: set[str], now: float) -> bool:
        """An endpoint of the revision not tried yet that has not said it is full."""
        return any(
            e not in tried and self._queue_depth.get(e, 0) == 0
            for e in self._endpoints(name, transport, now)
        )

    async def _attempt(
        self, revision: _Revision, transport: Transport, endpoint: str, send: Send[A],
        timeout_s: float,
    ) -> Attempt[A]:  # fmt: skip
        self._outstanding[endpoint] = self._outstanding.get(endpoint, 0) + 1
        try:
            result = await send(endpoint, timeout_s)
        finally:
            self._outstanding[endpoint] -= 1
            if self._outstanding[endpoint] == 0:
                del self._outstanding[endpoint]
        if result.queue_depth is not None and endpoint in self._configured:
            self._queue_depth[endpoint] = result.queue_depth
        now = self._clock()
        detector = revision.detectors[transport]
        was_ejected = detector.ejected(endpoint, now)
        detector.record(endpoint, result.outcome, now)
        if not was_ejected and detector.ejected(endpoint, now):
            logger.warning("%s (revision %s) ejected", endpoint, revision.name)
            self._metrics.ejections.labels(revision.name, endpoint).inc()
        self._metrics.bound(self._metrics.attempts, revision.name, result.outcome.value).inc()
        return result

    # ---- the HTTP/1.1 front ------------------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        """The answer for `request`, from a revision or from the router itself."""
        started = self._clock()
        if request.method == b"HEAD":
            # The v2 protocol has no HEAD, and a HEAD answer is framed unlike any other.
            return self._answer(None, started, _error(405, "method HEAD not allowed"), request)
        pinned = header(request.headers, REVISION_HEADER)
        name = pinned.decode("latin-1") if pinned is not None else None
        if name is not None and not self.knows(name):
            serving = ", ".join(self._revisions)
            message = f"no revision {name!r} here (serving: {serving})"
            return self._answer(None, started, _error(400, message), request)
        try:
            level = criticality.parse(header(request.headers, criticality.HEADER))
        except CriticalityError as error:
            return self._answer(None, started, _error(400, str(error)), request)

        async def send(endpoint: str, timeout_s: float) -> Attempt[Response]:
            return await self._send_http(endpoint, request, timeout_s)

        def admitted(revision: str) -> None:
            if name is None:  # a pinned request is someone's test: never copied
                self._shadow(revision, request)

        routed = await self.route(name, Transport.HTTP, send, started, admitted, level)
        if routed.answer is not None:
            return self._answer(routed.revision, started, routed.answer, request)
        assert routed.failure is not None
        status = routed.failure.status
        extra = [(b"retry-after", b"1")] if status in (429, 503) else []
        where = f"revision {routed.revision}: " if routed.revision else ""
        failure = _error(status, where + routed.failure.text, *extra)
        if routed.failure in SHED:
            # Never sent: not the revision's answer, so not in its figures (Prometheus, which
            # counts what the runtime answered, would not see it either).
            failure.headers.append((REVISION_HEADER, (routed.revision or "").encode()))
            return self._answer(None, started, failure, request)
        return self._answer(routed.revision, started, failure, request)

    async def _send_http(
        self, endpoint: str, request: Request, timeout_s: float
    ) -> Attempt[Response]:
        pool = self._pools[endpoint]
        try:
            response = await pool.exchange(render_request(request, pool.authority), timeout_s)
        except UpstreamError as error:
            logger.debug("%s", error)
            # Part of an answer means the model ran: that request is not sent again.
            no_retry = error.timed_out or error.answered
            return Attempt(None, Outcome.GATEWAY, retryable(Outcome.GATEWAY, timed_out=no_retry), 0)
        outcome = outcome_of(response.status)
        depth = header(response.headers, balancer.QUEUE_DEPTH_HEADER)
        return Attempt(
            response,
            outcome,
            retryable(outcome, response.status),
            response.status,
            balancer.parse_queue_depth(depth) if depth is not None else None,
        )

    def _shadow(self, serving: str, request: Request) -> None:
        """Copy `request` to the shadow revision if it is one of the configured share (and
        not already served by it); the copy runs beside the request, never before it."""
        shadow = self.config.shadow
        if shadow is None or shadow.revision == serving or not self.knows(shadow.revision):
            return
        count, self._shadow_count = self._shadow_count, self._shadow_count + 1
        if not mirrored(count, shadow.percent):
            return
        if len(self._shadow_tasks) >= MAX_SHADOW_IN_FLIGHT:
            self._metrics.shadow.labels(shadow.revision, "dropped").inc()
            return
        task = asyncio.get_running_loop().create_task(self._copy(shadow.revision, request))
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _copy(self, revision: str, request: Request) -> None:
        started = self._clock()
        endpoint = self._endpoint(revision, Transport.HTTP, set(), started)
        if endpoint is None:
            self._metrics.shadow.labels(revision, Outcome.GATEWAY.value).inc()
            return
        result = await self._send_http(endpoint, request, self.config.timeout_ms / 1000)
        self._metrics.shadow.labels(revision, result.outcome.value).inc()
        if result.answer is not None:  # the shadow revision's figures count its answers
            path = request.target.split(b"?", 1)[0]
            if path.endswith(b"/infer"):
                now = self._clock()
                self.ledger.record(revision, result.status, now - started, now)

    def _answer(
        self, revision: str | None, started: float, response: Response, request: Request
    ) -> Response:
        path = request.target.split(b"?", 1)[0]
        self.record(revision, response.status, started, inference=path.endswith(b"/infer"))
        if revision is not None:
            response.headers.append((REVISION_HEADER, revision.encode()))
        return response

    def record(self, revision: str | None, status: int, started: float, *, inference: bool) -> None:
        """Count one answer to a client (`status` as HTTP says it) in metrics, and an
        inference's in the revision's figures too (health and metadata calls would dilute
        the error rate a canary is judged on)."""
        label = revision or "none"
        now = self._clock()
        metrics = self._metrics
        metrics.bound(metrics.requests, label, _STATUS_CLASSES.get(status // 100, "other")).inc()
        metrics.bound(metrics.latency, label).observe(now - started)
        if revision is not None and inference:
            self.ledger.record(revision, status, now - started, now)

    def figures(self, window_seconds: float, ago_seconds: float = 0.0) -> dict[str, Figures]:
        """Each configured revision's figures over the `window_seconds` that ended
        `ago_seconds` ago."""
        end = self._clock() - ago_seconds
        return {name: self.ledger.figures(name, window_seconds, end) for name in self._revisions}

    def breaker_phases(self) -> dict[str, str]:
        return {name: r.breaker.phase for name, r in self._revisions.items()}
