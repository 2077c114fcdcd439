"""ModelDeployment end to end: the operator process against a real API server and scheduler."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from e2e_support import Models, kubectl, wait_for

pytestmark = pytest.mark.e2e

H100 = "NVIDIA-H100-80GB-HBM3"
GPU_NODES = {"gpu-node-1", "gpu-node-2"}
TIMEOUT = 90


def gpu_spec(*, replicas: int = 2, gpu: int = 1, version: str = "v1") -> dict[str, Any]:
    return {
        "model": {
            "uri": f"s3://models/resnet/{version}",
            "version": version,
            "inputs": [{"name": "image", "datatype": "FP32", "shape": [3, 224, 224]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [1000]}],
        },
        "resources": {"gpu": gpu, "gpuProduct": H100, "cpu": "1", "memory": "1Gi"},
        "replicas": replicas,
    }


def of_model(list_namespaced: Callable[..., Any], namespace: str, model: str) -> list[Any]:
    """Objects of one kind carrying the model's label (children and their pods)."""
    items: list[Any] = list_namespaced(namespace, label_selector=f"davit.dev/model={model}").items
    return items


def deployments(api_client: client.ApiClient, namespace: str, model: str) -> list[Any]:
    return of_model(client.AppsV1Api(api_client).list_namespaced_deployment, namespace, model)


def pods(api_client: client.ApiClient, namespace: str, model: str) -> list[Any]:
    return of_model(client.CoreV1Api(api_client).list_namespaced_pod, namespace, model)


def is_ready(models: Models, name: str) -> bool:
    ready = models.condition(name, "Ready")
    return bool(ready and ready["status"] == "True")


def test_gpu_model_is_scheduled_on_gpu_nodes_and_becomes_ready(
    models: Models, api_client: client.ApiClient, namespace: str, kube_env: dict[str, str]
) -> None:
    models.create("resnet", gpu_spec(replicas=2))
    wait_for(lambda: is_ready(models, "resnet"), timeout=TIMEOUT, what="resnet Ready")

    bound = pods(api_client, namespace, "resnet")
    assert len(bound) == 2
    assert {p.spec.node_name for p in bound} <= GPU_NODES
    for pod in bound:
        limits = pod.spec.containers[0].resources.limits
        assert limits["nvidia.com/gpu"] == "1"
        # The runtime's model config travels in the pod (projected to config.json).
        runtime_config = json.loads(pod.metadata.annotations["davit.dev/runtime-config"])
        assert runtime_config["device"] == "cuda"
        assert runtime_config["inputs"][0]["name"] == "image"
    md = models.get("resnet")
    status = md["status"]
    assert status["phase"] == "Healthy"
    assert status["readyReplicas"] == 2
    assert status["observedGeneration"] == md["metadata"]["generation"]
    assert status["url"] == f"http://resnet.{namespace}.svc:8080"
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {"Ready": "True", "Available": "True", "Scheduled": "True",
                          "Progressing": "False", "ModelLoaded": "True"}  # fmt: skip

    # Every child is owned by the ModelDeployment and labelled with it.
    [deployment] = deployments(api_client, namespace, "resnet")
    service = client.CoreV1Api(api_client).read_namespaced_service("resnet", namespace)
    pdb = client.PolicyV1Api(api_client).read_namespaced_pod_disruption_budget("resnet", namespace)
    for child in (deployment, service, pdb):
        assert child.metadata.owner_references[0].uid == md["metadata"]["uid"]
        assert child.metadata.labels["davit.dev/model"] == "resnet"
        assert child.metadata.labels["app.kubernetes.io/managed-by"] == "davit-operator"

    table = kubectl(kube_env, "get", "md", "-n", namespace).stdout.splitlines()
    header, row = table[0].split(), table[1].split()
    assert header == [
        "NAME",
        "VERSION",
        "PHASE",
        "WEIGHT",
        "STEP",
        "READY",
        "GPUS",
        "REASON",
        "AGE",
    ]
    values = dict(zip(header, row, strict=False))
    assert values["NAME"] == "resnet"
    assert values["VERSION"] == "v1"
    assert values["PHASE"] == "Healthy"
    assert values["READY"] == "2/2"
    assert values["GPUS"] == "2"
    assert values["REASON"] == "AllReplicasReady"


def test_model_asking_for_more_gpus_than_any_node_has_is_pending(
    models: Models, api_client: client.ApiClient, namespace: str
) -> None:
    models.create("huge", gpu_spec(replicas=1, gpu=9))

    def unschedulable() -> dict[str, Any] | None:
        scheduled = models.condition("huge", "Scheduled")
        return scheduled if scheduled and scheduled["status"] == "False" else None

    scheduled = wait_for(unschedulable, timeout=TIMEOUT, what="Scheduled=False")
    assert scheduled["reason"] == "InsufficientGPU"
    assert "Insufficient nvidia.com/gpu" in scheduled["message"]
    assert models.get("huge")["status"]["phase"] == "Pending"

    # Waiting, not a crash loop: one warning, one Deployment, one pod, still Pending after
    # another 5 s (no pass retries what only the scheduler can change).
    def gpu_warnings() -> list[Any]:
        selector = "involvedObject.kind=ModelDeployment,reason=InsufficientGPU"
        core = client.CoreV1Api(api_client)
        items: list[Any] = core.list_namespaced_event(namespace, field_selector=selector).items
        return items

    wait_for(gpu_warnings, timeout=TIMEOUT, what="an InsufficientGPU event")
    time.sleep(5)
    [warning] = gpu_warnings()
    assert warning.type == "Warning"
    assert warning.count in (None, 1)
    assert len(pods(api_client, namespace, "huge")) == 1
    assert len(deployments(api_client, namespace, "huge")) == 1
    assert models.get("huge")["status"]["phase"] == "Pending"


def test_spec_change_rolls_out_a_new_revision_and_removes_the_old_one(
    models: Models, api_client: client.ApiClient, namespace: str
) -> None:
    models.create("resnet", gpu_spec(replicas=1, version="v1"))
    wait_for(lambda: is_ready(models, "resnet"), timeout=TIMEOUT, what="v1 Ready")
    [first] = deployments(api_client, namespace, "resnet")
    first_revision = models.get("resnet")["status"]["stableRevision"]
    assert first.metadata.name == f"resnet-{first_revision}"

    models.patch_spec("resnet", {"model": {"uri": "s3://models/resnet/v2", "version": "v2"}})

    def rolled_out() -> dict[str, Any] | None:
        status = models.get("resnet").get("status", {})
        stable = status.get("stableRevision")
        return (
            status if stable and stable != first_revision and is_ready(models, "resnet") else None
        )

    status = wait_for(rolled_out, timeout=TIMEOUT, what="v2 to become the stable revision")
    wait_for(
        lambda: (
            [d.metadata.name for d in deployments(api_client, namespace, "resnet")]
            == [f"resnet-{status['stableRevision']}"]
        ),
        timeout=TIMEOUT,
        what="only the new revision's Deployment to remain",
    )
    history = [(r["hash"], r["version"], r["outcome"]) for r in status["revisions"]]
    assert history == [
        (first_revision, "v1", "Superseded"),
        (status["stableRevision"], "v2", "Stable"),
    ]


def test_kubectl_scale_goes_through_the_scale_subresource(
    models: Models, api_client: client.ApiClient, namespace: str, kube_env: dict[str, str]
) -> None:
    models.create("resnet", gpu_spec(replicas=1))
    wait_for(lambda: is_ready(models, "resnet"), timeout=TIMEOUT, what="resnet Ready")

    kubectl(kube_env, "scale", "-n", namespace, "md/resnet", "--replicas=3")

    def scaled() -> bool:
        [deployment] = deployments(api_client, namespace, "resnet")
        return bool(deployment.spec.replicas == 3)

    wait_for(scaled, timeout=TIMEOUT, what="the Deployment to have 3 replicas")
    wait_for(
        lambda: models.get("resnet")["status"].get("ready") == "3/3",
        timeout=TIMEOUT,
        what="3/3 ready",
    )
    scale = kubectl(
        kube_env, "get", "--raw",
        f"/apis/serving.davit.dev/v1alpha1/namespaces/{namespace}/modeldeployments/resnet/scale",
    ).stdout  # fmt: skip
    assert '"replicas":3' in scale
    assert "davit.dev/model=resnet" in scale


def test_deleting_the_model_removes_every_child(
    models: Models, api_client: client.ApiClient, namespace: str
) -> None:
    spec = gpu_spec(replicas=1)
    spec["autoscaling"] = {"minReplicas": 1, "maxReplicas": 3}
    models.create("resnet", spec)
    wait_for(lambda: is_ready(models, "resnet"), timeout=TIMEOUT, what="resnet Ready")
    autoscaling = client.AutoscalingV2Api(api_client)
    hpa = autoscaling.read_namespaced_horizontal_pod_autoscaler("resnet", namespace)
    assert hpa.spec.scale_target_ref.kind == "ModelDeployment"
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (1, 3)

    models.delete("resnet")

    core, policy = client.CoreV1Api(api_client), client.PolicyV1Api(api_client)
    listings = {
        "deployments": client.AppsV1Api(api_client).list_namespaced_deployment,
        "pods": core.list_namespaced_pod,
        "services": core.list_namespaced_service,
        "pdbs": policy.list_namespaced_pod_disruption_budget,
        "hpas": autoscaling.list_namespaced_horizontal_pod_autoscaler,
    }
    for kind, listing in listings.items():
        wait_for(
            lambda listing=listing: not of_model(listing, namespace, "resnet"),  # type: ignore[misc]
            timeout=TIMEOUT,
            what=f"no {kind} left",
        )


TENSORS = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [4]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [4]}],
}

INVALID = [
    pytest.param(
        {"model": {"uri": "pvc://models/x", **TENSORS}, "resources": {"gpu": -1}},
        "spec.resources.gpu: Invalid value: -1: spec.resources.gpu in body should be greater "
        "than or equal to 0",
        id="negative-gpus",
    ),
    pytest.param(
        {
            "model": {"uri": "pvc://models/x", **TENSORS},
            "autoscaling": {"minReplicas": 5, "maxReplicas": 2},
        },
        "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas",
        id="min-above-max",
    ),
    pytest.param(
        {"model": {"uri": "pvc://models/x", **TENSORS}, "runtime": {"kind": "jax"}},
        'spec.runtime.kind: Unsupported value: "jax": supported values: "torch", "triton"',
        id="unknown-runtime",
    ),
    pytest.param(
        {"model": {"uri": "models/resnet", **TENSORS}},
        "model.uri must be a pvc://CLAIM/PATH, s3://BUCKET/KEY, http(s)://HOST/PATH or "
        "file:///PATH URI",
        id="malformed-uri",
    ),
    pytest.param(
        {
            "model": {"uri": "pvc://models/x", **TENSORS},
            "rollout": {"steps": [{"setWeight": 50}, {"setWeight": 10}]},
        },
        "setWeight values must not decrease",
        id="falling-weights",
    ),
    pytest.param(
        {"model": {"uri": "pvc://models/x"}},
        "runtime.kind 'torch' needs model.inputs and model.outputs",
        id="torch-without-tensors",
    ),
    pytest.param(
        {"model": {"uri": "pvc://models/x", **TENSORS}, "traffic": {"provider": "gatewayAPI"}},
        "traffic.provider gatewayAPI needs traffic.gatewayAPI.parentRefs",
        id="gateway-without-parents",
    ),
    pytest.param(
        {"model": {"uri": "pvc://models/x", **TENSORS}, "rollout": {"strategy": "blueGreen"}},
        "rollout.strategy blueGreen needs traffic.provider gatewayAPI or builtin",
        id="blue-green-without-weights",
    ),
]


@pytest.mark.parametrize(("spec", "message"), INVALID)
def test_invalid_models_are_refused_by_the_api_server(
    crd: None, kube_env: dict[str, str], namespace: str, spec: dict[str, Any], message: str
) -> None:
    manifest = {
        "apiVersion": "serving.davit.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "invalid", "namespace": namespace},
        "spec": spec,
    }
    result = kubectl(kube_env, "apply", "-f", "-", stdin=json.dumps(manifest), check=False)
    assert result.returncode != 0
    assert "is invalid" in result.stderr
    assert message in result.stderr
    absent = kubectl(kube_env, "get", "md", "invalid", "-n", namespace, check=False)
    assert absent.returncode != 0
