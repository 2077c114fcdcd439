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

The decisions are the pure modules' (weights, balancer, outlier, breaker, budget); this holds
their state for the configuration in force and does the I/O. The answer carries
`x-davit-revision`, the revision that served it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from davit_router import balancer
from davit_router.breaker import Breaker, BreakerSettings
from davit_router.budget import BudgetSettings, RetryBudget, retryable
from davit_router.config import RouterConfig
from davit_router.figures import Figures, Ledger
from davit_router.http1 import Request, Response, header, render_request
from davit_router.metrics import RouterMetrics
from davit_router.outlier import Outcome, OutlierDetector, OutlierSettings, outcome_of
from davit_router.upstream import Pool, UpstreamError
from davit_router.weights import WeightedPicker

logger = logging.getLogger(__name__)

REVISION_HEADER = b"x-davit-revision"
_JSON = [(b"content-type", b"application/json")]


def _error(status: int, message: str, *extra: tuple[bytes, bytes]) -> Response:
    return Response(status, [*_JSON, *extra], orjson.dumps({"error": message}))


@dataclass
class _Revision:
    """A revision as configured, with what the router learns of it: its breaker, and the
    outlier detector of its endpoints (one per revision, so that `maxEjectedPercent` keeps
    part of every revision serving: a failing canary stays visible to its breaker and its
    figures instead of vanishing from the split)."""

    name: str
    endpoints: tuple[str, ...]
    breaker: Breaker
    detector: OutlierDetector


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
            detector = (
                kept.detector
                if kept is not None and not outliers
                else OutlierDetector(self._outlier_settings(config))
            )
            detector.set_endpoints(revision.endpoints)
            revisions[revision.name] = _Revision(
                revision.name, revision.endpoints, breaker, detector
            )
        self._revisions = revisions
        wanted = {e for r in config.revisions for e in r.endpoints}
        for endpoint in set(self._pools) - wanted:
            self._pools.pop(endpoint).close()
            self._queue_depth.pop(endpoint, None)
        for endpoint in wanted - set(self._pools):
            self._pools[endpoint] = Pool(endpoint)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()

    async def handle(self, request: Request) -> Response:
        """The answer for `request`, from a revision or from the router itself."""
        started = self._clock()
        if request.method == b"HEAD":
            # The v2 protocol has no HEAD, and a HEAD answer is framed unlike any other.
            return self._answer(None, started, _error(405, "method HEAD not allowed"))
        self._budget.on_request()
        for known in self._revisions.values():
            known.detector.tick(started)
        pinned = header(request.headers, REVISION_HEADER)
        if pinned is not None:
            name = pinned.decode("latin-1")
            if name not in self._revisions:
                serving = ", ".join(self._revisions)
                return self._answer(
                    None, started, _error(400, f"no revision {name!r} here (serving: {serving})")
                )
        revision = self._admit(pinned.decode("latin-1") if pinned else None, started)
        if revision is None:
            return self._answer(
                None,
                started,
                _error(503, "no revision can take the request now", (b"retry-after", b"1")),
            )
        deadline = started + self.config.timeout_ms / 1000
        ok = False
        try:
            response, ok = await self._attempts(revision, request, deadline)
        finally:
            revision.breaker.finish(ok, self._clock())  # once per admit, whatever happened
        return self._answer(revision.name, started, response)

    def _admit(self, pinned: str | None, now: float) -> _Revision | None:
        """The revision for the request: the pinned one, or one picked by weight among those
        with an endpoint not ejected; then admitted by its breaker (refused: the next pick)."""
        candidates = [pinned] if pinned is not None else list(self._revisions)
        serving = {
            name
            for name in candidates
            if self._revisions[name].detector.available(self._revisions[name].endpoints, now)
        }
        while serving:
            name = pinned if pinned is not None else self._picker.pick(serving)
            if name is None:
                return None
            revision = self._revisions[name]
            if revision.breaker.admit(now):
                return revision
            serving.discard(name)
        return None

    async def _attempts(
        self, revision: _Revision, request: Request, deadline: float
    ) -> tuple[Response, bool]:
        """The answer, and whether the revision did well by it (its breaker's verdict: an
        answer that is not a server error, a 429 included)."""
        tried: set[str] = set()
        attempt = 0
        ok = False
        pushed_back: Response | None = None  # a 429 to pass on if its retry finds nothing
        while True:
            now = self._clock()
            endpoint = self._endpoint(revision.name, tried, now)
            if endpoint is None:
                if pushed_back is not None:
                    return pushed_back, True
                message = f"revision {revision.name}: no endpoint can take the request"
                return _error(503, message, (b"retry-after", b"1")), ok
            if now >= deadline:
                return _error(504, f"no answer within {self.config.timeout_ms} ms"), ok
            tried.add(endpoint)
            response, outcome, may_retry = await self._send(
                revision, endpoint, request, deadline - now
            )
            ok = outcome is Outcome.SUCCESS or outcome is Outcome.BACKPRESSURE
            if outcome is Outcome.BACKPRESSURE:
                pushed_back = pushed_back or response
                may_retry = pushed_back is response and self._has_room(revision.name, tried, now)
            if may_retry and self._budget.try_retry(attempt + 1):
                attempt += 1
                self._metrics.retries.labels(revision.name).inc()
                continue
            if response is not None:
                return response, ok
            if pushed_back is not None:
                return pushed_back, True
            if self._clock() >= deadline:
                return _error(504, f"no answer within {self.config.timeout_ms} ms"), ok
            return _error(502, f"revision {revision.name}: no endpoint answered"), ok

    def _endpoints(self, name: str, now: float) -> list[str]:
        """The revision's endpoints that can take a request now, by the configuration in
        force (a retry after a reload never goes to an endpoint that was removed)."""
        revision = self._revisions.get(name)
        if revision is None:
            return []
        available = revision.detector.available(revision.endpoints, now)
        return [e for e in available if e in self._pools]

    def _endpoint(self, name: str, tried: set[str], now: float) -> str | None:
        fresh = [e for e in self._endpoints(name, now) if e not in tried]
        return balancer.choose(
            [
                balancer.EndpointLoad(e, self._outstanding.get(e, 0), self._queue_depth.get(e, 0))
                for e in fresh
            ],
            self._rng,
        )

    def _has_room(self, name: str, tried: set[str], now: float) -> bool:
        """An endpoint of the revision not tried yet that has not said it is full."""
        return any(
            e not in tried and self._queue_depth.get(e, 0) == 0 for e in self._endpoints(name, now)
        )

    async def _send(
        self, revision: _Revision, endpoint: str, request: Request, timeout_s: float
    ) -> tuple[Response | None, Outcome, bool]:
        """One attempt: its answer (None: nothing whole came), its outcome, and whether it
        may be retried (budget aside)."""
        pool = self._pools[endpoint]
        self._outstanding[endpoint] = self._outstanding.get(endpoint, 0) + 1
        try:
            response: Response | None = await pool.exchange(
                render_request(request, pool.authority), timeout_s
            )
        except UpstreamError as error:
            logger.debug("%s", error)
            response, outcome = None, Outcome.GATEWAY
            # Part of an answer means the model ran: that request is not sent again.
            may_retry = retryable(outcome, timed_out=error.timed_out or error.answered)
        else:
            assert response is not None
            outcome = outcome_of(response.status)
            may_retry = retryable(outcome, response.status)
            if endpoint in self._pools:  # not removed by a reload meanwhile
                depth = header(response.headers, balancer.QUEUE_DEPTH_HEADER)
                self._queue_depth[endpoint] = balancer.parse_queue_depth(depth)
        finally:
            self._outstanding[endpoint] -= 1
            if self._outstanding[endpoint] == 0 and endpoint not in self._pools:
                del self._outstanding[endpoint]
        now = self._clock()
        detector = revision.detector
        was_ejected = detector.ejected(endpoint, now)
        detector.record(endpoint, outcome, now)
        if not was_ejected and detector.ejected(endpoint, now):
            logger.warning("%s (revision %s) ejected", endpoint, revision.name)
            self._metrics.ejections.labels(revision.name, endpoint).inc()
        self._metrics.attempts.labels(revision.name, outcome.value).inc()
        return response, outcome, may_retry

    def _answer(self, revision: str | None, started: float, response: Response) -> Response:
        label = revision or "none"
        now = self._clock()
        self._metrics.requests.labels(label, f"{response.status // 100}xx").inc()
        self._metrics.latency.labels(label).observe(now - started)
        if revision is not None:
            self.ledger.record(revision, response.status, now - started, now)
            response.headers.append((REVISION_HEADER, revision.encode()))
        return response

    def figures(self, window_seconds: float) -> dict[str, Figures]:
        """Each configured revision's figures over the last `window_seconds`."""
        now = self._clock()
        return {name: self.ledger.figures(name, window_seconds, now) for name in self._revisions}

    def breaker_phases(self) -> dict[str, str]:
        return {name: r.breaker.phase for name, r in self._revisions.items()}
