"""A circuit breaker per revision: closed → open → half-open → closed.

Closed, the breaker counts the revision's answers over a sliding window and opens when too
many failed. Open, it refuses every request for `open_seconds`, so a revision failing as a
whole (the case outlier ejection leaves alone: it never ejects more than its cap) fails fast
instead of holding the router's connections. Then it lets a few probes through (half-open):
all of them succeeding closes it, one failing opens it again for another `open_seconds`.

Apart from that state machine, `max_concurrent` caps the requests in flight to the revision
in every phase; a refusal for that reason is load shedding and never opens the breaker.

The window is two tumbling buckets of `window_seconds` read as a sliding one: the previous
bucket counts in proportion to how much of it the sliding window still covers (the estimate
nginx and Cloudflare use for rate limits). A burst that straddles a bucket boundary still
opens the breaker, which a single tumbling bucket would split in two and miss.

`admit` and `finish` are pure; `Breaker` holds the state. The caller pairs every admitted
request with exactly one `finish`.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace


class Phase(enum.Enum):
    """The breaker's phase; the value is the name metrics use."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerSettings:
    """error_rate_threshold mirrors the operator's CircuitBreaker.errorRateThreshold (0.5)."""

    error_rate_threshold: float = 0.5
    min_requests: int = 20  # fewer answers in the window: too few to judge
    window_seconds: float = 10.0
    open_seconds: float = 5.0
    half_open_probes: int = 3
    max_concurrent: int = 0  # 0: no concurrency limit


@dataclass(frozen=True)
class BreakerState:
    """One revision's breaker. A fresh one is `BreakerState()` (closed, nothing counted)."""

    phase: Phase = Phase.CLOSED
    bucket_started: float = 0.0  # start of the current bucket of the window
    requests: int = 0  # answers in the current bucket
    errors: int = 0
    previous_requests: int = 0  # answers in the bucket before it
    previous_errors: int = 0
    opened_at: float | None = None
    in_flight: int = 0  # admitted requests not finished, in any phase
    probes_in_flight: int = 0  # half-open: probes admitted and not finished
    probe_successes: int = 0  # half-open: probes that succeeded


def advance_window(state: BreakerState, now: float, settings: BreakerSettings) -> BreakerState:
    """The window moved to `now`: buckets that ended roll over (one bucket back is kept)."""
    elapsed = now - state.bucket_started
    if elapsed < settings.window_seconds:
        return state
    buckets = math.floor(elapsed / settings.window_seconds)
    kept_requests, kept_errors = (state.requests, state.errors) if buckets == 1 else (0, 0)
    return replace(
        state,
        bucket_started=state.bucket_started + buckets * settings.window_seconds,
        requests=0,
        errors=0,
        previous_requests=kept_requests,
        previous_errors=kept_errors,
    )


def window_counts(
    state: BreakerState, now: float, settings: BreakerSettings
) -> tuple[float, float]:
    """(requests, errors) over the sliding window ending at `now`, the previous bucket weighted
    by the share of it the window still covers. Expects a state advanced to `now`."""
    into_bucket = min(max(now - state.bucket_started, 0.0), settings.window_seconds)
    weight = 1.0 - into_bucket / settings.window_seconds
    return (
        state.requests + state.previous_requests * weight,
        state.errors + state.previous_errors * weight,
    )


def should_open(state: BreakerState, now: float, settings: BreakerSettings) -> bool:
    """Enough answers in the window, and at least `error_rate_threshold` of them failed."""
    requests, errors = window_counts(state, now, settings)
    if requests <= 0 or requests < settings.min_requests:
        return False
    return errors / requests >= settings.error_rate_threshold


def _restarted(state: BreakerState, now: float, phase: Phase) -> BreakerState:
    """`phase` from `now` with an empty window and no probes: the counts that opened the
    breaker judged it already, and those before a closing are forgiven."""
    return replace(
        state,
        phase=phase,
        opened_at=now if phase is Phase.OPEN else None,
        bucket_started=now,
        requests=0,
        errors=0,
        previous_requests=0,
        previous_errors=0,
        probes_in_flight=0,
        probe_successes=0,
    )


def _opened(state: BreakerState, now: float) -> BreakerState:
    return _restarted(state, now, Phase.OPEN)


def _closed(state: BreakerState, now: float) -> BreakerState:
    return _restarted(state, now, Phase.CLOSED)


def at_capacity(state: BreakerState, limit: int) -> bool:
    """Whether `limit` (> 0; 0: none) requests are in flight already: the one refusal that is
    load shedding, not the revision failing."""
    return limit > 0 and state.in_flight >= limit


def admit(
    state: BreakerState, now: float, settings: BreakerSettings, limit: int | None = None
) -> tuple[bool, BreakerState]:
    """Whether a request may go to the revision now, and the state after the decision.

    Refused: while `limit` (> 0; by default `max_concurrent`, which a request's criticality
    may move: criticality.py) requests are in flight, in any phase, without any other change;
    while open and `open_seconds` have not passed since the opening; half-open, once
    `half_open_probes` probes were let through (until their answers close or reopen the
    breaker). An open breaker whose time is over turns half-open here, and the request that
    found it so is its first probe.
    """
    if at_capacity(state, settings.max_concurrent if limit is None else limit):
        return False, state
    current = state
    if current.phase is Phase.OPEN:
        assert current.opened_at is not None
        if now - current.opened_at < settings.open_seconds:
            return False, current
        current = replace(current, phase=Phase.HALF_OPEN, probes_in_flight=0, probe_successes=0)
    if current.phase is Phase.HALF_OPEN:
        if current.probes_in_flight + current.probe_successes >= settings.half_open_probes:
            return False, current
        return True, replace(
            current,
            in_flight=current.in_flight + 1,
            probes_in_flight=current.probes_in_flight + 1,
        )
    return True, replace(current, in_flight=current.in_flight + 1)


def finish(state: BreakerState, ok: bool, now: float, settings: BreakerSettings) -> BreakerState:
    """The state after an admitted request ended; `ok` is False when it counts as the revision
    failing (a 5xx or no answer; the caller passes True for a 429, which is load shedding).

    Closed: the answer is counted, and the breaker opens when the window says so. Half-open: a
    failed probe reopens it (the open time starts again), and the last of `half_open_probes`
    successes closes it with an empty window. Open: the answer, to a request admitted before
    the opening, changes nothing but the in-flight count.

    Without a ticket per request, a request admitted while closed that ends after the breaker
    turned half-open is taken for a probe; that needs it to outlast `open_seconds`, and its
    failure reopening the breaker errs on the safe side.
    """
    current = replace(state, in_flight=max(0, state.in_flight - 1))
    if current.phase is Phase.CLOSED:
        current = advance_window(current, now, settings)
        current = replace(
            current, requests=current.requests + 1, errors=current.errors + (0 if ok else 1)
        )
        return _opened(current, now) if should_open(current, now, settings) else current
    if current.phase is Phase.HALF_OPEN and current.probes_in_flight > 0:
        if not ok:
            return _opened(current, now)
        probed = replace(
            current,
            probes_in_flight=current.probes_in_flight - 1,
            probe_successes=current.probe_successes + 1,
        )
        if probed.probe_successes >= settings.half_open_probes:
            return _closed(probed, now)
        return probed
    return current


class Breaker:
    """One revision's breaker state; the decisions are `admit` and `finish` above.

    Not thread-safe; the proxy calls it from its event loop.
    """

    def __init__(self, settings: BreakerSettings) -> None:
        self.settings = settings
        self.state = BreakerState()

    @property
    def phase(self) -> str:
        """closed, open or half_open: the phase as of the last call (an open breaker whose
        time is over reads open until a request finds it half-open)."""
        return self.state.phase.value

    def admit(self, now: float, limit: int | None = None) -> bool:
        admitted, self.state = admit(self.state, now, self.settings, limit)
        return admitted

    def finish(self, ok: bool, now: float) -> None:
        self.state = finish(self.state, ok, now, self.settings)

    def at_capacity(self, limit: int) -> bool:
        return at_capacity(self.state, limit)
