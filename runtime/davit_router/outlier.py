"""Passive outlier ejection: endpoints ("host:port") that fail are taken out of the pool a while.

Envoy's outlier detector, in the router's terms. Two detectors eject an endpoint:

* consecutive errors, inline: the answer that makes the streak reach `consecutive_errors` ejects;
* failure percentage, at each interval's end (`sweep`): an endpoint with at least
  `failure_percentage_min_requests` counted answers in the interval, of which a fraction of at
  least `failure_percentage_threshold` failed, is ejected.

An ejection lasts `base_ejection_seconds` * the endpoint's ejection multiplier (1 on the first,
2 on the second, ...), capped at `max_ejection_seconds`; the multiplier drops by one after each
interval the endpoint spent in the pool, so an endpoint that recovered is forgiven over time.
No more than `max_ejected_percent` of the endpoints are ejected at once (`may_eject`).

The decisions are pure functions of an `EndpointHealth` and the time, passed in; the only state
that changes lives in `OutlierDetector`, which the proxy owns and calls from its event loop.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace


class Outcome(enum.Enum):
    """What one upstream attempt told about the endpoint that served it."""

    SUCCESS = "success"  # an answer that is not a server error (a 4xx is the client's fault)
    ERROR = "error"  # a 5xx answer, 503 included
    GATEWAY = "gateway"  # no answer: connect failure, reset, timeout
    # 429: the endpoint is alive and says it is full. Shedding load is the runtime working as
    # designed, so it never ejects; but it says nothing about whether the endpoint's errors
    # stopped either, so it leaves the error streak as it was (a 429 between two 5xx does not
    # hide a failing endpoint) and is counted on neither side of the failure percentage.
    BACKPRESSURE = "backpressure"
    # The client's own deadline (gRPC's timeout, shorter than the model's) ran out first: the
    # endpoint may have been about to answer. It tells nothing of the endpoint: no ejection,
    # no breaker failure, no retry, and the revision's figures count it as the client's
    # (499, nginx's "client closed request"), not as a server error.
    ABANDONED = "abandoned"


def outcome_of(status: int) -> Outcome:
    """The outcome of an HTTP answer with this status (an attempt without one is GATEWAY)."""
    if status == 429:
        return Outcome.BACKPRESSURE
    if status >= 500:
        return Outcome.ERROR
    return Outcome.SUCCESS


@dataclass(frozen=True)
class OutlierSettings:
    """Mirrors the operator's CircuitBreaker (consecutiveErrors, errorRateThreshold,
    ejectionSeconds, maxEjectedPercent) with the same defaults, plus Envoy's remaining knobs."""

    consecutive_errors: int = 5
    base_ejection_seconds: float = 30.0
    max_ejection_seconds: float = 300.0
    max_ejected_percent: int = 50
    failure_percentage_threshold: float = 0.5  # failed fraction over an interval that ejects
    failure_percentage_min_requests: int = 20  # fewer counted answers: too few to judge
    interval_seconds: float = 10.0


@dataclass(frozen=True)
class EndpointHealth:
    """One endpoint's record. A fresh endpoint is `EndpointHealth()`."""

    consecutive_errors: int = 0
    ejected_until: float | None = None  # the end of the last ejection (it may be over)
    ejections: int = 0  # the ejection multiplier: the next ejection lasts base * (this + 1)
    interval_successes: int = 0
    interval_failures: int = 0
    # Ejected at some time in the current interval: no forgiveness (multiplier decrement) at
    # its end. Set on ejection, and at a sweep for an endpoint still ejected then.
    ejected_in_interval: bool = False


def is_ejected(health: EndpointHealth, now: float) -> bool:
    """True while an ejection lasts; an endpoint is back in the pool the moment it ends.

    Envoy returns a host at the first sweep after its ejection time; here every decision gets
    the time, so the endpoint returns exactly at `ejected_until`, up to an interval earlier.
    """
    return health.ejected_until is not None and now < health.ejected_until


def may_eject(ejected_count: int, total: int, settings: OutlierSettings) -> bool:
    """Whether one more endpoint may be ejected when `ejected_count` of `total` already are.

    The cap is strict: after the ejection, at most `max_ejected_percent` of the endpoints are
    out, rounding down. With 50 %: 2 endpoints allow 1, 3 allow 1, 10 allow 5, and a single
    endpoint is never ejected. This is Envoy's rule since 1.31 with `always_eject_one_host` off
    (its default); older Envoy and gRPC allowed one ejection past the cap. The router has no
    panic mode, so ejecting a revision's only pod would turn its errors into certain refusals;
    a revision failing as a whole is the breaker's business, not the outlier detector's.
    """
    if total <= 0:
        return False
    # Integer arithmetic: (ejected + 1) / total <= percent / 100, without float rounding.
    return (ejected_count + 1) * 100 <= settings.max_ejected_percent * total


def _multiplier_ceiling(settings: OutlierSettings) -> int:
    """The multiplier stops growing once base * multiplier reaches the maximum ejection, as in
    Envoy, so that forgiveness (one step per healthy interval) takes a bounded time."""
    if settings.base_ejection_seconds <= 0:
        return 1
    return max(1, math.ceil(settings.max_ejection_seconds / settings.base_ejection_seconds))


def eject(health: EndpointHealth, now: float, settings: OutlierSettings) -> EndpointHealth:
    """The endpoint ejected from `now`: the multiplier grows by one (up to its ceiling) and the
    ejection lasts base * multiplier, at most `max_ejection_seconds`. The error streak and the
    interval's counts start again: the evidence that ejected it is spent, so an endpoint back
    from an ejection is judged on what it does after its return."""
    multiplier = min(health.ejections + 1, _multiplier_ceiling(settings))
    duration = min(settings.base_ejection_seconds * multiplier, settings.max_ejection_seconds)
    return replace(
        health,
        consecutive_errors=0,
        interval_successes=0,
        interval_failures=0,
        ejected_until=now + duration,
        ejections=multiplier,
        ejected_in_interval=True,
    )


def record(
    health: EndpointHealth,
    outcome: Outcome,
    now: float,
    settings: OutlierSettings,
    may_eject: bool,
) -> EndpointHealth:
    """The endpoint's record after one attempt's outcome; ejects it when the error streak
    reaches `consecutive_errors` and `may_eject` (the percent cap) allows.

    A streak held back by the cap stays at or above the threshold, so the next error ejects as
    soon as the cap has room (Envoy tries only when the count equals the threshold). Outcomes
    arriving while the endpoint is ejected are answers to attempts sent before the ejection:
    they tell nothing new and leave the record as it is.
    """
    if is_ejected(health, now):
        return health
    if outcome in (Outcome.BACKPRESSURE, Outcome.ABANDONED):
        return health
    if outcome is Outcome.SUCCESS:
        return replace(
            health, consecutive_errors=0, interval_successes=health.interval_successes + 1
        )
    failed = replace(
        health,
        consecutive_errors=health.consecutive_errors + 1,
        interval_failures=health.interval_failures + 1,
    )
    if failed.consecutive_errors >= settings.consecutive_errors and may_eject:
        return eject(failed, now, settings)
    return failed


def failing_too_often(health: EndpointHealth, settings: OutlierSettings) -> bool:
    """The failure-percentage detector: enough answers in the interval, too many of them failed."""
    counted = health.interval_successes + health.interval_failures
    if counted == 0 or counted < settings.failure_percentage_min_requests:
        return False
    return health.interval_failures / counted >= settings.failure_percentage_threshold


def sweep(
    health: EndpointHealth, now: float, settings: OutlierSettings, may_eject: bool
) -> EndpointHealth:
    """The endpoint's record at the end of an interval.

    An endpoint in the pool whose interval failed too often is ejected (when `may_eject`); one
    that spent the whole interval in the pool and stays there has its multiplier lowered by
    one. The interval's counts start again either way.
    """
    ejected_now = is_ejected(health, now)
    if not ejected_now and may_eject and failing_too_often(health, settings):
        swept = eject(health, now, settings)
    elif not ejected_now and not health.ejected_in_interval:
        swept = replace(health, ejections=max(0, health.ejections - 1))
    else:
        swept = health
    return replace(
        swept,
        interval_successes=0,
        interval_failures=0,
        ejected_in_interval=is_ejected(swept, now),
    )


class OutlierDetector:
    """The records of one pool's endpoints: the only mutable part, every decision is above.

    Not thread-safe; the proxy calls it from its event loop. Outcomes for an endpoint not in
    the pool (one removed while an attempt to it was in flight) are ignored.
    """

    def __init__(self, settings: OutlierSettings, endpoints: Iterable[str] = ()) -> None:
        self.settings = settings
        self._health: dict[str, EndpointHealth] = {e: EndpointHealth() for e in endpoints}
        self._interval_started: float | None = None

    def set_endpoints(self, endpoints: Iterable[str]) -> None:
        """The pool becomes `endpoints`: records of kept endpoints stay, new ones start fresh."""
        wanted = list(endpoints)
        self._health = {e: self._health.get(e, EndpointHealth()) for e in wanted}

    def forget(self, endpoint: str) -> None:
        self._health.pop(endpoint, None)

    def health(self, endpoint: str) -> EndpointHealth | None:
        return self._health.get(endpoint)

    def ejected_count(self, now: float) -> int:
        return sum(1 for h in self._health.values() if is_ejected(h, now))

    def record(self, endpoint: str, outcome: Outcome, now: float) -> None:
        health = self._health.get(endpoint)
        if health is None:
            return
        allowed = may_eject(self.ejected_count(now), len(self._health), self.settings)
        self._health[endpoint] = record(health, outcome, now, self.settings, allowed)

    def ejected(self, endpoint: str, now: float) -> bool:
        health = self._health.get(endpoint)
        return health is not None and is_ejected(health, now)

    def available(self, endpoints: Iterable[str], now: float) -> list[str]:
        """The given endpoints that are not ejected, in their order (unknown ones included:
        nothing says they failed)."""
        return [e for e in endpoints if not self.ejected(e, now)]

    def tick(self, now: float) -> None:
        """Sweeps once when an interval has passed since the last sweep (the first call starts
        the first interval). A late tick covering several intervals sweeps once, and the next
        interval starts at `now`. Sweeps go in pool order, each ejection counting against the
        cap for the endpoints after it."""
        if self._interval_started is None:
            self._interval_started = now
            return
        if now - self._interval_started < self.settings.interval_seconds:
            return
        self._interval_started = now
        total = len(self._health)
        for endpoint, health in self._health.items():
            allowed = may_eject(self.ejected_count(now), total, self.settings)
            self._health[endpoint] = sweep(health, now, self.settings, allowed)
