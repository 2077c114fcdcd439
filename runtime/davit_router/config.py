"""The router's configuration: one JSON document, read from a file the router watches.

The operator renders it into the router's ConfigMap (`router.json`) at every rollout step; a
process test writes the same file by hand. Everything that changes while the router runs —
the revisions, their weights and endpoints — is in it, so a change never needs a restart or a
new pod template. Parsing is strict: an unknown field or a bad value is refused with the field's
path, and the router keeps serving with the configuration it had.

    {
      "model": "resnet",
      "timeoutMs": 30000,
      "retries": {"attempts": 2, "budgetPercent": 20},
      "circuitBreaker": {"consecutiveErrors": 5, "errorRateThreshold": 0.5,
                         "ejectionSeconds": 30, "maxEjectedPercent": 50},
      "breaker": {"minRequests": 20, "openSeconds": 5, "halfOpenProbes": 3,
                  "maxConcurrent": 0},
      "shadow": {"revision": "232d26766d", "percent": 10},
      "sheddableQueueDepth": 16,
      "revisions": [
        {"name": "0ld57ab1e", "weight": 90, "endpoints": ["10.0.0.1:8080", "10.0.0.2:8080"]},
        {"name": "232d26766d", "weight": 10, "endpoints": ["10.0.0.3:8080"],
         "grpcEndpoints": ["10.0.0.3:8081"]}
      ]
    }

In a cluster a revision names its Service instead (`"service": "resnet-232d26766d"`, ports
named `http` and `grpc`), and the router finds its endpoints by watching the Service's
EndpointSlices (discovery.py). Static `endpoints`/`grpcEndpoints` beside a `service` serve only
until discovery has first listed the Service's slices; from then on the slices alone say.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the field."""


@dataclass(frozen=True)
class Retries:
    attempts: int = 2  # retries per request at most
    budget_percent: int = 20  # retries as a percent of requests, at most


@dataclass(frozen=True)
class CircuitBreaker:
    consecutive_errors: int = 5
    error_rate_threshold: float = 0.5
    ejection_seconds: float = 30.0
    max_ejected_percent: int = 50


@dataclass(frozen=True)
class Breaker:
    """The breaker per revision beyond its error threshold (circuitBreaker's): how many answers
    it judges, how long it stays open, its probes, and the concurrency it admits (0: no
    limit)."""

    min_requests: int = 20
    open_seconds: float = 5.0
    half_open_probes: int = 3
    max_concurrent: int = 0


@dataclass(frozen=True)
class Revision:
    name: str
    weight: int
    endpoints: tuple[str, ...]  # host:port of its ready pods' HTTP listeners
    grpc_endpoints: tuple[str, ...] = ()  # and of their gRPC listeners
    service: str | None = None  # the Service whose EndpointSlices list them (discovery.py)


@dataclass(frozen=True)
class Shadow:
    """A copy of `percent` % of the requests the split sends elsewhere goes to `revision`."""

    revision: str
    percent: int


@dataclass(frozen=True)
class RouterConfig:
    model: str
    revisions: tuple[Revision, ...]
    timeout_ms: int = 30_000
    retries: Retries = field(default_factory=Retries)
    circuit_breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    breaker: Breaker = field(default_factory=Breaker)
    shadow: Shadow | None = None
    # Queued plus in flight at every endpoint of a revision from which its sheddable requests
    # are refused (criticality.py); 0: never for that.
    sheddable_queue_depth: int = 0

    @property
    def weights(self) -> list[tuple[str, int]]:
        return [(r.name, r.weight) for r in self.revisions]

    def revision(self, name: str) -> Revision | None:
        return next((r for r in self.revisions if r.name == name), None)

    @property
    def services(self) -> frozenset[str]:
        """The Services the revisions name: the ones discovery watches (none: no discovery)."""
        return frozenset(r.service for r in self.revisions if r.service is not None)


def _object(value: Any, where: str, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected an object, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}")
    return value


def _int(value: Any, where: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise ConfigError(f"{where}: {value} is out of range ({bound})")
    return value


def _fraction(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ConfigError(f"{where}: expected a number in (0, 1], got {value!r}")
    return float(value)


def _endpoint(value: Any, where: str) -> str:
    host, sep, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}: expected host:port, got {value!r}")
    return str(value)


# A Service's name is a DNS-1123 label (RFC 1123, as Kubernetes validates it).
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _service(value: Any, where: str) -> str:
    if not isinstance(value, str) or _DNS_LABEL.fullmatch(value) is None:
        raise ConfigError(f"{where}: expected a Service name (a DNS-1123 label), got {value!r}")
    return value


def _endpoints(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of host:port")
    return tuple(_endpoint(e, f"{where}[{i}]") for i, e in enumerate(value))


def parse(document: Any) -> RouterConfig:
    """The configuration in `document` (decoded JSON), or ConfigError naming what is wrong."""
    top = _object(document, "config", {"model", "timeoutMs", "retries", "circuitBreaker",
                                       "breaker", "revisions", "shadow",
                                       "sheddableQueueDepth"})  # fmt: skip
    model = top.get("model")
    if not isinstance(model, str) or not model:
        raise ConfigError(f"model: expected a name, got {model!r}")
    raw_retries = _object(top.get("retries", {}), "retries", {"attempts", "budgetPercent"})
    retries = Retries(
        attempts=_int(raw_retries.get("attempts", 2), "retries.attempts", 0, 10),
        budget_percent=_int(raw_retries.get("budgetPercent", 20), "retries.budgetPercent", 0, 100),
    )
    raw_breaker = _object(
        top.get("circuitBreaker", {}),
        "circuitBreaker",
        {"consecutiveErrors", "errorRateThreshold", "ejectionSeconds", "maxEjectedPercent"},
    )
    breaker = CircuitBreaker(
        consecutive_errors=_int(
            raw_breaker.get("consecutiveErrors", 5), "circuitBreaker.consecutiveErrors", 1
        ),
        error_rate_threshold=_fraction(
            raw_breaker.get("errorRateThreshold", 0.5), "circuitBreaker.errorRateThreshold"
        ),
        ejection_seconds=float(
            _int(raw_breaker.get("ejectionSeconds", 30), "circuitBreaker.ejectionSeconds", 1)
        ),
        max_ejected_percent=_int(
            raw_breaker.get("maxEjectedPercent", 50), "circuitBreaker.maxEjectedPercent", 0, 100
        ),
    )
    raw = _object(top.get("breaker", {}), "breaker",
                  {"minRequests", "openSeconds", "halfOpenProbes", "maxConcurrent"})  # fmt: skip
    revision_breaker = Breaker(
        min_requests=_int(raw.get("minRequests", 20), "breaker.minRequests", 1),
        open_seconds=float(_int(raw.get("openSeconds", 5), "breaker.openSeconds", 1)),
        half_open_probes=_int(raw.get("halfOpenProbes", 3), "breaker.halfOpenProbes", 1),
        max_concurrent=_int(raw.get("maxConcurrent", 0), "breaker.maxConcurrent", 0),
    )
    raw_revisions = top.get("revisions")
    if not isinstance(raw_revisions, list) or not raw_revisions:
        raise ConfigError("revisions: expected a list of at least one revision")
    revisions = []
    for n, raw in enumerate(raw_revisions):
        where = f"revisions[{n}]"
        item = _object(raw, where, {"name", "weight", "endpoints", "grpcEndpoints", "service"})
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.name: expected a revision name, got {name!r}")
        service = _service(item["service"], f"{where}.service") if "service" in item else None
        revisions.append(
            Revision(
                name=name,
                weight=_int(item.get("weight"), f"{where}.weight", 0, 100),
                endpoints=_endpoints(item.get("endpoints", []), f"{where}.endpoints"),
                grpc_endpoints=_endpoints(item.get("grpcEndpoints", []), f"{where}.grpcEndpoints"),
                service=service,
            )
        )
    names = [r.name for r in revisions]
    if len(set(names)) != len(names):
        raise ConfigError(f"revisions: a name appears twice ({', '.join(names)})")
    shadow = None
    if top.get("shadow") is not None:
        raw_shadow = _object(top["shadow"], "shadow", {"revision", "percent"})
        target = raw_shadow.get("revision")
        if target not in names:
            raise ConfigError(
                f"shadow.revision: {target!r} is not one of the revisions ({', '.join(names)})"
            )
        shadow = Shadow(str(target), _int(raw_shadow.get("percent"), "shadow.percent", 0, 100))
    return RouterConfig(
        model=model,
        revisions=tuple(revisions),
        timeout_ms=_int(top.get("timeoutMs", 30_000), "timeoutMs", 1),
        retries=retries,
        circuit_breaker=breaker,
        breaker=revision_breaker,
        shadow=shadow,
        sheddable_queue_depth=_int(top.get("sheddableQueueDepth", 0), "sheddableQueueDepth", 0),
    )


def load(path: Path) -> RouterConfig:
    """The configuration in the file at `path`, or ConfigError (unreadable, not JSON, invalid)."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror or error}") from error
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: not JSON: {error}") from error
    return parse(document)
