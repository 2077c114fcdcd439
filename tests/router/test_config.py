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
]  # fmt: skip


@pytest.mark.parametrize("case", REFUSED, ids=[c.reason for c in REFUSED])
def test_a_bad_configuration_is_refused_naming_the_field(case: Refused) -> None:
    with pytest.raises(ConfigError) as error:
        parse(case.document)
    assert case.message in str(error.value)


def test_the_router_starts_without_torch() -> None:
    """Its import path stays off torch (and the runtime's model code): it starts in well
    under a second and stays small."""
    probe = "import sys, davit_router.cli, davit_router.server; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True)  # fmt: skip
    assert result.stdout.strip() == "False"
