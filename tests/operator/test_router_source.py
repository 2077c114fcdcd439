"""The router's figures added up over its replicas (`added_up`), what is refused, and the
source's rounds of reads; the source against real router processes is in
tests/router/test_router_process.py."""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass
from typing import Any

import pytest

from davit_operator import api
from davit_operator.planners.analysis import Figures, Window
from davit_operator.sources import RouterFigures, SourceError, Subject, WindowGoneError
from davit_operator.sources.router import added_up

BOUNDS = [0.001, 0.002, 0.005]


def answer(revisions: dict[str, Any], bounds: list[float] | None = None) -> dict[str, Any]:
    return {"windowSeconds": 30, "end": 1.0, "latencyBoundsSeconds": bounds or BOUNDS,
            "revisions": revisions}  # fmt: skip


def seen(requests: int, errors: int, counts: list[int]) -> dict[str, Any]:
    return {"requests": requests, "errors": errors, "latencyCounts": counts}


@dataclass(frozen=True)
class Case:
    reason: str
    answers: dict[str, Any]  # by router address
    want: Figures


CASES = [
    Case("one router's figures are the revision's",
         {"a": answer({"c": seen(100, 1, [100, 0, 0, 0])})}, Figures(100, 1, 0.99)),
    # The histograms are summed bucket by bucket before the quantile: 198 answers under 1 ms
    # and 2 in (2 ms, 5 ms] put the 99th percentile at the top of the first bucket.
    Case("two routers' requests, errors and buckets add up",
         {"a": answer({"c": seen(100, 1, [99, 0, 1, 0])}),
          "b": answer({"c": seen(100, 3, [99, 0, 1, 0])})},
         Figures(200, 4, 1.0)),
    # One router fast, one slow: the sum's p99 (3.47 ms) is neither router's own (0.99, 4.97).
    Case("a slow router's few answers weigh by their number",
         {"a": answer({"c": seen(100, 0, [100, 0, 0, 0])}),
          "b": answer({"c": seen(2, 0, [0, 0, 2, 0])})},
         Figures(102, 0, 2 + 3 * 0.98 / 2)),
    Case("a router that has not seen the revision counts nothing",
         {"a": answer({"c": seen(50, 0, [0, 50, 0, 0])}),
          "b": answer({"s": seen(9, 0, [9, 0, 0, 0])})},
         Figures(50, 0, 1.99)),
    # A 5 % canary over two routers: one may answer none of its requests in a window.
    Case("a router that answered none of the revision's requests, sorted first",
         {"a": answer({"c": seen(0, 0, [])}), "b": answer({"c": seen(5, 0, [5, 0, 0, 0])})},
         Figures(5, 0, 0.99)),
    Case("a router that answered none of the revision's requests, sorted last",
         {"a": answer({"c": seen(5, 0, [5, 0, 0, 0])}), "b": answer({"c": seen(0, 0, [])})},
         Figures(5, 0, 0.99)),
    Case("no request anywhere: no latency", {"a": answer({"c": seen(0, 0, [])})},
         Figures(0, 0, None)),
    Case("answers above the last bound read as that bound",
         {"a": answer({"c": seen(10, 0, [0, 0, 0, 10])})}, Figures(10, 0, 5.0)),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.reason for c in CASES])
def test_added_up(case: Case) -> None:
    figures = added_up("c", case.answers)
    assert (figures.requests, figures.errors) == (case.want.requests, case.want.errors)
    assert figures.p99_ms == (pytest.approx(case.want.p99_ms) if case.want.p99_ms else None)


@dataclass(frozen=True)
class Bad:
    reason: str
    answers: dict[str, Any]
    message: str


BAD = [
    Bad("not a figures answer", {"a": {"error": "window 'x'"}}, "router a: not a figures answer"),
    # Two router versions mid-upgrade with other buckets cannot be added up honestly.
    Bad("routers that disagree on the buckets",
        {"a": answer({}), "b": answer({}, bounds=[0.001, 0.01])}, "other latency buckets"),
    Bad("a histogram of the wrong length", {"a": answer({"c": seen(1, 0, [1, 0])})},
        "expected 4 latency counts"),
    Bad("a count that is not one", {"a": answer({"c": seen(-1, 0, [])})},
        "requests: expected a count, got -1"),
    Bad("requests without a histogram", {"a": answer({"c": seen(3, 0, [])})},
        "3 requests and no latency histogram"),
]  # fmt: skip


@pytest.mark.parametrize("case", BAD, ids=[c.reason for c in BAD])
def test_an_answer_that_cannot_be_added_up_is_a_source_error(case: Bad) -> None:
    with pytest.raises(SourceError, match=case.message):
        added_up("c", case.answers)


def window_ago(seconds: float, length: float = 30) -> Window:
    end = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds)
    return Window(end - datetime.timedelta(seconds=length), end)


def test_the_canary_and_stable_reads_of_a_measurement_share_one_round_of_the_routers() -> None:
    listed: list[tuple[str, str]] = []

    async def no_router(namespace: str, name: str) -> list[str]:
        listed.append((namespace, name))
        await asyncio.sleep(0)
        return []

    async def both() -> tuple[Figures | BaseException, Figures | BaseException]:
        source = RouterFigures(no_router)
        window = window_ago(1)
        return await asyncio.gather(
            source.figures(api.Analysis(), Subject("ml", "resnet", "canary"), window),
            source.figures(api.Analysis(), Subject("ml", "resnet", "stable"), window),
            return_exceptions=True,
        )

    answers = asyncio.run(both())
    assert listed == [("ml", "resnet")]  # one list of the router pods for both revisions
    assert all(isinstance(a, SourceError) for a in answers)
    assert "router resnet-router has no ready pod" in str(answers[0])
    # The round is over: a later try of the same window asks again.
    asyncio.run(both())
    assert len(listed) == 2


def test_a_window_older_than_the_routers_keep_is_gone_not_merely_unreadable() -> None:
    async def never(namespace: str, name: str) -> list[str]:
        raise AssertionError("no router is asked for a window it cannot have")

    async def read() -> Figures:
        source = RouterFigures(never)
        return await source.figures(api.Analysis(), Subject("ml", "resnet", "c"),
                                    window_ago(590, length=30))  # fmt: skip

    with pytest.raises(WindowGoneError, match="the routers keep 600 s of figures"):
        asyncio.run(read())
