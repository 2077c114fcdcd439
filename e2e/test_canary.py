"""Canary rollouts end to end: the operator drives rollout.steps on the local control plane.

Traffic follows ready replicas (traffic.provider none), so a step's weight shows as the replica
split between the stable and the canary Deployment.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

import pytest
from kubernetes import client
from test_modeldeployment import deployments, gpu_spec, is_ready
from test_operator_loop import model_events

from e2e_support import Models, OperatorProcess, kubectl, wait_for

pytestmark = pytest.mark.e2e

TIMEOUT = 90


def canary_spec(pause: str, version: str = "v1") -> dict[str, Any]:
    return {
        **gpu_spec(replicas=4, version=version),
        "rollout": {"steps": [{"setWeight": 50}, {"pause": {"duration": pause}}]},
    }


def replicas_by_revision(api_client: client.ApiClient, namespace: str) -> dict[str, int]:
    return {
        d.metadata.labels["davit.dev/revision"]: d.spec.replicas
        for d in deployments(api_client, namespace, "resnet")
    }


def paused_status(models: Models) -> dict[str, Any] | None:
    status: dict[str, Any] = models.get("resnet").get("status", {})
    return status if status.get("pauseUntil") and status.get("currentStep") == 1 else None


def step_events(api_client: client.ApiClient, namespace: str) -> list[str]:
    events = model_events(api_client, namespace, "resnet")
    ordered = sorted(events, key=lambda e: e.metadata.creation_timestamp)
    return [e.message for e in ordered if e.reason == "RolloutStepCompleted"]


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
    stable, canary = start_rollout(models, pause="3s")

    status = wait_for(lambda: paused_status(models), timeout=TIMEOUT, what="the pause at 50 %")
    assert status["canaryWeight"] == 50
    assert status["phase"] == "Progressing"
    assert replicas_by_revision(api_client, namespace) == {stable: 2, canary: 2}
    header, row = (
        line.split() for line in kubectl(kube_env, "get", "md", "-n", namespace).stdout.splitlines()
    )
    shown = dict(zip(header, row, strict=False))
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
    messages = step_events(api_client, namespace)
    assert [m.split(" completed")[0] for m in messages] == [
        "step 1 of 2 (setWeight 50)",
        "step 2 of 2 (pause 3s)",
    ]


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
    assert stable not in replicas_by_revision(api_client, namespace)
