"""Outlier ejection on a simulated clock: the pure transitions, then the detector over a pool."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from davit_router.outlier import (
    EndpointHealth,
    Outcome,
    OutlierDetector,
    OutlierSettings,
    is_ejected,
    may_eject,
    outcome_of,
    record,
    sweep,
)

S = Outcome.SUCCESS
E = Outcome.ERROR
G = Outcome.GATEWAY
B = Outcome.BACKPRESSURE
A = Outcome.ABANDONED

DEFAULTS = OutlierSettings()


def at_seconds(*outcomes: Outcome, start: float = 0.0) -> tuple[tuple[float, Outcome], ...]:
    """One outcome a second from `start`."""
    return tuple((start + i, outcome) for i, outcome in enumerate(outcomes))


def replay(
    events: tuple[tuple[float, Outcome], ...], settings: OutlierSettings, allowed: bool
) -> EndpointHealth:
    health = EndpointHealth()
    for now, outcome in events:
        health = record(health, outcome, now, settings, allowed)
    return health


@dataclass(frozen=True)
class RecordCase:
    reason: str
    events: tuple[tuple[float, Outcome], ...]
    check_at: float
    want_ejected: bool
    want_until: float | None = None
    allowed: bool = True
    settings: OutlierSettings = field(default_factory=OutlierSettings)


RECORD_CASES = [
    RecordCase("five consecutive errors eject", at_seconds(E, E, E, E, E), 4.0, True, 34.0),
    RecordCase("four errors do not", at_seconds(E, E, E, E), 4.0, False),
    RecordCase("a success resets the streak", at_seconds(E, E, E, E, S, E), 5.0, False),
    # Connect failures, resets and timeouts say the endpoint is broken as much as a 5xx does.
    RecordCase("five gateway failures eject", at_seconds(G, G, G, G, G), 4.0, True, 34.0),
    RecordCase(
        "5xx and gateway failures make one streak", at_seconds(E, G, E, G, E), 4.0, True, 34.0
    ),
    RecordCase("429 never ejects", at_seconds(*[B] * 50), 49.0, False),
    # A 429 between errors neither counts nor forgives: the streak of five 5xx still ejects.
    RecordCase("429 does not reset the streak", at_seconds(E, E, B, E, E, B, E), 6.0, True, 36.0),
    # A gRPC client's own deadline passing first says nothing of the endpoint, either way.
    RecordCase("a client that gave up never ejects", at_seconds(*[A] * 50), 49.0, False),
    RecordCase(
        "a client that gave up does not reset the streak",
        at_seconds(E, E, A, E, E, A, E),
        6.0,
        True,
        36.0,
    ),
    RecordCase("the percent cap holds it back", at_seconds(E, E, E, E, E), 4.0, False, None, False),
    RecordCase("still out just before the end", at_seconds(E, E, E, E, E), 33.9, True, 34.0),
    RecordCase("back when the ejection ends", at_seconds(E, E, E, E, E), 34.0, False, 34.0),
    # Answers to attempts sent before the ejection do not lengthen it.
    RecordCase(
        "answers while ejected change nothing",
        at_seconds(E, E, E, E, E) + at_seconds(E, E, E, E, E, start=10.0),
        20.0,
        True,
        34.0,
    ),
    # No healthy interval in between (no sweep): the multiplier is 2.
    RecordCase(
        "the second ejection lasts twice the base",
        at_seconds(E, E, E, E, E) + at_seconds(E, E, E, E, E, start=40.0),
        44.0,
        True,
        44.0 + 60.0,
    ),
    RecordCase(
        "the third is capped at the maximum",
        at_seconds(*[E] * 5) + at_seconds(*[E] * 5, start=40.0) + at_seconds(*[E] * 5, start=110.0),
        114.0,
        True,
        114.0 + 70.0,
        settings=OutlierSettings(max_ejection_seconds=70.0),
    ),
    RecordCase(
        "a threshold of one ejects on the first error",
        at_seconds(S, E),
        1.0,
        True,
        31.0,
        settings=OutlierSettings(consecutive_errors=1),
    ),
]


@pytest.mark.parametrize("case", RECORD_CASES, ids=[c.reason for c in RECORD_CASES])
def test_record(case: RecordCase) -> None:
    health = replay(case.events, case.settings, case.allowed)
    assert is_ejected(health, case.check_at) == case.want_ejected
    assert health.ejected_until == case.want_until


def test_a_streak_held_back_by_the_cap_ejects_on_the_next_error_once_allowed() -> None:
    held = replay(at_seconds(*[E] * 7), DEFAULTS, allowed=False)
    assert held.consecutive_errors == 7
    ejected = record(held, E, 7.0, DEFAULTS, may_eject=True)
    assert ejected.ejected_until == 37.0
    assert ejected.consecutive_errors == 0


@dataclass(frozen=True)
class SweepCase:
    reason: str
    health: EndpointHealth
    want: EndpointHealth
    allowed: bool = True


NOW = 100.0

SWEEP_CASES = [
    SweepCase(
        "half of twenty failed: ejected",
        EndpointHealth(interval_successes=10, interval_failures=10),
        EndpointHealth(ejected_until=NOW + 30.0, ejections=1, ejected_in_interval=True),
    ),
    SweepCase(
        "nineteen answers are too few to judge",
        EndpointHealth(interval_successes=0, interval_failures=19),
        EndpointHealth(),
    ),
    SweepCase(
        "below the threshold: stays",
        EndpointHealth(interval_successes=11, interval_failures=9),
        EndpointHealth(),
    ),
    SweepCase(
        "the percent cap holds it back",
        EndpointHealth(interval_successes=0, interval_failures=40),
        EndpointHealth(),
        allowed=False,
    ),
    # Its ejection multiplier is 2, so this one lasts twice the base.
    SweepCase(
        "a repeat offender is ejected for longer",
        EndpointHealth(ejections=1, interval_failures=20, ejected_in_interval=True),
        EndpointHealth(ejected_until=NOW + 60.0, ejections=2, ejected_in_interval=True),
    ),
    SweepCase(
        "a whole interval in the pool forgives one ejection",
        EndpointHealth(ejections=2, ejected_until=50.0, interval_successes=30),
        EndpointHealth(ejections=1, ejected_until=50.0),
    ),
    SweepCase("the multiplier does not go below zero", EndpointHealth(), EndpointHealth()),
    # It came back during this interval: no forgiveness yet, but it is in the pool now.
    SweepCase(
        "ejected during the interval: not forgiven",
        EndpointHealth(ejections=1, ejected_until=NOW - 5.0, ejected_in_interval=True),
        EndpointHealth(ejections=1, ejected_until=NOW - 5.0),
    ),
    # Still out: its answers in flight at the ejection do not eject it a second time.
    SweepCase(
        "an ejected endpoint is not judged again",
        EndpointHealth(ejections=1, ejected_until=NOW + 10.0, interval_failures=25),
        EndpointHealth(ejections=1, ejected_until=NOW + 10.0, ejected_in_interval=True),
    ),
]


@pytest.mark.parametrize("case", SWEEP_CASES, ids=[c.reason for c in SWEEP_CASES])
def test_sweep(case: SweepCase) -> None:
    assert sweep(case.health, NOW, DEFAULTS, case.allowed) == case.want


@dataclass(frozen=True)
class CapCase:
    reason: str
    ejected: int
    total: int
    percent: int
    want: bool


CAP_CASES = [
    CapCase("a lone endpoint is never ejected at 50 %", 0, 1, 50, False),
    CapCase("one of two at 50 %", 0, 2, 50, True),
    CapCase("not the second of two at 50 %", 1, 2, 50, False),
    CapCase("one of three at 50 % (rounds down)", 0, 3, 50, True),
    CapCase("not two of three at 50 %", 1, 3, 50, False),
    CapCase("the fifth of ten at 50 %", 4, 10, 50, True),
    CapCase("not the sixth of ten at 50 %", 5, 10, 50, False),
    CapCase("0 % ejects nothing", 0, 10, 0, False),
    CapCase("100 % may eject a lone endpoint", 0, 1, 100, True),
    CapCase("an empty pool ejects nothing", 0, 0, 50, False),
]


@pytest.mark.parametrize("case", CAP_CASES, ids=[c.reason for c in CAP_CASES])
def test_may_eject(case: CapCase) -> None:
    settings = OutlierSettings(max_ejected_percent=case.percent)
    assert may_eject(case.ejected, case.total, settings) == case.want


@pytest.mark.parametrize(
    ("status", "want"),
    [
        (200, S),
        (404, S),  # the client's fault, not the endpoint's
        (429, B),
        (500, E),
        (503, E),
        (504, E),
    ],
)
def test_outcome_of(status: int, want: Outcome) -> None:
    assert outcome_of(status) is want


POOL = ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000", "10.0.0.4:8000"]


def fail(detector: OutlierDetector, endpoint: str, start: float, count: int = 5) -> None:
    for i in range(count):
        detector.record(endpoint, E, start + i * 0.1)


def test_detector_never_ejects_more_than_the_cap_and_ejects_the_held_one_later() -> None:
    detector = OutlierDetector(OutlierSettings(), POOL)
    for endpoint in POOL[:3]:
        fail(detector, endpoint, start=0.0)
    # Two of four at 50 %: the third failing endpoint stays in the pool.
    assert detector.available(POOL, 1.0) == POOL[2:]
    assert detector.ejected_count(1.0) == 2
    # Once the first two are back, the held endpoint's next error ejects it.
    detector.record(POOL[2], E, 31.0)
    assert detector.available(POOL, 31.0) == [POOL[0], POOL[1], POOL[3]]


def test_detector_returns_an_endpoint_after_its_ejection() -> None:
    detector = OutlierDetector(OutlierSettings(), POOL)
    fail(detector, POOL[0], start=0.0)  # the fifth error at 0.4
    assert detector.ejected(POOL[0], 30.3)
    assert not detector.ejected(POOL[0], 30.4)
    assert detector.available(POOL, 30.4) == POOL


def test_detector_ejects_on_failure_percentage_at_the_interval_end() -> None:
    detector = OutlierDetector(OutlierSettings(), POOL)
    detector.tick(0.0)
    for i in range(20):  # alternating: never a streak of five
        detector.record(POOL[1], E if i % 2 else S, i * 0.4)
    detector.tick(9.9)
    assert not detector.ejected(POOL[1], 9.9)
    detector.tick(10.0)
    assert detector.ejected(POOL[1], 10.0)
    assert not detector.ejected(POOL[1], 40.0)


def test_detector_forgives_after_a_healthy_interval_but_not_without() -> None:
    def second_ejection_seconds(healthy_ticks: int) -> float:
        detector = OutlierDetector(OutlierSettings(), POOL)
        detector.tick(0.0)
        fail(detector, POOL[0], start=1.0)  # ejected until 31.4, multiplier 1
        now = 0.0
        for _ in range(3 + healthy_ticks):  # sweeps at 10, 20, 30 see it ejected
            now += 10.0
            detector.tick(now)
        fail(detector, POOL[0], start=now + 1.0)
        health = detector.health(POOL[0])
        assert health is not None
        assert health.ejected_until is not None
        return health.ejected_until - (now + 1.4)

    # The sweep at 40 finds it back but ejected during [30, 40]: no forgiveness yet.
    assert second_ejection_seconds(healthy_ticks=1) == pytest.approx(60.0)
    # The sweep at 50 ends a whole interval in the pool: the multiplier is back to 0.
    assert second_ejection_seconds(healthy_ticks=2) == pytest.approx(30.0)


def test_detector_tick_sweeps_once_per_interval() -> None:
    detector = OutlierDetector(OutlierSettings(), POOL)
    detector.tick(0.0)
    for i in range(20):
        detector.record(POOL[0], E if i % 2 else S, 1.0)
    detector.tick(5.0)  # mid-interval: no sweep, the counts stay
    health = detector.health(POOL[0])
    assert health is not None
    assert health.interval_failures == 10


def test_set_endpoints_keeps_records_of_kept_endpoints_and_ignores_strangers() -> None:
    detector = OutlierDetector(OutlierSettings(), POOL)
    fail(detector, POOL[0], start=0.0)
    detector.set_endpoints([POOL[0], POOL[1], "10.0.0.9:8000"])
    assert detector.ejected(POOL[0], 1.0)
    assert detector.health(POOL[3]) is None
    fail(detector, POOL[3], start=2.0)  # removed while in flight: ignored
    assert detector.health(POOL[3]) is None
    assert detector.health("10.0.0.9:8000") == EndpointHealth()
    detector.forget(POOL[0])
    assert not detector.ejected(POOL[0], 1.0)
