"""e2e fixtures: a real control plane (the local one, or kind), the CRD, the operator as a process.

The suite brings the local cluster up with e2e/cluster/up.sh (state under $DAVIT_STATE) unless
one already answers there, or DAVIT_E2E_KUBECONFIG names another cluster (kind); it takes down
only what it started. The operator runs as a real process against it; nothing here mocks the API.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from e2e_support import (
    CLUSTER_DIR,
    GROUP,
    PLURAL,
    REPO,
    Models,
    OperatorProcess,
    cluster_answers,
    cluster_env,
    kubectl,
)

STATE = Path(os.environ.get("DAVIT_STATE", REPO / ".run"))


@pytest.fixture(scope="session")
def kube_env() -> Iterator[dict[str, str]]:
    env = {**os.environ, **cluster_env()}
    # Another cluster (kind) only when asked by name: a KUBECONFIG left in the shell may point
    # at a cluster that matters.
    if os.environ.get("DAVIT_E2E_KUBECONFIG"):
        env["KUBECONFIG"] = os.environ["DAVIT_E2E_KUBECONFIG"]
    started_here = False
    if not cluster_answers(env):
        subprocess.run(["bash", str(CLUSTER_DIR / "up.sh")], env=env, check=True)
        started_here = True
    yield env
    if started_here and not os.environ.get("DAVIT_E2E_KEEP_CLUSTER"):
        subprocess.run(["bash", str(CLUSTER_DIR / "down.sh")], env=env, check=False)


@pytest.fixture(scope="session")
def api_client(kube_env: dict[str, str]) -> client.ApiClient:
    return config.new_client_from_config(config_file=kube_env["KUBECONFIG"])


@pytest.fixture(scope="session")
def crd(kube_env: dict[str, str]) -> None:
    kubectl(kube_env, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    kubectl(
        kube_env,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        f"crd/{PLURAL}.{GROUP}",
    )


@pytest.fixture(scope="session")
def operator(kube_env: dict[str, str], crd: None) -> Iterator[OperatorProcess]:
    """The operator as a real process; its log is shown when a test fails."""
    STATE.mkdir(parents=True, exist_ok=True)
    process = OperatorProcess(kube_env, STATE / "e2e-operator.log")
    process.log_path.write_text("")
    process.start()
    try:
        yield process
    finally:
        process.stop()
    assert "Traceback" not in process.log(), f"operator logged a traceback: {process.log_path}"


@pytest.fixture
def namespace(kube_env: dict[str, str], api_client: client.ApiClient) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


@pytest.fixture
def models(operator: OperatorProcess, api_client: client.ApiClient, namespace: str) -> Models:
    return Models(api_client, namespace)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    outcome: Any = yield
    report = outcome.get_result()
    log = STATE / "e2e-operator.log"
    if report.when == "call" and report.failed and log.exists():
        report.sections.append(("operator log (tail)", log.read_text()[-6000:]))
