"""Unit tests for batch planning, merge/split and the Batcher's queueing rules."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import pytest

from davit_runtime.batching import (
    Arrays,
    Batcher,
    BatchPolicy,
    merge_inputs,
    split_outputs,
    take_count,
)
from davit_runtime.errors import InferenceError, Status


@pytest.mark.parametrize(
    ("sizes", "max_batch", "preferred", "expired", "blocked", "expected"),
    [
        ([], 8, (), True, False, 0),  # nothing queued
        ([1, 1, 1], 8, (), False, False, 0),  # not full, delay running: wait
        ([1, 1, 1], 8, (), True, False, 3),  # delay over: run all
        ([4, 4], 8, (), False, False, 2),  # exactly full: run now
        ([4, 3, 2], 8, (), False, False, 2),  # next does not fit: full
        ([1, 1], 8, (), False, True, 2),  # next cannot join (other shape): run now
        ([1, 1], 8, (2, 4), False, False, 2),  # reached a preferred size: run now
        ([1, 1, 1], 8, (2, 4), False, False, 0),  # between preferred sizes: wait
        ([1, 1, 1], 8, (2, 4), True, False, 2),  # delay over: largest preferred prefix
        ([3], 8, (2, 4), True, False, 1),  # no preferred prefix: run what is there
        ([9], 8, (), False, False, 1),  # oversized single request runs alone
        ([1, 1, 1], 0, (), False, False, 1),  # non-batching model: one at a time
        ([2, 2, 2, 2, 2], 8, (), False, False, 4),
    ],
)
def test_take_count(
    sizes: list[int],
    max_batch: int,
    preferred: tuple[int, ...],
    expired: bool,
    blocked: bool,
    expected: int,
) -> None:
    assert take_count(sizes, max_batch, preferred, expired, blocked) == expected


def test_merge_concatenates_per_input_and_split_restores_order() -> None:
    parts: list[Arrays] = [
        [np.full((1, 2), i, np.float32), np.full((1,), i, np.int64)] for i in range(3)
    ]
    parts.append([np.full((2, 2), 9, np.float32), np.full((2,), 9, np.int64)])
    merged = merge_inputs(parts)
    assert merged[0].shape == (5, 2)
    assert merged[1].tolist() == [0, 1, 2, 9, 9]
    pieces = split_outputs([merged[0] * 10], [1, 1, 1, 2])
    assert [p[0].shape for p in pieces] == [(1, 2), (1, 2), (1, 2), (2, 2)]
    assert [float(p[0][0, 0]) for p in pieces] == [0.0, 10.0, 20.0, 90.0]


def test_merge_single_request_is_not_copied() -> None:
    array = np.zeros((1, 4), np.float32)
    assert merge_inputs([[array]])[0] is array


def test_split_rejects_outputs_without_the_batch_dim() -> None:
    with pytest.raises(InferenceError, match="expected batch dim 3"):
        split_outputs([np.zeros((2, 4))], [1, 2])


class RecordingRunner:
    """Doubles its input; records batch sizes; can be held to let a queue build up."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, inputs: Arrays) -> Arrays:
        self.gate.wait(10)
        self.batches.append(int(inputs[0].shape[0]))
        return [inputs[0] * 2]


def run_async(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def policy(**overrides: Any) -> BatchPolicy:
    values: dict[str, Any] = {"max_batch_size": 8, "max_queue_delay_s": 0.0}
    values.update(overrides)
    return BatchPolicy(**values)


def test_requests_queued_while_busy_are_merged_and_answered_in_order() -> None:
    async def scenario() -> tuple[list[int], list[float]]:
        runner = RecordingRunner()
        runner.gate.clear()
        batcher = Batcher("m", policy(), [runner], asyncio.get_running_loop())
        first = batcher.submit([np.full((1, 1), 0.0, np.float32)], 1)
        await asyncio.sleep(0.05)  # the executor holds request 0
        rest = [batcher.submit([np.full((1, 1), float(i), np.float32)], 1) for i in range(1, 6)]
        runner.gate.set()
        results = await asyncio.gather(first, *rest)
        batcher.stop()
        return runner.batches, [float(r[0][0, 0]) for r in results]

    batches, values = run_async(scenario())
    assert batches == [1, 5]
    assert values == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]


def test_adaptive_delay_does_not_hold_a_lone_request() -> None:
    async def scenario() -> float:
        batcher = Batcher(
            "m", policy(max_queue_delay_s=2.0), [RecordingRunner()], asyncio.get_running_loop()
        )
        started = time.monotonic()
        await batcher.submit([np.zeros((1, 1), np.float32)], 1)
        batcher.stop()
        return time.monotonic() - started

    assert run_async(scenario()) < 1.0


def test_fixed_delay_waits_for_more_requests() -> None:
    async def scenario() -> list[int]:
        runner = RecordingRunner()
        batcher = Batcher(
            "m",
            policy(max_queue_delay_s=0.3, adaptive_delay=False),
            [runner],
            asyncio.get_running_loop(),
        )
        first = batcher.submit([np.zeros((1, 1), np.float32)], 1)
        await asyncio.sleep(0.05)
        second = batcher.submit([np.zeros((1, 1), np.float32)], 1)
        await asyncio.gather(first, second)
        batcher.stop()
        return runner.batches

    assert run_async(scenario()) == [2]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_queue": 2}, "queue is full"),
        ({"max_in_flight": 3}, "3 requests in flight"),
    ],
)
def test_submit_sheds_load(overrides: dict[str, Any], message: str) -> None:
    async def scenario() -> InferenceError:
        runner = RecordingRunner()
        runner.gate.clear()
        batcher = Batcher("m", policy(**overrides), [runner], asyncio.get_running_loop())
        accepted = [batcher.submit([np.zeros((1, 1), np.float32)], 1)]
        await asyncio.sleep(0.05)  # first one is executing, no longer queued
        accepted += [batcher.submit([np.zeros((1, 1), np.float32)], 1) for _ in range(2)]
        try:
            batcher.submit([np.zeros((1, 1), np.float32)], 1)
        except InferenceError as error:
            caught = error
        else:
            raise AssertionError("expected the request to be shed")
        runner.gate.set()
        await asyncio.gather(*accepted)
        batcher.stop()
        return caught

    error = run_async(scenario())
    assert error.status is Status.RESOURCE_EXHAUSTED
    assert message in error.message


def test_drain_refuses_new_requests_and_waits_for_in_flight() -> None:
    async def scenario() -> tuple[bool, InferenceError | None, int]:
        runner = RecordingRunner()
        runner.gate.clear()
        batcher = Batcher("m", policy(), [runner], asyncio.get_running_loop())
        pending = batcher.submit([np.zeros((1, 1), np.float32)], 1)
        asyncio.get_running_loop().call_later(0.1, runner.gate.set)
        drained = await batcher.drain(5.0)
        refused: InferenceError | None = None
        try:
            batcher.submit([np.zeros((1, 1), np.float32)], 1)
        except InferenceError as error:
            refused = error
        result = await pending
        batcher.stop()
        return drained, refused, int(result[0].shape[0])

    drained, refused, size = run_async(scenario())
    assert drained
    assert refused is not None
    assert refused.status is Status.UNAVAILABLE
    assert size == 1


def test_runner_failure_fails_the_whole_batch_with_internal_error() -> None:
    def broken(inputs: Arrays) -> Arrays:
        raise RuntimeError("boom")

    async def scenario() -> BaseException | None:
        batcher = Batcher("m", policy(), [broken], asyncio.get_running_loop())
        future = batcher.submit([np.zeros((1, 1), np.float32)], 1)
        try:
            await future
        except InferenceError as error:
            return error
        finally:
            batcher.stop()
        return None

    error = run_async(scenario())
    assert isinstance(error, InferenceError)
    assert error.status is Status.INTERNAL
    assert "boom" in error.message
