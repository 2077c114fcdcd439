"""Helpers shared by the e2e tests: polling, kubectl, and ModelDeployments through the API."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

REPO = Path(__file__).resolve().parents[1]
CLUSTER_DIR = REPO / "e2e" / "cluster"
GROUP, VERSION, PLURAL = "serving.davit.dev", "v1alpha1", "modeldeployments"

T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.5
) -> T:
    """Poll until `probe` returns something truthy; fail with `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        with contextlib.suppress(ApiException):
            last = probe()
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last}")


def cluster_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of `source e2e/cluster/env.sh` (run in `base`, default this process's):
    KUBECONFIG and our kubectl on PATH."""
    out = subprocess.run(
        ["bash", "-c", f"source {CLUSTER_DIR / 'env.sh'} && env -0"],
        env=base,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(line.split("=", 1) for line in out.split("\0") if "=" in line)


def cluster_answers(env: dict[str, str]) -> bool:
    probe = subprocess.run(
        ["kubectl", "--request-timeout=5s", "get", "--raw", "/readyz"],
        env=env,
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def kubectl(
    env: dict[str, str], *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["kubectl", *args], env=env, input=stdin, capture_output=True, text=True, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
    return result


def kwokctl(env: dict[str, str], *args: str) -> None:
    """Run kwokctl on the local cluster (its state is under $KWOK_WORKDIR in `env`)."""
    result = subprocess.run(
        ["kwokctl", *args], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"kwokctl {' '.join(args)} failed: {result.stderr}")


class Models:
    """ModelDeployments in one namespace, through the API as a user's tools would use it."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.api = client.CustomObjectsApi(api_client)
        self.namespace = namespace

    def create(
        self, name: str, spec: dict[str, Any], metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelDeployment",
            "metadata": {**(metadata or {}), "name": name},
            "spec": spec,
        }
        created: dict[str, Any] = self.api.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, body
        )
        return created

    def get(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.api.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name
        )
        return found

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.api.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"spec": spec}
        )

    def delete(self, name: str) -> None:
        self.api.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def condition(self, name: str, kind: str) -> dict[str, Any] | None:
        return condition_of(self.get(name), kind)

    @contextlib.contextmanager
    def versions(self, name: str) -> Iterator[list[dict[str, Any]]]:
        """Every stored version of the model from now until the block ends, as a watch
        delivers them: a state that lasts a few milliseconds is seen, where polling misses it."""
        seen: list[dict[str, Any]] = []
        stop = threading.Event()
        start = self.get(name)["metadata"]["resourceVersion"]

        def follow(resource_version: str) -> None:
            while not stop.is_set():
                stream = watch.Watch().stream(
                    self.api.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                    PLURAL, field_selector=f"metadata.name={name}",
                    resource_version=resource_version, timeout_seconds=1,
                )  # fmt: skip
                for event in stream:
                    if event["type"] in ("ADDED", "MODIFIED"):
                        seen.append(event["object"])
                        resource_version = event["object"]["metadata"]["resourceVersion"]

        follower = threading.Thread(target=follow, args=(start,), daemon=True)
        follower.start()
        try:
            yield seen
        finally:
            stop.set()
            follower.join(timeout=10)


def condition_of(model: dict[str, Any], kind: str) -> dict[str, Any] | None:
    conditions = model.get("status", {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == kind), None)


class OperatorProcess:
    """The operator as a real process that a test may stop and start again."""

    def __init__(self, env: dict[str, str], log_path: Path, *, verbose: bool = True) -> None:
        self.env = env
        self.log_path = log_path
        # Verbose logs every API request (tests read them); a benchmark runs it as users do.
        self._args = ["--verbose"] if verbose else []
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None, "the operator is not running"
        return self._proc.pid

    def start(self) -> None:
        with self.log_path.open("a") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "davit_operator", *self._args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        time.sleep(1)
        assert self._proc.poll() is None, f"operator exited at start: {self.log()[-3000:]}"

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when its node dies or it is OOM-killed."""
        if self._proc is None:
            return
        self._proc.kill()
        self._proc.wait()
        self._proc = None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text()
