"""Request criticality's rules: the header, the concurrency each class is admitted to, and when a
revision is too busy for sheddable requests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from davit_router.criticality import (
    Criticality,
    CriticalityError,
    concurrency_limit,
    parse,
    retries_pushback,
    saturated,
)

CRITICAL, STANDARD, SHEDDABLE = Criticality.CRITICAL, Criticality.STANDARD, Criticality.SHEDDABLE


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (None, STANDARD),  # most clients say nothing
        (b"critical", CRITICAL),
        (b"Sheddable", SHEDDABLE),  # header values are matched without case
        (" standard ", STANDARD),  # gRPC metadata comes as str
    ],
)
def test_parse(value: bytes | str | None, want: Criticality) -> None:
    assert parse(value) == want


def test_a_value_that_is_no_criticality_is_refused_with_the_ones_that_are() -> None:
    with pytest.raises(CriticalityError, match="'urgent' is not one of critical, standard"):
        parse(b"urgent")


@dataclass(frozen=True)
class LimitCase:
    reason: str
    criticality: Criticality
    max_concurrent: int
    want: int


LIMITS = [
    LimitCase("no cap: no limit for anyone", CRITICAL, 0, 0),
    LimitCase("no cap: not for sheddable either", SHEDDABLE, 0, 0),
    LimitCase("standard requests fill the cap", STANDARD, 100, 100),
    # Sheddable ones stop short of it, leaving a fifth for the others.
    LimitCase("sheddable requests stop at 80 %", SHEDDABLE, 100, 80),
    # Critical ones go past it, into a reserve no one else may take.
    LimitCase("critical requests have a quarter more", CRITICAL, 100, 125),
    LimitCase("a cap of 1 still serves a sheddable request alone", SHEDDABLE, 1, 1),
    LimitCase("a cap of 1 keeps a critical reserve of 1", CRITICAL, 1, 2),
    LimitCase("a small cap rounds sheddable down", SHEDDABLE, 4, 3),
]  # fmt: skip


@pytest.mark.parametrize("case", LIMITS, ids=[c.reason for c in LIMITS])
def test_concurrency_limit(case: LimitCase) -> None:
    assert concurrency_limit(case.criticality, case.max_concurrent) == case.want


@dataclass(frozen=True)
class SaturationCase:
    reason: str
    loads: tuple[int, ...]
    depth: int
    want: bool


SATURATION = [
    SaturationCase("every endpoint at the depth", (8, 9), 8, True),
    # One endpoint with room: the balancer will find it.
    SaturationCase("one endpoint under the depth", (8, 2), 8, False),
    SaturationCase("depth 0 never sheds", (100, 100), 0, False),
    # No endpoint at all is another failure (503), not saturation.
    SaturationCase("no endpoint is not saturation", (), 8, False),
]  # fmt: skip


@pytest.mark.parametrize("case", SATURATION, ids=[c.reason for c in SATURATION])
def test_saturated(case: SaturationCase) -> None:
    assert saturated(case.loads, case.depth) is case.want


def test_only_a_sheddable_request_is_passed_back_at_the_first_429() -> None:
    assert [retries_pushback(c) for c in (CRITICAL, STANDARD, SHEDDABLE)] == [True, True, False]
