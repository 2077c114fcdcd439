"""The router reads what the operator writes: the ConfigMap of traffic.provider builtin, for
every traffic setting the API allows, parses into the configuration the operator meant, and the
router's command line the operator renders names that ConfigMap."""

from __future__ import annotations

import pytest

from davit_operator import api
from davit_operator.config import OperatorConfig
from davit_operator.planners import children
from davit_router.cli import parse_args
from davit_router.config import CircuitBreaker, Retries
from davit_router.configmap import config_in

OWNER = children.Owner("resnet", "ml", "uid-1")
TRAFFIC = [
    {"provider": "builtin"},
    {"provider": "builtin", "timeoutMs": 1, "retries": {"attempts": 0, "budgetPercent": 0}},
    {"provider": "builtin", "timeoutMs": 600_000, "retries": {"attempts": 10, "budgetPercent": 100},
     "circuitBreaker": {"consecutiveErrors": 1, "errorRateThreshold": 1, "ejectionSeconds": 1,
                        "maxEjectedPercent": 0},
     "maxConcurrentRequests": 1, "sheddableQueueDepth": 0},
    {"provider": "builtin", "maxConcurrentRequests": 100_000, "sheddableQueueDepth": 100_000},
]  # fmt: skip


@pytest.mark.parametrize("traffic", TRAFFIC)
def test_the_router_parses_the_configuration_the_operator_renders(
    traffic: dict[str, object],
) -> None:
    settings = api.Traffic.model_validate(traffic)
    weights = [("0ld57ab1e", 90), ("232d26766d", 10)]
    manifest = children.build_router_config(OWNER, settings, weights)
    config = config_in(manifest)  # by the router's own key and parse
    assert config.weights == weights
    assert [r.service for r in config.revisions] == ["resnet-0ld57ab1e", "resnet-232d26766d"]
    assert config.timeout_ms == settings.timeout_ms
    assert config.retries == Retries(settings.retries.attempts, settings.retries.budget_percent)
    breaker = settings.circuit_breaker
    assert config.circuit_breaker == CircuitBreaker(
        breaker.consecutive_errors, breaker.error_rate_threshold, breaker.ejection_seconds,
        breaker.max_ejected_percent,
    )  # fmt: skip
    assert config.breaker.max_concurrent == settings.max_concurrent_requests
    assert config.sheddable_queue_depth == settings.sheddable_queue_depth


def test_the_router_pods_command_line_reads_the_configmap_the_operator_writes() -> None:
    deployment = children.build_router_deployment(
        OWNER, OperatorConfig(), api.Traffic.model_validate({"provider": "builtin"})
    )
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["davit-router"]
    args = parse_args(container["args"])
    manifest = children.build_router_config(
        OWNER, api.Traffic.model_validate({"provider": "builtin"}), [("a", 100)]
    )
    assert args.configmap == manifest["metadata"]["name"]
    assert args.config is None
    assert args.drain_seconds == children.ROUTER_DRAIN_SECONDS
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (args.port, args.grpc_port, args.admin_port) == (
        ports["http"], ports["grpc"], ports["admin"]
    )  # fmt: skip


@pytest.mark.parametrize("timeout_ms", [1, 30_000, 600_000])
def test_the_router_pods_grace_covers_its_drain_and_the_longest_request(timeout_ms: int) -> None:
    traffic = api.Traffic.model_validate({"provider": "builtin", "timeoutMs": timeout_ms})
    deployment = children.build_router_deployment(OWNER, OperatorConfig(), traffic)
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    drain = parse_args(container["args"]).drain_seconds
    # Past the grace the kubelet kills the router: a request still running would be cut.
    assert pod["terminationGracePeriodSeconds"] > drain + timeout_ms / 1000
