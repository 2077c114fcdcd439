"""The ModelDeployment API: pydantic models that are the single source of the CRD schema.

`crdgen` turns these models into crds/; a test fails when the committed CRD drifts. Cross-field
rules that the API server must enforce are attached as CEL expressions (`x-kubernetes-validations`)
so invalid objects are refused at `kubectl apply` time, before the operator ever sees them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

from davit_operator import naming

GROUP = "serving.davit.dev"
VERSION = "v1alpha1"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAMES = ["md", "mdep"]

# Schemes the operator knows how to mount or fetch; anything else is refused by the API server.
MODEL_URI_PATTERN = (
    r"^(pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/.*)?|s3://[^/]+/.+|https?://[^/]+/.+|file:///.+)$"
)


def cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    """One `x-kubernetes-validations` entry; the message is what `kubectl apply` shows."""
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


# Rules on the object's name (CEL may read metadata.name at the schema's root): a name that could
# not name the model's children is refused at `kubectl apply`, not discovered by the operator.
METADATA_RULES: list[JsonDict] = [
    cel(
        f"self.metadata.name.matches('{naming.MODEL_NAME_PATTERN}')",
        "metadata.name must be a DNS-1035 label (lowercase letters, digits and '-', starting "
        "with a letter and ending with a letter or digit): it names the model's Service",
    ),
    cel(
        f"size(self.metadata.name) <= {naming.MAX_MODEL_NAME_LENGTH}",
        f"metadata.name must be at most {naming.MAX_MODEL_NAME_LENGTH} characters: each "
        f"revision's Deployment is named <name>-<{naming.REVISION_HASH_LENGTH}-character "
        "revision hash>, within Kubernetes' 63",
    ),
]


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are an error, not ignored."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ModelFormat(StrEnum):
    TORCHSCRIPT = "torchscript"
    PT2 = "pt2"
    ONNX = "onnx"
    TRITON = "triton"


class RuntimeKind(StrEnum):
    TORCH = "torch"
    TRITON = "triton"


class Precision(StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"


class TensorDatatype(StrEnum):
    BOOL = "BOOL"
    UINT8 = "UINT8"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    BF16 = "BF16"
    FP32 = "FP32"
    FP64 = "FP64"


class TensorSpec(ApiModel):
    """One input or output as the runtime validates requests against it."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.:-]*$", max_length=128)
    datatype: TensorDatatype
    shape: list[int] = Field(
        max_length=8,
        description="Dimensions without the batch dimension; -1 means any size.",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self.all(d, d >= -1)", "tensor dimensions are -1 (any) or >= 0")
            ]
        },
    )


class ModelSource(ApiModel):
    uri: str = Field(
        description="Where the model lives: pvc://CLAIM/PATH, s3://BUCKET/KEY, http(s)://…, file:///PATH.",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    f"self.matches('{MODEL_URI_PATTERN}')",
                    "model.uri must be a pvc://CLAIM/PATH, s3://BUCKET/KEY, http(s)://HOST/PATH "
                    "or file:///PATH URI",
                )
            ]
        },
    )
    format: ModelFormat = Field(
        default=ModelFormat.TORCHSCRIPT,
        description="torchscript | pt2 (torch.export) | onnx | triton (a Triton model repository).",
    )
    version: str = Field(
        default="",
        max_length=63,
        description="Human label for this model version, shown in status and `kubectl get md`.",
    )
    sha256: str | None = Field(
        default=None,
        pattern=r"^[a-f0-9]{64}$",
        description="Integrity pin: a model whose digest differs is never served.",
    )
    inputs: list[TensorSpec] = Field(
        default_factory=list, max_length=64, description="The model's inputs (torch runtime)."
    )
    outputs: list[TensorSpec] = Field(
        default_factory=list, max_length=64, description="The model's outputs (torch runtime)."
    )


class Batching(ApiModel):
    max_batch_size: int = Field(default=32, ge=1, le=4096)
    max_queue_delay_ms: float = Field(default=5, ge=0, le=10_000)


class Optimize(ApiModel):
    precision: Precision = Precision.FP32
    compile: bool = False
    cuda_graphs: bool = False


class Limits(ApiModel):
    """Load shedding: beyond these the runtime answers 429 with Retry-After."""

    max_in_flight: int = Field(default=64, ge=1)
    max_queue: int = Field(default=256, ge=0)
    queue_timeout_ms: int = Field(default=1000, ge=1)


class Runtime(ApiModel):
    kind: RuntimeKind = Field(
        default=RuntimeKind.TORCH,
        description="torch (the Davit runtime image) | triton (the NVIDIA Triton image).",
    )
    image: str = Field(default="", description="Override the image chosen by runtime.kind.")
    batching: Batching = Field(default_factory=Batching)
    optimize: Optimize = Field(default_factory=Optimize)
    limits: Limits = Field(default_factory=Limits)


QUANTITY_PATTERN = r"^([0-9]+(\.[0-9]+)?)(m|Ki|Mi|Gi|Ti|k|M|G|T)?$"


class Resources(ApiModel):
    gpu: int = Field(default=0, ge=0, le=64, description="nvidia.com/gpu per replica.")
    gpu_product: str = Field(
        default="",
        description="Schedules onto nodes labelled nvidia.com/gpu.product=<this>, "
        "e.g. NVIDIA-H100-80GB-HBM3.",
    )
    cpu: str = Field(default="1", pattern=QUANTITY_PATTERN)
    memory: str = Field(default="2Gi", pattern=QUANTITY_PATTERN)


class TopologySpread(StrEnum):
    ZONE = "zone"
    NODE = "node"
    NONE = "none"


class Scheduling(ApiModel):
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    affinity: dict[str, Any] = Field(default_factory=dict)
    topology_spread: TopologySpread = TopologySpread.ZONE
    priority_class_name: str = ""


class MetricType(StrEnum):
    IN_FLIGHT = "inFlight"
    CPU = "cpu"
    GPU = "gpu"


class AutoscalingMetric(ApiModel):
    type: MetricType
    target: int | None = Field(default=None, ge=1, description="inFlight: requests per pod.")
    target_utilization: int | None = Field(
        default=None, ge=1, le=100, description="cpu/gpu: percent."
    )


class Autoscaling(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.minReplicas <= self.maxReplicas",
                    "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas",
                )
            ]
        }
    )

    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=4, ge=1)
    metrics: list[AutoscalingMetric] = Field(
        default_factory=lambda: [AutoscalingMetric(type=MetricType.CPU, target_utilization=70)],
        max_length=8,
    )


class RolloutStrategy(StrEnum):
    CANARY = "canary"
    BLUE_GREEN = "blueGreen"
    RECREATE = "recreate"


class Pause(ApiModel):
    duration: str | None = Field(
        default=None,
        pattern=r"^([0-9]+(ms|s|m|h))+$",
        description="e.g. 30s, 2m; absent means wait for a manual promote.",
    )


class RolloutStep(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "[has(self.setWeight), has(self.pause), has(self.analysis)]"
                    ".filter(x, x).size() == 1",
                    "each rollout step sets exactly one of setWeight, pause, analysis",
                )
            ]
        }
    )

    set_weight: int | None = Field(default=None, ge=0, le=100)
    pause: Pause | None = None
    analysis: dict[str, Any] | None = None


class PrometheusSource(ApiModel):
    url: str = ""


class Analysis(ApiModel):
    interval: str = Field(default="30s", pattern=r"^([0-9]+(ms|s|m|h))+$")
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    max_p99_latency_ms: int = Field(default=250, ge=1)
    failure_limit: int = Field(default=2, ge=0)
    prometheus: PrometheusSource = Field(default_factory=PrometheusSource)


class Rollout(ApiModel):
    strategy: RolloutStrategy = RolloutStrategy.CANARY
    steps: list[RolloutStep] = Field(
        default_factory=list,
        max_length=32,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.filter(s, has(s.setWeight)).map(s, s.setWeight).isSorted()",
                    "rollout.steps: setWeight values must not decrease from one step to the next",
                )
            ]
        },
    )
    analysis: Analysis = Field(default_factory=Analysis)
    auto_rollback: bool = True
    max_surge_gpus: int = Field(default=2, ge=0)
    revision_history_limit: int = Field(default=10, ge=1, le=100)


class TrafficProvider(StrEnum):
    BUILTIN = "builtin"
    GATEWAY_API = "gatewayAPI"
    NONE = "none"


class Retries(ApiModel):
    attempts: int = Field(default=2, ge=0, le=10)
    budget_percent: int = Field(default=20, ge=0, le=100)


class CircuitBreaker(ApiModel):
    consecutive_errors: int = Field(default=5, ge=1)
    error_rate_threshold: float = Field(default=0.5, gt=0, le=1)
    ejection_seconds: int = Field(default=30, ge=1)
    max_ejected_percent: int = Field(default=50, ge=0, le=100)


class Traffic(ApiModel):
    provider: TrafficProvider = TrafficProvider.NONE
    timeout_ms: int = Field(default=30_000, ge=1)
    retries: Retries = Field(default_factory=Retries)
    circuit_breaker: CircuitBreaker = Field(default_factory=CircuitBreaker)


class ModelDeploymentSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.model.format != 'triton' || self.runtime.kind == 'triton'",
                    "model.format 'triton' (a model repository) needs runtime.kind 'triton'",
                ),
                cel(
                    "self.runtime.kind != 'triton' || self.model.format in ['triton', 'onnx']",
                    "runtime.kind 'triton' serves model.format 'triton' or 'onnx'",
                ),
                cel(
                    "self.runtime.kind != 'torch' || (has(self.model.inputs) && "
                    "size(self.model.inputs) > 0 && has(self.model.outputs) && "
                    "size(self.model.outputs) > 0)",
                    "runtime.kind 'torch' needs model.inputs and model.outputs: the runtime "
                    "validates every request against them",
                ),
                cel(
                    "!self.runtime.optimize.cudaGraphs || self.resources.gpu > 0",
                    "runtime.optimize.cudaGraphs needs resources.gpu > 0",
                ),
                cel(
                    "!self.runtime.optimize.compile || self.model.format == 'pt2'",
                    "runtime.optimize.compile needs model.format 'pt2' (torch.export)",
                ),
                cel(
                    "self.resources.gpuProduct == '' || self.resources.gpu > 0",
                    "resources.gpuProduct is set but resources.gpu is 0",
                ),
            ]
        }
    )

    model: ModelSource
    runtime: Runtime = Field(default_factory=Runtime)
    resources: Resources = Field(default_factory=Resources)
    scheduling: Scheduling = Field(default_factory=Scheduling)
    replicas: int = Field(
        default=1, ge=0, le=1000, description="Ignored while autoscaling is set (the HPA owns it)."
    )
    autoscaling: Autoscaling | None = None
    rollout: Rollout = Field(default_factory=Rollout)
    traffic: Traffic = Field(default_factory=Traffic)


# ---- status -----------------------------------------------------------------------------------


class Phase(StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    HEALTHY = "Healthy"
    DEGRADED = "Degraded"
    ROLLING_BACK = "RollingBack"
    FAILED = "Failed"


class ConditionType(StrEnum):
    READY = "Ready"
    AVAILABLE = "Available"
    PROGRESSING = "Progressing"
    SCHEDULED = "Scheduled"
    MODEL_LOADED = "ModelLoaded"
    CANARY_HEALTHY = "CanaryHealthy"


class Condition(ApiModel):
    type: str
    status: str = Field(pattern=r"^(True|False|Unknown)$")
    reason: str
    message: str = ""
    last_transition_time: str = ""
    observed_generation: int | None = None


class RevisionOutcome(StrEnum):
    PROGRESSING = "Progressing"
    STABLE = "Stable"
    SUPERSEDED = "Superseded"
    ROLLED_BACK = "RolledBack"
    ABORTED = "Aborted"


class RevisionRecord(ApiModel):
    hash: str
    version: str = ""
    model_uri: str = ""
    created_at: str = ""
    outcome: RevisionOutcome = RevisionOutcome.PROGRESSING


class ModelDeploymentStatus(ApiModel):
    observed_generation: int | None = None
    phase: Phase | None = None
    conditions: list[Condition] = Field(default_factory=list)
    stable_revision: str | None = None
    canary_revision: str | None = None
    current_step: int | None = Field(default=None, description="Rollout steps completed.")
    canary_weight: int | None = Field(
        default=None, description="Percent of traffic on the newest revision."
    )
    revisions: list[RevisionRecord] = Field(default_factory=list)
    replicas: int | None = None
    ready_replicas: int | None = None
    ready: str | None = Field(default=None, description="ready/desired, for `kubectl get md`.")
    gpus: int | None = Field(default=None, description="GPUs requested by all live replicas.")
    selector: str | None = None
    url: str | None = None


class ModelDeployment(ApiModel):
    """The whole object, as the operator reads it (metadata stays a plain mapping)."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = f"{GROUP}/{VERSION}"
    kind: str = KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus = Field(default_factory=ModelDeploymentStatus)
