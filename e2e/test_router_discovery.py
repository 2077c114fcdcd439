"""The router finds a revision's endpoints by watching its Service's EndpointSlices on a real API
server: the router runs as a process on 127.0.0.1 with the cluster's kubeconfig (client
certificates), and a test changes the slices through the API and reads /config.

The slices are written by hand, for a Service without a selector (the endpoint-slice controller
leaves those alone). The controller manager does make slices for kwok's pods (kwok gives them
IPs and Ready), but kwok owns those pods' status, so a test could not turn one not ready or
terminating at will; hand-written slices say exactly what each case needs.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from davit_router.testing import RunningRouter, launch_router
from e2e_support import wait_for

pytestmark = pytest.mark.e2e

SERVICE = "resnet-abc"
TIMEOUT = 30


def endpoint(address: str, **conditions: bool) -> dict[str, Any]:
    return {"addresses": [address], "conditions": conditions}


def endpoint_slice(*endpoints: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": f"{SERVICE}-1", "labels": {"kubernetes.io/service-name": SERVICE}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                  {"name": "grpc", "port": 8081, "protocol": "TCP"}],
        "endpoints": list(endpoints),
    }  # fmt: skip


@pytest.fixture
def router(
    tmp_path: Path, kube_env: dict[str, str], api_client: client.ApiClient, namespace: str
) -> Iterator[RunningRouter]:
    client.CoreV1Api(api_client).create_namespaced_service(namespace, {
        "metadata": {"name": SERVICE},
        "spec": {"ports": [{"name": "http", "port": 8080}, {"name": "grpc", "port": 8081}]},
    })  # fmt: skip
    revision = {"name": "abc", "weight": 100, "service": SERVICE}
    document = {"model": "resnet", "revisions": [revision]}
    running = launch_router(
        tmp_path / "router.json", document, tmp_path / "router.log",
        "--kubeconfig", kube_env["KUBECONFIG"], "--namespace", namespace,
    )  # fmt: skip
    try:
        yield running
    finally:
        code = running.stop()
        log = running.log.read_text()
        assert code == 0, log
        assert "Traceback" not in log, log


def endpoints_in_force(router: RunningRouter) -> tuple[list[str], list[str]]:
    (revision,) = router.applied()["revisions"]
    return revision["endpoints"], revision["grpc_endpoints"]


def wait_for_endpoints(router: RunningRouter, http: list[str], grpc: list[str]) -> None:
    wanted = (http, grpc)
    try:
        wait_for(lambda: endpoints_in_force(router) == wanted, timeout=TIMEOUT,
                 what=f"the router's endpoints to be {wanted}")  # fmt: skip
    except AssertionError as error:
        raise AssertionError(f"{error}\nnow: {endpoints_in_force(router)}\n"
                             f"log:\n{router.log.read_text()}") from None  # fmt: skip


def infer_status(router: RunningRouter) -> int:
    request = urllib.request.Request(
        f"http://{router.http}/v2/models/resnet/infer", data=b"{}", method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_the_router_follows_the_ready_endpoints_of_its_services_slices(
    router: RunningRouter, api_client: client.ApiClient, namespace: str
) -> None:
    slices = client.DiscoveryV1Api(api_client)
    # Listed at start: no slice yet, so no endpoint (and no request can be served).
    wait_for_endpoints(router, [], [])
    assert infer_status(router) == 503

    slices.create_namespaced_endpoint_slice(namespace, endpoint_slice(
        endpoint("10.1.0.1", ready=True, serving=True, terminating=False),
        {"addresses": ["10.1.0.2"]},  # no conditions: ready, by the API's contract
        endpoint("10.1.0.3", ready=False, serving=False, terminating=False),
        endpoint("10.1.0.4", ready=False, serving=True, terminating=True),  # being drained
    ))  # fmt: skip
    wait_for_endpoints(
        router, ["10.1.0.1:8080", "10.1.0.2:8080"], ["10.1.0.1:8081", "10.1.0.2:8081"]
    )

    # One endpoint's readiness probe fails: it is removed, the other stays.
    slices.patch_namespaced_endpoint_slice(f"{SERVICE}-1", namespace, {"endpoints": [
        endpoint("10.1.0.1", ready=True, serving=True, terminating=False),
        endpoint("10.1.0.2", ready=False, serving=False, terminating=False),
    ]})  # fmt: skip
    wait_for_endpoints(router, ["10.1.0.1:8080"], ["10.1.0.1:8081"])

    slices.delete_namespaced_endpoint_slice(f"{SERVICE}-1", namespace)
    wait_for_endpoints(router, [], [])
    assert infer_status(router) == 503  # the revision has no endpoint: answered by the router
