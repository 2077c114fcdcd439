"""Canary rollouts end to end: the operator drives rollout.steps on the local control plane.

Traffic follows ready replicas (traffic.provider none), so a step's weight shows as the replica
split between the stable and the canary Deployment.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from test_modeldeployment import deployments, gpu_spec, is_ready, pods
from test_operator_loop import model_events

from davit_operator import naming
from e2e_support import REPO, Models, OperatorProcess, condition_of, kubectl, wait_for

pytestmark = pytest.mark.e2e

TIMEOUT = 90


def canary_spec(pause: str, version: str = "v1") -> dict[str, Any]:
    return {
        **gpu_spec(replicas=4, version=version),
        "rollout": {"steps": [{"setWeight": 50}, {"pause": {"duration": pause}}]},
    }


def replicas_by_revision(api_client: client.ApiClient, namespace: str) -> dict[str, int]:
    """Each revision's Deployment's replicas (the router's, with no revision, is not one)."""
    return {
        d.metadata.labels["davit.dev/revision"]: d.spec.replicas
        for d in deployments(api_client, namespace, "resnet")
        if "davit.dev/revision" in d.metadata.labels
    }


def paused_status(models: Models) -> dict[str, Any] | None:
    status: dict[str, Any] = models.get("resnet").get("status", {})
    return status if status.get("pauseUntil") and status.get("currentStep") == 1 else None


def step_events(api_client: client.ApiClient, namespace: str) -> list[str]:
    events = model_events(api_client, namespace, "resnet")
    ordered = sorted(events, key=lambda e: e.metadata.creation_timestamp)
    return [e.message for e in ordered if e.reason == "RolloutStepCompleted"]


def get_md_columns(kube_env: dict[str, str], namespace: str) -> dict[str, str]:
    """`kubectl get md` of the one model in `namespace`: its value under each column."""
    header, row = (
        line.split() for line in kubectl(kube_env, "get", "md", "-n", namespace).stdout.splitlines()
    )
    return dict(zip(header, row, strict=False))


def start_rollout(models: Models, pause: str) -> tuple[str, str]:
    """A Ready model at v1, then v2 applied: (stable revision, canary revision)."""
    models.create("resnet", canary_spec(pause))
    wait_for(lambda: is_ready(models, "resnet"), timeout=TIMEOUT, what="v1 Ready")
    stable = models.get("resnet")["status"]["stableRevision"]
    models.patch_spec("resnet", canary_spec(pause, version="v2"))

    def canary_revision() -> str | None:
        status = models.get("resnet").get("status", {})
        found: str | None = status.get("canaryRevision")
        return found if found and found != stable else None

    return stable, wait_for(canary_revision, timeout=TIMEOUT, what="the canary revision")


def test_a_canary_takes_half_the_replicas_pauses_then_is_promoted(
    models: Models, api_client: client.ApiClient, namespace: str, kube_env: dict[str, str]
) -> None:
    stable, canary = start_rollout(models, pause="6s")

    status = wait_for(lambda: paused_status(models), timeout=TIMEOUT, what="the pause at 50 %")
    assert status["canaryWeight"] == 50
    assert status["phase"] == "Progressing"
    assert replicas_by_revision(api_client, namespace) == {stable: 2, canary: 2}
    # Traffic follows ready pods (provider none): the weight shown is 50 once stable's extra
    # pods have gone, which the pause outlasts.
    wait_for(
        lambda: models.get("resnet")["status"].get("actualWeight") == 50,
        timeout=5,
        what="half of the ready pods on the canary",
    )
    shown = get_md_columns(kube_env, namespace)
    assert (shown["PHASE"], shown["WEIGHT"], shown["STEP"]) == ("Progressing", "50", "1")
    assert shown["REASON"] == "Paused"

    def promoted() -> dict[str, Any] | None:
        status = models.get("resnet").get("status", {})
        done = status.get("stableRevision") == canary and is_ready(models, "resnet")
        return status if done else None

    status = wait_for(promoted, timeout=TIMEOUT, what="the canary promoted")
    assert status["canaryWeight"] == 100
    assert status["currentStep"] == 2
    assert "pauseUntil" not in status
    assert {r["hash"]: r["outcome"] for r in status["revisions"]} == {
        stable: "Superseded",
        canary: "Stable",
    }
    wait_for(
        lambda: replicas_by_revision(api_client, namespace) == {canary: 4},
        timeout=TIMEOUT,
        what="the stable Deployment retired",
    )
    wait_for(
        lambda: models.get("resnet")["status"].get("actualWeight") == 100,
        timeout=5,
        what="every ready pod on the new stable revision",
    )
    shown = get_md_columns(kube_env, namespace)
    assert (shown["PHASE"], shown["WEIGHT"], shown["STEP"]) == ("Healthy", "100", "2")
    messages = step_events(api_client, namespace)
    assert [m.split(" completed")[0] for m in messages] == [
        "step 1 of 2 (setWeight 50)",
        "step 2 of 2 (pause 6s)",
    ]


def test_a_replica_split_canary_moves_10_then_50_then_100_percent(
    models: Models, api_client: client.ApiClient, namespace: str
) -> None:
    """Provider none: each step's weight is the canary's share of ten replicas, stable giving
    up its pods as the canary's become ready, and traffic (the ready-pod share) follows."""
    steps = [{"setWeight": 10}, {"pause": {"duration": "5s"}},
             {"setWeight": 50}, {"pause": {"duration": "5s"}}]  # fmt: skip

    def spec(version: str) -> dict[str, Any]:
        cpu_only = {**gpu_spec(replicas=10, version=version),
                    "resources": {"cpu": "100m", "memory": "128Mi"}}  # fmt: skip
        return {**cpu_only, "rollout": {"steps": steps}}

    models.create("resnet", spec("v1"))
    wait_for(lambda: is_ready(models, "resnet"), timeout=TIMEOUT, what="v1 Ready")
    stable = models.get("resnet")["status"]["stableRevision"]
    models.patch_spec("resnet", spec("v2"))

    def at_pause(step: int) -> dict[str, Any] | None:
        status: dict[str, Any] = models.get("resnet").get("status", {})
        return status if status.get("currentStep") == step and status.get("pauseUntil") else None

    canary = ""
    for step, weight in ((1, 10), (3, 50)):

        def paused(step: int = step) -> dict[str, Any] | None:
            return at_pause(step)

        status = wait_for(paused, timeout=TIMEOUT, interval=0.1, what=f"the pause at {weight} %")
        assert status["canaryWeight"] == weight
        canary = status["canaryRevision"]
        share = {stable: 10 - weight // 10, canary: weight // 10}

        def split(share: dict[str, int] = share) -> bool:
            return replicas_by_revision(api_client, namespace) == share

        def followed(weight: int = weight) -> bool:
            return bool(models.get("resnet")["status"].get("actualWeight") == weight)

        wait_for(split, timeout=5, interval=0.1, what=f"the replicas split {share}")
        wait_for(followed, timeout=5, interval=0.1, what=f"{weight} % of the ready pods")
    wait_for(lambda: promoted(models, stable), timeout=TIMEOUT, what="the canary promoted")
    wait_for(lambda: replicas_by_revision(api_client, namespace) == {canary: 10},
             timeout=TIMEOUT, what="the canary at all ten replicas")  # fmt: skip
    assert models.get("resnet")["status"]["canaryWeight"] == 100


def test_an_operator_killed_mid_pause_resumes_the_same_pause(
    models: Models, api_client: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    """The pause's end lives in status: a restarted operator neither starts the pause again
    nor forgets it, and wakes the model when it ends with no event to prompt it."""
    stable, canary = start_rollout(models, pause="10s")
    status = wait_for(lambda: paused_status(models), timeout=TIMEOUT, what="the pause at 50 %")
    pause_until = datetime.datetime.fromisoformat(status["pauseUntil"]).timestamp()

    operator.kill()
    time.sleep(2)
    operator.start()
    resumed = models.get("resnet")["status"]
    assert (resumed["currentStep"], resumed["pauseUntil"]) == (1, status["pauseUntil"])

    def pause_over() -> float | None:
        status = models.get("resnet").get("status", {})
        return time.time() if (status.get("currentStep") or 0) >= 2 else None

    ended = wait_for(pause_over, timeout=TIMEOUT, interval=0.1, what="the pause ended")
    # Status records the pause's end to the second; a pass a little late is the scheduler's.
    assert pause_until - 1 <= ended <= pause_until + 3
    wait_for(
        lambda: replicas_by_revision(api_client, namespace) == {canary: 4},
        timeout=TIMEOUT,
        what="the canary promoted",
    )
    created = [
        e for e in model_events(api_client, namespace, "resnet") if e.reason == "RevisionCreated"
    ]
    assert len(created) == 2  # v1 and v2: the restart announced nothing again
    # No child made twice by the restarted operator, none left behind (counted by owner).
    wait_for(
        lambda: owned_children(models, api_client, namespace) == promoted_children(stable, canary),
        timeout=TIMEOUT,
        what="the promoted model's children only",
    )


def owned_children(
    models: Models, api_client: client.ApiClient, namespace: str
) -> dict[str, list[str]]:
    """The names of the children the model `resnet` owns (by its uid), by kind."""
    uid = models.get("resnet")["metadata"]["uid"]
    apps, core, policy = (
        client.AppsV1Api(api_client), client.CoreV1Api(api_client), client.PolicyV1Api(api_client)
    )  # fmt: skip
    return {
        kind: sorted(o.metadata.name for o in found.items
                     if any(r.uid == uid for r in o.metadata.owner_references or []))
        for kind, found in (
            ("Deployment", apps.list_namespaced_deployment(namespace)),
            ("Service", core.list_namespaced_service(namespace)),
            ("PodDisruptionBudget", policy.list_namespaced_pod_disruption_budget(namespace)),
            ("ControllerRevision", apps.list_namespaced_controller_revision(namespace)),
        )
    }  # fmt: skip


def promoted_children(stable: str, canary: str) -> dict[str, list[str]]:
    """What a model promoted from `stable` to `canary` owns: the canary's Deployment, the
    Service and PDB, and both revisions' history."""
    return {
        "Deployment": [f"resnet-{canary}"],
        "Service": ["resnet"],
        "PodDisruptionBudget": ["resnet"],
        "ControllerRevision": sorted(naming.history_name("resnet", r) for r in (stable, canary)),
    }


def kubectl_davit(
    env: dict[str, str], namespace: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """`kubectl davit …` as a user runs it: kubectl finds the plugin on PATH."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return kubectl({**env, "PATH": path}, "davit", "-n", namespace, *args, check=False)


def test_kubectl_davit_abort_outlives_a_reapply_and_retry_and_promote_full_finish_it(
    models: Models, api_client: client.ApiClient, namespace: str, kube_env: dict[str, str]
) -> None:
    models.create("resnet", canary_spec("10m"))
    wait_for(lambda: is_ready(models, "resnet"), timeout=TIMEOUT, what="v1 Ready")
    refused = kubectl_davit(kube_env, namespace, "abort", "resnet")
    assert refused.returncode == 1
    assert "no rollout running" in refused.stderr

    stable = models.get("resnet")["status"]["stableRevision"]
    manifest = {
        "apiVersion": "serving.davit.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "resnet", "namespace": namespace},
        "spec": canary_spec("10m", version="v2"),
    }
    kubectl(kube_env, "apply", "-f", "-", stdin=json.dumps(manifest))
    status = wait_for(lambda: paused_status(models), timeout=TIMEOUT, what="the pause at 50 %")
    canary = status["canaryRevision"]
    shown = kubectl_davit(kube_env, namespace, "status", "resnet")
    assert shown.returncode == 0, shown.stderr
    assert "[>] 2. pause 10m" in shown.stdout
    assert f"{canary}  v2  canary" in shown.stdout

    aborted = kubectl_davit(kube_env, namespace, "abort", "resnet")
    assert aborted.returncode == 0, aborted.stderr
    assert "ControlAccepted" in aborted.stdout

    def back_on_stable() -> dict[str, Any] | None:
        status = models.get("resnet")["status"]
        on_stable = replicas_by_revision(api_client, namespace) == {stable: 4, canary: 0}
        return status if on_stable and status.get("canaryWeight") == 0 else None

    status = wait_for(back_on_stable, timeout=TIMEOUT, what="all replicas back on stable")
    assert status["phase"] == "Degraded"
    assert {r["hash"]: r["outcome"] for r in status["revisions"]}[canary] == "Aborted"

    # GitOps applies the same manifest again: the abort is in status, nothing rolls out again.
    kubectl(kube_env, "apply", "-f", "-", stdin=json.dumps(manifest))
    time.sleep(3)
    assert replicas_by_revision(api_client, namespace) == {stable: 4, canary: 0}
    assert models.get("resnet")["status"]["canaryWeight"] == 0
    created = [
        e for e in model_events(api_client, namespace, "resnet") if e.reason == "RevisionCreated"
    ]
    assert len(created) == 2

    retried = kubectl_davit(kube_env, namespace, "retry", "resnet")
    assert retried.returncode == 0, retried.stderr
    wait_for(lambda: paused_status(models), timeout=TIMEOUT, what="the retried rollout at 50 %")
    assert replicas_by_revision(api_client, namespace) == {stable: 2, canary: 2}

    promoted = kubectl_davit(kube_env, namespace, "promote", "--full", "resnet")
    assert promoted.returncode == 0, promoted.stderr
    wait_for(
        lambda: replicas_by_revision(api_client, namespace) == {canary: 4},
        timeout=TIMEOUT,
        what="the canary promoted by promote --full",
    )
    assert is_ready(models, "resnet")


def route_weights(api_client: client.ApiClient, namespace: str) -> dict[str, int] | None:
    """The HTTPRoute as the API server stored it: weight by revision."""
    try:
        route = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", namespace, "httproutes", "resnet"
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    [rule] = route["spec"]["rules"]
    return {b["name"].removeprefix("resnet-"): b["weight"] for b in rule["backendRefs"]}


def router_weights(api_client: client.ApiClient, namespace: str) -> dict[str, int] | None:
    """The Davit router's configuration as the API server stored it: weight by revision."""
    try:
        stored = client.CoreV1Api(api_client).read_namespaced_config_map("resnet-router", namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    document = json.loads(stored.data["router.json"])
    return {r["name"]: r["weight"] for r in document["revisions"]}


def test_a_builtin_canarys_weights_follow_each_step_in_the_routers_configuration(
    models: Models, api_client: client.ApiClient, namespace: str
) -> None:
    steps = [{"setWeight": 10}, {"pause": {"duration": "2s"}},
             {"setWeight": 50}, {"pause": {"duration": "2s"}}]  # fmt: skip

    def spec(version: str) -> dict[str, Any]:
        return {**gpu_spec(replicas=4, version=version), "rollout": {"steps": steps},
                "traffic": {"provider": "builtin", "timeoutMs": 5000}}  # fmt: skip

    models.create("resnet", spec("v1"))
    wait_for(lambda: is_ready(models, "resnet"), timeout=TIMEOUT, what="v1 Ready")
    stable = models.get("resnet")["status"]["stableRevision"]
    assert router_weights(api_client, namespace) == {stable: 100}
    models.patch_spec("resnet", spec("v2"))
    seen: list[dict[str, int]] = []  # each distinct configuration stored, in order
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and not promoted(models, stable):
        weights = router_weights(api_client, namespace) or {}
        if not seen or seen[-1] != weights:
            seen.append(weights)
        time.sleep(0.2)
    assert promoted(models, stable)
    canary = models.get("resnet")["status"]["stableRevision"]
    wait_for(
        lambda: router_weights(api_client, namespace) == {canary: 100},
        timeout=TIMEOUT,
        what="the whole router configuration on the new revision",
    )
    seen.append({canary: 100})
    moved = [w for w in seen if canary in w]
    in_order = [w for n, w in enumerate(moved) if n == 0 or moved[n - 1] != w]
    assert [w for w in in_order if w.get(canary)] == [
        {stable: 90, canary: 10},
        {stable: 50, canary: 50},
        {canary: 100},
    ], seen
    stored = client.CoreV1Api(api_client).read_namespaced_config_map("resnet-router", namespace)
    document = json.loads(stored.data["router.json"])
    assert document["timeoutMs"] == 5000
    assert document["revisions"] == [{"name": canary, "weight": 100, "service": f"resnet-{canary}"}]

    # The router itself: two ready replicas behind the model's Service, with its account.
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    wait_for(
        lambda: (apps.read_namespaced_deployment("resnet-router", namespace).status.ready_replicas
                 or 0) == 2,
        timeout=TIMEOUT,
        what="two router pods ready",
    )  # fmt: skip
    # The Service moves to the router once a router pod is ready (the pass after).
    wait_for(
        lambda: (
            core.read_namespaced_service("resnet", namespace).spec.selector
            == {"davit.dev/router": "resnet"}
        ),
        timeout=10,
        what="the model's Service on the router's pods",
    )
    rbac = client.RbacAuthorizationV1Api(api_client)
    configmaps, slices = rbac.read_namespaced_role("resnet-router", namespace).rules
    assert (configmaps.resources, configmaps.resource_names) == (["configmaps"], ["resnet-router"])
    assert slices.resources == ["endpointslices"]
    assert rbac.read_namespaced_role_binding("resnet-router", namespace).subjects[0].name == (
        "resnet-router"
    )
    # Back to provider none: the router goes, the Service selects the model's pods again.
    models.patch_spec("resnet", {**spec("v2"), "traffic": {"provider": "none"}})

    def router_gone() -> bool:
        names = {d.metadata.name for d in apps.list_namespaced_deployment(namespace).items}
        selector = core.read_namespaced_service("resnet", namespace).spec.selector
        return "resnet-router" not in names and selector == {"davit.dev/model": "resnet"}

    wait_for(router_gone, timeout=TIMEOUT, what="the router removed")
    assert router_weights(api_client, namespace) is None


def test_a_gateway_api_canary_moves_the_routes_weights_step_by_step(
    models: Models, api_client: client.ApiClient, namespace: str
) -> None:
    steps = [{"setWeight": 10}, {"pause": {"duration": "2s"}},
             {"setWeight": 50}, {"pause": {"duration": "2s"}}]  # fmt: skip
    traffic = {"provider": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "public"}]}}

    def spec(version: str) -> dict[str, Any]:
        return {**gpu_spec(replicas=4, version=version), "rollout": {"steps": steps},
                "traffic": traffic}  # fmt: skip

    models.create("resnet", spec("v1"))
    wait_for(lambda: is_ready(models, "resnet"), timeout=TIMEOUT, what="v1 Ready")
    stable = models.get("resnet")["status"]["stableRevision"]
    assert route_weights(api_client, namespace) == {stable: 100}
    models.patch_spec("resnet", spec("v2"))

    # Each distinct (route, replicas) state the API server held, in order, until promotion.
    seen: list[tuple[dict[str, int], dict[str, int]]] = []
    reported: list[int] = []  # status.actualWeight, each value once in order
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        actual = models.get("resnet")["status"].get("actualWeight")
        if actual is not None and (not reported or reported[-1] != actual):
            reported.append(actual)
        weights = route_weights(api_client, namespace) or {}
        state = (weights, replicas_by_revision(api_client, namespace))
        if not seen or seen[-1] != state:
            seen.append(state)
        if len(weights) == 1 and stable not in weights and is_ready(models, "resnet"):
            break
        time.sleep(0.2)
    canary = models.get("resnet")["status"]["stableRevision"]
    assert canary != stable
    wanted = [{stable: 90, canary: 10}, {stable: 50, canary: 50}, {canary: 100}]
    routes = [weights for weights, _ in seen if weights in wanted]
    in_order = [w for n, w in enumerate(routes) if n == 0 or routes[n - 1] != w]
    assert in_order == wanted, seen
    # The weight reported is the route's, not the canary's share of ready pods (20 % and more
    # while it scales up).
    assert [w for w in reported if w not in (0, 100)] == [10, 50], reported
    # Make before break: a weight is on the route only while the canary has its share of the
    # 4 replicas (10 % → 1, 50 % → 2; it grows to 4 before it takes 100 %).
    for weights, replicas in seen:
        share = {0: 0, 10: 1, 50: 2, 100: 4}[weights.get(canary, 0)]
        assert replicas.get(canary, 0) >= share, seen
    core = client.CoreV1Api(api_client)
    service = core.read_namespaced_service(f"resnet-{canary}", namespace)
    assert service.spec.selector == {"davit.dev/model": "resnet", "davit.dev/revision": canary}
    wait_for(
        lambda: (
            route_weights(api_client, namespace) == {canary: 100}
            and f"resnet-{stable}"
            not in {s.metadata.name for s in core.list_namespaced_service(namespace).items}
        ),
        timeout=TIMEOUT,
        what="stable's Service retired with its revision",
    )


def gpu_canary_spec(version: str, surge_gpus: int) -> dict[str, Any]:
    """2 replicas of 4 GPUs each: with a blocker of the same size the cluster's 16 are full."""
    return {
        **gpu_spec(replicas=2, gpu=4, version=version),
        "rollout": {
            "steps": [{"setWeight": 50}, {"pause": {"duration": "1s"}}],
            "maxSurgeGPUs": surge_gpus,
        },
    }


def fill_the_gpus(models: Models, surge_gpus: int) -> str:
    """resnet v1 and a blocker Ready on all 16 GPUs; resnet's stable revision."""
    models.create("blocker", gpu_spec(replicas=2, gpu=4))
    models.create("resnet", gpu_canary_spec("v1", surge_gpus))
    for name in ("blocker", "resnet"):
        wait_for(partial(is_ready, models, name), timeout=TIMEOUT, what=f"{name} Ready")
    stable: str = models.get("resnet")["status"]["stableRevision"]
    return stable


def promoted(models: Models, stable: str) -> bool:
    status = models.get("resnet")["status"]
    return status.get("stableRevision") not in (None, stable) and is_ready(models, "resnet")


def test_a_canary_short_of_gpus_waits_without_failing_and_goes_on_once_gpus_are_freed(
    models: Models, api_client: client.ApiClient, namespace: str
) -> None:
    stable = fill_the_gpus(models, surge_gpus=8)
    models.patch_spec("resnet", gpu_canary_spec("v2", surge_gpus=8))

    def waiting() -> dict[str, Any] | None:
        progressing = models.condition("resnet", "Progressing") or {}
        return progressing if progressing.get("reason") == "WaitingForGPUs" else None

    progressing = wait_for(waiting, timeout=TIMEOUT, what="the canary WaitingForGPUs")
    assert "Insufficient nvidia.com/gpu" in progressing["message"]
    status = models.get("resnet")["status"]
    assert (status["phase"], status["currentStep"]) == ("Progressing", 0)
    assert replicas_by_revision(api_client, namespace)[stable] == 2  # stable is never evicted

    models.delete("blocker")  # its 8 GPUs free up: the canary's pod starts, the rollout goes on
    wait_for(lambda: promoted(models, stable), timeout=TIMEOUT, what="the canary promoted")


def test_with_no_gpu_budget_stable_gives_up_pods_for_the_canary(
    models: Models, api_client: client.ApiClient, namespace: str
) -> None:
    """maxSurgeGPUs 0 on a full cluster: never more than 2 pods of resnet, and yet promoted."""
    stable = fill_the_gpus(models, surge_gpus=0)
    models.patch_spec("resnet", gpu_canary_spec("v2", surge_gpus=0))
    most = 0
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and not promoted(models, stable):
        most = max(most, sum(replicas_by_revision(api_client, namespace).values()))
        time.sleep(0.2)
    assert promoted(models, stable)
    assert most == 2


def test_an_operator_killed_at_every_step_boundary_resumes_each_step_once(
    models: Models, api_client: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    """SIGKILL right after each step ends: the next operator goes on from status, and the
    model ends with one child of each kind, all owned by it, and each step announced once."""
    steps = [{"setWeight": 25}, {"pause": {"duration": "2s"}},
             {"setWeight": 50}, {"pause": {"duration": "2s"}}]  # fmt: skip

    def spec(version: str) -> dict[str, Any]:
        return {**gpu_spec(replicas=4, version=version), "rollout": {"steps": steps}}

    models.create("resnet", spec("v1"))
    wait_for(lambda: is_ready(models, "resnet"), timeout=TIMEOUT, what="v1 Ready")
    stable = models.get("resnet")["status"]["stableRevision"]
    models.patch_spec("resnet", spec("v2"))
    killed_at: list[int] = []
    deadline = time.monotonic() + 2 * TIMEOUT
    while time.monotonic() < deadline and not promoted(models, stable):
        status = models.get("resnet")["status"]
        step = status.get("currentStep") or 0
        # (Before v2's first pass, status still shows v1 with all its steps done.)
        if status.get("canaryRevision") and len(killed_at) < step <= len(steps):
            operator.kill()
            killed_at.append(step)
            operator.start()
        time.sleep(0.1)
    assert promoted(models, stable)
    assert killed_at == [1, 2, 3, 4]
    canary = models.get("resnet")["status"]["stableRevision"]
    assert owned_children(models, api_client, namespace) == promoted_children(stable, canary)
    announced = step_events(api_client, namespace)
    # An Event posted after the status write can be lost with a killed operator; one is never
    # posted twice.
    assert len(announced) == len(set(announced)) <= len(steps)


def test_kubectl_davit_pause_holds_past_a_timed_pause_and_resume_goes_on(
    models: Models, api_client: client.ApiClient, namespace: str, kube_env: dict[str, str]
) -> None:
    stable, canary = start_rollout(models, pause="8s")
    timed = wait_for(lambda: paused_status(models), timeout=TIMEOUT, what="the pause at 50 %")
    paused = kubectl_davit(kube_env, namespace, "pause", "resnet")
    assert paused.returncode == 0, paused.stdout + paused.stderr
    assert "ControlAccepted" in paused.stdout
    # Past the timed pause's end (and a pass's latency): the person's pause holds.
    ends = datetime.datetime.fromisoformat(timed["pauseUntil"]).timestamp()
    time.sleep(max(ends - time.time(), 0) + 2)
    status = models.get("resnet")["status"]
    assert (status["currentStep"], status.get("paused")) == (1, True)
    assert (models.condition("resnet", "Progressing") or {}).get("reason") == "PausedByControl"
    assert replicas_by_revision(api_client, namespace) == {stable: 2, canary: 2}

    resumed = kubectl_davit(kube_env, namespace, "resume", "resnet")
    assert resumed.returncode == 0, resumed.stderr
    wait_for(lambda: promoted(models, stable), timeout=TIMEOUT, what="the canary promoted")
    assert "paused" not in models.get("resnet")["status"]


BLUE_GREEN_TRAFFIC = {
    "gatewayAPI": {"provider": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "public"}]}},
    "builtin": {"provider": "builtin"},
}


@pytest.mark.parametrize("provider", sorted(BLUE_GREEN_TRAFFIC))
def test_a_blue_green_rollout_switches_the_traffic_once_the_new_revision_is_whole(
    models: Models, api_client: client.ApiClient, namespace: str, provider: str
) -> None:
    rollout = {"strategy": "blueGreen", "steps": [{"pause": {"duration": "2s"}}]}
    traffic = BLUE_GREEN_TRAFFIC[provider]
    weights_of = route_weights if provider == "gatewayAPI" else router_weights

    def spec(version: str) -> dict[str, Any]:
        return {**gpu_spec(replicas=2, version=version), "rollout": rollout, "traffic": traffic}

    models.create("resnet", spec("v1"))
    wait_for(lambda: is_ready(models, "resnet"), timeout=TIMEOUT, what="v1 Ready")
    stable = models.get("resnet")["status"]["stableRevision"]
    models.patch_spec("resnet", spec("v2"))
    seen: list[tuple[dict[str, int], dict[str, int]]] = []
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and not promoted(models, stable):
        state = (
            weights_of(api_client, namespace) or {},
            replicas_by_revision(api_client, namespace),
        )
        if not seen or seen[-1] != state:
            seen.append(state)
        time.sleep(0.2)
    assert promoted(models, stable)
    new = models.get("resnet")["status"]["stableRevision"]
    # Until the switch all traffic stays on stable, while the new revision is at full size.
    before_switch = [(w, r) for w, r in seen if w.get(new, 0) == 0 and new in r]
    assert before_switch, seen
    # (The new revision's Deployment and its 0 % weight are written in the same pass but
    # not at once: a poll between them sees weights without the new revision.)
    assert all(w.get(stable) == 100 and w.get(new, 0) == 0 for w, _ in before_switch), seen
    assert any(r == {stable: 2, new: 2} for _, r in before_switch), seen
    assert all(w.get(new) in (0, 100, None) for w, _ in seen), seen  # one switch, no steps
    wait_for(
        lambda: weights_of(api_client, namespace) == {new: 100},
        timeout=TIMEOUT,
        what="all traffic on the new revision",
    )


def test_recreate_removes_the_old_pods_before_the_new_ones_start(
    models: Models, api_client: client.ApiClient, namespace: str
) -> None:
    def spec(version: str) -> dict[str, Any]:
        return {**gpu_spec(replicas=2, version=version), "rollout": {"strategy": "recreate"}}

    models.create("resnet", spec("v1"))
    wait_for(lambda: is_ready(models, "resnet"), timeout=TIMEOUT, what="v1 Ready")
    stable = models.get("resnet")["status"]["stableRevision"]
    revisions_at_once: set[int] = set()
    with models.versions("resnet") as versions:
        models.patch_spec("resnet", spec("v2"))
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and not promoted(models, stable):
            found = pods(api_client, namespace, "resnet")
            revisions_at_once.add(len({p.metadata.labels["davit.dev/revision"] for p in found}))
            time.sleep(0.1)
    assert promoted(models, stable)
    assert revisions_at_once <= {0, 1}  # never both revisions' pods
    # The old pods can be gone within a poll's interval on kwok: the watch sees every write.
    reasons = [(condition_of(v, "Ready") or {}).get("reason") for v in versions]
    assert "Recreating" in reasons, reasons
    assert replicas_by_revision(api_client, namespace) == {
        models.get("resnet")["status"]["stableRevision"]: 2
    }


def test_kubectl_davit_undo_rolls_an_earlier_revisions_spec_out_again(
    models: Models, api_client: client.ApiClient, namespace: str, kube_env: dict[str, str]
) -> None:
    models.create("resnet", gpu_spec(replicas=1, version="v1"))
    wait_for(lambda: is_ready(models, "resnet"), timeout=TIMEOUT, what="v1 Ready")
    first = models.get("resnet")["status"]["stableRevision"]
    models.patch_spec("resnet", {**gpu_spec(replicas=1, version="v2"), "replicas": 2})
    wait_for(lambda: promoted(models, first), timeout=TIMEOUT, what="v2 promoted")
    second = models.get("resnet")["status"]["stableRevision"]

    history = kubectl_davit(kube_env, namespace, "history", "resnet")
    assert history.returncode == 0, history.stderr
    rows = [line.split() for line in history.stdout.splitlines()[1:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [("1", first, "v1"), ("2", second, "v2")]

    undone = kubectl_davit(kube_env, namespace, "undo", "--to-revision", "1", "resnet")
    assert undone.returncode == 0, undone.stderr
    wait_for(lambda: promoted(models, second), timeout=TIMEOUT, what="revision 1 again")
    md = models.get("resnet")
    assert md["status"]["stableRevision"] == first
    assert md["spec"]["model"]["version"] == "v1"
    assert md["spec"]["replicas"] == 2  # undo restores what makes a revision, nothing else
    numbers = {r["hash"]: r["number"] for r in md["status"]["revisions"]}
    assert numbers == {second: 2, first: 3}  # an undo rolls out as a new number
    kept = client.AppsV1Api(api_client).list_namespaced_controller_revision(namespace).items
    assert sorted(c.metadata.name for c in kept) == sorted([f"resnet-{first}", f"resnet-{second}"])
    refused = kubectl_davit(kube_env, namespace, "undo", "--to-revision", "9", "resnet")
    assert refused.returncode == 1
    assert "no revision 9 in the history (kept: 2, 3" in refused.stderr


def example(name: str, namespace: str) -> str:
    """examples/NAME as JSON for `kubectl apply`, moved into the test's namespace."""
    manifest = yaml.safe_load((REPO / "examples" / name).read_text())
    manifest["metadata"]["namespace"] = namespace
    return json.dumps(manifest)


def test_the_readme_walkthrough_rolls_out_as_it_shows(
    models: Models, namespace: str, kube_env: dict[str, str]
) -> None:
    """The README's "A rollout, step by step", with its manifests as they are (`models`: the
    CRD installed and the operator running)."""
    kubectl(kube_env, "apply", "-f", "-", stdin=example("resnet.yaml", namespace))
    wait_for(
        lambda: get_md_columns(kube_env, namespace)["PHASE"] == "Healthy",
        timeout=TIMEOUT,
        what="examples/resnet.yaml Healthy",
    )
    kubectl(kube_env, "apply", "-f", "-", stdin=example("resnet-canary.yaml", namespace))
    columns = ("VERSION", "PHASE", "WEIGHT", "STEP", "READY", "REASON")

    def shown() -> tuple[str, ...]:
        row = get_md_columns(kube_env, namespace)
        return tuple(row[c] for c in columns)

    # 25 % for 20 s, then 50 %, held for a promote.
    waiting = ("v4", "Progressing", "50", "3", "2/4", "WaitingForPromote")
    wait_for(lambda: shown() == waiting, timeout=TIMEOUT, what=f"get md showing {waiting}")
    tree = kubectl_davit(kube_env, namespace, "status", "resnet")
    assert "[>] 4. pause (until promoted)" in tree.stdout, tree.stdout
    promoted = kubectl_davit(kube_env, namespace, "promote", "resnet")
    assert "ControlAccepted" in promoted.stdout, promoted.stderr
    done = ("v4", "Healthy", "100", "4", "4/4", "AllReplicasReady")
    wait_for(lambda: shown() == done, timeout=TIMEOUT, what=f"get md showing {done}")
