"""Each revision's endpoints from its Service's EndpointSlices, watched on the API server.

A revision that names a Service (`"service": "resnet-232d26766d"`, config.py) is served by the
ready endpoints of that Service's EndpointSlices (discovery.k8s.io/v1), found here and handed to
the router whenever they change; the router keeps the breakers and ejections of what stays.

The decisions are pure and come first:

    endpoints_of       a Service's slices → its (http, grpc) `ip:port` lists
    SliceCache         a LIST snapshot plus WATCH events → the slices by Service
    discovered_config  the given configuration with the endpoints found put in

then `EndpointSliceWatcher`, a `kubeapi.ListWatch` of the slices feeding a SliceCache.

One watch per namespace, not one per Service: a single LIST + WATCH with the label selector
`kubernetes.io/service-name in (a,b,...)` asks the API server for exactly the slices of the
configured Services (no other slice in the namespace crosses the wire), over one connection
however many revisions there are. When the set of Services changes (a revision added or
removed), the watcher is replaced by one with the new selector.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, NamedTuple
from urllib.parse import quote

from davit_router.config import RouterConfig
from davit_router.hostport import host_port
from davit_router.kubeapi import KubeClient, ListWatch

logger = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
HTTP_PORT, GRPC_PORT = "http", "grpc"  # the port names of a revision's Service


# ---- pure: what a Service's slices say ---------------------------------------------------------
class Endpoints(NamedTuple):
    """A Service's ready endpoints, `ip:port` sorted and without repeats."""

    http: tuple[str, ...]
    grpc: tuple[str, ...]


def _takes_traffic(endpoint: Mapping[str, Any]) -> bool:
    """Whether new requests may go to `endpoint`: ready (absent means ready, by the API's
    contract) and not terminating. A terminating endpoint may still be `serving` what it has
    (and `ready` where the Service publishes not-ready addresses); it is drained all the same."""
    conditions = endpoint.get("conditions") or {}
    return conditions.get("ready") is not False and conditions.get("terminating") is not True


def _named_port(slice_: Mapping[str, Any], name: str) -> int | None:
    for port in slice_.get("ports") or ():
        # A port without a number means "all ports" (a Service without ports): none for us.
        numbered = isinstance(port.get("port"), int)
        if port.get("name") == name and numbered and port.get("protocol", "TCP") == "TCP":
            return int(port["port"])
    return None


def endpoints_of(slices: Iterable[Mapping[str, Any]]) -> Endpoints:
    """The (http, grpc) `ip:port` lists of the endpoints that take traffic (`_takes_traffic`)
    in a Service's EndpointSlices. Ports are found by name (`http`, `grpc`) in each slice's own
    `ports`, so a slice without a `grpc` port gives only HTTP endpoints. Sorted, deduplicated
    (one address may be listed by two slices while the controller moves it)."""
    found: dict[str, set[str]] = {HTTP_PORT: set(), GRPC_PORT: set()}
    for slice_ in slices:
        ports = {name: number for name in found if (number := _named_port(slice_, name))}
        for endpoint in slice_.get("endpoints") or ():
            if not _takes_traffic(endpoint):
                continue
            for address in endpoint.get("addresses") or ():
                for name, number in ports.items():
                    found[name].add(host_port(address, number))
    return Endpoints(tuple(sorted(found[HTTP_PORT])), tuple(sorted(found[GRPC_PORT])))


def _name(document: Mapping[str, Any]) -> str:
    return str((document.get("metadata") or {}).get("name", ""))


def _service_of(slice_: Mapping[str, Any]) -> str | None:
    labels = (slice_.get("metadata") or {}).get("labels") or {}
    service = labels.get(SERVICE_NAME_LABEL)
    return service if isinstance(service, str) else None


class SliceCache:
    """The EndpointSlices of some Services as the API server last said: replaced by a LIST,
    updated by WATCH events."""

    def __init__(self, services: frozenset[str]) -> None:
        self.services = services
        self._slices: dict[str, Mapping[str, Any]] = {}

    def replace(self, items: Iterable[Mapping[str, Any]]) -> None:
        """A LIST's items: everything known before is forgotten."""
        self._slices = {_name(s): s for s in items if _service_of(s) in self.services}

    def apply(self, kind: str, slice_: Mapping[str, Any]) -> None:
        """One watch event (ADDED, MODIFIED, DELETED; others change nothing). A slice relabelled
        away from our Services is dropped like a deleted one."""
        name = _name(slice_)
        if kind == "DELETED" or (kind in ("ADDED", "MODIFIED") and
                                 _service_of(slice_) not in self.services):  # fmt: skip
            self._slices.pop(name, None)
        elif kind in ("ADDED", "MODIFIED"):
            self._slices[name] = slice_

    def endpoints(self) -> dict[str, Endpoints]:
        """Every watched Service's endpoints; a Service without a slice has none."""
        by_service: dict[str, list[Mapping[str, Any]]] = {s: [] for s in self.services}
        for slice_ in self._slices.values():
            service = _service_of(slice_)
            if service is not None:
                by_service[service].append(slice_)
        return {service: endpoints_of(slices) for service, slices in by_service.items()}


def label_selector(services: Iterable[str]) -> str:
    """The selector of the slices of `services` (set-based, so one LIST + WATCH serves all)."""
    return f"{SERVICE_NAME_LABEL} in ({','.join(sorted(services))})"


def discovered_config(config: RouterConfig, found: Mapping[str, Endpoints]) -> RouterConfig:
    """`config` (the file's) with each revision that names a Service given the endpoints found
    for it; a Service not listed yet leaves the revision's static endpoints in force (and a
    Service listed with no ready endpoint leaves it none). Every other field as it is."""
    revisions = tuple(
        replace(r, endpoints=found[r.service].http, grpc_endpoints=found[r.service].grpc)
        if r.service is not None and r.service in found
        else r
        for r in config.revisions
    )
    return replace(config, revisions=revisions)


# ---- the watcher ---------------------------------------------------------------------------
class EndpointSliceWatcher:
    """The endpoints of `services` in `namespace`, kept current by a `ListWatch` of their
    slices: `on_change` is given every Service's endpoints after the first list and after each
    change (and only then). `run` never ends but by cancellation."""

    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        services: frozenset[str],
        on_change: Callable[[dict[str, Endpoints]], None],
        *,
        watch_seconds: int = 300,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self._cache = SliceCache(services)
        self._on_change = on_change
        self._published: dict[str, Endpoints] | None = None
        selector = quote(label_selector(services), safe="")
        self._watch = ListWatch(
            client,
            f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
            f"?labelSelector={selector}",
            f"EndpointSlices in {namespace}",
            self._listed,
            self._changed,
            watch_seconds=watch_seconds,
            sleep=sleep,
        )

    async def run(self) -> None:
        await self._watch.run()

    def _listed(self, items: list[dict[str, Any]]) -> None:
        self._cache.replace(items)
        self._publish()

    def _changed(self, kind: str, slice_: dict[str, Any]) -> None:
        self._cache.apply(kind, slice_)
        self._publish()

    def _publish(self) -> None:
        found = self._cache.endpoints()
        if found == self._published:
            return
        for service, endpoints in sorted(found.items()):
            before = (self._published or {}).get(service)
            if endpoints != before:
                http = ", ".join(endpoints.http) or "none"
                grpc = ", ".join(endpoints.grpc) or "none"
                logger.info("service %s: endpoints http %s; grpc %s", service, http, grpc)
        self._published = found
        self._on_change(found)
