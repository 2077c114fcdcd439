"""Criticality in the router's way for a request (`Router.route`), in process: attempts are made
by a test `send` that holds them open, so what is in flight is exactly what the test says."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from davit_router.config import parse
from davit_router.criticality import Criticality
from davit_router.metrics import RouterMetrics
from davit_router.outlier import Outcome
from davit_router.router import Attempt, Failure, Routed, Router, Transport

CRITICAL, STANDARD, SHEDDABLE = Criticality.CRITICAL, Criticality.STANDARD, Criticality.SHEDDABLE


def router(**settings: Any) -> Router:
    config = parse({
        "model": "resnet",
        "revisions": [{"name": "a", "weight": 100,
                       "endpoints": ["10.0.0.1:8080", "10.0.0.2:8080"]}],
        **settings,
    })  # fmt: skip
    return Router(config, RouterMetrics(), clock=lambda: 100.0)


class Held:
    """Attempts that answer 200 (with `queue_depth`) only once released."""

    def __init__(self, queue_depth: int | None = None) -> None:
        self.release = asyncio.Event()
        self.sent: list[str] = []
        self.queue_depth = queue_depth

    async def __call__(self, endpoint: str, timeout_s: float) -> Attempt[str]:
        self.sent.append(endpoint)
        await self.release.wait()
        return Attempt("ok", Outcome.SUCCESS, False, 200, self.queue_depth)


def run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(body())


def test_at_the_concurrency_cap_sheddable_goes_first_standard_next_and_critical_last() -> None:
    async def body() -> None:
        # A cap of 4: sheddable requests are admitted below 3, standard below 4, critical 5.
        routing = router(breaker={"maxConcurrent": 4})
        held = Held()

        def start(level: Criticality) -> asyncio.Task[Routed[str]]:
            return asyncio.create_task(routing.route(None, Transport.HTTP, held, 100.0,
                                                     level=level))  # fmt: skip

        async def now(level: Criticality) -> Failure | None:
            """A request of `level` that is either refused at once or admitted (and held)."""
            task = start(level)
            await asyncio.sleep(0)
            if task.done():
                return task.result().failure
            running.append(task)
            return None

        running: list[asyncio.Task[Routed[str]]] = []
        assert [await now(SHEDDABLE) for _ in range(3)] == [None, None, None]
        assert await now(SHEDDABLE) is Failure.CONCURRENCY  # 3 in flight: sheddable's share
        assert await now(STANDARD) is None  # the 4th
        assert await now(STANDARD) is Failure.CONCURRENCY  # the cap
        assert await now(CRITICAL) is None  # into the reserve of one
        assert await now(CRITICAL) is Failure.CONCURRENCY  # and no further
        held.release.set()
        answers = await asyncio.gather(*running)
        assert [a.answer for a in answers] == ["ok"] * 5
        assert await now(SHEDDABLE) is None  # all done: room again

    run(body)


def test_a_sheddable_request_to_a_saturated_revision_is_refused_without_being_sent() -> None:
    async def body() -> None:
        routing = router(sheddableQueueDepth=4)
        # Both endpoints report 4 queued on their last answers.
        busy = Held(queue_depth=4)
        busy.release.set()
        for _ in range(4):
            await routing.route(None, Transport.HTTP, busy, 100.0)
        assert sorted(set(busy.sent)) == ["10.0.0.1:8080", "10.0.0.2:8080"]
        probe = Held()
        probe.release.set()
        refused = await routing.route(None, Transport.HTTP, probe, 100.0, level=SHEDDABLE)
        assert (refused.revision, refused.failure) == ("a", Failure.SATURATED)
        assert probe.sent == []
        # Standard and critical requests still go: the runtime answers for its own queue.
        for level in (STANDARD, CRITICAL):
            sent = await routing.route(None, Transport.HTTP, probe, 100.0, level=level)
            assert sent.answer == "ok"
        assert len(probe.sent) == 2

    run(body)


def test_with_one_endpoint_under_the_depth_a_sheddable_request_is_served() -> None:
    async def body() -> None:
        routing = router(sheddableQueueDepth=4)
        depths = {"10.0.0.1:8080": 9, "10.0.0.2:8080": 0}

        async def send(endpoint: str, timeout_s: float) -> Attempt[str]:
            return Attempt("ok", Outcome.SUCCESS, False, 200, depths[endpoint])

        for _ in range(4):
            await routing.route(None, Transport.HTTP, send, 100.0)
        served = await routing.route(None, Transport.HTTP, send, 100.0, level=SHEDDABLE)
        assert served.answer == "ok"

    run(body)


def test_a_429_is_tried_elsewhere_for_a_standard_request_and_passed_back_for_a_sheddable() -> None:
    async def body() -> None:
        routing = router(retries={"attempts": 2, "budgetPercent": 100})
        sent: list[str] = []

        async def full(endpoint: str, timeout_s: float) -> Attempt[str]:
            sent.append(endpoint)
            return Attempt("429", Outcome.BACKPRESSURE, False, 429)

        await routing.route(None, Transport.HTTP, full, 100.0, level=STANDARD)
        assert len(sent) == 2  # the other endpoint had not said it was full: tried
        sent.clear()
        answered = await routing.route(None, Transport.HTTP, full, 100.0, level=SHEDDABLE)
        assert (answered.answer, len(sent)) == ("429", 1)

    run(body)
