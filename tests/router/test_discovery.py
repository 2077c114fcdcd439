"""Endpoint discovery: what a Service's EndpointSlices say, and the watcher that keeps them
(over a scripted client; e2e/test_router_discovery.py runs it against a real API server)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from scripted_api import ScriptedClient, Sleeps, bookmark, event, listed

from davit_router.config import parse
from davit_router.discovery import (
    Endpoints,
    EndpointSliceWatcher,
    SliceCache,
    discovered_config,
    endpoints_of,
    label_selector,
)

PORTS = [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "grpc", "port": 8081}]


def slice_(
    *endpoints: dict[str, Any],
    service: str = "resnet-a",
    name: str = "resnet-a-1",
    ports: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": PORTS if ports is None else ports,
        "endpoints": list(endpoints),
    }


def endpoint(*addresses: str, **conditions: bool) -> dict[str, Any]:
    found: dict[str, Any] = {"addresses": list(addresses)}
    if conditions:
        found["conditions"] = conditions
    return found


@dataclass(frozen=True)
class Case:
    reason: str
    slices: list[dict[str, Any]]
    want: tuple[tuple[str, ...], tuple[str, ...]]  # (http, grpc)


CASES = [
    Case("no slice, no endpoint", [], ((), ())),
    Case("ready endpoints on both named ports, sorted",
         [slice_(endpoint("10.0.0.2", ready=True), endpoint("10.0.0.1", ready=True))],
         (("10.0.0.1:8080", "10.0.0.2:8080"), ("10.0.0.1:8081", "10.0.0.2:8081"))),
    # discovery.k8s.io/v1: "a nil value should be interpreted as true".
    Case("no conditions at all means ready", [slice_(endpoint("10.0.0.1"))],
         (("10.0.0.1:8080",), ("10.0.0.1:8081",))),
    Case("a not ready endpoint is left out",
         [slice_(endpoint("10.0.0.1", ready=True), endpoint("10.0.0.2", ready=False))],
         (("10.0.0.1:8080",), ("10.0.0.1:8081",))),
    # A pod being deleted still serves what it has (serving: true) but takes nothing new.
    Case("a terminating endpoint that still serves is drained",
         [slice_(endpoint("10.0.0.1", ready=False, serving=True, terminating=True))], ((), ())),
    # With publishNotReadyAddresses a terminating endpoint may say ready: drained all the same.
    Case("a terminating endpoint that says ready is drained",
         [slice_(endpoint("10.0.0.1", ready=True, terminating=True))], ((), ())),
    Case("ports are taken by name, not by order",
         [slice_(endpoint("10.0.0.1"),
                 ports=[{"name": "grpc", "port": 9001}, {"name": "http", "port": 9000}])],
         (("10.0.0.1:9000",), ("10.0.0.1:9001",))),
    Case("a slice without a grpc port gives HTTP endpoints only",
         [slice_(endpoint("10.0.0.1"), ports=[{"name": "http", "port": 8080}])],
         (("10.0.0.1:8080",), ())),
    Case("other port names (metrics) are not ours",
         [slice_(endpoint("10.0.0.1"), ports=[{"name": "metrics", "port": 8002}])], ((), ())),
    Case("a UDP port of the right name is not ours",
         [slice_(endpoint("10.0.0.1"), ports=[{"name": "http", "port": 8080, "protocol": "UDP"}])],
         ((), ())),
    # A Service without ports has slices whose port has no number ("all ports").
    Case("a port without a number is not one", [slice_(endpoint("10.0.0.1"), ports=[{}])],
         ((), ())),
    # While the controller moves an endpoint between slices it may be in both.
    Case("an endpoint in two slices is listed once",
         [slice_(endpoint("10.0.0.1"), name="s1"), slice_(endpoint("10.0.0.1"), name="s2")],
         (("10.0.0.1:8080",), ("10.0.0.1:8081",))),
    # Each slice's endpoints take that slice's ports (a port change rolls out slice by slice).
    Case("each slice's own ports",
         [slice_(endpoint("10.0.0.1"), name="s1"),
          slice_(endpoint("10.0.0.2"), name="s2", ports=[{"name": "http", "port": 9000}])],
         (("10.0.0.1:8080", "10.0.0.2:9000"), ("10.0.0.1:8081",))),
    Case("IPv6 addresses are bracketed", [slice_(endpoint("fd00::1"))],
         (("[fd00::1]:8080",), ("[fd00::1]:8081",))),
    Case("every address of an endpoint (they are fungible, by the API)",
         [slice_(endpoint("10.0.0.1", "10.0.0.9"))],
         (("10.0.0.1:8080", "10.0.0.9:8080"), ("10.0.0.1:8081", "10.0.0.9:8081"))),
    # An empty slice comes with `endpoints: null`.
    Case("a slice without endpoints", [{**slice_(), "endpoints": None}], ((), ())),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.reason for c in CASES])
def test_endpoints_of(case: Case) -> None:
    assert endpoints_of(case.slices) == case.want


def test_the_cache_follows_a_list_then_events_for_the_watched_services_only() -> None:
    cache = SliceCache(frozenset({"resnet-a", "resnet-b"}))
    cache.replace([slice_(endpoint("10.0.0.1")), slice_(endpoint("10.9.9.9"), service="other")])
    assert cache.endpoints() == {
        "resnet-a": (("10.0.0.1:8080",), ("10.0.0.1:8081",)),
        "resnet-b": ((), ()),  # named, no slice yet: no endpoint
    }
    cache.apply("ADDED", slice_(endpoint("10.0.0.2"), service="resnet-b", name="resnet-b-1"))
    cache.apply("MODIFIED", slice_(endpoint("10.0.0.1", ready=False)))
    assert cache.endpoints() == {
        "resnet-a": ((), ()),
        "resnet-b": (("10.0.0.2:8080",), ("10.0.0.2:8081",)),
    }
    # Relabelled away from our Services: as good as deleted.
    cache.apply("MODIFIED", slice_(endpoint("10.0.0.2"), service="other", name="resnet-b-1"))
    assert cache.endpoints()["resnet-b"] == ((), ())
    cache.apply("ADDED", slice_(endpoint("10.0.0.3")))
    cache.apply("DELETED", slice_(name="resnet-a-1"))
    assert cache.endpoints()["resnet-a"] == ((), ())
    cache.replace([])  # a list forgets all that came before
    assert cache.endpoints() == {"resnet-a": ((), ()), "resnet-b": ((), ())}


def test_the_label_selector_names_every_service_once_in_order() -> None:
    assert (
        label_selector({"resnet-b", "resnet-a"})
        == "kubernetes.io/service-name in (resnet-a,resnet-b)"
    )


CONFIG = parse({
    "model": "resnet", "timeoutMs": 5000,
    "revisions": [
        {"name": "a", "weight": 90, "service": "resnet-a", "endpoints": ["10.9.0.1:8080"]},
        {"name": "b", "weight": 10, "service": "resnet-b"},
        {"name": "c", "weight": 0, "endpoints": ["10.9.0.3:8080"]},
    ],
})  # fmt: skip


def test_the_endpoints_found_replace_the_static_ones_and_nothing_else() -> None:
    found = {"resnet-a": Endpoints(("10.0.0.1:8080",), ("10.0.0.1:8081",))}
    config = discovered_config(CONFIG, found)
    a, b, c = config.revisions
    assert (a.endpoints, a.grpc_endpoints, a.service) == (
        ("10.0.0.1:8080",), ("10.0.0.1:8081",), "resnet-a"
    )  # fmt: skip
    assert b == CONFIG.revisions[1]  # not listed yet: its static lists (none) stay
    assert c == CONFIG.revisions[2]  # no Service: static
    assert (config.model, config.timeout_ms, config.weights) == ("resnet", 5000, CONFIG.weights)


def test_a_service_listed_without_ready_endpoints_leaves_its_revision_none() -> None:
    config = discovered_config(CONFIG, {"resnet-a": Endpoints((), ())})
    assert config.revisions[0].endpoints == ()


def test_the_watcher_publishes_each_services_endpoints_when_they_change() -> None:
    ready = slice_(endpoint("10.0.0.1"))
    client = ScriptedClient([
        ("LIST", listed("10", ready)),
        ("WATCH", [event("MODIFIED", slice_(endpoint("10.0.0.1"), endpoint("10.0.0.2")), "11"),
                   # The same endpoints again (another field of the slice changed): no news.
                   event("MODIFIED", slice_(endpoint("10.0.0.2"), endpoint("10.0.0.1")), "12"),
                   bookmark("15")]),
        ("WATCH", [event("DELETED", ready, "16")]),
    ])  # fmt: skip
    changes: list[Any] = []
    watcher = EndpointSliceWatcher(
        client,  # type: ignore[arg-type]  # the two methods the watcher uses
        "prod", frozenset({"resnet-a"}), changes.append, sleep=Sleeps(),
    )  # fmt: skip
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(watcher.run())
    assert changes == [
        {"resnet-a": (("10.0.0.1:8080",), ("10.0.0.1:8081",))},
        {"resnet-a": (("10.0.0.1:8080", "10.0.0.2:8080"), ("10.0.0.1:8081", "10.0.0.2:8081"))},
        {"resnet-a": ((), ())},
    ]
    selector = "labelSelector=kubernetes.io%2Fservice-name%20in%20%28resnet-a%29"
    assert (
        client.asked[0]
        == f"LIST /apis/discovery.k8s.io/v1/namespaces/prod/endpointslices?{selector}"
    )
