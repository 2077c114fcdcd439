"""The retry budget: retries stay a bounded share of the requests, whatever the backends do.

A token bucket. Each client request deposits `budget_percent` / 100 of a token, each retry
spends one whole token, and the balance never exceeds `reserve` tokens; the bucket starts full.
So over any run of N requests the router sends at most N * budget_percent / 100 + reserve
retries: with every backend failing, upstream attempts ≤ (1 + budget_percent / 100) * N +
reserve, and a failing revision cannot multiply the load on itself. `attempts` caps the retries
of one request on top of that.

The balance is kept in hundredths of a token (a deposit is `budget_percent` of them, a retry
costs 100), so that no float drift can let one retry too many through over a long run.

`retryable` says which failures are worth a retry at all. The functions are pure; `RetryBudget`
holds the balance.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from davit_router.outlier import Outcome

CENTS_PER_TOKEN = 100


@dataclass(frozen=True)
class BudgetSettings:
    """Mirrors the operator's Retries (attempts 2, budgetPercent 20), plus the reserve."""

    attempts: int = 2  # retries of one request at most (0: never retry)
    budget_percent: int = 20  # retries as a percent of requests, at most
    reserve: int = 10  # the most tokens the bucket holds, and what it starts with


@dataclass(frozen=True)
class BudgetState:
    """The bucket's balance, in hundredths of a token."""

    cents: int


def full_budget(settings: BudgetSettings) -> BudgetState:
    """A bucket holding its whole reserve: a router that just started may retry a few failures
    before any request deposited anything."""
    return BudgetState(cents=settings.reserve * CENTS_PER_TOKEN)


def deposit(state: BudgetState, settings: BudgetSettings) -> BudgetState:
    """The balance after one client request: `budget_percent` hundredths more, up to the
    reserve (what a quiet period saves is bounded, so is the retry burst after it)."""
    ceiling = settings.reserve * CENTS_PER_TOKEN
    return replace(state, cents=min(ceiling, state.cents + settings.budget_percent))


def spend_retry(
    state: BudgetState, attempt: int, settings: BudgetSettings
) -> tuple[bool, BudgetState]:
    """Whether retry number `attempt` (1 for a request's first retry) may go, and the balance
    after: allowed when `attempt` ≤ `attempts` and a whole token is there, which it spends. A
    refused retry spends nothing."""
    if attempt < 1 or attempt > settings.attempts:
        return False, state
    if state.cents < CENTS_PER_TOKEN:
        return False, state
    return True, replace(state, cents=state.cents - CENTS_PER_TOKEN)


def retryable(outcome: Outcome, status: int | None = None, *, timed_out: bool = False) -> bool:
    """Whether a failed attempt is worth a retry (on another endpoint, the proxy's choice).

    Retried: no answer because the connection failed or was reset (GATEWAY), and a 503 (the
    pod is draining or not ready: another may serve). Not retried:

    * any other 5xx, a 500 above all: the request reached the model and may have run, the
      failure is likely to repeat for the same input, and retrying it would send the retry
      through the same stable/canary split, hiding a failing canary from its error rate;
    * a timeout (`timed_out`, an attempt that is GATEWAY for ejection): the backend may still
      be working on it, and retrying after a deadline adds load where it is already too high;
    * a 429 (BACKPRESSURE): the pool is shedding load; the client gets the 429 and backs off;
    * a success, obviously.

    `status` is the answer's HTTP status, None when there was no answer.
    """
    if outcome is Outcome.GATEWAY:
        return not timed_out
    return outcome is Outcome.ERROR and status == 503


class RetryBudget:
    """One router's (or one model's) retry budget; the decisions are the functions above.

    Not thread-safe; the proxy calls it from its event loop.
    """

    def __init__(self, settings: BudgetSettings) -> None:
        self.settings = settings
        self.state = full_budget(settings)

    @property
    def tokens(self) -> float:
        """The balance in tokens, for metrics."""
        return self.state.cents / CENTS_PER_TOKEN

    def on_request(self) -> None:
        """Call once per client request, before its first attempt."""
        self.state = deposit(self.state, self.settings)

    def try_retry(self, attempt: int) -> bool:
        """Call before retry number `attempt` (1-based) of a request; True: send it."""
        allowed, self.state = spend_retry(self.state, attempt, self.settings)
        return allowed
