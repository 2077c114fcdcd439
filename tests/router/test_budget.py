"""The retry budget: the bound on upstream attempts, the per-request cap, what is retried."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from davit_router.budget import (
    BudgetSettings,
    BudgetState,
    RetryBudget,
    deposit,
    retryable,
    spend_retry,
)
from davit_router.outlier import Outcome


def upstream_attempts_with_every_attempt_failing(budget: RetryBudget, requests: int) -> int:
    """What a proxy sends when no attempt ever succeeds: each request's first attempt, then
    retries for as long as the budget says yes."""
    attempts = 0
    for _ in range(requests):
        budget.on_request()
        attempts += 1
        retry = 1
        while budget.try_retry(retry):
            attempts += 1
            retry += 1
    return attempts


def test_every_attempt_failing_stays_within_the_budget() -> None:
    settings = BudgetSettings(attempts=2, budget_percent=20, reserve=10)
    requests = 10_000
    attempts = upstream_attempts_with_every_attempt_failing(RetryBudget(settings), requests)
    assert attempts <= 1.2 * requests + settings.reserve
    # And the budget is there to be used: nearly all of it is (one deposit was lost to the cap
    # while the bucket was still full).
    assert attempts >= 1.2 * requests + settings.reserve - 1


@pytest.mark.parametrize("percent", [0, 5, 20, 50, 100])
def test_the_bound_holds_for_any_budget_percent(percent: int) -> None:
    settings = BudgetSettings(attempts=10, budget_percent=percent, reserve=10)
    requests = 10_000
    attempts = upstream_attempts_with_every_attempt_failing(RetryBudget(settings), requests)
    assert attempts <= (1 + percent / 100) * requests + settings.reserve


@dataclass(frozen=True)
class RetryCase:
    reason: str
    cents: int  # the balance, in hundredths of a token
    attempt: int
    want_allowed: bool
    want_cents: int
    settings: BudgetSettings = field(default_factory=BudgetSettings)


RETRY_CASES = [
    RetryCase("a first retry spends one token", 1000, 1, True, 900),
    RetryCase("a second retry too", 900, 2, True, 800),
    # attempts is 2: the third retry of a request is refused, with tokens to spare.
    RetryCase("the attempts cap refuses a third retry", 800, 3, False, 800),
    RetryCase("less than one token refuses", 99, 1, False, 99),
    RetryCase("exactly one token allows", 100, 1, True, 0),
    RetryCase(
        "attempts 0 never retries",
        1000,
        1,
        False,
        1000,
        BudgetSettings(attempts=0),
    ),
    RetryCase("attempt 0 is not a retry", 1000, 0, False, 1000),
]


@pytest.mark.parametrize("case", RETRY_CASES, ids=[c.reason for c in RETRY_CASES])
def test_spend_retry(case: RetryCase) -> None:
    allowed, after = spend_retry(BudgetState(case.cents), case.attempt, case.settings)
    assert (allowed, after.cents) == (case.want_allowed, case.want_cents)


@dataclass(frozen=True)
class DepositCase:
    reason: str
    cents: int
    want_cents: int
    settings: BudgetSettings = field(default_factory=BudgetSettings)


DEPOSIT_CASES = [
    DepositCase("a request deposits a fifth of a token at 20 %", 0, 20),
    DepositCase("five requests earn one retry", 80, 100),
    # A quiet period saves at most the reserve, so the retry burst after it is bounded.
    DepositCase("the balance stops at the reserve", 995, 1000),
    DepositCase("a smaller reserve", 300, 300, BudgetSettings(reserve=3)),
    DepositCase("0 % deposits nothing", 50, 50, BudgetSettings(budget_percent=0)),
]


@pytest.mark.parametrize("case", DEPOSIT_CASES, ids=[c.reason for c in DEPOSIT_CASES])
def test_deposit(case: DepositCase) -> None:
    assert deposit(BudgetState(case.cents), case.settings).cents == case.want_cents


def test_a_spent_budget_refills_with_requests() -> None:
    budget = RetryBudget(BudgetSettings(reserve=1))
    assert budget.try_retry(1)
    assert not budget.try_retry(1)
    for _ in range(4):
        budget.on_request()
    assert not budget.try_retry(1)  # 0.8 of a token
    budget.on_request()
    assert budget.tokens == 1.0
    assert budget.try_retry(1)


@dataclass(frozen=True)
class RetryableCase:
    reason: str
    outcome: Outcome
    status: int | None
    want: bool
    timed_out: bool = False


RETRYABLE_CASES = [
    RetryableCase("connect failure or reset: retried", Outcome.GATEWAY, None, True),
    # The backend may still be working on it; a retry after a deadline adds load.
    RetryableCase("a timeout is not", Outcome.GATEWAY, None, False, timed_out=True),
    RetryableCase("503: another pod may serve it", Outcome.ERROR, 503, True),
    # The request reached the model and may have run; retrying hides a failing canary.
    RetryableCase("500 never", Outcome.ERROR, 500, False),
    RetryableCase("502 is not", Outcome.ERROR, 502, False),
    RetryableCase("504 is not", Outcome.ERROR, 504, False),
    RetryableCase("429: the client backs off instead", Outcome.BACKPRESSURE, 429, False),
    RetryableCase("a success is not", Outcome.SUCCESS, 200, False),
]


@pytest.mark.parametrize("case", RETRYABLE_CASES, ids=[c.reason for c in RETRYABLE_CASES])
def test_retryable(case: RetryableCase) -> None:
    assert retryable(case.outcome, case.status, timed_out=case.timed_out) == case.want
