"""The informer's list-then-watch loop against a scripted API: what it lists, from which version
each watch starts, what it wakes, and how it answers expiry (410) and outages."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import Status

from davit_operator.caches import ClusterCache, Key
from davit_operator.informers import Informer
from davit_operator.kube import WatchEvent
from davit_operator.scheduler import Backoff

ML = "ml"


def svc(
    name: str, version: int, model: str | None = None, uid: str | None = None
) -> dict[str, Any]:
    return {
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": ML,
            "uid": uid or f"uid-{name}",
            "resourceVersion": str(version),
            "labels": {"davit.dev/model": model or name},
        },
    }


def bookmark(version: int) -> WatchEvent:
    return ("BOOKMARK", {"kind": "Service", "metadata": {"resourceVersion": str(version)}})


def gone() -> ApiError:
    return ApiError(status=Status(code=410, message="too old resource version"))


class EndOfScript(BaseException):
    """Raised when the script runs out: not an Exception, so the informer cannot retry it."""


@dataclass
class ScriptedAPI:
    """Each LIST answers the next of `lists`; each watch plays the next of `watches`: a list of
    events, optionally ending with an exception it raises."""

    lists: list[tuple[list[dict[str, Any]], str | None] | Exception]
    watches: list[list[WatchEvent | BaseException]]
    watched_from: list[str | None] = field(default_factory=list)
    listed: int = 0

    async def list_kind(self, kind: str, namespace: str) -> tuple[list[dict[str, Any]], str | None]:
        assert (kind, namespace) == ("Service", "*")
        if not self.lists:
            raise EndOfScript
        self.listed += 1
        answer = self.lists.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def watch_kind(
        self, kind: str, namespace: str, resource_version: str | None, timeout_seconds: int
    ) -> AsyncIterator[WatchEvent]:
        if not self.watches:
            raise EndOfScript
        self.watched_from.append(resource_version)
        for step in self.watches.pop(0):
            if isinstance(step, BaseException):
                raise step
            yield step


@dataclass
class Run:
    api: ScriptedAPI
    cache: ClusterCache
    woken: list[Key]
    slept: list[float]


def run(api: ScriptedAPI, cache: ClusterCache | None = None) -> Run:
    cache = cache or ClusterCache()
    woken: list[Key] = []
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    informer = Informer(
        "Service", "*", api, cache, woken.append, backoff=Backoff(1, 30), sleep=sleep
    )
    with pytest.raises(EndOfScript):
        asyncio.run(informer.run())
    return Run(api, cache, woken, slept)


def names(cache: ClusterCache, model: str) -> list[str]:
    return [name for _, name in cache.children((ML, model))]


def test_it_lists_then_watches_from_the_lists_version() -> None:
    done = run(ScriptedAPI(lists=[([svc("a", 5)], "10")], watches=[[]]))
    assert done.api.watched_from == ["10"]
    assert names(done.cache, "a") == ["a"]
    assert done.woken == [(ML, "a")]


def test_events_feed_the_cache_and_wake_their_model_and_bookmarks_wake_no_one() -> None:
    events: list[WatchEvent | BaseException] = [
        ("ADDED", svc("b", 11)),
        ("MODIFIED", svc("b", 12)),
        bookmark(20),
        ("DELETED", svc("a", 21)),
    ]
    done = run(ScriptedAPI(lists=[([svc("a", 5)], "10")], watches=[events, []]))
    assert names(done.cache, "a") == []
    assert names(done.cache, "b") == ["b"]
    assert done.woken == [(ML, "a"), (ML, "b"), (ML, "b"), (ML, "a")]
    # A watch that ended cleanly (the server's timeout) reopens at once from the last version:
    # the bookmark's, not the list's.
    assert done.api.watched_from == ["10", "21"]
    assert done.slept == []


def test_an_expired_watch_lists_again_and_drops_what_went_meanwhile() -> None:
    api = ScriptedAPI(
        lists=[([svc("a", 5), svc("b", 6)], "10"), ([svc("b", 6)], "40")],
        watches=[[gone()], []],
    )
    done = run(api)
    assert api.listed == 2
    assert names(done.cache, "a") == []  # deleted while no watch was open: no event ever said so
    assert names(done.cache, "b") == ["b"]
    # Watching "from now" after a 410 would miss every change in between: it never does.
    assert api.watched_from == ["10", "40"]
    assert done.woken[-1] == (ML, "a")
    assert done.slept == []  # relisting is the remedy, not waiting


def test_an_outage_is_retried_from_the_same_version_with_growing_delays() -> None:
    refused = httpx2.ConnectError("connection refused")
    api = ScriptedAPI(
        lists=[([], "10")],
        watches=[[("ADDED", svc("a", 11)), refused], [refused], [refused], [bookmark(15)], []],
    )
    done = run(api)
    assert api.listed == 1  # the version is still good: no relist
    assert api.watched_from == ["10", "11", "11", "11", "15"]
    assert done.slept == [1, 2, 4]


def test_a_failed_list_is_retried_and_a_good_one_ends_the_streak() -> None:
    refused = httpx2.ConnectError("connection refused")
    api = ScriptedAPI(lists=[refused, refused, ([svc("a", 5)], "10")], watches=[[refused], []])
    done = run(api)
    assert done.slept == [1, 2, 1]  # the watch's failure after the good list starts a new streak
    assert api.watched_from == ["10", "10"]
    assert names(done.cache, "a") == ["a"]


def test_a_streak_of_failures_is_logged_once_and_so_is_the_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refused = httpx2.ConnectError("connection refused")
    failing: list[WatchEvent | BaseException] = [refused]
    api = ScriptedAPI(lists=[([], "10")], watches=[failing] * 5 + [[bookmark(12)], []])
    with caplog.at_level(logging.INFO, logger="davit_operator.informers"):
        run(api)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("watching Service failed, retrying until it works")
    assert lines[1] == "watching Service again after 5 failures"


def test_a_bug_is_logged_once_with_its_traceback_and_the_informer_keeps_going(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = ScriptedAPI(lists=[([], "10")], watches=[[ValueError("bad")], [ValueError("bad")], []])
    with caplog.at_level(logging.INFO, logger="davit_operator.informers"):
        done = run(api)
    with_traceback = [r for r in caplog.records if r.exc_info]
    assert len(with_traceback) == 1
    assert done.api.watched_from == ["10", "10", "10"]


def test_other_refusals_are_retried_not_relisted() -> None:
    forbidden = ApiError(status=Status(code=403, message="forbidden"))
    api = ScriptedAPI(lists=[([], "10")], watches=[[forbidden], []])
    done = run(api)
    assert api.listed == 1
    assert done.slept == [1]
