"""One revision's figures over a measurement window, from a Prometheus that scrapes the
runtime's own metrics (`davit_requests_total` by result code, and the latency histogram).

Each figure is one instant query evaluated at the window's end over a range as long as the
window, so a pass that runs late (an operator restarted meanwhile) reads the same figures.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any

import aiohttp

from davit_operator import api
from davit_operator.planners.analysis import Figures, Window

# The runtime's metric names (runtime/davit_runtime/metrics.py; a contract test holds them
# equal): the operator's image does not carry the runtime's package.
REQUESTS = "davit_requests_total"
LATENCY_BUCKETS = "davit_request_duration_seconds_bucket"
SERVER_ERRORS = 'code=~"5.."'  # a 429 is back-pressure, not the canary failing


class SourceError(Exception):
    """The source cannot give figures now: unreachable, too slow, or it refused the query."""


class WindowGoneError(SourceError):
    """The source no longer keeps the window's figures (the router keeps ten minutes): asking
    again would never succeed, so the measurement starts anew."""


@dataclass(frozen=True)
class Subject:
    """Whose figures: one revision of one model."""

    namespace: str
    name: str
    revision: str


@dataclass(frozen=True)
class Queries:
    requests: str
    errors: str
    p99_seconds: str


def matchers(template: str, subject: Subject) -> str:
    """The selector with its placeholders filled in (not str.format: PromQL regexes may hold
    braces of their own)."""
    return (
        template.replace("{namespace}", subject.namespace)
        .replace("{name}", subject.name)
        .replace("{revision}", subject.revision)
    )


def queries(selected: str, window: Window) -> Queries:
    milliseconds = round((window.end - window.start).total_seconds() * 1000)
    span = f"[{milliseconds}ms]"
    return Queries(
        requests=f"sum(increase({REQUESTS}{{{selected}}}{span}))",
        errors=f"sum(increase({REQUESTS}{{{selected},{SERVER_ERRORS}}}{span}))",
        p99_seconds=(
            f"histogram_quantile(0.99, sum by (le) (increase({LATENCY_BUCKETS}{{{selected}}}"
            f"{span})))"
        ),
    )


def sample(body: Any) -> float | None:
    """The one value of an instant query's answer; None for an empty vector (no such series
    in the window) or NaN (a quantile of nothing). Raises SourceError for an error answer."""
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error", body) if isinstance(body, dict) else body
        raise SourceError(f"Prometheus refused the query: {error}")
    data = body.get("data") or {}
    result = data.get("result")
    if data.get("resultType") != "vector" or not isinstance(result, list):
        raise SourceError(f"Prometheus answered a {data.get('resultType')}, not a vector")
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if math.isnan(value) else value


class Prometheus:
    """Reads figures from the Prometheus a model's analysis names (one HTTP session for all)."""

    def __init__(self, timeout_seconds: float = 10.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def figures(self, settings: api.Analysis, subject: Subject, window: Window) -> Figures:
        source = settings.prometheus
        asked = queries(matchers(source.selector, subject), window)
        at = window.end.timestamp()
        requests, errors, p99 = await asyncio.gather(
            self._query(source.url, asked.requests, at),
            self._query(source.url, asked.errors, at),
            self._query(source.url, asked.p99_seconds, at),
        )
        return Figures(
            requests=requests or 0.0,
            errors=errors or 0.0,
            p99_ms=p99 * 1000 if p99 is not None else None,
        )

    async def _query(self, url: str, query: str, at: float) -> float | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        endpoint = f"{url.rstrip('/')}/api/v1/query"
        try:
            async with self._session.get(
                endpoint, params={"query": query, "time": f"{at:.3f}"}
            ) as answer:
                if answer.content_type != "application/json":
                    raise SourceError(f"{endpoint} answered {answer.status} {answer.reason}")
                return sample(await answer.json())
        except (aiohttp.ClientError, TimeoutError) as error:
            raise SourceError(f"{endpoint} unreachable: {error or type(error).__name__}") from error

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
