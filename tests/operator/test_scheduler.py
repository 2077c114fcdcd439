"""The wake-up queue on a simulated clock, then the asyncio scheduler on a real loop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from davit_operator.scheduler import Backoff, Scheduler, WakeQueue, retry_delay

# ---- the pure queue: scripts of wakes, takes and finished passes ---------------------------


@dataclass(frozen=True)
class Wake:
    key: str
    now: float = 0.0
    settle: bool = False


@dataclass(frozen=True)
class WakeAt:
    key: str
    at: float


@dataclass(frozen=True)
class Take:
    """At `now`, the queue hands out `want` (None: nothing is due)."""

    now: float
    want: str | None


@dataclass(frozen=True)
class Done:
    key: str
    now: float
    failed: bool = False
    wake_at: float | None = None


@dataclass(frozen=True)
class NextTime:
    want: float | None


Step = Wake | WakeAt | Take | Done | NextTime


@dataclass(frozen=True)
class Case:
    reason: str
    steps: list[Step]
    settle: float = 0.0  # the queue's settle_seconds


BACKOFF = Backoff(first_seconds=1, max_seconds=8)

CASES = [
    Case(
        "a burst of fifty events before the pass starts is one pass",
        [*[Wake("a")] * 50, Take(0, "a"), Take(0, None), Done("a", 1), Take(1, None)],
    ),
    Case(
        "keys run in the order they were first woken",
        [Wake("a"), Wake("b"), Wake("a"), Take(0, "a"), Take(0, "b"), Take(0, None)],
    ),
    Case(
        "a wake during the pass runs the key once more after it, never twice at once",
        [Wake("a"), Take(0, "a"), Wake("a"), Wake("a"), Take(0, None), Done("a", 1),
         Take(1, "a"), Done("a", 2), Take(2, None)],
    ),
    Case(
        "a scheduled wake-up is not due before its time",
        [WakeAt("a", 10), NextTime(10), Take(9.9, None), Take(10, "a"), NextTime(None)],
    ),
    Case(
        "the earliest of several scheduled times wins",
        [WakeAt("a", 10), WakeAt("a", 5), WakeAt("a", 20), NextTime(5), Take(5, "a"),
         Done("a", 6), Take(10, None), Take(20, None)],
    ),
    Case(
        "an immediate wake supersedes a scheduled one (the pass returns its next time)",
        [WakeAt("a", 10), Wake("a"), Take(0, "a"), Done("a", 1), NextTime(None), Take(10, None)],
    ),
    Case(
        "the time a pass asks for is scheduled when it ends",
        [Wake("a"), Take(0, "a"), Done("a", 1, wake_at=30), Take(29, None), Take(30, "a")],
    ),
    Case(
        "a key falling due while its pass runs waits for the pass, then runs",
        [Wake("a"), Take(0, "a"), WakeAt("a", 1), Take(2, None), Done("a", 3), Take(3, "a")],
    ),
    Case(
        "failures back off exponentially to the cap",
        [Wake("a"), Take(0, "a"), Done("a", 0, failed=True), Take(0.9, None), Take(1, "a"),
         Done("a", 1, failed=True), Take(2.9, None), Take(3, "a"),
         Done("a", 3, failed=True), Take(7, "a"), Done("a", 7, failed=True), Take(15, "a"),
         Done("a", 15, failed=True), NextTime(23)],
    ),
    Case(
        "a wake during a failing pass does not cut its backoff short",
        [Wake("a"), Take(0, "a"), Wake("a"), Done("a", 0, failed=True), Take(0.5, None),
         Take(1, "a")],
    ),
    Case(
        "an event after a failure runs at once: something changed",
        [Wake("a"), Take(0, "a"), Done("a", 0, failed=True), Wake("a"), Take(0.1, "a")],
    ),
    Case(
        "a success resets the backoff",
        [Wake("a"), Take(0, "a"), Done("a", 0, failed=True), Take(1, "a"), Done("a", 1),
         Wake("a"), Take(1, "a"), Done("a", 1, failed=True), NextTime(2)],
    ),
    Case(
        "due keys and woken keys share the queue, one pass each",
        [WakeAt("b", 1), Wake("a"), Wake("b"), Take(2, "a"), Take(2, "b"), Take(2, None)],
    ),
    # Settling (0.25 s): one pass after the flurry of events that follows a write.
    Case(
        "settling wakes within the settle time give one pass, a settle time after the first",
        [Wake("a", 0, True), Wake("a", 0.1, True), Wake("a", 0.2, True), Take(0.24, None),
         Take(0.25, "a"), Take(0.25, None)],
        settle=0.25,
    ),
    Case(
        "a steady stream of events delays a key by no more than the settle time",
        [*[Wake("a", t / 10, True) for t in range(10)], Take(0.25, "a")],
        settle=0.25,
    ),
    Case(
        "a wake that does not settle (a user's change) runs at once, even while settling",
        [Wake("a", 0, True), Wake("a", 0.1), Take(0.1, "a"), Done("a", 0.2), Take(0.25, None)],
        settle=0.25,
    ),
    Case(
        "a child's wake during the pass runs it once more, settled after the pass ends",
        [Wake("a", 0), Take(0, "a"), Wake("a", 0.3, True), Done("a", 1), Take(1.2, None),
         Take(1.25, "a")],
        settle=0.25,
    ),
    Case(
        "a change to the model during the pass runs it again at once when the pass ends",
        [Wake("a", 0), Take(0, "a"), Wake("a", 0.2, True), Wake("a", 0.3), Done("a", 1),
         Take(1, "a")],
        settle=0.25,
    ),
    Case(
        "a time the pass asks for, earlier than the settled rerun, wins",
        [Wake("a", 0), Take(0, "a"), Wake("a", 0.3, True), Done("a", 1, wake_at=1.1),
         Take(1.1, "a")],
        settle=0.5,
    ),
    Case(
        "a scheduled time earlier than the settle time stands",
        [WakeAt("a", 0.1), Wake("a", 0, True), Take(0.1, "a")],
        settle=0.25,
    ),
    Case(
        "an event brings a later scheduled time forward, settled",
        [WakeAt("a", 10), Wake("a", 0, True), Take(0.25, "a")],
        settle=0.25,
    ),
    Case(
        "a wake during a failing pass still does not cut its backoff short",
        [Wake("a", 0), Take(0, "a"), Wake("a", 0.3, True), Done("a", 0.5, failed=True),
         Take(1.4, None), Take(1.5, "a")],
        settle=0.25,
    ),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.reason for c in CASES])
def test_wake_queue(case: Case) -> None:
    queue: WakeQueue[str] = WakeQueue(BACKOFF, settle_seconds=case.settle)
    for index, step in enumerate(case.steps):
        match step:
            case Wake(key, now, settle):
                queue.wake(key, now, settle=settle)
            case WakeAt(key, at):
                queue.wake_at(key, at)
            case Take(now, want):
                assert queue.take(now) == want, f"step {index}: {step}"
            case Done(key, now, failed, wake_at):
                queue.done(key, now, failed=failed, wake_at=wake_at)
            case NextTime(want):
                assert queue.next_time() == want, f"step {index}: {step}"


def test_forget_drops_a_deleted_objects_pending_work() -> None:
    queue: WakeQueue[str] = WakeQueue(BACKOFF)
    queue.wake("a", 0)
    queue.wake_at("b", 5)
    queue.forget("a")
    queue.forget("b")
    assert queue.take(10) is None
    assert queue.next_time() is None


@pytest.mark.parametrize(
    ("failures", "want"),
    [
        (1, 1.0),  # the first retry comes after the first delay
        (2, 2.0),  # then doubles
        (4, 8.0),  # reaching the cap
        (5, 8.0),  # and staying there
        (10_000, 8.0),  # however long the streak
    ],
)
def test_retry_delay(failures: int, want: float) -> None:
    assert retry_delay(failures, BACKOFF) == want


# ---- the asyncio runner: real tasks, a loop-driven clock ----------------------------------


def test_scheduler_coalesces_bounds_concurrency_and_keeps_one_pass_per_key() -> None:
    async def scenario() -> tuple[list[str], int]:
        passes: list[str] = []
        running: set[str] = set()
        peak = 0

        async def reconcile(key: str) -> float | None:
            nonlocal peak
            assert key not in running, f"{key} ran twice at once"
            running.add(key)
            peak = max(peak, len(running))
            passes.append(key)
            await asyncio.sleep(0.02)
            running.discard(key)
            return None

        scheduler: Scheduler[str] = Scheduler(reconcile, concurrency=2)
        runner = asyncio.create_task(scheduler.run())
        for _ in range(20):
            for key in "abcd":
                scheduler.wake(key)
        await asyncio.sleep(0.01)
        scheduler.wake("a")  # during a's pass: one more pass of a, after it
        await asyncio.sleep(0.2)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        return passes, peak

    passes, peak = asyncio.run(scenario())
    assert sorted(passes) == ["a", "a", "b", "c", "d"]
    assert peak == 2


def test_scheduler_runs_the_time_a_pass_returns_and_retries_failures() -> None:
    async def scenario() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        seen: list[tuple[str, float]] = []

        async def reconcile(key: str) -> float | None:
            seen.append((key, loop.time() - start))
            if key == "timed" and len([k for k, _ in seen if k == key]) == 1:
                return loop.time() + 0.15
            if key == "flaky" and len([k for k, _ in seen if k == key]) == 1:
                raise RuntimeError("API server busy")
            return None

        scheduler: Scheduler[str] = Scheduler(
            reconcile,
            concurrency=4,
            backoff=Backoff(first_seconds=0.1, max_seconds=1),
            clock=loop.time,
        )
        runner = asyncio.create_task(scheduler.run())
        scheduler.wake("timed")
        scheduler.wake("flaky")
        await asyncio.sleep(0.4)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        return seen

    seen = asyncio.run(scenario())
    timed = [t for k, t in seen if k == "timed"]
    flaky = [t for k, t in seen if k == "flaky"]
    assert len(timed) == 2
    assert 0.14 <= timed[1] - timed[0] < 0.3
    assert len(flaky) == 2
    assert 0.09 <= flaky[1] - flaky[0] < 0.3
