"""The benchmark's view of the cluster: watch-fed caches, bursts of writes, the API's counters.

Everything here talks to the API server (through the official client, as a user's tools would);
the arithmetic lives in apistats and report.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from opbench.apistats import RequestKey, request_totals
from opbench.log import log

Obj = dict[str, Any]
# Enough concurrent requests that the client is not what sets the pace of a burst.
BURST_THREADS = 16
# After a failed list or watch: long enough not to hammer an API server that is struggling,
# short enough that a collection is not stale for long.
RELIST_DELAY_S = 1.0


def scrape_requests(env: dict[str, str]) -> Counter[RequestKey]:
    """The API server's request counters, now."""
    text = subprocess.run(
        ["kubectl", "get", "--raw", "/metrics"], env=env, check=True, capture_output=True, text=True
    ).stdout
    return request_totals(text)


def burst(work: Callable[[str], None], names: Iterable[str]) -> None:
    """Run `work(name)` for every name, BURST_THREADS at a time; the first failure is raised."""
    with ThreadPoolExecutor(BURST_THREADS) as pool:
        for future in [pool.submit(work, name) for name in names]:
            future.result()


def wait_for(pending: Callable[[], str], *, timeout: float, interval: float = 0.1) -> None:
    """Block until `pending()`, which describes what is still awaited, returns "" (checked every
    `interval` s); on timeout the error says what still was."""
    deadline = time.monotonic() + timeout
    while left := pending():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {left}")
        time.sleep(interval)


def relist_delay(error: Exception) -> float:
    """Seconds to wait before listing again once `error` ended a list or watch."""
    if isinstance(error, ApiException) and error.status == 410:
        return 0.0  # the watch's resource version expired: the usual end of a long watch
    # Anything else (an API error, a reset connection, a timeout, a body that does not decode)
    # may not have healed at once.
    return RELIST_DELAY_S


def lister(api_client: client.ApiClient, kind: str) -> Callable[..., Any]:
    """The official client's list call for `kind` (a plural resource name) in a namespace."""
    if kind == "modeldeployments":
        custom = client.CustomObjectsApi(api_client)

        def list_models(namespace: str, **kwargs: Any) -> Any:
            return custom.list_namespaced_custom_object(
                "serving.davit.dev", "v1alpha1", namespace, "modeldeployments", **kwargs
            )

        return list_models
    apis: dict[str, Callable[..., Any]] = {
        "deployments": client.AppsV1Api(api_client).list_namespaced_deployment,
        "pods": client.CoreV1Api(api_client).list_namespaced_pod,
        "services": client.CoreV1Api(api_client).list_namespaced_service,
        "poddisruptionbudgets": (
            client.PolicyV1Api(api_client).list_namespaced_pod_disruption_budget
        ),
    }
    return apis[kind]


class Collection:
    """The latest copy of every object of one kind in one namespace, kept by a list+watch thread
    (so waiting on 1,000 objects costs one stream, not 1,000 polls)."""

    def __init__(self, api_client: client.ApiClient, namespace: str, kind: str) -> None:
        self.kind = kind
        self._api_client = api_client
        self._namespace = namespace
        self._list = lister(api_client, kind)
        self._objects: dict[str, Obj] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{kind}", daemon=True)
        self._thread.start()
        if not self._synced.wait(60):
            raise TimeoutError(f"could not list {kind} in {namespace}")

    def _as_dict(self, obj: Any) -> Obj:
        if isinstance(obj, dict):
            return obj
        converted: Obj = self._api_client.sanitize_for_serialization(obj)
        return converted

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                listed = self._as_dict(self._list(self._namespace))
                with self._lock:
                    self._objects = {o["metadata"]["name"]: o for o in listed["items"]}
                self._synced.set()
                stream = watch.Watch().stream(
                    self._list,
                    self._namespace,
                    resource_version=listed["metadata"]["resourceVersion"],
                    timeout_seconds=60,
                )
                for event in stream:
                    obj = self._as_dict(event["object"])
                    name = obj.get("metadata", {}).get("name")
                    if name is None:
                        break  # an ERROR event (410 Gone): list again
                    with self._lock:
                        if event["type"] == "DELETED":
                            self._objects.pop(name, None)
                        else:
                            self._objects[name] = obj
                    if self._stop.is_set():
                        return
            except Exception as error:
                # Whatever ends a list or watch, a thread that died here would leave the
                # collection stale for the rest of the run, and every wait on it would time out.
                delay = relist_delay(error)
                if delay:
                    log(
                        f"list+watch of {self.kind} in {self._namespace} failed, listing again "
                        f"in {delay:g}s: {error!r}"
                    )
                    self._stop.wait(delay)

    def snapshot(self) -> list[Obj]:
        with self._lock:
            return list(self._objects.values())

    def get(self, name: str) -> Obj | None:
        with self._lock:
            return self._objects.get(name)

    def wait(self, done: Callable[[list[Obj]], bool], *, timeout: float, what: str) -> None:
        """Block until `done(all objects)` holds, checking every 0.1 s."""
        wait_for(lambda: "" if done(self.snapshot()) else what, timeout=timeout)

    def close(self) -> None:
        self._stop.set()


def delete_namespace(api_client: client.ApiClient, name: str, timeout: float = 600) -> None:
    core = client.CoreV1Api(api_client)
    with contextlib.suppress(ApiException):
        core.delete_namespace(name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            core.read_namespace(name)
        except ApiException as error:
            if error.status == 404:
                return
            raise
        time.sleep(1)
    raise TimeoutError(f"namespace {name} still there after {timeout:.0f}s")


def create_namespace(api_client: client.ApiClient, name: str) -> None:
    delete_namespace(api_client, name)
    client.CoreV1Api(api_client).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
    )
    # Pods are refused until the controller manager has made the default ServiceAccount.
    deadline = time.monotonic() + 60
    while True:
        try:
            client.CoreV1Api(api_client).read_namespaced_service_account("default", name)
            return
        except ApiException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
