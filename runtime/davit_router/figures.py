"""Each revision's figures over a recent window: requests, server errors, latency quantiles.

What the router serves at `/figures?window=30s` — the builtin analysis source reads it, so a
canary can be judged with no Prometheus installed. Answers are counted in one-second slots
(kept for `horizon_seconds`), each with a latency histogram on the runtime's buckets; a
window's figures sum the slots it covers, and a quantile is read from the summed histogram the
way Prometheus' histogram_quantile reads one (histogram.py), so the two sources agree on the
same traffic. The summed histogram is part of the figures, so that the operator can add up
every router replica's before it reads a quantile.

Pure but for `Ledger`'s slots: the time is an argument everywhere.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

from davit_router.histogram import FIGURES_HORIZON_SECONDS, quantile
from davit_runtime.metrics import LATENCY_BUCKETS


@dataclass(frozen=True)
class Figures:
    """One revision over one window."""

    requests: int
    errors: int  # 5xx answers, the router's own 502/503/504 included
    p50_ms: float | None  # None without a request
    p99_ms: float | None
    # Answers per latency bucket (LATENCY_BUCKETS, seconds; the last: above them all); empty
    # without a request.
    latency_counts: tuple[int, ...] = ()

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


@dataclass
class _Slot:
    second: int
    requests: int = 0
    errors: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))


class Ledger:
    """Per revision, the last `horizon_seconds` of answers in one-second slots."""

    def __init__(self, horizon_seconds: int = FIGURES_HORIZON_SECONDS) -> None:
        self.horizon_seconds = horizon_seconds
        self._slots: dict[str, list[_Slot]] = {}

    def record(self, revision: str, status: int, seconds: float, now: float) -> None:
        """One answer of `revision` with HTTP `status`, `seconds` after its request came."""
        slots = self._slots.setdefault(revision, [])
        second = int(now)
        if not slots or slots[-1].second != second:
            slots.append(_Slot(second))
            oldest = second - self.horizon_seconds
            while slots[0].second <= oldest:
                slots.pop(0)
        slot = slots[-1]
        slot.requests += 1
        slot.errors += status >= 500
        slot.latency[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def figures(self, revision: str, window_seconds: float, now: float) -> Figures:
        """`revision`'s answers in the `window_seconds` up to `now` (the present, or a past
        moment for a late reader): whole seconds, the slot of `now` counts, so the window is up
        to a second longer than asked."""
        until = int(now)
        since = until - math.ceil(window_seconds)
        covered = [s for s in self._slots.get(revision, []) if since < s.second <= until]
        counts = tuple(sum(c) for c in zip(*(s.latency for s in covered), strict=True))
        requests = sum(s.requests for s in covered)
        if not requests:
            return Figures(0, 0, None, None)
        return Figures(
            requests=requests,
            errors=sum(s.errors for s in covered),
            p50_ms=1000 * quantile(0.5, counts, LATENCY_BUCKETS),
            p99_ms=1000 * quantile(0.99, counts, LATENCY_BUCKETS),
            latency_counts=counts,
        )

    def forget(self, revision: str) -> None:
        self._slots.pop(revision, None)

    def revisions(self) -> list[str]:
        return list(self._slots)
