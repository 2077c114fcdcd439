"""Request criticality: under overload, sheddable requests are refused first, critical last.

A client says how much a request matters with `x-davit-criticality` (gRPC: the same metadata
key): `critical`, `standard` (the default) or `sheddable` (batch scoring, a background job
that retries later), the classes of the Gateway API Inference Extension. Three rules follow
from it, each for the revision a request was given:

    concurrency_limit  with the revision's concurrency cap (`breaker.maxConcurrent`, per
                       router), a sheddable request is admitted below 80 % of it, a standard
                       one below it, a critical one into a reserve of a quarter more
    saturated          every endpoint of the revision has at least `sheddableQueueDepth`
                       requests queued (the runtime's report) or in flight (the router's):
                       a sheddable request is refused with 429 without being sent
    retries_pushback   a runtime's 429 is tried on another endpoint for standard and
                       critical requests only; a sheddable one is passed back at once

Pure: the router gives the loads and the cap.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence

HEADER = b"x-davit-criticality"


class Criticality(enum.Enum):
    CRITICAL = "critical"
    STANDARD = "standard"
    SHEDDABLE = "sheddable"


class CriticalityError(ValueError):
    """The header names no criticality; the message says which are."""


def parse(value: bytes | str | None) -> Criticality:
    """The criticality a request's header says; standard without one. CriticalityError for a
    value that is none of them (case and surrounding blanks aside): a typo would otherwise
    drop a critical request's priority unseen."""
    if value is None:
        return Criticality.STANDARD
    text = (value.decode("latin-1") if isinstance(value, bytes) else value).strip().lower()
    try:
        return Criticality(text)
    except ValueError:
        names = ", ".join(c.value for c in Criticality)
        raise CriticalityError(f"{HEADER.decode()}: {text!r} is not one of {names}") from None


SHEDDABLE_SHARE = 0.8  # of the cap, for sheddable requests
CRITICAL_RESERVE = 0.25  # of the cap, beyond it, for critical requests


def concurrency_limit(criticality: Criticality, max_concurrent: int) -> int:
    """The requests in flight to a revision below which one of `criticality` is admitted,
    given the revision's cap (0: no cap, and no limit for anyone). At least 1 for each class,
    so that a cap of 1 still serves sheddable requests when nothing else runs."""
    if max_concurrent <= 0:
        return 0
    if criticality is Criticality.SHEDDABLE:
        return max(1, math.floor(max_concurrent * SHEDDABLE_SHARE))
    if criticality is Criticality.CRITICAL:
        return max_concurrent + max(1, math.ceil(max_concurrent * CRITICAL_RESERVE))
    return max_concurrent


def saturated(loads: Sequence[int], sheddable_queue_depth: int) -> bool:
    """Whether a revision is too busy for sheddable requests: a depth is set (> 0) and every
    endpoint that could take the request (`loads`: queued plus in flight) is at it or past it.
    A revision with no such endpoint is not saturated: it has other answers (503)."""
    return sheddable_queue_depth > 0 and bool(loads) and min(loads) >= sheddable_queue_depth


def retries_pushback(criticality: Criticality) -> bool:
    """Whether a 429 from a runtime is tried once more on another endpoint."""
    return criticality is not Criticality.SHEDDABLE
