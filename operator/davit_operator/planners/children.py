"""Builders: one pure function per child kind, (ModelDeployment, revision, config) → manifest.

Manifests are plain dicts, ready for server-side apply. They hold only the fields Davit owns, so
`semantic_diff` can compare them with what the API server returns (which adds defaults).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from davit_operator import api, naming
from davit_operator.config import OperatorConfig

HTTP_PORT = 8000
GRPC_PORT = 8001
TRITON_METRICS_PORT = 8002
MODEL_MOUNT = "/mnt/models"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
TOPOLOGY_KEYS = {
    api.TopologySpread.ZONE: "topology.kubernetes.io/zone",
    api.TopologySpread.NODE: "kubernetes.io/hostname",
}


@dataclass(frozen=True)
class Owner:
    """The ModelDeployment every child points back to (garbage collection deletes children)."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": f"{api.GROUP}/{api.VERSION}",
            "kind": api.KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def _metadata(owner: Owner, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels,
        "ownerReferences": [owner.reference()],
    }


@dataclass(frozen=True)
class ModelStorage:
    """How the pod reaches the model: a PVC mounted read-only, or a URI the server fetches."""

    volumes: list[dict[str, Any]]
    mounts: list[dict[str, Any]]
    uri_in_pod: str


def model_storage(uri: str) -> ModelStorage:
    parts = urlsplit(uri)
    if parts.scheme != "pvc":
        return ModelStorage(volumes=[], mounts=[], uri_in_pod=uri)
    claim, sub_path = parts.netloc, parts.path.lstrip("/")
    volume = {
        "name": "model-store",
        "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
    }
    mount = {"name": "model-store", "mountPath": MODEL_MOUNT, "readOnly": True}
    in_pod = f"file://{MODEL_MOUNT}/{sub_path}" if sub_path else f"file://{MODEL_MOUNT}"
    return ModelStorage(volumes=[volume], mounts=[mount], uri_in_pod=in_pod)


def _torch_container_args(model: str, spec: api.ModelDeploymentSpec, uri: str) -> list[str]:
    runtime = spec.runtime
    args = [
        "serve",
        f"--model-name={model}",
        f"--model-uri={uri}",
        f"--model-format={spec.model.format.value}",
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        "--host=0.0.0.0",
        f"--max-batch-size={runtime.batching.max_batch_size}",
        f"--max-queue-delay-ms={runtime.batching.max_queue_delay_ms:g}",
        f"--precision={runtime.optimize.precision.value}",
        f"--max-inflight={runtime.limits.max_in_flight}",
        f"--max-queue={runtime.limits.max_queue}",
        f"--queue-timeout-ms={runtime.limits.queue_timeout_ms}",
    ]
    if spec.model.sha256:
        args.append(f"--sha256={spec.model.sha256}")
    if runtime.optimize.compile:
        args.append("--compile")
    if runtime.optimize.cuda_graphs:
        args.append("--cuda-graphs")
    if spec.model.version:
        args.append(f"--model-version={spec.model.version}")
    return args


def _triton_container_args(storage: ModelStorage) -> list[str]:
    # Triton reads s3:// (and gs://) repositories itself; a PVC is mounted; file:// is a path.
    repository = storage.uri_in_pod.removeprefix("file://")
    return [
        "tritonserver",
        f"--model-repository={repository}",
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        f"--metrics-port={TRITON_METRICS_PORT}",
        "--strict-readiness=true",
    ]


def _resources(spec: api.ModelDeploymentSpec) -> dict[str, Any]:
    requests: dict[str, Any] = {"cpu": spec.resources.cpu, "memory": spec.resources.memory}
    limits: dict[str, Any] = {"memory": spec.resources.memory}
    if spec.resources.gpu > 0:
        # Extended resources cannot be overcommitted: request and limit must be equal.
        requests[GPU_RESOURCE] = str(spec.resources.gpu)
        limits[GPU_RESOURCE] = str(spec.resources.gpu)
    return {"requests": requests, "limits": limits}


def _scheduling(spec: api.ModelDeploymentSpec, selector: dict[str, str]) -> dict[str, Any]:
    scheduling = spec.scheduling
    node_selector = dict(scheduling.node_selector)
    tolerations = list(scheduling.tolerations)
    if spec.resources.gpu > 0:
        if spec.resources.gpu_product:
            node_selector[GPU_PRODUCT_LABEL] = spec.resources.gpu_product
        gpu_toleration = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
        if gpu_toleration not in tolerations:
            tolerations.append(gpu_toleration)
    pod: dict[str, Any] = {}
    if node_selector:
        pod["nodeSelector"] = node_selector
    if tolerations:
        pod["tolerations"] = tolerations
    if scheduling.affinity:
        pod["affinity"] = scheduling.affinity
    if scheduling.priority_class_name:
        pod["priorityClassName"] = scheduling.priority_class_name
    topology_key = TOPOLOGY_KEYS.get(scheduling.topology_spread)
    if topology_key:
        pod["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": topology_key,
                # Spread is a preference: a zone short of GPUs must not block the rollout.
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector},
            }
        ]
    return pod


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 2,
    }


def build_deployment(
    owner: Owner,
    spec: api.ModelDeploymentSpec,
    revision: str,
    replicas: int,
    config: OperatorConfig,
) -> dict[str, Any]:
    """The Deployment of one revision: `<model>-<revision>`, selecting only that revision's pods."""
    labels = naming.revision_labels(owner.name, revision)
    selector = naming.revision_selector(owner.name, revision)
    storage = model_storage(spec.model.uri)
    if spec.runtime.kind is api.RuntimeKind.TRITON:
        image = spec.runtime.image or config.triton_image
        command_args = _triton_container_args(storage)
        container: dict[str, Any] = {"name": "server", "image": image, "args": command_args}
        metrics_port = TRITON_METRICS_PORT
    else:
        image = spec.runtime.image or config.runtime_image
        command_args = _torch_container_args(owner.name, spec, storage.uri_in_pod)
        container = {"name": "server", "image": image, "args": command_args}
        metrics_port = HTTP_PORT
    ports = [
        {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
        {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
    ]
    if metrics_port != HTTP_PORT:
        ports.append({"name": "metrics", "containerPort": metrics_port, "protocol": "TCP"})
    container.update(
        {
            "ports": ports,
            "resources": _resources(spec),
            # Loading and warming a model can take minutes; liveness waits for startup.
            "startupProbe": _probe("/v2/health/live", period=5, failures=120),
            "readinessProbe": _probe("/v2/health/ready", period=5, failures=3),
            "livenessProbe": _probe("/v2/health/live", period=10, failures=3),
        }
    )
    if storage.mounts:
        container["volumeMounts"] = storage.mounts
    pod_spec: dict[str, Any] = {
        "containers": [container],
        # The runtime drains in-flight requests on SIGTERM before exiting.
        "terminationGracePeriodSeconds": 60,
        **_scheduling(spec, selector),
    }
    if storage.volumes:
        pod_spec["volumes"] = storage.volumes
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(metrics_port),
        "prometheus.io/path": "/metrics",
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            **_metadata(owner, naming.revision_deployment_name(owner.name, revision), labels),
            "annotations": {"davit.dev/model-version": spec.model.version},
        },
        "spec": {
            "replicas": replicas,
            # Each revision is its own Deployment; its ReplicaSet history has nothing to undo.
            "revisionHistoryLimit": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": pod_spec,
            },
        },
    }


def build_service(owner: Owner, config: OperatorConfig) -> dict[str, Any]:
    """The model's entry point, selecting every revision's pods."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(
            owner, naming.service_name(owner.name), naming.common_labels(owner.name)
        ),
        "spec": {
            "type": "ClusterIP",
            "selector": naming.model_selector(owner.name),
            "ports": [
                {
                    "name": "http",
                    "port": config.service_http_port,
                    "targetPort": "http",
                    "protocol": "TCP",
                },
                {
                    "name": "grpc",
                    "port": config.service_grpc_port,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                },
            ],
        },
    }


def build_pdb(owner: Owner) -> dict[str, Any]:
    """At most one serving pod of the model evicted at a time (node drains, upgrades)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(owner, naming.pdb_name(owner.name), naming.common_labels(owner.name)),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": naming.model_selector(owner.name)},
        },
    }


# Pod metrics the HPA reads through a custom-metrics adapter (Prometheus Adapter, KEDA, …).
IN_FLIGHT_METRIC = "davit_inflight"
GPU_UTIL_METRIC = "DCGM_FI_DEV_GPU_UTIL"


def _hpa_metric(metric: api.AutoscalingMetric) -> dict[str, Any]:
    if metric.type is api.MetricType.CPU:
        return {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {
                    "type": "Utilization",
                    "averageUtilization": metric.target_utilization or 70,
                },
            },
        }
    name, value = (
        (IN_FLIGHT_METRIC, metric.target or 16)
        if metric.type is api.MetricType.IN_FLIGHT
        else (GPU_UTIL_METRIC, metric.target_utilization or 80)
    )
    return {
        "type": "Pods",
        "pods": {
            "metric": {"name": name},
            "target": {"type": "AverageValue", "averageValue": str(value)},
        },
    }


def build_hpa(owner: Owner, autoscaling: api.Autoscaling) -> dict[str, Any]:
    """Scales the ModelDeployment itself (its scale subresource), never a revision Deployment,
    so autoscaling carries over from one revision to the next."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(owner, naming.hpa_name(owner.name), naming.common_labels(owner.name)),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": f"{api.GROUP}/{api.VERSION}",
                "kind": api.KIND,
                "name": owner.name,
            },
            "minReplicas": max(autoscaling.min_replicas, 1),
            "maxReplicas": autoscaling.max_replicas,
            "metrics": [_hpa_metric(m) for m in autoscaling.metrics],
        },
    }


def desired_replicas(spec: api.ModelDeploymentSpec) -> int:
    """spec.replicas, kept inside the autoscaling bounds when an HPA owns it."""
    if spec.autoscaling is None:
        return spec.replicas
    return min(max(spec.replicas, spec.autoscaling.min_replicas), spec.autoscaling.max_replicas)
