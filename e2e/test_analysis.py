"""Canary analysis with real figures: real `davit-runtime` processes on 127.0.0.1 under a bounded
load, a real Prometheus (built from Go modules by e2e/cluster/build.sh) scraping them, and the
operator reading that Prometheus for the ModelDeployment's analysis step.

The cluster's pods are kwok fakes, so each revision's serving pods are stood in for by one
runtime process whose series Prometheus labels with that revision's hash (computed the way the
operator computes it): stable v1 and a healthy v3 serve a plain model, the v2 canary a model
that fails about a fifth of its requests.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kubernetes import client
from lightkube import AsyncClient, KubeConfig
from test_canary import replicas_by_revision
from test_modeldeployment import gpu_spec, is_ready
from test_operator_loop import model_events

from davit_operator import api, naming
from davit_operator.kube import Kube
from davit_operator.planners.revision import revision_hash
from davit_runtime.testing import RunningServer, launch_server, write_model_repository
from e2e_support import Models, wait_for

pytestmark = pytest.mark.e2e

TIMEOUT = 120
# Requests per second to each runtime, and the longest the load may run: bounded, and it
# stops by itself even if a teardown is never reached.
RATE = 25
LOAD_LIMIT_S = 600
# Each revision's series carry its hash (the cluster's pod scrape would map the pod label
# davit.dev/revision the same way); the namespace is the test's own, so it is left out.
SELECTOR = 'davit_dev_revision="{revision}"'


def spec(version: str, prometheus_url: str) -> dict[str, Any]:
    analysis = {"interval": "4s", "failureLimit": 1, "minRequests": 20, "maxErrorRate": 0.05,
                "maxP99LatencyMs": 1000,
                "prometheus": {"url": prometheus_url, "selector": SELECTOR}}  # fmt: skip
    rollout = {"steps": [{"setWeight": 50}, {"analysis": {}}], "analysis": analysis}
    return {**gpu_spec(replicas=2, version=version), "rollout": rollout}


def hash_of(version: str) -> str:
    return revision_hash(api.ModelDeploymentSpec.model_validate(spec(version, "")))


@dataclass
class Figures:
    """The processes that stand for each revision's pods, and the Prometheus scraping them."""

    prometheus_url: str
    servers: dict[str, RunningServer]  # by revision hash


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def prometheus_binary(kube_env: dict[str, str]) -> str:
    folder = kube_env.get("DAVIT_BIN_PROMETHEUS", "")
    binary = shutil.which("prometheus", path=folder) if folder else None
    if binary is None:
        raise AssertionError(
            f"no prometheus in {folder!r}: `make cluster-build` builds it (e2e/cluster/build.sh)"
        )
    return binary


def start_prometheus(
    binary: str, work: Path, targets: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    """Prometheus scraping each target (host:port → revision) every second."""
    scrape = [{"targets": [address], "labels": {"davit_dev_revision": rev}}
              for address, rev in targets.items()]  # fmt: skip
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "davit-runtime", "static_configs": scrape}],
    }
    (work / "prometheus.yml").write_text(json.dumps(config))  # YAML is a superset of JSON
    address = f"127.0.0.1:{free_port()}"
    log = (work / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'tsdb'}",
         f"--web.listen-address={address}", "--storage.tsdb.retention.time=1h"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    url = f"http://{address}"

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"prometheus exited: {(work / 'prometheus.log').read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    wait_for(ready, timeout=60, what="Prometheus ready", interval=0.2)
    return process, url


def send_load(servers: list[RunningServer], stop: threading.Event) -> None:
    """RATE requests a second to each server, with inputs drawn from the standard normal."""
    rng = np.random.default_rng(7)
    connections = [http.client.HTTPConnection(s.http, timeout=10) for s in servers]
    deadline = time.monotonic() + LOAD_LIMIT_S
    while not stop.is_set() and time.monotonic() < deadline:
        tick = time.monotonic()
        for connection in connections:
            sample = rng.standard_normal(512).tolist()
            body = json.dumps(
                {"inputs": [{"name": "input", "datatype": "FP32", "shape": [512], "data": sample}]}
            )
            try:
                connection.request("POST", "/v2/models/resnet/infer", body,
                                   {"Content-Type": "application/json"})  # fmt: skip
                connection.getresponse().read()
            except (OSError, http.client.HTTPException):
                connection.close()  # reconnects on the next request
        stop.wait(max(0.0, 1 / RATE - (time.monotonic() - tick)))
    for connection in connections:
        connection.close()


@pytest.fixture(scope="module")
def figures(
    kube_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Figures]:
    binary = prometheus_binary(kube_env)
    work = tmp_path_factory.mktemp("analysis")
    plain, flaky = work / "plain", work / "flaky"
    write_model_repository(plain, "resnet", "linear", max_batch_size=0, max_queue_delay_ms=0)
    write_model_repository(flaky, "resnet", "flaky", max_batch_size=0, max_queue_delay_ms=0)
    repositories = {hash_of("v1"): plain, hash_of("v2"): flaky, hash_of("v3"): plain}
    servers: dict[str, RunningServer] = {}
    stop = threading.Event()
    prometheus: subprocess.Popen[bytes] | None = None
    load: threading.Thread | None = None
    try:
        for rev, repository in repositories.items():
            servers[rev] = launch_server(repository, work / f"runtime-{rev}.log")
        prometheus, url = start_prometheus(binary, work, {s.http: r for r, s in servers.items()})
        load = threading.Thread(target=send_load, args=(list(servers.values()), stop), daemon=True)
        load.start()
        yield Figures(url, servers)
    finally:
        stop.set()
        if load is not None:
            load.join(timeout=30)
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(timeout=30)
        for server in servers.values():
            server.stop()


def canary_record(models: Models, canary: str) -> dict[str, Any] | None:
    revisions = models.get("resnet").get("status", {}).get("revisions", [])
    return next((r for r in revisions if r["hash"] == canary), None)


def roll_out(models: Models, version: str, prometheus_url: str) -> tuple[str, str]:
    """v1 created and Ready, then `version` rolling out as its canary: (stable, canary)."""
    models.create("resnet", spec("v1", prometheus_url))
    wait_for(lambda: is_ready(models, "resnet"), timeout=TIMEOUT, what="v1 Ready")
    stable = hash_of("v1")
    assert models.get("resnet")["status"]["stableRevision"] == stable
    models.patch_spec("resnet", spec(version, prometheus_url))
    return stable, hash_of(version)


def test_a_canary_failing_requests_is_rolled_back_with_its_figures(
    models: Models, api_client: client.ApiClient, namespace: str, figures: Figures
) -> None:
    stable, canary = roll_out(models, "v2", figures.prometheus_url)

    def rolled_back() -> dict[str, Any] | None:
        record = canary_record(models, canary)
        return record if record is not None and record["outcome"] == "RolledBack" else None

    record = wait_for(rolled_back, timeout=TIMEOUT, what="the canary rolled back")
    measured = record["analysis"]
    assert measured["verdict"] == "Fail", measured
    # Measured by Prometheus over a real window: about a fifth of the canary's requests failed.
    assert measured["canary"]["requests"] >= 20, measured
    assert 0.05 < measured["canary"]["errorRate"] < 0.5, measured
    assert measured["stable"]["errorRate"] == 0, measured
    assert "over max 5 %" in measured["message"]
    status = models.get("resnet")["status"]
    assert (status["stableRevision"], status["analysisFailures"]) == (stable, 2)  # failureLimit 1
    health = models.condition("resnet", "CanaryHealthy") or {}
    assert (health.get("status"), health.get("reason")) == ("False", "AnalysisFailed")
    # Stable takes all traffic back only at full size, then the canary goes to zero.
    wait_for(
        lambda: replicas_by_revision(api_client, namespace) == {stable: 2, canary: 0},
        timeout=TIMEOUT,
        what="stable at full size and the canary at zero",
    )
    reasons = [e.reason for e in model_events(api_client, namespace, "resnet")]
    assert reasons.count("RolledBack") == 1, reasons
    assert reasons.count("AnalysisFailed") == 1, reasons  # the first failure, measured again


def test_a_healthy_canary_passes_analysis_and_is_promoted(
    models: Models, api_client: client.ApiClient, namespace: str, figures: Figures
) -> None:
    stable, canary = roll_out(models, "v3", figures.prometheus_url)

    def promoted() -> dict[str, Any] | None:
        status: dict[str, Any] = models.get("resnet").get("status", {})
        done = status.get("stableRevision") == canary and is_ready(models, "resnet")
        return status if done else None

    wait_for(promoted, timeout=TIMEOUT, what="the canary promoted")
    record = canary_record(models, canary)
    assert record is not None
    assert record["outcome"] == "Stable", record
    measured = record["analysis"]
    assert measured["verdict"] == "Pass", measured
    assert measured["canary"]["requests"] >= 20
    assert measured["canary"]["errorRate"] == 0
    assert measured["canary"]["p99LatencyMs"] is not None
    assert replicas_by_revision(api_client, namespace) == {canary: 2}
    assert stable not in replicas_by_revision(api_client, namespace)
    reasons = [e.reason for e in model_events(api_client, namespace, "resnet")]
    assert not {"RolledBack", "AnalysisFailed"} & set(reasons), reasons


def test_a_prometheus_that_cannot_be_reached_holds_the_canary_without_failing_it(
    models: Models, namespace: str, figures: Figures
) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    _, canary = roll_out(models, "v3", unreachable)

    def unavailable() -> dict[str, Any] | None:
        progressing = models.condition("resnet", "Progressing") or {}
        return progressing if progressing.get("reason") == "MetricsUnavailable" else None

    progressing = wait_for(unavailable, timeout=TIMEOUT, what="MetricsUnavailable")
    assert unreachable in progressing["message"]
    status = models.get("resnet")["status"]
    assert (status["currentStep"], status.get("analysisFailures", 0)) == (1, 0)
    record = canary_record(models, canary)
    assert record is not None
    assert record["outcome"] == "Progressing", record


def test_the_router_source_finds_the_ready_router_pods_through_the_api(
    models: Models, api_client: client.ApiClient, namespace: str, kube_env: dict[str, str]
) -> None:
    # Behind the builtin router with no Prometheus, a measurement reads every ready router
    # pod's /figures: this checks, against the real API server, the list that finds them
    # (Kube.ready_pod_ips, as handlers.py calls it). The pods are kwok's, so nothing is asked
    # of them here (their addresses are no test's to send traffic to); the reads and the sum
    # run against real router processes in tests/router/test_router_process.py.
    models.create("resnet", {**spec("v1", ""), "traffic": {"provider": "builtin"}})
    wait_for(lambda: is_ready(models, "resnet"), timeout=TIMEOUT, what="v1 Ready")

    def ready_router_ips() -> list[str]:
        pods = client.CoreV1Api(api_client).list_namespaced_pod(
            namespace, label_selector="davit.dev/router=resnet"
        )
        return sorted(
            p.status.pod_ip for p in pods.items
            if p.status.pod_ip and any(c.type == "Ready" and c.status == "True"
                                       for c in p.status.conditions or [])
        )  # fmt: skip

    def two_ready() -> list[str] | None:
        found = ready_router_ips()
        return found if len(found) == 2 else None

    expected = wait_for(two_ready, timeout=TIMEOUT, what="two ready router pods")

    async def listed() -> list[str]:
        kube = Kube(AsyncClient(config=KubeConfig.from_file(kube_env["KUBECONFIG"])))
        try:
            return await kube.ready_pod_ips(namespace, naming.router_selector("resnet"))
        finally:
            await kube.close()

    # The router's two pods, and not the model's own (which carry no router label).
    assert asyncio.run(listed()) == expected
