"""One request's way through the router: a revision, an endpoint, attempts, the answer.

    revision   pinned by `x-davit-revision`, else the weighted split over the revisions
               that can serve (an endpoint not ejected, a breaker that admits)
    endpoint   the less loaded of two of the revision's endpoints not ejected
    attempt    sent over a kept-alive connection; its outcome goes to the outlier detector
               and the revision's breaker
    retry      only where nothing was answered (connect failure, reset) or 503, on another
               endpoint of the same revision, within `retries.attempts` and the retry budget;
               a 429 is back-pressure: tried once more on an endpoint with less load, else
               passed on with its Retry-After
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
    name: str
    endpoints: tuple[str, ...]
    breaker: Breaker


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
        self.config = config
        self._picker = WeightedPicker(config.weights)
        self._detector = OutlierDetector(self._outlier_settings(config))
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
        (a removed endpoint's idle connections close; requests on it finish)."""
        breakers_changed = self._breaker_settings(config) != self._breaker_settings(self.config)
        if config.circuit_breaker != self.config.circuit_breaker:
            self._detector = OutlierDetector(self._outlier_settings(config))
        if config.retries != self.config.retries:
            self._budget = RetryBudget(self._budget_settings(config))
        self.config = config
        self._picker.set_weights(config.weights)
        revisions = {}
        for revision in config.revisions:
            kept = self._revisions.get(revision.name)
            if kept is None or breakers_changed:
                breaker = Breaker(self._breaker_settings(config))
            else:
                breaker = kept.breaker
            revisions[revision.name] = _Revision(revision.name, revision.endpoints, breaker)
        self._revisions = revisions
        wanted = {e for r in config.revisions for e in r.endpoints}
        for endpoint in set(self._pools) - wanted:
            self._pools.pop(endpoint).close()
            self._queue_depth.pop(endpoint, None)
        for endpoint in wanted - set(self._pools):
            self._pools[endpoint] = Pool(endpoint)
        self._detector.set_endpoints(wanted)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()

    async def handle(self, request: Request) -> Response:
        """The answer for `request`, from a revision or from the router itself."""
        started = self._clock()
        self._budget.on_request()
        self._detector.tick(started)
        pinned = header(request.headers, REVISION_HEADER)
        if pinned is not None:
            name = pinned.decode("latin-1")
            if name not in self._revisions:
                known = ", ".join(self._revisions)
                return self._answer(
                    None, started, _error(400, f"no revision {name!r} here (serving: {known})")
                )
            candidates = [name]
        else:
            candidates = list(self._revisions)
        deadline = started + self.config.timeout_ms / 1000
        revision = self._admit(candidates, started)
        if revision is None:
            return self._answer(
                None,
                started,
                _error(503, "no revision can take the request now", (b"retry-after", b"1")),
            )
        ok = False
        try:
            response, ok = await self._attempts(revision, request, deadline)
        finally:
            revision.breaker.finish(ok, self._clock())
        return self._answer(revision.name, started, response)

    def _admit(self, candidates: list[str], now: float) -> _Revision | None:
        """The revision for the request: picked by weight among those with an endpoint not
        ejected, then admitted by its breaker (refused: the next pick)."""
        serving = {
            name
            for name in candidates
            if self._detector.available(self._revisions[name].endpoints, now)
        }
        pinned = len(candidates) == 1
        while serving:
            name = next(iter(serving)) if pinned else self._picker.pick(serving)
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
        while True:
            now = self._clock()
            endpoint = self._endpoint(revision, tried, now)
            if endpoint is None:
                message = f"revision {revision.name}: no endpoint can take the request"
                return _error(503, message, (b"retry-after", b"1")), ok
            if now >= deadline:
                return _error(504, f"no answer within {self.config.timeout_ms} ms"), ok
            tried.add(endpoint)
            response, outcome, timed_out = await self._send(
                revision, endpoint, request, deadline - now
            )
            status = response.status if response is not None else None
            ok = outcome is Outcome.SUCCESS or outcome is Outcome.BACKPRESSURE
            wants_retry = retryable(outcome, status, timed_out=timed_out) or (
                outcome is Outcome.BACKPRESSURE and self._has_room(revision, tried, now)
            )
            if wants_retry and self._budget.try_retry(attempt + 1):
                attempt += 1
                self._metrics.retries.labels(revision.name).inc()
                continue
            if response is not None:
                return response, ok
            if timed_out:
                return _error(504, f"no answer within {self.config.timeout_ms} ms"), ok
            return _error(502, f"revision {revision.name}: no endpoint answered"), ok

    def _endpoint(self, revision: _Revision, tried: set[str], now: float) -> str | None:
        available = self._detector.available(revision.endpoints, now)
        fresh = [e for e in available if e not in tried] or available
        return balancer.choose(
            [
                balancer.EndpointLoad(e, self._outstanding.get(e, 0), self._queue_depth.get(e, 0))
                for e in fresh
            ],
            self._rng,
        )

    def _has_room(self, revision: _Revision, tried: set[str], now: float) -> bool:
        """Another endpoint of the revision that has not said it is full."""
        return any(
            e not in tried and self._queue_depth.get(e, 0) == 0
            for e in self._detector.available(revision.endpoints, now)
        )

    async def _send(
        self, revision: _Revision, endpoint: str, request: Request, timeout_s: float
    ) -> tuple[Response | None, Outcome, bool]:
        pool = self._pools[endpoint]
        self._outstanding[endpoint] = self._outstanding.get(endpoint, 0) + 1
        try:
            response = await pool.exchange(render_request(request, pool.authority), timeout_s)
        except UpstreamError as error:
            logger.debug("%s", error)
            outcome, timed_out, response_or_none = Outcome.GATEWAY, error.timed_out, None
        else:
            outcome, timed_out, response_or_none = outcome_of(response.status), False, response
            depth = header(response.headers, balancer.QUEUE_DEPTH_HEADER.encode())
            self._queue_depth[endpoint] = balancer.parse_queue_depth(depth)
        finally:
            self._outstanding[endpoint] -= 1
        was_ejected = self._detector.ejected(endpoint, self._clock())
        self._detector.record(endpoint, outcome, self._clock())
        if not was_ejected and self._detector.ejected(endpoint, self._clock()):
            logger.warning("%s (revision %s) ejected", endpoint, revision.name)
            self._metrics.ejections.labels(revision.name, endpoint).inc()
        self._metrics.attempts.labels(revision.name, outcome.value).inc()
        return response_or_none, outcome, timed_out

    def _answer(self, revision: str | None, started: float, response: Response) -> Response:
        label = revision or "none"
        self._metrics.requests.labels(label, f"{response.status // 100}xx").inc()
        self._metrics.latency.labels(label).observe(self._clock() - started)
        if revision is not None:
            response.headers.append((REVISION_HEADER, revision.encode()))
        return response

    def breaker_phases(self) -> dict[str, str]:
        return {name: r.breaker.phase for name, r in self._revisions.items()}
