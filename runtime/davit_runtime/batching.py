"""Dynamic batching: a per-model queue fed by the event loop and drained by executor threads.

The event loop only enqueues (`Batcher.submit`) and resolves futures; merging inputs, running
the model and splitting outputs happen on the model's executor threads, and each finished batch
costs the loop one `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from davit_runtime.errors import InferenceError, Status

Arrays = list[np.ndarray[Any, Any]]


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int  # 0: the model does not batch, one request per run
    max_queue_delay_s: float
    preferred_batch_sizes: tuple[int, ...] = ()
    adaptive_delay: bool = True
    max_queue: int = 512
    max_in_flight: int = 1024
    queue_timeout_s: float = 5.0
    request_timeout_s: float = 30.0


def take_count(
    sizes: Sequence[int],
    max_batch_size: int,
    preferred: Sequence[int],
    delay_expired: bool,
    next_blocked: bool = False,
) -> int:
    """How many requests from the front of the queue to run now (0: wait for more).

    `sizes` are the batch sizes of the queued requests that can share one batch (same trailing
    shapes), in order; `next_blocked` says a further queued request exists that cannot join.
    A batch runs at once when it is full (max size reached, or the next request does not fit or
    cannot join), or when its total equals a preferred size; otherwise it waits until the oldest
    request has waited max_queue_delay, then runs the largest preferred-size prefix, or all.
    """
    if not sizes:
        return 0
    if max_batch_size <= 0:
        return 1
    total = 0
    count = 0
    prefix_counts: dict[int, int] = {}
    full = next_blocked
    for size in sizes:
        if total + size > max_batch_size:
            full = True
            break
        total += size
        count += 1
        prefix_counts[total] = count
    if count == 0:  # a single request larger than the batch limit: run it alone
        return 1
    if full or total >= max_batch_size:
        return count
    if total in preferred:
        return count
    if not delay_expired:
        return 0
    best = max((p for p in preferred if p in prefix_counts), default=0)
    return prefix_counts[best] if best else count


def merge_inputs(parts: Sequence[Arrays]) -> Arrays:
    """Concatenate each input position along dim 0 (no copy for a single request)."""
    if len(parts) == 1:
        return list(parts[0])
    return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]


def split_outputs(outputs: Arrays, batch_sizes: Sequence[int]) -> list[Arrays]:
    """Split batched outputs back into per-request views, in request order."""
    total = sum(batch_sizes)
    for index, out in enumerate(outputs):
        if out.ndim == 0 or out.shape[0] != total:
            raise InferenceError(
                Status.INTERNAL,
                f"model output {index} has shape {list(out.shape)}; expected batch dim {total}",
            )
    if len(batch_sizes) == 1:
        return [outputs]
    results: list[Arrays] = []
    start = 0
    for size in batch_sizes:
        end = start + size
        results.append([out[start:end] for out in outputs])
        start = end
    return results


@dataclass(slots=True, eq=False)
class Pending:
    inputs: Arrays
    batch_size: int
    shape_key: tuple[tuple[int, ...], ...]
    future: asyncio.Future[Arrays]
    enqueued_at: float
    timer: asyncio.TimerHandle | None = None
    finished: bool = field(default=False)


RunFn = Callable[[Arrays], Arrays]
ObserveFn = Callable[[int], None]


class Batcher:
    """One model's queue and executor threads."""

    def __init__(
        self,
        name: str,
        policy: BatchPolicy,
        runners: Sequence[RunFn],
        loop: asyncio.AbstractEventLoop,
        *,
        observe_batch: ObserveFn | None = None,
        thread_init: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.policy = policy
        self._loop = loop
        self._queue: deque[Pending] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._observe_batch = observe_batch
        self._thread_init = thread_init
        self.in_flight = 0
        self.draining = False
        self._last_batch = 0  # samples in the previous batch (adaptive delay)
        self._idle = asyncio.Event()
        self._idle.set()
        self._threads = [
            threading.Thread(
                target=self._worker, args=(run,), name=f"davit-{name}-{i}", daemon=True
            )
            for i, run in enumerate(runners)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    # ---- event-loop side -------------------------------------------------------------------
    def submit(self, inputs: Arrays, batch_size: int) -> asyncio.Future[Arrays]:
        """Enqueue one request; raises InferenceError when shedding load or draining."""
        policy = self.policy
        if self.draining:
            raise InferenceError(Status.UNAVAILABLE, f"model {self.name!r} is draining")
        if self.in_flight >= policy.max_in_flight:
            raise InferenceError(
                Status.RESOURCE_EXHAUSTED,
                f"model {self.name!r} has {self.in_flight} requests in flight "
                f"(maxInFlight {policy.max_in_flight}); retry later",
            )
        if len(self._queue) >= policy.max_queue:
            raise InferenceError(
                Status.RESOURCE_EXHAUSTED,
                f"model {self.name!r} queue is full (maxQueue {policy.max_queue}); retry later",
            )
        loop = self._loop
        future: asyncio.Future[Arrays] = loop.create_future()
        shape_key = tuple(a.shape[1:] for a in inputs)
        item = Pending(inputs, batch_size, shape_key, future, time.monotonic())
        item.timer = loop.call_later(policy.request_timeout_s, self._expire, item)
        self.in_flight += 1
        self._idle.clear()
        with self._cond:
            self._queue.append(item)
            self._cond.notify()
        return future

    def _finish(self, item: Pending) -> bool:
        if item.finished:
            return False
        item.finished = True
        if item.timer is not None:
            item.timer.cancel()
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()
        return not item.future.done()

    def _expire(self, item: Pending) -> None:
        if self._finish(item):
            item.future.set_exception(
                InferenceError(
                    Status.DEADLINE_EXCEEDED,
                    f"request to model {self.name!r} timed out after "
                    f"{self.policy.request_timeout_s * 1000:.0f} ms",
                )
            )

    def _resolve(
        self, batch: list[Pending], results: list[Arrays] | None, error: BaseException | None
    ) -> None:
        for index, item in enumerate(batch):
            if not self._finish(item):
                continue
            if results is not None:
                item.future.set_result(results[index])
            else:
                assert error is not None
                item.future.set_exception(error)

    def _reject_expired(self, expired: list[Pending]) -> None:
        error = InferenceError(
            Status.RESOURCE_EXHAUSTED,
            f"model {self.name!r}: request waited longer than queueTimeout "
            f"{self.policy.queue_timeout_s * 1000:.0f} ms; retry later",
        )
        self._resolve(expired, None, error)

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new requests and wait for in-flight ones; True when all finished."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except TimeoutError:
            return False

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5.0)

    # ---- executor side ---------------------------------------------------------------------
    def _next_batch(self) -> tuple[list[Pending], list[Pending]] | None:
        """Block until a batch is due; returns (batch, expired) or None when stopping."""
        policy = self.policy
        queue = self._queue
        with self._cond:
            while True:
                if self._stopping:
                    return None
                if not queue:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                expired: list[Pending] = []
                while queue and (
                    queue[0].finished or now - queue[0].enqueued_at > policy.queue_timeout_s
                ):
                    expired.append(queue.popleft())
                if expired:
                    return [], expired
                head_key = queue[0].shape_key
                sizes: list[int] = []
                next_blocked = False
                for item in queue:
                    if item.shape_key != head_key:
                        next_blocked = True
                        break
                    sizes.append(item.batch_size)
                    if len(sizes) >= max(policy.max_batch_size, 1):
                        break
                deadline = queue[0].enqueued_at + policy.max_queue_delay_s
                delay_over = now >= deadline or (
                    policy.adaptive_delay and sum(sizes) >= self._last_batch
                )
                count = take_count(
                    sizes,
                    policy.max_batch_size,
                    policy.preferred_batch_sizes,
                    delay_over,
                    next_blocked,
                )
                if count:
                    batch = [queue.popleft() for _ in range(count)]
                    self._last_batch = sum(item.batch_size for item in batch)
                    return batch, []
                self._cond.wait(deadline - now)

    def _worker(self, run: RunFn) -> None:
        if self._thread_init is not None:
            self._thread_init()
        call_soon = self._loop.call_soon_threadsafe
        while True:
            picked = self._next_batch()
            if picked is None:
                return
            batch, expired = picked
            if expired:
                call_soon(self._reject_expired, expired)
                continue
            sizes = [item.batch_size for item in batch]
            try:
                outputs = run(merge_inputs([item.inputs for item in batch]))
                results = (
                    [outputs] if self.policy.max_batch_size <= 0 else split_outputs(outputs, sizes)
                )
            except InferenceError as error:
                call_soon(self._resolve, batch, None, error)
            except Exception as error:
                failure = InferenceError(Status.INTERNAL, f"inference failed: {error}")
                call_soon(self._resolve, batch, None, failure)
            else:
                call_soon(self._resolve, batch, results, None)
            if self._observe_batch is not None:
                self._observe_batch(sum(sizes))
