"""The router reads its configuration from its ConfigMap through the API, as the operator deploys
it: with the service account, Role and RoleBinding the operator renders for it (only its own
ConfigMap, by name), on a real API server that enforces RBAC. The router runs as a process on
127.0.0.1 with a kubeconfig holding that service account's token; the test writes the
ConfigMap as the operator does at each rollout step and reads the router's /config and /readyz.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, utils
from kubernetes.client.rest import ApiException

from davit_operator import api, naming
from davit_operator.planners import children
from davit_router.testing import RunningRouter, StartingRouter, start_router
from e2e_support import wait_for

pytestmark = pytest.mark.e2e

MODEL = "resnet"
TIMEOUT = 30


def unowned(manifest: dict[str, Any]) -> dict[str, Any]:
    """`manifest` without its owner reference: the test's owner does not exist, and the garbage
    collector would delete what names it."""
    metadata = {k: v for k, v in manifest["metadata"].items() if k != "ownerReferences"}
    return {**manifest, "metadata": metadata}


def router_configmap(namespace: str, weights: list[tuple[str, int]]) -> dict[str, Any]:
    owner = children.Owner(MODEL, namespace, "uid-of-no-model")
    return unowned(
        children.build_router_config(
            owner, api.Traffic.model_validate({"provider": "builtin"}), weights
        )
    )


def token_kubeconfig(kubeconfig: Path, token: str, path: Path) -> Path:
    """The cluster of `kubeconfig` (its server and CA), reached with `token` alone."""
    document = yaml.safe_load(kubeconfig.read_text())
    current = next(c for c in document["contexts"] if c["name"] == document["current-context"])
    cluster = next(c for c in document["clusters"] if c["name"] == current["context"]["cluster"])
    server = dict(cluster["cluster"])
    if "certificate-authority" in server:  # relative to the kubeconfig's folder
        server["certificate-authority"] = str(kubeconfig.parent / server["certificate-authority"])
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "router",
        "contexts": [{"name": "router", "context": {"cluster": "c", "user": "router"}}],
        "clusters": [{"name": "c", "cluster": server}],
        "users": [{"name": "router", "user": {"token": token}}],
    }))  # fmt: skip
    return path


@pytest.fixture
def router_account(
    tmp_path: Path, kube_env: dict[str, str], api_client: client.ApiClient, namespace: str
) -> tuple[Path, client.ApiClient]:
    """A kubeconfig as the router's service account, with exactly the access the operator
    grants it; and an API client with the same token (to show what it may not do)."""
    owner = children.Owner(MODEL, namespace, "uid-of-no-model")
    for manifest in children.build_router_access(owner):
        utils.create_from_dict(api_client, unowned(manifest), namespace=namespace)
    name = naming.router_name(MODEL)
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    token = (
        client.CoreV1Api(api_client)
        .create_namespaced_service_account_token(name, namespace, request)
        .status.token
    )
    kubeconfig = token_kubeconfig(
        Path(kube_env["KUBECONFIG"]), token, tmp_path / "router-kubeconfig.json"
    )
    configuration = client.Configuration()
    configuration.host = api_client.configuration.host
    configuration.ssl_ca_cert = api_client.configuration.ssl_ca_cert
    configuration.verify_ssl = api_client.configuration.verify_ssl
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return kubeconfig, client.ApiClient(configuration)


@pytest.fixture
def starting(
    tmp_path: Path, router_account: tuple[Path, client.ApiClient], namespace: str
) -> Iterator[StartingRouter]:
    kubeconfig, _ = router_account
    name = naming.router_name(MODEL)
    router = start_router(
        tmp_path / "router.log",
        *("--configmap", name, "--namespace", namespace, "--kubeconfig", str(kubeconfig)),
    )
    try:
        yield router
    finally:
        if router.process.poll() is None:
            router.process.terminate()
        code = router.process.wait(timeout=30)
        log = router.log.read_text()
        assert code == 0, log
        assert "Traceback" not in log, log
        assert "failed" not in log, log  # a refusal (403) would be logged as a failed watch


def admin_get(admin: str, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://{admin}{path}", timeout=10) as response:
            return int(response.status), json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def weights_in_force(router: RunningRouter) -> list[tuple[str, int]]:
    return [(r["name"], r["weight"]) for r in router.applied()["revisions"]]


def test_the_router_waits_for_its_configmap_then_has_each_step_in_force_at_once(
    starting: StartingRouter,
    api_client: client.ApiClient,
    router_account: tuple[Path, client.ApiClient],
    namespace: str,
) -> None:
    core = client.CoreV1Api(api_client)
    name = naming.router_name(MODEL)
    # Before its ConfigMap exists only the admin port listens, and it says what it waits for.
    status, body = admin_get(starting.admin, "/readyz")
    assert status == 503
    assert f"ConfigMap {namespace}/{name}" in body["reason"]
    assert admin_get(starting.admin, "/healthz")[0] == 200  # alive: a restart would not help

    core.create_namespaced_config_map(
        namespace, router_configmap(namespace, [("a", 90), ("b", 10)])
    )
    router = starting.ready(TIMEOUT)
    assert weights_in_force(router) == [("a", 90), ("b", 10)]
    # Ready once the revisions' Services are listed (none has an endpoint here: listed empty).
    wait_for(lambda: admin_get(router.admin, "/readyz")[0] == 200, timeout=TIMEOUT,
             what="the router to be ready")  # fmt: skip

    # Each step the operator writes is in force within a watch event's delay (the 5 s here
    # are for a loaded machine), not the minute or more a mounted ConfigMap takes.
    def step_in_force(step: list[tuple[str, int]]) -> None:
        core.replace_namespaced_config_map(name, namespace, router_configmap(namespace, step))
        wait_for(lambda: weights_in_force(router) == step, timeout=5, interval=0.05,
                 what=f"the router to route {step}")  # fmt: skip

    step_in_force([("a", 50), ("b", 50)])
    step_in_force([("a", 0), ("b", 100)])

    # A configuration the router refuses is logged; the one in force stays.
    core.patch_namespaced_config_map(name, namespace, {"data": {"router.json": "{"}})
    wait_for(lambda: "not applied" in router.log.read_text(), timeout=TIMEOUT,
             what="the router to log the refusal")  # fmt: skip
    assert weights_in_force(router) == [("a", 0), ("b", 100)]
    # Deleted (the operator deletes it only with the router): the configuration in force stays.
    core.delete_namespaced_config_map(name, namespace)
    wait_for(lambda: "was deleted" in router.log.read_text(), timeout=TIMEOUT,
             what="the router to log the deletion")  # fmt: skip
    assert weights_in_force(router) == [("a", 0), ("b", 100)]

    # The Role names the router's ConfigMap only: the same token may not list the others.
    _, as_router = router_account
    with pytest.raises(ApiException) as refused:
        client.CoreV1Api(as_router).list_namespaced_config_map(namespace)
    assert refused.value.status == 403
