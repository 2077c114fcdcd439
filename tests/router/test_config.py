"""The router's configuration file: what parses, and what is refused with the field's path."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import pytest

from davit_router.config import Breaker, CircuitBreaker, ConfigError, Retries, Revision, parse

GOOD: dict[str, Any] = {
    "model": "resnet",
    "revisions": [{"name": "a", "weight": 90, "endpoints": ["10.0.0.1:8080"]},
                  {"name": "b", "weight": 10, "endpoints": []}],
}  # fmt: skip


def test_a_minimal_configuration_takes_the_api_defaults() -> None:
    config = parse(GOOD)
    assert config.revisions == (
        Revision("a", 90, ("10.0.0.1:8080",)),
        Revision("b", 10, ()),
    )
    assert config.weights == [("a", 90), ("b", 10)]
    assert (config.timeout_ms, config.retries, config.circuit_breaker, config.breaker) == (
        30_000, Retries(), CircuitBreaker(), Breaker()
    )  # fmt: skip


def with_(**fields: Any) -> dict[str, Any]:
    return {**GOOD, **fields}


def revision(**fields: Any) -> dict[str, Any]:
    return with_(revisions=[{"name": "a", "weight": 100, "endpoints": [], **fields}])


@dataclass(frozen=True)
class Refused:
    reason: str
    document: Any
    message: str  # part of the error


REFUSED = [
    Refused("not an object", [], "config: expected an object, got list"),
    Refused("an unknown field (a typo is not ignored)", with_(timeout=5),
            "unknown field(s) timeout"),
    Refused("no model", {"revisions": GOOD["revisions"]}, "model: expected a name"),
    Refused("no revision", with_(revisions=[]), "revisions: expected a list of at least one"),
    Refused("a weight over 100", revision(weight=101), "revisions[0].weight: 101 is out of range"),
    Refused("a weight that is not a number", revision(weight="10"),
            "revisions[0].weight: expected an integer"),
    Refused("an endpoint without a port", revision(endpoints=["10.0.0.1"]),
            "revisions[0].endpoints[0]: expected host:port"),
    Refused("a port out of range", revision(endpoints=["10.0.0.1:70000"]), "expected host:port"),
    Refused("a revision named twice",
            with_(revisions=[{"name": "a", "weight": 50}, {"name": "a", "weight": 50}]),
            "a name appears twice"),
    Refused("a threshold above 1", with_(circuitBreaker={"errorRateThreshold": 2}),
            "circuitBreaker.errorRateThreshold: expected a number in (0, 1]"),
    Refused("a negative budget", with_(retries={"budgetPercent": -1}),
            "retries.budgetPercent: -1 is out of range (0..100)"),
    Refused("more than 10 attempts", with_(retries={"attempts": 11}), "retries.attempts"),
    Refused("a zero timeout", with_(timeoutMs=0), "timeoutMs: 0 is out of range (>= 1)"),
    Refused("an unknown breaker field", with_(breaker={"probes": 1}), "breaker: unknown field"),
    Refused("a shadow of no revision", with_(shadow={"revision": "c", "percent": 5}),
            "shadow.revision: 'c' is not one of the revisions (a, b)"),
    Refused("a shadow share over 100", with_(shadow={"revision": "b", "percent": 101}),
            "shadow.percent: 101 is out of range"),
    Refused("a gRPC endpoint without a port", revision(grpcEndpoints=["h"]),
            "revisions[0].grpcEndpoints[0]: expected host:port"),
    # Kubernetes names are lower case: a Service "Resnet-A" cannot exist, so it is a typo.
    Refused("a Service name in upper case", revision(service="Resnet-A"),
            "revisions[0].service: expected a Service name (a DNS-1123 label), got 'Resnet-A'"),
    Refused("a Service name with a dot (a subdomain, not a label)", revision(service="a.b"),
            "revisions[0].service: expected a Service name"),
    Refused("a Service name ending in a dash", revision(service="resnet-"),
            "revisions[0].service"),
    Refused("a Service name over 63 characters", revision(service="a" * 64),
            "revisions[0].service"),
    Refused("an empty Service name", revision(service=""), "revisions[0].service"),
    Refused("a Service that is not a string", revision(service=["resnet-a"]),
            "revisions[0].service"),
    Refused("a null Service (absent is how to say none)", revision(service=None),
            "revisions[0].service: expected a Service name"),
]  # fmt: skip


@pytest.mark.parametrize("case", REFUSED, ids=[c.reason for c in REFUSED])
def test_a_bad_configuration_is_refused_naming_the_field(case: Refused) -> None:
    with pytest.raises(ConfigError) as error:
        parse(case.document)
    assert case.message in str(error.value)


@dataclass(frozen=True)
class Accepted:
    reason: str
    revision: dict[str, Any]
    want: Revision


ACCEPTED = [
    Accepted("static endpoints alone (the process tests)",
             {"name": "a", "weight": 100, "endpoints": ["10.0.0.1:8080"]},
             Revision("a", 100, ("10.0.0.1:8080",))),
    # What the operator renders: endpoints come from the Service's EndpointSlices.
    Accepted("a Service instead of endpoints", {"name": "a", "weight": 100, "service": "resnet-a"},
             Revision("a", 100, (), (), service="resnet-a")),
    # The static lists serve until discovery has listed the Service's slices once.
    Accepted("a Service beside static endpoints",
             {"name": "a", "weight": 100, "service": "resnet-a", "endpoints": ["10.0.0.1:8080"],
              "grpcEndpoints": ["10.0.0.1:8081"]},
             Revision("a", 100, ("10.0.0.1:8080",), ("10.0.0.1:8081",), service="resnet-a")),
    Accepted("a Service name of 63 characters", {"name": "a", "weight": 100, "service": "a" * 63},
             Revision("a", 100, (), (), service="a" * 63)),
    Accepted("a Service name that starts with a digit (a label may)",
             {"name": "a", "weight": 100, "service": "0ld-resnet"},
             Revision("a", 100, (), (), service="0ld-resnet")),
]  # fmt: skip


@pytest.mark.parametrize("case", ACCEPTED, ids=[c.reason for c in ACCEPTED])
def test_a_revision_takes_static_endpoints_or_a_service(case: Accepted) -> None:
    assert parse(with_(revisions=[case.revision])).revisions == (case.want,)


def test_the_services_are_those_the_revisions_name() -> None:
    config = parse(with_(revisions=[{"name": "a", "weight": 50, "service": "resnet-a"},
                                    {"name": "b", "weight": 50}]))  # fmt: skip
    assert config.services == frozenset({"resnet-a"})
    assert parse(GOOD).services == frozenset()


def test_the_router_starts_without_torch() -> None:
    """Its import path stays off torch (and the runtime's model code): it starts in well
    under a second and stays small."""
    probe = "import sys, davit_router.cli, davit_router.server; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True)  # fmt: skip
    assert result.stdout.strip() == "False"
