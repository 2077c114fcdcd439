"""Builders: one pure function per child kind, (ModelDeployment, revision, config) → manifest.

Manifests are plain dicts, ready for server-side apply. They hold only the fields Davit owns, so
`semantic_diff` can compare them with what the API server returns (which adds defaults).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from davit_operator import api, naming
from davit_operator.config import OperatorConfig

HTTP_PORT = 8000
GRPC_PORT = 8001
TRITON_METRICS_PORT = 8002
GPU_RESOURCE = "nvidia.com/gpu"
HTTP_ROUTE_API_VERSION = "gateway.networking.k8s.io/v1"
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


def model_storage(uri: str, mount_path: str) -> ModelStorage:
    parts = urlsplit(uri)
    if parts.scheme != "pvc":
        return ModelStorage(volumes=[], mounts=[], uri_in_pod=uri)
    claim, sub_path = parts.netloc, parts.path.lstrip("/")
    volume = {
        "name": "model-store",
        "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
    }
    mount = {"name": "model-store", "mountPath": mount_path, "readOnly": True}
    in_pod = f"file://{mount_path}/{sub_path}" if sub_path else f"file://{mount_path}"
    return ModelStorage(volumes=[volume], mounts=[mount], uri_in_pod=in_pod)


# The Davit runtime reads a model repository: <root>/<model>/config.json. The operator writes that
# config into a pod annotation and projects it there with a downward-API volume, so the config is
# part of the revision's pod template (no extra object to create, version or garbage-collect).
RUNTIME_CONFIG_ANNOTATION = "davit.dev/runtime-config"
RUNTIME_REPOSITORY = "/mnt/models"
RUNTIME_CACHE = "/var/cache/davit"
PVC_MOUNT = "/mnt/model-store"


def runtime_config(model: str, spec: api.ModelDeploymentSpec, uri: str) -> dict[str, Any]:
    """The runtime's config.json for this model (see runtime/README.md)."""
    runtime = spec.runtime

    def tensors(specs: list[api.TensorSpec]) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype.value, "shape": t.shape} for t in specs]

    config: dict[str, Any] = {
        "name": model,
        "format": spec.model.format.value,
        "uri": uri,
        "max_batch_size": runtime.batching.max_batch_size,
        "inputs": tensors(spec.model.inputs),
        "outputs": tensors(spec.model.outputs),
        "dynamic_batching": {"max_queue_delay_ms": runtime.batching.max_queue_delay_ms},
        "load_shedding": {
            "max_in_flight": runtime.limits.max_in_flight,
            "max_queue": runtime.limits.max_queue,
            "queue_timeout_ms": runtime.limits.queue_timeout_ms,
        },
        "precision": runtime.optimize.precision.value,
        "device": "cuda" if spec.resources.gpu > 0 else "cpu",
        "compile": runtime.optimize.compile,
        "cuda_graphs": runtime.optimize.cuda_graphs,
    }
    if spec.model.sha256:
        config["sha256"] = spec.model.sha256
    return config


@dataclass(frozen=True)
class ServerParts:
    """What differs between runtimes: container args, pod annotations, volumes and mounts."""

    args: list[str]
    annotations: dict[str, str]
    volumes: list[dict[str, Any]]
    mounts: list[dict[str, Any]]


# Kubernetes' default path, named so that the runtime's flag and the pod spec agree.
TERMINATION_LOG = "/dev/termination-log"


def _torch_pod_parts(model: str, spec: api.ModelDeploymentSpec) -> ServerParts:
    """The Davit runtime image, whose entrypoint is `davit-runtime serve`."""
    storage = model_storage(spec.model.uri, PVC_MOUNT)
    config = runtime_config(model, spec, storage.uri_in_pod)
    args = [
        f"--model-repository={RUNTIME_REPOSITORY}",
        "--host=0.0.0.0",
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        f"--cache-dir={RUNTIME_CACHE}",
        # Why the runtime refused to serve, for `kubectl describe pod` and Davit's status.
        f"--termination-log={TERMINATION_LOG}",
    ]
    volumes: list[dict[str, Any]] = [
        {
            "name": "runtime-config",
            "downwardAPI": {
                "items": [
                    {
                        "path": "config.json",
                        "fieldRef": {
                            "fieldPath": f"metadata.annotations['{RUNTIME_CONFIG_ANNOTATION}']"
                        },
                    }
                ]
            },
        },
        {"name": "model-cache", "emptyDir": {}},
        *storage.volumes,
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "runtime-config", "mountPath": f"{RUNTIME_REPOSITORY}/{model}", "readOnly": True},
        {"name": "model-cache", "mountPath": RUNTIME_CACHE},
        *storage.mounts,
    ]
    annotation = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return ServerParts(args, {RUNTIME_CONFIG_ANNOTATION: annotation}, volumes, mounts)


def _triton_pod_parts(spec: api.ModelDeploymentSpec) -> ServerParts:
    # Triton reads s3:// (and gs://) repositories itself; a PVC is mounted; file:// is a path.
    storage = model_storage(spec.model.uri, RUNTIME_REPOSITORY)
    repository = storage.uri_in_pod.removeprefix("file://")
    args = [
        "tritonserver",
        f"--model-repository={repository}",
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        f"--metrics-port={TRITON_METRICS_PORT}",
        "--strict-readiness=true",
    ]
    return ServerParts(args, {}, storage.volumes, storage.mounts)


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
    if spec.runtime.kind is api.RuntimeKind.TRITON:
        image = spec.runtime.image or config.triton_image
        parts = _triton_pod_parts(spec)
        metrics_port = TRITON_METRICS_PORT
    else:
        image = spec.runtime.image or config.runtime_image
        parts = _torch_pod_parts(owner.name, spec)
        metrics_port = HTTP_PORT
    ports = [
        {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
        {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
    ]
    if metrics_port != HTTP_PORT:
        ports.append({"name": "metrics", "containerPort": metrics_port, "protocol": "TCP"})
    container: dict[str, Any] = {
        "name": "server",
        "image": image,
        "args": parts.args,
        "ports": ports,
        "resources": _resources(spec),
        # Triton writes no termination message: the tail of its log says why it exited.
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        # Loading and warming a model can take minutes; liveness waits for startup.
        "startupProbe": _probe("/v2/health/live", period=5, failures=120),
        "readinessProbe": _probe("/v2/health/ready", period=5, failures=3),
        "livenessProbe": _probe("/v2/health/live", period=10, failures=3),
    }
    if parts.mounts:
        container["volumeMounts"] = parts.mounts
    pod_spec: dict[str, Any] = {
        "containers": [container],
        # The runtime drains in-flight requests on SIGTERM before exiting.
        "terminationGracePeriodSeconds": 60,
        **_scheduling(spec, selector),
    }
    if parts.volumes:
        pod_spec["volumes"] = parts.volumes
    annotations = parts.annotations | {
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


def _service(
    owner: Owner, name: str, labels: dict[str, str], selector: dict[str, str],
    config: OperatorConfig,
) -> dict[str, Any]:  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, name, labels),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
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


def build_service(owner: Owner, config: OperatorConfig, *, routed: bool = False) -> dict[str, Any]:
    """The model's entry point: every revision's pods, or with the Davit router (`routed`)
    the router's pods, which weigh the revisions."""
    name, labels = naming.service_name(owner.name), naming.common_labels(owner.name)
    selector = naming.router_selector(owner.name) if routed else naming.model_selector(owner.name)
    return _service(owner, name, labels, selector, config)


def build_revision_service(owner: Owner, revision: str, config: OperatorConfig) -> dict[str, Any]:
    """One revision's pods, for a router or gateway that weighs revisions (`<model>-<rev>`)."""
    return _service(
        owner,
        naming.revision_service_name(owner.name, revision),
        naming.revision_labels(owner.name, revision),
        naming.revision_selector(owner.name, revision),
        config,
    )


def build_controller_revision(
    owner: Owner, revision: str, pod_spec: dict[str, Any], number: int
) -> dict[str, Any]:
    """A revision's pod-affecting spec, kept for `kubectl davit undo` (the Kubernetes idiom of
    `kubectl rollout history` for StatefulSets); `revision` is its number in the history."""
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": _metadata(
            owner,
            naming.history_name(owner.name, revision),
            naming.history_labels(owner.name, revision),
        ),
        "data": {"spec": pod_spec},
        "revision": number,
    }


def build_http_route(
    owner: Owner, gateway: api.GatewayAPI, weights: list[tuple[str, int]], config: OperatorConfig
) -> dict[str, Any]:
    """A Gateway API HTTPRoute `<model>` sending each revision its weight (percent) of the
    requests, through the revision's own Service."""
    parents = [
        {
            "name": ref.name,
            **({"namespace": ref.namespace} if ref.namespace else {}),
            **({"sectionName": ref.section_name} if ref.section_name else {}),
        }
        for ref in gateway.parent_refs
    ]
    backends = [
        {
            "name": naming.revision_service_name(owner.name, revision),
            "port": config.service_http_port,
            "weight": weight,
        }
        for revision, weight in weights
    ]
    spec: dict[str, Any] = {"parentRefs": parents, "rules": [{"backendRefs": backends}]}
    if gateway.hostnames:
        spec["hostnames"] = list(gateway.hostnames)
    return {
        "apiVersion": HTTP_ROUTE_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": _metadata(
            owner, naming.route_name(owner.name), naming.common_labels(owner.name)
        ),
        "spec": spec,
    }


ROUTER_CONFIG_KEY = "router.json"


def build_router_config(
    owner: Owner, traffic: api.Traffic, weights: list[tuple[str, int]]
) -> dict[str, Any]:
    """The Davit router's configuration (traffic.provider builtin), as the ConfigMap
    `<model>-router` it watches through the API: each revision's weight and the Service whose
    endpoints it serves from, the timeout, retries, circuit breaking and shedding. Rendered
    with sorted keys, so the same weights are the same bytes and an unchanged step writes
    nothing."""
    breaker, retries = traffic.circuit_breaker, traffic.retries
    document = {
        "model": owner.name,
        "timeoutMs": traffic.timeout_ms,
        "retries": {"attempts": retries.attempts, "budgetPercent": retries.budget_percent},
        "circuitBreaker": {
            "consecutiveErrors": breaker.consecutive_errors,
            "errorRateThreshold": breaker.error_rate_threshold,
            "ejectionSeconds": breaker.ejection_seconds,
            "maxEjectedPercent": breaker.max_ejected_percent,
        },
        "breaker": {"maxConcurrent": traffic.max_concurrent_requests},
        "sheddableQueueDepth": traffic.sheddable_queue_depth,
        "revisions": [
            {
                "name": revision,
                "weight": weight,
                "service": naming.revision_service_name(owner.name, revision),
            }
            for revision, weight in weights
        ],
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(
            owner, naming.router_name(owner.name), naming.router_labels(owner.name)
        ),
        "data": {ROUTER_CONFIG_KEY: json.dumps(document, indent=2, sort_keys=True) + "\n"},
    }


ROUTER_REPLICAS = 2
ROUTER_ADMIN_PORT = 9090
# The router holds no model: a fraction of a core and little memory serve thousands of requests
# a second (its benchmark says how many).
ROUTER_RESOURCES = {
    "requests": {"cpu": "250m", "memory": "128Mi"},
    "limits": {"memory": "256Mi"},
}


# After SIGTERM a router pod serves on this long, not ready, while its endpoint leaves the model's
# Service everywhere; then it lets its requests finish, up to the model's timeout.
ROUTER_DRAIN_SECONDS = 5


def router_grace_seconds(traffic: api.Traffic) -> int:
    """The router pod's termination grace: the drain, the longest request (the model's
    timeout), and a few seconds to exit."""
    return ROUTER_DRAIN_SECONDS + math.ceil(traffic.timeout_ms / 1000) + 5


def build_router_deployment(
    owner: Owner, config: OperatorConfig, traffic: api.Traffic
) -> dict[str, Any]:
    """The Davit router `<model>-router`: two replicas of `davit-router serve` from the runtime
    image, watching the ConfigMap of the same name through the API (not mounted: the kubelet
    refreshes a mounted ConfigMap only every minute or so, while a rollout step must be in
    force before the operator moves on; and no restart, since the pod template does not
    change), finding each revision's endpoints through its Service's EndpointSlices (both as
    the service account of the same name), non-root with a read-only root filesystem. Ready
    once it can route (`/readyz`: a configuration in force, the Services listed)."""
    name = naming.router_name(owner.name)
    container = {
        "name": "router",
        "image": config.runtime_image,
        "command": ["davit-router"],
        "args": [
            *("serve", "--configmap", name),
            *("--port", str(HTTP_PORT), "--grpc-port", str(GRPC_PORT)),
            *("--admin-port", str(ROUTER_ADMIN_PORT)),
            *("--drain-seconds", str(ROUTER_DRAIN_SECONDS)),
        ],
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "admin", "containerPort": ROUTER_ADMIN_PORT, "protocol": "TCP"},
        ],
        "resources": ROUTER_RESOURCES,
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "admin"},
            "periodSeconds": 2,
            "failureThreshold": 3,
        },
        # Alive while it waits for its ConfigMap too: that wait is not mended by a restart.
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "admin"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "securityContext": {
            "runAsNonRoot": True,  # the image's own user (runtime/Dockerfile)
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner, name, naming.router_labels(owner.name)),
        "spec": {
            "replicas": ROUTER_REPLICAS,
            "selector": {"matchLabels": naming.router_selector(owner.name)},
            "template": {
                "metadata": {
                    "labels": naming.router_pod_labels(owner.name),
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(ROUTER_ADMIN_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "serviceAccountName": name,
                    "containers": [container],
                    # The drain, then the requests in flight (up to the model's timeout).
                    "terminationGracePeriodSeconds": router_grace_seconds(traffic),
                    # Two routers on one node would fall together.
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": naming.router_selector(owner.name)},
                        }
                    ],
                },
            },
        },
    }


def build_router_pdb(owner: Owner) -> dict[str, Any]:
    """At most one router pod away at a time (a drain never takes the model's entry point)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(
            owner, naming.router_name(owner.name), naming.router_labels(owner.name)
        ),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": naming.router_selector(owner.name)},
        },
    }


def build_router_access(owner: Owner) -> list[dict[str, Any]]:
    """The router's service account, and a Role bound to it that reads, in the model's
    namespace, its own ConfigMap (by name: the router lists and watches it with a field
    selector on its name, which `resourceNames` allows) and the EndpointSlices (each
    revision's endpoints, found by label, so not by name). The router's only uses of the
    API."""
    name, labels = naming.router_name(owner.name), naming.router_labels(owner.name)
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _metadata(owner, name, labels)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _metadata(owner, name, labels),
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": [name],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["get", "list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _metadata(owner, name, labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}],
        },
    ]


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
