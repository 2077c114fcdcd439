"""The Prometheus source's queries and how it reads Prometheus' answers (the HTTP part runs
against a real Prometheus in e2e/test_analysis.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from davit_operator.planners.analysis import Window
from davit_operator.sources.prometheus import (
    LATENCY_BUCKETS,
    REQUESTS,
    SourceError,
    Subject,
    matchers,
    queries,
    sample,
)
from davit_runtime.metrics import Metrics

START = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)
SUBJECT = Subject("ml", "resnet", "5d8cb07642")
DEFAULT = 'namespace="{namespace}",davit_dev_revision="{revision}"'


def test_the_default_selector_picks_one_revision_of_one_namespace() -> None:
    assert matchers(DEFAULT, SUBJECT) == 'namespace="ml",davit_dev_revision="5d8cb07642"'


def test_a_selector_keeps_braces_of_its_own() -> None:
    # A regex quantifier is no placeholder (str.format would have choked on it).
    template = 'job=~"davit-[a-z]{2,}",model="{name}"'
    assert matchers(template, SUBJECT) == 'job=~"davit-[a-z]{2,}",model="resnet"'


def test_queries_cover_the_window_in_milliseconds() -> None:
    asked = queries('a="b"', Window(START, START + timedelta(seconds=30)))
    assert asked.requests == 'sum(increase(davit_requests_total{a="b"}[30000ms]))'
    assert asked.errors == 'sum(increase(davit_requests_total{a="b",code=~"5.."}[30000ms]))'
    assert asked.p99_seconds == (
        "histogram_quantile(0.99, sum by (le) "
        '(increase(davit_request_duration_seconds_bucket{a="b"}[30000ms])))'
    )


def vector(*values: str) -> dict[str, Any]:
    result = [{"metric": {}, "value": [1764849600.0, v]} for v in values]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


@pytest.mark.parametrize(
    ("body", "want"),
    [
        (vector("412.5"), 412.5),
        (vector(), None),  # no such series in the window
        (vector("NaN"), None),  # a quantile of no requests
    ],
)
def test_sample(body: dict[str, Any], want: float | None) -> None:
    assert sample(body) == want


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"status": "error", "errorType": "bad_data", "error": "parse error at char 5"},
         "parse error at char 5"),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "a matrix"),
        ("<html>", "<html>"),
    ],
)  # fmt: skip
def test_an_answer_that_is_no_figure_is_a_source_error(body: Any, says: str) -> None:
    with pytest.raises(SourceError, match=says):
        sample(body)


def test_the_names_queried_are_the_runtimes_own() -> None:
    # The operator's image does not carry the runtime: the names are written in both places,
    # and this holds them equal.
    metrics = Metrics()
    metrics.for_model("m", lambda: 0.0, lambda: 0.0).record(200, 0.01)
    exposed = metrics.exposition().decode()
    assert f"\n{REQUESTS}{{" in exposed
    assert f"\n{LATENCY_BUCKETS}{{" in exposed
