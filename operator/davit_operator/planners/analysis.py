"""Canary analysis: which window a measurement covers, and its verdict from the figures.

Pure: no I/O, no clock. The caller asks `measurement_due` whether the running measurement's
interval is over, reads both revisions' figures over that window from a source (`sources/`),
and hands them back as a `Measurement`; `assess` judges it into the verdict the rollout planner
acts on (`rollout.Measured`) and the record status keeps.

A verdict is Fail when a threshold is crossed, whatever else is known; Inconclusive when too few
requests reached the canary (or stable, for a comparison with it) to say anything; Pass only
when every check was made and held. An inconclusive measurement is taken again and counts
neither way, so a canary that nobody sends requests to is never promoted by analysis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from davit_operator import api
from davit_operator.planners.revision import revision_hash
from davit_operator.planners.rollout import (
    Measured,
    RolloutState,
    Verdict,
    current_analysis,
    parse_duration,
)


@dataclass(frozen=True)
class Window:
    """A measurement: the requests answered in [start, end)."""

    start: datetime  # names the measurement (status.analysisStartedAt)
    end: datetime


@dataclass(frozen=True)
class Figures:
    """One revision's requests over a window, as a source counted them."""

    requests: float  # answered (a counter's increase: a source may extrapolate to fractions)
    errors: float  # of those, answered with a server error (5xx)
    p99_ms: float | None  # 99th-percentile latency; None where no request was timed

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests > 0 else 0.0


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    message: str  # every check made, with its figures, for people


class Source(StrEnum):
    """Where a measurement's figures are read (sources/)."""

    PROMETHEUS = "prometheus"  # rollout.analysis.prometheus.url
    ROUTER = "router"  # the builtin router's replicas' own /figures


@dataclass(frozen=True)
class Due:
    """A measurement whose interval is over: the caller reads these revisions' figures from
    `source`."""

    window: Window
    settings: api.Analysis
    canary: str
    stable: str
    source: Source = Source.PROMETHEUS


@dataclass(frozen=True)
class Measurement:
    """What a source gave for a due measurement."""

    due: Due
    canary: Figures | None  # None: the source failed, and `problem` says how
    stable: Figures | None = None
    problem: str | None = None
    expired: bool = False  # the source no longer keeps the window: measure anew


def source_of(spec: api.ModelDeploymentSpec, settings: api.Analysis) -> Source | None:
    """Where the figures come from: the Prometheus the settings name, where they name one;
    else, with traffic.provider builtin, the router's own figures (it sees every request, so
    analysis needs nothing installed); else nowhere (an analysis step holds for a person)."""
    if settings.prometheus.url:
        return Source.PROMETHEUS
    if spec.traffic.provider == api.TrafficProvider.BUILTIN:
        return Source.ROUTER
    return None


def measurement_due(
    spec: api.ModelDeploymentSpec, status: api.ModelDeploymentStatus, now: datetime
) -> Due | None:
    """The canary measurement to read this pass: the one status names, at the analysis step
    the rollout of the spec's revision stands at, once its interval is over and where a
    source is set. Cheap for the models not measuring (every pass of every model asks): the
    revision is hashed only for one that is."""
    canary, stable = status.canary_revision, status.stable_revision
    if canary is None or stable is None or status.analysis_started_at is None:
        return None
    state = RolloutState.of(status)
    settings = current_analysis(spec.rollout, state)
    source = source_of(spec, settings) if settings is not None else None
    if settings is None or source is None:
        return None
    window = due(state.analysis_since, settings, now)
    if window is None or revision_hash(spec) != canary:
        return None  # still running, or the spec moved on to another revision
    return Due(window, settings, canary, stable, source)


def assess(measurement: Measurement) -> tuple[Measured, api.AnalysisRecord] | None:
    """The verdict on a measurement and the record status keeps of it; None where the source
    gave no figures."""
    if measurement.canary is None:
        return None
    due_, stable = measurement.due, measurement.stable
    judgement = judge(due_.settings, measurement.canary, stable)
    record = api.AnalysisRecord(
        started_at=due_.window.start.isoformat(),
        ended_at=due_.window.end.isoformat(),
        verdict=judgement.verdict.value,
        message=judgement.message,
        canary=_figures(measurement.canary),
        stable=_figures(stable) if stable is not None else None,
    )
    return Measured(due_.window.start, judgement.verdict, judgement.message), record


def _figures(figures: Figures) -> api.MeasuredFigures:
    return api.MeasuredFigures(
        requests=math.floor(figures.requests),
        error_rate=round(figures.error_rate, 4),
        p99_latency_ms=round(figures.p99_ms, 1) if figures.p99_ms is not None else None,
    )


def due(since: datetime | None, settings: api.Analysis, now: datetime) -> Window | None:
    """The window of the running measurement (begun at `since`), once its interval is over;
    None while none runs or it is still running."""
    if since is None:
        return None
    end = since + parse_duration(settings.interval)
    return Window(since, end) if now >= end else None


def judge(settings: api.Analysis, canary: Figures, stable: Figures | None) -> Judgement:
    """The canary against the absolute thresholds, and against stable over the same window
    where `settings.comparedToStable` asks for it (`stable` None: its figures are unknown)."""
    if canary.requests < settings.min_requests:
        return Judgement(
            Verdict.INCONCLUSIVE,
            f"{_count(canary.requests)} canary requests, fewer than minRequests "
            f"{settings.min_requests}",
        )
    checks = [
        Check("error rate", _percent(canary.error_rate),
              canary.error_rate <= settings.max_error_rate,
              f"max {_percent(settings.max_error_rate)}"),
    ]  # fmt: skip
    unknown = []
    if canary.p99_ms is None:
        unknown.append("no canary latency figures")
    else:
        checks.append(
            Check("p99", _ms(canary.p99_ms), canary.p99_ms <= settings.max_p99_latency_ms,
                  f"max {settings.max_p99_latency_ms} ms")
        )  # fmt: skip
    compared = settings.compared_to_stable
    if compared is not None:
        if stable is None or stable.requests < settings.min_requests:
            seen = _count(stable.requests) if stable is not None else "no"
            unknown.append(
                f"{seen} stable requests to compare with (minRequests {settings.min_requests})"
            )
        else:
            checks += compare_to_stable(compared, canary, stable)
    failed = [c.text for c in checks if not c.held]
    held = [c.text for c in checks if c.held]
    if failed:  # a crossed threshold fails the canary, whatever else is unknown
        return Judgement(Verdict.FAIL, "; ".join(failed + held + unknown))
    if unknown:
        return Judgement(Verdict.INCONCLUSIVE, "; ".join(unknown + held))
    return Judgement(Verdict.PASS, "; ".join(held))


def compare_to_stable(
    compared: api.StableComparison, canary: Figures, stable: Figures
) -> list[Check]:
    """The canary may be worse than stable by the margins `compared` allows, no more (a p99
    is compared only where both revisions have one)."""
    allowed_rate = stable.error_rate + compared.max_error_rate_increase
    checks = [
        Check("error rate", _percent(canary.error_rate), canary.error_rate <= allowed_rate,
              f"stable's {_percent(stable.error_rate)} + "
              f"{_percent(compared.max_error_rate_increase)}"),
    ]  # fmt: skip
    if stable.p99_ms is not None and canary.p99_ms is not None:
        ratio = compared.max_p99_latency_ratio
        checks.append(
            Check("p99", _ms(canary.p99_ms), canary.p99_ms <= stable.p99_ms * ratio,
                  f"stable's {_ms(stable.p99_ms)} x {ratio:g}")
        )  # fmt: skip
    return checks


@dataclass(frozen=True)
class Check:
    what: str
    value: str
    held: bool
    limit: str

    @property
    def text(self) -> str:
        return f"{self.what} {self.value} {'within' if self.held else 'over'} {self.limit}"


def _count(requests: float) -> str:
    return str(math.floor(requests))


def _percent(rate: float) -> str:
    return f"{rate * 100:.3g} %"


def _ms(value: float) -> str:
    return f"{value:.3g} ms"
