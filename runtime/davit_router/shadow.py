"""Shadow traffic: which requests are copied to a revision that does not answer them.

A copy goes to the shadow revision beside the request's own attempt; its answer is counted
(and kept in the shadow revision's figures, so a canary can be judged on real requests before
it serves one) and thrown away. The client never waits for it.

Exact and deterministic, like the revision split: of every 100 requests eligible, `percent` are
copied, spread out (request n is copied when the running share n * percent / 100 crosses a
whole number).
"""

from __future__ import annotations


def mirrored(count: int, percent: int) -> bool:
    """Whether request number `count` (0-based, among those eligible) is copied."""
    return (count + 1) * percent // 100 > count * percent // 100
