"""The endpoint balancer: the less loaded of two endpoints drawn at random."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

from davit_router.balancer import EndpointLoad, choose, parse_queue_depth


class Drawn(random.Random):
    """A random source that draws the given index pairs, in order."""

    def __init__(self, *pairs: tuple[int, int]) -> None:
        super().__init__(0)
        self.pairs = list(pairs)

    def sample(self, population: Any, k: int, **_: Any) -> list[Any]:
        assert k == 2
        return list(self.pairs.pop(0))


A, B, C = "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"


@dataclass(frozen=True)
class Case:
    reason: str
    candidates: list[EndpointLoad]
    drawn: tuple[int, int]
    want: str | None


CASES = [
    Case("the less outstanding of the two drawn", [EndpointLoad(A, 3), EndpointLoad(B, 1)],
         (0, 1), B),
    # The runtime's queue depth counts as load the router did not send (other routers').
    Case("a backed-up batcher loses to an idle one",
         [EndpointLoad(A, 0, queue_depth=8), EndpointLoad(B, 2)], (0, 1), B),
    Case("a tie goes to the first drawn", [EndpointLoad(A, 1), EndpointLoad(B, 1)], (1, 0), B),
    # Only the two drawn compete: the least loaded of all is not always picked, which keeps
    # many routers from piling onto the same one.
    Case("an endpoint not drawn is not picked",
         [EndpointLoad(A, 5), EndpointLoad(B, 4), EndpointLoad(C, 0)], (0, 1), B),
    Case("one candidate is picked without a draw", [EndpointLoad(A, 9)], (0, 0), A),
    Case("no candidate picks nothing", [], (0, 0), None),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.reason for c in CASES])
def test_choose(case: Case) -> None:
    assert choose(case.candidates, Drawn(case.drawn)) == case.want


def test_idle_endpoints_share_the_load_evenly() -> None:
    rng = random.Random(7)
    endpoints = [EndpointLoad(e, 0) for e in (A, B, C)]
    counts = Counter(choose(endpoints, rng) for _ in range(3000))
    assert all(900 <= counts[e] <= 1100 for e in (A, B, C)), counts


@pytest.mark.parametrize(("value", "want"), [(None, 0), ("3", 3), (b"12", 12), ("-1", 0),
                                             ("many", 0), ("", 0)])  # fmt: skip
def test_parse_queue_depth(value: str | bytes | None, want: int) -> None:
    assert parse_queue_depth(value) == want
