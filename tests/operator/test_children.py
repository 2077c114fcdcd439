"""Table tests of the child builders and the semantic diff."""

from __future__ import annotations

from typing import Any

import pytest

from davit_operator import naming
from davit_operator.planners import children
from davit_operator.planners.diff import semantic_diff
from factories import CONFIG, md

OWNER = children.Owner("resnet", "ml", "uid-1")


def pod_spec(**spec: Any) -> dict[str, Any]:
    model = md(**spec)
    deployment = children.build_deployment(OWNER, model.spec, "abc123", 2, CONFIG)
    result: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return result


def test_gpu_pods_request_gpus_select_the_product_and_tolerate_the_taint() -> None:
    spec = pod_spec(resources={"gpu": 2, "gpuProduct": "NVIDIA-H100-80GB-HBM3"})
    container = spec["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    spread = spec["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone"
    assert spread["labelSelector"]["matchLabels"] == naming.revision_selector("resnet", "abc123")


def test_cpu_pods_carry_no_gpu_settings() -> None:
    spec = pod_spec(resources={"gpu": 0}, scheduling={"topologySpread": "none"})
    assert "nvidia.com/gpu" not in spec["containers"][0]["resources"]["limits"]
    assert "tolerations" not in spec
    assert "nodeSelector" not in spec
    assert "topologySpreadConstraints" not in spec


@pytest.mark.parametrize(
    ("uri", "in_pod", "volumes"),
    [
        ("pvc://models/resnet/v3", "file:///mnt/store/resnet/v3", 1),
        ("pvc://models", "file:///mnt/store", 1),
        ("s3://bucket/resnet/v3", "s3://bucket/resnet/v3", 0),
        ("https://example.com/m.pt", "https://example.com/m.pt", 0),
    ],
)
def test_model_storage(uri: str, in_pod: str, volumes: int) -> None:
    storage = children.model_storage(uri, "/mnt/store")
    assert storage.uri_in_pod == in_pod
    assert len(storage.volumes) == volumes


def test_torch_pods_get_the_runtime_config_through_the_downward_api() -> None:
    spec = pod_spec()
    container = spec["containers"][0]
    assert container["image"] == CONFIG.runtime_image
    assert "--model-repository=/mnt/models" in container["args"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["runtime-config"] == "/mnt/models/resnet"
    assert mounts["model-store"] == "/mnt/model-store"
    [item] = next(v for v in spec["volumes"] if v["name"] == "runtime-config")["downwardAPI"][
        "items"
    ]
    assert item["fieldRef"]["fieldPath"] == (
        f"metadata.annotations['{children.RUNTIME_CONFIG_ANNOTATION}']"
    )


def test_triton_pods_read_their_repository_directly() -> None:
    triton = pod_spec(runtime={"kind": "triton"}, model={"uri": "s3://b/repo", "format": "triton"})
    container = triton["containers"][0]
    assert container["image"] == CONFIG.triton_image
    assert container["args"][:2] == ["tritonserver", "--model-repository=s3://b/repo"]
    assert "volumes" not in triton


def test_every_child_is_owned_and_labelled() -> None:
    model = md(autoscaling={"minReplicas": 1, "maxReplicas": 4})
    assert model.spec.autoscaling is not None
    built = [
        children.build_deployment(OWNER, model.spec, "abc123", 1, CONFIG),
        children.build_service(OWNER, CONFIG),
        children.build_pdb(OWNER),
        children.build_hpa(OWNER, model.spec.autoscaling),
    ]
    for manifest in built:
        meta = manifest["metadata"]
        assert meta["ownerReferences"][0]["uid"] == "uid-1"
        assert meta["ownerReferences"][0]["controller"] is True
        assert meta["labels"][naming.MODEL_LABEL] == "resnet"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "davit-operator"


def test_hpa_targets_the_model_deployment_scale_subresource() -> None:
    model = md(
        autoscaling={
            "minReplicas": 2,
            "maxReplicas": 8,
            "metrics": [
                {"type": "inFlight", "target": 16},
                {"type": "cpu", "targetUtilization": 70},
            ],
        }
    )
    assert model.spec.autoscaling is not None
    hpa = children.build_hpa(OWNER, model.spec.autoscaling)["spec"]
    assert hpa["scaleTargetRef"]["kind"] == "ModelDeployment"
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 8)
    assert hpa["metrics"][0]["pods"]["metric"]["name"] == "davit_inflight"
    assert hpa["metrics"][1]["resource"]["target"]["averageUtilization"] == 70


@pytest.mark.parametrize(
    ("replicas", "bounds", "expected"),
    [(2, None, 2), (0, None, 0), (1, (2, 5), 2), (9, (2, 5), 5), (3, (2, 5), 3)],
)
def test_desired_replicas(replicas: int, bounds: tuple[int, int] | None, expected: int) -> None:
    extra: dict[str, Any] = (
        {"autoscaling": {"minReplicas": bounds[0], "maxReplicas": bounds[1]}} if bounds else {}
    )
    assert children.desired_replicas(md(replicas=replicas, **extra).spec) == expected


@pytest.mark.parametrize(
    ("desired", "observed", "paths"),
    [
        ({"a": 1}, {"a": 1, "server": "default"}, []),
        ({"a": {"b": "1"}}, {"a": {"b": 1}}, []),
        ({"a": [{"x": 1}]}, {"a": [{"x": 1, "protocol": "TCP"}]}, []),
        ({"a": [{"x": 1}]}, {"a": [{"x": 2}]}, [".a[0].x"]),
        ({"a": [1, 2]}, {"a": [1]}, [".a"]),
        ({"a": {"b": 1}}, {}, [".a"]),
    ],
)
def test_semantic_diff(desired: Any, observed: Any, paths: list[str]) -> None:
    assert semantic_diff(desired, observed) == paths
