"""Table tests of canary analysis: (settings, canary's figures, stable's figures) → verdict."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from davit_operator import api
from davit_operator.planners.analysis import Figures, Source, Window, due, judge, source_of
from davit_operator.planners.rollout import Verdict

# maxErrorRate 1 %, maxP99LatencyMs 250, minRequests 20 (the defaults).
DEFAULTS: dict[str, Any] = {}
# Stable's error rate + 1 %, its p99 x 1.5; and at most 5 % errors (the thresholds still hold).
COMPARED: dict[str, Any] = {"comparedToStable": {}, "maxErrorRate": 0.05}
HEALTHY = Figures(requests=1000, errors=2, p99_ms=40)


@dataclass(frozen=True)
class Case:
    reason: str
    settings: dict[str, Any]
    canary: Figures
    stable: Figures | None
    want: Verdict
    says: str  # a part of the message people read


CASES = [
    Case("within every threshold", DEFAULTS, HEALTHY, None, Verdict.PASS,
         "error rate 0.2 % within max 1 %; p99 40 ms within max 250 ms"),
    Case("too many server errors", DEFAULTS, Figures(1000, 120, 40), None, Verdict.FAIL,
         "error rate 12 % over max 1 %"),
    Case("too slow", DEFAULTS, Figures(1000, 0, 400), None, Verdict.FAIL,
         "p99 400 ms over max 250 ms"),
    Case("at the thresholds exactly: held", {"maxErrorRate": 0.1}, Figures(1000, 100, 250),
         None, Verdict.PASS, "error rate 10 % within max 10 %"),
    Case("too few requests say nothing, even if all failed", DEFAULTS, Figures(12, 12, 900),
         None, Verdict.INCONCLUSIVE, "12 canary requests, fewer than minRequests 20"),
    Case("no requests at all", DEFAULTS, Figures(0, 0, None), None, Verdict.INCONCLUSIVE,
         "0 canary requests"),
    Case("a source's extrapolated count is floored", DEFAULTS, Figures(19.8, 0, 30), None,
         Verdict.INCONCLUSIVE, "19 canary requests"),
    Case("requests counted but none timed", DEFAULTS, Figures(100, 0, None), None,
         Verdict.INCONCLUSIVE, "no canary latency figures"),
    Case("untimed but failing: a failure", DEFAULTS, Figures(100, 50, None), None,
         Verdict.FAIL, "error rate 50 % over max 1 %"),
    Case("a lower minRequests judges a quiet canary", {"minRequests": 5}, Figures(8, 0, 30),
         None, Verdict.PASS, "error rate 0 % within"),
    Case("compared: no worse than stable", COMPARED, Figures(1000, 15, 60),
         Figures(9000, 90, 50), Verdict.PASS, "error rate 1.5 % within stable's 1 % + 1 %"),
    Case("compared: errors beyond stable's margin", COMPARED, Figures(1000, 30, 60),
         Figures(9000, 90, 50), Verdict.FAIL, "error rate 3 % over stable's 1 % + 1 %"),
    Case("compared: slower than stable allows, under the absolute limit", COMPARED,
         Figures(1000, 0, 100), Figures(9000, 0, 50), Verdict.FAIL,
         "p99 100 ms over stable's 50 ms x 1.5"),
    Case("compared: stable too quiet to compare with", COMPARED, HEALTHY, Figures(3, 0, 20),
         Verdict.INCONCLUSIVE, "3 stable requests to compare with"),
    Case("compared: stable's figures unknown", COMPARED, HEALTHY, None, Verdict.INCONCLUSIVE,
         "no stable requests to compare with"),
    Case("compared: an absolute failure fails without stable", COMPARED,
         Figures(1000, 500, 40), None, Verdict.FAIL, "error rate 50 % over max 5 %"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.reason for c in CASES])
def test_judge(case: Case) -> None:
    settings = api.Analysis.model_validate(case.settings)
    judgement = judge(settings, case.canary, case.stable)
    assert judgement.verdict is case.want
    assert case.says in judgement.message, judgement.message


START = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("since", "now", "want"),
    [
        (None, START, None),  # no measurement running
        (START, START + timedelta(seconds=29), None),  # the 30 s interval is not over
        (START, START + timedelta(seconds=30), Window(START, START + timedelta(seconds=30))),
        # a late pass (an operator down meanwhile) reads the same window, not up to now
        (START, START + timedelta(hours=1), Window(START, START + timedelta(seconds=30))),
    ],
)
def test_due(since: datetime | None, now: datetime, want: Window | None) -> None:
    assert due(since, api.Analysis(), now) == want


@dataclass(frozen=True)
class SourceCase:
    reason: str
    provider: str
    prometheus_url: str
    want: Source | None


SOURCES = [
    SourceCase("a Prometheus named is read, with no router", "none", "http://prom:9090",
               Source.PROMETHEUS),
    # The user chose their Prometheus (its recording rules, its retention): it wins.
    SourceCase("a Prometheus named is read, even behind the router", "builtin",
               "http://prom:9090", Source.PROMETHEUS),
    # The router sees every request: analysis needs nothing installed.
    SourceCase("behind the router with no Prometheus, the router's figures", "builtin", "",
               Source.ROUTER),
    SourceCase("a Gateway's traffic and no Prometheus: no source", "gatewayAPI", "", None),
    SourceCase("replica split and no Prometheus: no source", "none", "", None),
]  # fmt: skip


@pytest.mark.parametrize("case", SOURCES, ids=[c.reason for c in SOURCES])
def test_source_of(case: SourceCase) -> None:
    spec = api.ModelDeploymentSpec.model_validate({
        "model": {"uri": "pvc://models/resnet/v1"},
        "traffic": {"provider": case.provider},
    })  # fmt: skip
    settings = api.Analysis.model_validate({"prometheus": {"url": case.prometheus_url}})
    assert source_of(spec, settings) == case.want
