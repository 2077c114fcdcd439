"""Coalesced wake-ups: child events and planner-computed times → one reconcile pass per model.

Two layers, as in the runtime's batcher: `WakeQueue` decides (pure, the clock is an argument, so
its rules are table-tested on a simulated clock), `Scheduler` runs passes on asyncio with bounded
concurrency and feeds the queue the real clock.

The queue's contract, per key:
- a key is queued at most once: any number of wakes before its pass starts give one pass;
- a key woken with `settle=True` runs `settle_seconds` after that wake, not at once: the
  events that follow a write come in a flurry (a Deployment's status, its pod created, bound,
  ready, within a few hundred milliseconds), and one pass after the flurry writes status once
  where a pass per event would write it at each step; the first such wake fixes the time, so a
  steady stream of events delays a key by no more than that, and a wake without settling (a
  user's change) runs it at once;
- a key never runs twice at once: a wake during its pass marks it dirty, and it runs once more
  when the pass ends (that pass sees every change that arrived meanwhile);
- `wake_at(key, t)` schedules a pass at time t (a pause that ends, an analysis interval); the
  earliest of several pending times wins, and an immediate wake supersedes them (the pass
  returns its own next time);
- a failed pass is retried after an exponential backoff (`retry_delay`), and a dirty mark does
  not cut the backoff short: a spec that cannot be realised must not become a hot retry loop.
  Wakes from events that arrive later run at once (children's, once settled): something changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    """Retry delays after consecutive failures: first, doubling, capped."""

    first_seconds: float = 1.0
    max_seconds: float = 300.0


def retry_delay(failures: int, backoff: Backoff) -> float:
    """Seconds to wait after the `failures`-th consecutive failure (failures >= 1)."""
    exponent = min(max(failures, 1) - 1, 32)  # 2**32 s is far past any cap
    return float(min(backoff.first_seconds * 2**exponent, backoff.max_seconds))


class WakeQueue(Generic[K]):
    """Which key to reconcile next, and when; no I/O and no clock of its own."""

    def __init__(self, backoff: Backoff = Backoff(), settle_seconds: float = 0.0) -> None:
        self._backoff = backoff
        self._settle_seconds = settle_seconds
        self._ready: dict[K, None] = {}  # insertion-ordered: FIFO among keys due now
        self._due: dict[K, float] = {}  # the earliest pending time per key
        self._heap: list[tuple[float, int, K]] = []  # lazily cleaned copy of _due, in time order
        self._sequence = 0  # tie-breaker so keys themselves are never compared
        self._running: set[K] = set()
        # Woken during its pass; the value: whether every such wake asked to settle.
        self._dirty: dict[K, bool] = {}
        self._failures: dict[K, int] = {}

    def wake(self, key: K, now: float, *, settle: bool = False) -> None:
        """Reconcile `key` as soon as a worker is free; with `settle`, not before
        `settle_seconds` from now (see the module's contract)."""
        if key in self._running:
            self._dirty[key] = self._dirty.get(key, True) and settle
            return
        if settle and self._settle_seconds > 0:
            self.wake_at(key, now + self._settle_seconds)
            return
        self._due.pop(key, None)
        self._ready.setdefault(key, None)

    def wake_at(self, key: K, when: float) -> None:
        """Reconcile `key` at `when` (or earlier, if something else wakes it)."""
        if key in self._ready:
            return
        if key in self._due and self._due[key] <= when:
            return
        self._due[key] = when
        self._sequence += 1
        heapq.heappush(self._heap, (when, self._sequence, key))

    def take(self, now: float) -> K | None:
        """The next key to reconcile now (marked running), or None if nothing is due."""
        self._promote_due(now)
        for key in self._ready:
            del self._ready[key]
            self._running.add(key)
            return key
        return None

    def done(
        self, key: K, now: float, *, failed: bool = False, wake_at: float | None = None
    ) -> None:
        """The pass for `key` ended; `wake_at` is the time the pass asked to run again."""
        self._running.discard(key)
        settle = self._dirty.pop(key, None)  # None: not woken during the pass
        if failed:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            self.wake_at(key, now + retry_delay(failures, self._backoff))
            return
        self._failures.pop(key, None)
        if settle is not None:
            # Settled when every wake during the pass was a child's (the flurry after the
            # pass's own writes); at once when one was a change to the model itself.
            self.wake(key, now, settle=settle)
        if wake_at is not None:
            self.wake_at(key, wake_at)

    def forget(self, key: K) -> None:
        """Drop every trace of `key` (its object is gone); a running pass may still finish."""
        self._ready.pop(key, None)
        self._due.pop(key, None)
        self._dirty.pop(key, None)
        self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        """Consecutive failed passes of `key` (0 after a success)."""
        return self._failures.get(key, 0)

    def retry_delay(self, key: K) -> float:
        """The backoff that a failure of `key`'s running pass would get."""
        return retry_delay(self.failures(key) + 1, self._backoff)

    def next_time(self) -> float | None:
        """When the earliest scheduled key falls due (None: nothing scheduled)."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def has_ready(self) -> bool:
        return bool(self._ready)

    def _drop_stale(self) -> None:
        while self._heap:
            when, _, key = self._heap[0]
            if self._due.get(key) == when:
                return
            heapq.heappop(self._heap)

    def _promote_due(self, now: float) -> None:
        deferred = []
        while True:
            self._drop_stale()
            if not self._heap or self._heap[0][0] > now:
                break
            entry = heapq.heappop(self._heap)
            key = entry[2]
            if key in self._running:
                deferred.append(entry)  # due while its pass runs: it runs right after
                continue
            del self._due[key]
            self._ready.setdefault(key, None)
        for entry in deferred:
            heapq.heappush(self._heap, entry)


class RetryLaterError(Exception):
    """A pass failed for a reason already understood (and reported where users look, e.g. in
    status): retried with backoff like any failure, logged as one line, never a traceback."""


# A pass returns the wall-clock time at which it wants to run again, or None.
Reconcile = Callable[[K], Awaitable[float | None]]


class Scheduler(Generic[K]):
    """Runs `reconcile(key)` for woken keys, at most `concurrency` at a time.

    A pass that raises is retried after the queue's backoff and logged: `RetryLaterError` as one
    line, anything else with a traceback the first time in a row and one line after that.
    Errors never escape the loop.
    """

    def __init__(
        self,
        reconcile: Reconcile[K],
        *,
        concurrency: int,
        backoff: Backoff = Backoff(),
        settle_seconds: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._reconcile = reconcile
        self._queue: WakeQueue[K] = WakeQueue(backoff, settle_seconds)
        self._clock = clock
        self._slots = asyncio.Semaphore(concurrency)
        self._changed = asyncio.Event()
        self._passes: set[asyncio.Task[None]] = set()

    def wake(self, key: K, *, settle: bool = False) -> None:
        self._queue.wake(key, self._clock(), settle=settle)
        self._changed.set()

    def wake_at(self, key: K, when: float) -> None:
        self._queue.wake_at(key, when)
        self._changed.set()

    def forget(self, key: K) -> None:
        self._queue.forget(key)

    async def run(self) -> None:
        """Dispatch passes until cancelled; running passes are cancelled with it."""
        try:
            while True:
                await self._slots.acquire()
                key = await self._next_key()
                task = asyncio.create_task(self._pass(key), name=f"reconcile {key}")
                self._passes.add(task)
                task.add_done_callback(self._passes.discard)
        finally:
            for task in list(self._passes):
                task.cancel()
            await asyncio.gather(*self._passes, return_exceptions=True)

    async def _next_key(self) -> K:
        while True:
            self._changed.clear()
            key = self._queue.take(self._clock())
            if key is not None:
                return key
            due = self._queue.next_time()
            timeout = None if due is None else max(due - self._clock(), 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)

    async def _pass(self, key: K) -> None:
        failed, again = False, None
        try:
            again = await self._reconcile(key)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            failed = True
            streak = self._queue.failures(key) + 1
            delay = self._queue.retry_delay(key)
            if isinstance(error, RetryLaterError):
                logger.warning("reconcile %s: %s (retry in %.0fs)", key, error, delay)
            elif streak == 1:
                logger.exception("reconcile %s failed; retrying in %.0fs", key, delay)
            else:
                logger.warning(
                    "reconcile %s failed again (%d in a row; retrying in %.0fs): %s",
                    key,
                    streak,
                    delay,
                    error,
                )
        finally:
            self._slots.release()
        self._queue.done(key, self._clock(), failed=failed, wake_at=again)
        self._changed.set()
