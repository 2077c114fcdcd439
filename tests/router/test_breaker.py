"""The revision breaker on a simulated clock: scripted admits and answers, then the phase."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from davit_router.breaker import (
    Breaker,
    BreakerSettings,
    BreakerState,
    Phase,
    admit,
    finish,
)


@dataclass(frozen=True)
class Step:
    """Either an admit at `at`, expecting `admitted`, or (ok set) the end of a request."""

    at: float
    admitted: bool | None = None
    ok: bool | None = None


def admitted(at: float) -> Step:
    return Step(at, admitted=True)


def refused(at: float) -> Step:
    return Step(at, admitted=False)


def answer(at: float, ok: bool) -> Step:
    return Step(at, ok=ok)


def traffic(at: float, requests: int, failures: int) -> tuple[Step, ...]:
    """`requests` requests admitted and answered one after another at `at`, the first
    `failures` of them failing."""
    steps: list[Step] = []
    for i in range(requests):
        steps += [admitted(at), answer(at, ok=i >= failures)]
    return tuple(steps)


def run(steps: tuple[Step, ...], settings: BreakerSettings) -> BreakerState:
    state = BreakerState()
    for index, step in enumerate(steps):
        if step.ok is not None:
            state = finish(state, step.ok, step.at, settings)
            continue
        allowed, state = admit(state, step.at, settings)
        assert allowed == step.admitted, f"step {index} at {step.at}"
    return state


OPENED = traffic(1.0, 20, 10)  # half of twenty failed at t=1: open until 6
PROBES = (admitted(6.0), admitted(6.0), admitted(6.0))


@dataclass(frozen=True)
class Case:
    reason: str
    steps: tuple[Step, ...]
    want: Phase
    settings: BreakerSettings = field(default_factory=BreakerSettings)


CASES = [
    Case("all well: closed", traffic(1.0, 100, 0), Phase.CLOSED),
    Case("half of twenty failed: opens", OPENED, Phase.OPEN),
    Case("nineteen answers are too few to judge", traffic(1.0, 19, 19), Phase.CLOSED),
    Case("nine of twenty is below the threshold", traffic(1.0, 20, 9), Phase.CLOSED),
    Case("refuses while open", (*OPENED, refused(1.0), refused(5.99)), Phase.OPEN),
    Case("half-opens after open_seconds", (*OPENED, admitted(6.0)), Phase.HALF_OPEN),
    # Three probes out, no answer yet: nothing more goes through.
    Case("half-open lets three probes through", (*OPENED, *PROBES, refused(6.0)), Phase.HALF_OPEN),
    Case(
        "two probes succeeding are not enough",
        (*OPENED, *PROBES, answer(6.1, True), answer(6.1, True), refused(6.2)),
        Phase.HALF_OPEN,
    ),
    Case(
        "closes once all probes succeed",
        (*OPENED, *PROBES, *[answer(6.1, True)] * 3, admitted(6.2)),
        Phase.CLOSED,
    ),
    # The failures before the opening are forgiven: one more failure does not reopen it.
    Case(
        "closes with an empty window",
        (*OPENED, *PROBES, *[answer(6.1, True)] * 3, *traffic(6.2, 1, 1)),
        Phase.CLOSED,
    ),
    Case(
        "a probe failing reopens it",
        (*OPENED, *PROBES, answer(6.1, True), answer(6.5, False)),
        Phase.OPEN,
    ),
    # The open time starts again at the failed probe (6.5), not at the first opening.
    Case(
        "reopened, it refuses for open_seconds again",
        (*OPENED, *PROBES, answer(6.5, False), refused(11.49), admitted(11.5)),
        Phase.HALF_OPEN,
    ),
    # The probes still in flight when one failed end while open: they change nothing.
    Case(
        "answers after reopening change nothing",
        (*OPENED, *PROBES, answer(6.5, False), answer(6.6, True), answer(6.6, True)),
        Phase.OPEN,
    ),
    # 12 failures at the end of one bucket, 9 early in the next: the sliding window at 10.5
    # counts 9 + 12 * 0.95 = 20.4; a single tumbling bucket would see 12 and 9, too few each.
    Case(
        "a burst straddling a bucket boundary opens",
        (*traffic(9.0, 12, 12), *traffic(10.5, 9, 9)),
        Phase.OPEN,
    ),
    Case(
        "one failure fewer does not",
        (*traffic(9.0, 12, 12), *traffic(10.5, 8, 8)),
        Phase.CLOSED,
    ),
    Case(
        "failures two buckets old are forgotten",
        (*traffic(1.0, 15, 15), *traffic(21.0, 10, 10)),
        Phase.CLOSED,
    ),
    Case(
        "concurrency limit refuses without opening",
        (admitted(1.0), admitted(1.0), *[refused(1.0)] * 50, answer(2.0, True), admitted(2.0)),
        Phase.CLOSED,
        BreakerSettings(max_concurrent=2),
    ),
    # The limit holds in half-open too, before the probe count.
    Case(
        "concurrency limit holds while half-open",
        (*OPENED, admitted(6.0), admitted(6.0), refused(6.0)),
        Phase.HALF_OPEN,
        BreakerSettings(max_concurrent=2),
    ),
    Case(
        "no limit when max_concurrent is 0",
        tuple(admitted(1.0) for _ in range(1000)),
        Phase.CLOSED,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.reason for c in CASES])
def test_breaker(case: Case) -> None:
    assert run(case.steps, case.settings).phase is case.want


def test_in_flight_counts_every_admitted_request_until_it_finishes() -> None:
    settings = BreakerSettings(max_concurrent=2)
    state = run((admitted(0.0), admitted(0.0), refused(0.0)), settings)
    assert state.in_flight == 2
    state = finish(state, True, 1.0, settings)
    assert state.in_flight == 1
    assert admit(state, 1.0, settings)[0]
    # A request admitted before the opening ends while open: counted out of flight only.
    state = run((admitted(0.0), *OPENED, answer(2.0, False)), BreakerSettings())
    assert (state.phase, state.in_flight, state.requests) == (Phase.OPEN, 0, 0)


def test_holder_names_its_phase_for_metrics() -> None:
    breaker = Breaker(BreakerSettings(min_requests=2, half_open_probes=1))
    assert breaker.phase == "closed"
    for _ in range(2):
        assert breaker.admit(0.0)
        breaker.finish(False, 0.0)
    assert breaker.phase == "open"
    assert not breaker.admit(4.0)
    assert breaker.admit(5.0)
    assert breaker.phase == "half_open"
    breaker.finish(True, 5.1)
    assert breaker.phase == "closed"
