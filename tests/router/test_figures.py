"""Per-revision figures over a window (the builtin analysis source), on a simulated clock."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import dataclass

import pytest

from davit_router.figures import Figures, Ledger
from davit_router.histogram import quantile
from davit_runtime.metrics import LATENCY_BUCKETS

BOUNDS = (0.001, 0.002, 0.005)


@dataclass(frozen=True)
class QuantileCase:
    reason: str
    q: float
    counts: tuple[int, ...]  # per bucket of BOUNDS, then above the last
    want: float


QUANTILES = [
    # Linear within the bucket that holds the rank, from the bucket's lower bound.
    QuantileCase("the median of one bucket is its middle", 0.5, (10, 0, 0, 0), 0.0005),
    QuantileCase("a rank in the second bucket interpolates from its lower bound", 0.75,
                 (5, 5, 0, 0), 0.0015),
    QuantileCase("empty buckets before the rank are passed over", 0.99, (0, 0, 100, 0),
                 0.002 + 0.003 * 0.99),
    # Above the last bound the histogram cannot say more than that bound.
    QuantileCase("a rank above the last bound is that bound", 0.99, (1, 0, 0, 99), 0.005),
]  # fmt: skip


@pytest.mark.parametrize("case", QUANTILES, ids=[c.reason for c in QUANTILES])
def test_quantile(case: QuantileCase) -> None:
    assert quantile(case.q, case.counts, BOUNDS) == pytest.approx(case.want)


def test_an_empty_histogram_has_no_quantile() -> None:
    assert math.isnan(quantile(0.5, (0, 0, 0, 0), BOUNDS))


def test_a_window_counts_its_requests_errors_and_latency() -> None:
    ledger = Ledger()
    for n in range(99):
        ledger.record("canary", 200, 0.0025, now=100.0 + n / 100)
    ledger.record("canary", 503, 0.2, now=100.99)
    figures = ledger.figures("canary", 10, now=105.0)
    assert (figures.requests, figures.errors, figures.error_rate) == (100, 1, 0.01)
    # 99 answers in the runtime's (2 ms, 3 ms] bucket: the median and p99 fall in it.
    assert figures.p50_ms == pytest.approx(2 + 50 / 99)
    assert figures.p99_ms == pytest.approx(3.0)
    # The histogram itself, for a sum over router replicas: 99 in (2 ms, 3 ms], 1 in
    # (100 ms, 250 ms], one count per bucket and one above them all.
    counts = figures.latency_counts
    assert len(counts) == len(LATENCY_BUCKETS) + 1
    assert (sum(counts), counts[LATENCY_BUCKETS.index(0.003)]) == (100, 99)
    assert counts[LATENCY_BUCKETS.index(0.25)] == 1


@dataclass(frozen=True)
class WindowCase:
    reason: str
    answers: tuple[float, ...]  # times of 200 answers
    window: float
    now: float
    want: int  # requests counted


WINDOWS = [
    WindowCase("answers inside the window count", (95.5, 99.0, 100.2), 10, 100.5, 3),
    # Whole seconds: the window is the slots of the last 10 seconds and the current one.
    WindowCase("an answer before the window does not", (89.9, 95.0), 10, 100.5, 1),
    WindowCase("an answer in the current second counts", (100.9,), 10, 100.95, 1),
    WindowCase("nothing recorded is nothing", (), 10, 100.0, 0),
    # A late reader asks for a window that ended earlier: what came after it is not in it.
    WindowCase("an answer after a past window's end does not count", (95.0, 105.0), 10, 100.5,
               1),
]  # fmt: skip


@pytest.mark.parametrize("case", WINDOWS, ids=[c.reason for c in WINDOWS])
def test_the_window(case: WindowCase) -> None:
    ledger = Ledger()
    for t in case.answers:
        ledger.record("stable", 200, 0.001, now=t)
    assert ledger.figures("stable", case.window, case.now).requests == case.want


def test_answers_older_than_the_horizon_are_dropped() -> None:
    ledger = Ledger(horizon_seconds=60)
    ledger.record("stable", 200, 0.001, now=0.0)
    ledger.record("stable", 200, 0.001, now=100.0)
    assert ledger.figures("stable", 1000, now=100.0).requests == 1


def test_a_revision_without_answers_has_no_figures() -> None:
    assert Ledger().figures("canary", 30, now=10.0) == Figures(0, 0, None, None)


def test_the_modules_the_operator_imports_need_the_standard_library_only() -> None:
    # The operator's image imports them (to add up the routers' histograms, to address their
    # pods) without the router's dependencies; a fresh interpreter shows what they pull in.
    code = (
        "import sys, davit_router.histogram, davit_router.hostport; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'prometheus_client', 'httptools', 'orjson', 'grpc', 'numpy', 'torch'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
