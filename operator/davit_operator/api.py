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

    name: str = Field(
        # The runtime's rule (davit_runtime.config.TENSOR_NAME_PATTERN; e2e contract test).
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.:-]*$",
        max_length=128,
        description="Tensor name, as clients send it in inference requests.",
    )
    datatype: TensorDatatype = Field(description="Element type (Open Inference Protocol names).")
    shape: list[int] = Field(
        max_length=8,
        description="Dimensions without the batch dimension; -1 means any size.",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self.all(d, d == -1 || d > 0)", "tensor dimensions are -1 (any) or > 0")
            ]
        },
    )


class ModelSource(ApiModel):
    """What to serve: where the model lives, its format, and its tensors."""

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
    """Dynamic batching: concurrent requests are merged into one forward pass."""

    max_batch_size: int = Field(
        default=32,
        ge=0,
        le=4096,
        description="Most requests (batch rows) in one forward pass; 0: the model has no batch "
        "dimension (shapes are whole) and requests run one at a time.",
    )
    max_queue_delay_ms: float = Field(
        default=5,
        ge=0,
        le=10_000,
        description="Longest a request waits for others to fill a batch; a lone client is not "
        "delayed.",
    )


class Optimize(ApiModel):
    """How the runtime prepares the model for serving."""

    precision: Precision = Field(
        default=Precision.FP32, description="fp32 | fp16 | bf16 (weights and compute)."
    )
    compile: bool = Field(
        default=False, description="torch.compile the model at load (model.format pt2 only)."
    )
    cuda_graphs: bool = Field(
        default=False, description="Capture CUDA graphs per batch size (needs resources.gpu > 0)."
    )


class Limits(ApiModel):
    """Load shedding: beyond these the runtime answers 429 with Retry-After."""

    max_in_flight: int = Field(
        default=64, ge=1, description="Requests being computed at once per replica."
    )
    max_queue: int = Field(
        default=256, ge=1, description="Requests waiting per replica beyond max_in_flight."
    )
    queue_timeout_ms: int = Field(
        default=1000, ge=1, description="A request waiting longer than this is answered 429."
    )


class Runtime(ApiModel):
    """The server that runs the model in each pod."""

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
    """What each replica requests (and is limited to)."""

    gpu: int = Field(default=0, ge=0, le=64, description="nvidia.com/gpu per replica.")
    gpu_product: str = Field(
        default="",
        description="Schedules onto nodes labelled nvidia.com/gpu.product=<this>, "
        "e.g. NVIDIA-H100-80GB-HBM3.",
    )
    cpu: str = Field(
        default="1", pattern=QUANTITY_PATTERN, description="CPU per replica (a quantity: 4, 500m)."
    )
    memory: str = Field(
        default="2Gi", pattern=QUANTITY_PATTERN, description="Memory per replica (16Gi, 512Mi)."
    )


class TopologySpread(StrEnum):
    ZONE = "zone"
    NODE = "node"
    NONE = "none"


class Scheduling(ApiModel):
    """Where the replicas may run; passed to their pods as Kubernetes defines these fields."""

    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the pods require (pod nodeSelector)."
    )
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Pod tolerations; GPU pods also get the nvidia.com/gpu taint's toleration.",
    )
    affinity: dict[str, Any] = Field(default_factory=dict, description="Pod affinity, as is.")
    topology_spread: TopologySpread = Field(
        default=TopologySpread.ZONE,
        description="zone | node | none: spread the replicas across zones or nodes.",
    )
    priority_class_name: str = Field(default="", description="The pods' PriorityClass.")


class MetricType(StrEnum):
    IN_FLIGHT = "inFlight"
    CPU = "cpu"
    GPU = "gpu"


class AutoscalingMetric(ApiModel):
    """One HPA target. Only cpu works with metrics-server alone; inFlight and gpu need a
    custom-metrics adapter serving davit_in_flight / GPU utilisation (not shipped yet)."""

    type: MetricType = Field(description="inFlight | cpu | gpu.")
    target: int | None = Field(default=None, ge=1, description="inFlight: requests per pod.")
    target_utilization: int | None = Field(
        default=None, ge=1, le=100, description="cpu/gpu: percent."
    )


class Autoscaling(ApiModel):
    """A HorizontalPodAutoscaler on the ModelDeployment's scale subresource."""

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

    min_replicas: int = Field(default=1, ge=0, description="Fewest replicas the HPA keeps.")
    max_replicas: int = Field(default=4, ge=1, description="Most replicas the HPA may add.")
    metrics: list[AutoscalingMetric] = Field(
        default_factory=lambda: [AutoscalingMetric(type=MetricType.CPU, target_utilization=70)],
        max_length=8,
        description="What the HPA scales on; default cpu at 70 %.",
    )


class RolloutStrategy(StrEnum):
    CANARY = "canary"
    BLUE_GREEN = "blueGreen"
    RECREATE = "recreate"


class Pause(ApiModel):
    """Hold the rollout at the current weight."""

    duration: str | None = Field(
        default=None,
        pattern=r"^([0-9]+(ms|s|m|h))+$",
        description="e.g. 30s, 2m; absent means wait for a manual promote.",
    )


class RolloutStep(ApiModel):
    """One canary step: exactly one of setWeight, pause, analysis."""

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

    set_weight: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Percent of traffic for the new revision. With traffic.provider none the "
        "canary gets that share of the replicas (rounded, at least 1) and requests follow ready "
        "replicas; the step ends once those canary replicas are ready, and stable then shrinks.",
    )
    pause: Pause | None = Field(default=None, description="Wait (a duration, or for promote).")
    analysis: dict[str, Any] | None = Field(
        default=None,
        description="Judge the canary now: measurements over rollout.analysis.interval "
        "until one passes (the step ends) or more than failureLimit fail in a row; keys here "
        "override rollout.analysis. Without a source (prometheus.url, or traffic.provider "
        "builtin) the rollout holds at this step until a promote.",
    )


class PrometheusSource(ApiModel):
    """Where analysis reads metrics: a Prometheus that scrapes the model's runtime pods."""

    url: str = Field(
        default="",
        description="Prometheus base URL (http://prometheus.monitoring:9090); empty: with "
        "traffic.provider builtin the Davit router's own figures (every router replica's, "
        "added up), else no source (an analysis step then holds the rollout until a person "
        "promotes it).",
    )
    selector: str = Field(
        default='namespace="{namespace}",davit_dev_revision="{revision}"',
        min_length=1,
        description="PromQL label matchers that pick one revision's series of the runtime's "
        "davit_* metrics; {namespace}, {name} and {revision} are filled in. The default fits "
        "a pod scrape that maps pod labels (labelmap __meta_kubernetes_pod_label_(.+)) and "
        "the namespace.",
    )


class StableComparison(ApiModel):
    """How much worse than stable, over the same window, the canary may be."""

    max_error_rate_increase: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="The canary's error rate may exceed stable's by this fraction, no more.",
    )
    max_p99_latency_ratio: float = Field(
        default=1.5, ge=1, description="The canary's p99 may be this multiple of stable's."
    )


class Analysis(ApiModel):
    """How a canary is judged at an analysis step: over each interval, its error rate (5xx
    answers) and p99 latency against the thresholds (and, optionally, against stable over the
    same window). Too few requests is inconclusive (measured again, counting neither way);
    more than failureLimit failed measurements in a row roll the canary back (autoRollback)
    or hold the rollout for a person."""

    interval: str = Field(
        default="30s",
        pattern=r"^([0-9]+(ms|s|m|h))+$",
        description="How long one measurement lasts (30s, 2m).",
    )
    max_error_rate: float = Field(
        default=0.01, ge=0, le=1, description="Highest tolerated fraction of failed requests."
    )
    max_p99_latency_ms: int = Field(
        default=250, ge=1, description="Highest tolerated 99th-percentile latency."
    )
    min_requests: int = Field(
        default=20,
        ge=1,
        description="Fewer canary requests in an interval make the measurement inconclusive.",
    )
    failure_limit: int = Field(
        default=2, ge=0, description="Failed measurements in a row tolerated (measured again)."
    )
    compared_to_stable: StableComparison | None = Field(
        default=None,
        description="Also judge the canary against stable over the same window; absent: the "
        "thresholds only.",
    )
    prometheus: PrometheusSource = Field(
        default_factory=PrometheusSource, description="Metrics source for analysis."
    )


class Rollout(ApiModel):
    """How a new revision replaces the stable one.

    With strategy canary and steps, the new revision serves beside stable and takes over step
    by step; without steps it replaces stable once all its replicas are available. With
    blueGreen it comes up at full size with no traffic, runs the steps, then takes all."""

    strategy: RolloutStrategy = Field(
        default=RolloutStrategy.CANARY,
        description="canary (the steps; without steps, a plain replacement) | blueGreen (the "
        "new revision at full size beside stable with no traffic, then its steps, then all "
        "traffic at once; needs traffic.provider gatewayAPI or builtin) | recreate (the old "
        "revision's pods go before the new revision's start: nothing serves in between, for models "
        "whose two versions must never serve at once or whose GPUs cannot hold both).",
    )
    steps: list[RolloutStep] = Field(
        default_factory=list,
        max_length=32,
        description="Canary steps, run in order (setWeight, pause, analysis).",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.filter(s, has(s.setWeight)).map(s, s.setWeight).isSorted()",
                    "rollout.steps: setWeight values must not decrease from one step to the next",
                )
            ]
        },
    )
    analysis: Analysis = Field(
        default_factory=Analysis, description="Settings of every analysis step."
    )
    auto_rollback: bool = Field(
        default=True,
        description="When analysis fails beyond failureLimit, go back to the stable revision "
        "(scaled up and ready before traffic returns); false: hold for a person.",
    )
    max_surge_gpus: int = Field(
        default=2,
        ge=0,
        alias="maxSurgeGPUs",
        description="GPUs a rollout may hold beyond the model's replicas (counted in the "
        "canary's pods): where the canary's share does not fit, stable gives up pods first, "
        "and canary pods start on the GPUs they free. 0: never more pods than replicas.",
    )
    revision_history_limit: int = Field(
        default=10, ge=1, le=100, description="Revisions kept in status.revisions."
    )


class TrafficProvider(StrEnum):
    BUILTIN = "builtin"
    GATEWAY_API = "gatewayAPI"
    NONE = "none"


class Retries(ApiModel):
    """Retries of failed requests by the router."""

    attempts: int = Field(default=2, ge=0, le=10, description="Retries per request at most.")
    budget_percent: int = Field(
        default=20, ge=0, le=100, description="Retries as a percent of requests, at most."
    )


class CircuitBreaker(ApiModel):
    """Ejection of failing replicas from the router's pool."""

    consecutive_errors: int = Field(
        default=5, ge=1, description="Errors in a row that eject a replica."
    )
    error_rate_threshold: float = Field(
        default=0.5, gt=0, le=1, description="Error fraction that ejects a replica."
    )
    ejection_seconds: int = Field(default=30, ge=1, description="How long an ejection lasts.")
    max_ejected_percent: int = Field(
        default=50, ge=0, le=100, description="Never eject more than this percent of replicas."
    )


class ParentReference(ApiModel):
    """A Gateway the model's HTTPRoute attaches to (Gateway API's parentRefs)."""

    name: str = Field(min_length=1, max_length=253, description="The Gateway's name.")
    namespace: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        description="The Gateway's namespace; absent: the model's own.",
    )
    section_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="One listener of the Gateway, by name; absent: all that allow the route.",
    )


class GatewayAPI(ApiModel):
    """The HTTPRoute that carries the rollout's weights (traffic.provider gatewayAPI)."""

    parent_refs: list[ParentReference] = Field(
        min_length=1, max_length=32, description="The Gateways the route attaches to."
    )
    hostnames: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="Hostnames the route answers; empty: those of the Gateway's listeners.",
    )


class Traffic(ApiModel):
    """How requests reach the revisions: with provider none the model's Service spreads them
    over every ready replica of every revision (a weight is the replica split); with
    gatewayAPI an HTTPRoute `<name>` weighs one Service per revision, `<name>-<revision>`;
    with builtin the Davit router's ConfigMap `<name>-router` does."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.provider) || self.provider != 'gatewayAPI' || has(self.gatewayAPI)",
                    "traffic.provider gatewayAPI needs traffic.gatewayAPI.parentRefs (the "
                    "Gateway the model's HTTPRoute attaches to)",
                )
            ]
        }
    )

    provider: TrafficProvider = Field(
        default=TrafficProvider.NONE,
        description="none (requests follow ready replicas) | gatewayAPI (an HTTPRoute with "
        "the rollout's weights) | builtin (the Davit router <name>-router, two pods behind "
        "the model's Service: its ConfigMap carries the weights, a Service per revision its "
        "endpoints).",
    )
    gateway_api: GatewayAPI | None = Field(
        default=None,
        alias="gatewayAPI",
        description="The HTTPRoute's parents and hostnames, for provider gatewayAPI.",
    )
    timeout_ms: int = Field(
        default=30_000,
        ge=1,
        description="Provider builtin: the router's deadline for a request, all its attempts "
        "together (504 past it).",
    )
    retries: Retries = Field(
        default_factory=Retries,
        description="Provider builtin: the router's retries (connect failures, resets and 503 "
        "only, on another endpoint).",
    )
    circuit_breaker: CircuitBreaker = Field(
        default_factory=CircuitBreaker,
        description="Provider builtin: the router's outlier ejection of failing pods and its "
        "breaker per revision.",
    )
    max_concurrent_requests: int = Field(
        default=0,
        ge=0,
        description="Provider builtin: requests in flight to one revision through one router "
        "pod at most (0: no cap). At the cap, requests are refused with 429 by their "
        "criticality (header x-davit-criticality): sheddable ones from 80 % of it, standard "
        "ones at it, critical ones only past a reserve of a quarter more.",
    )
    sheddable_queue_depth: int = Field(
        default=32,
        ge=0,
        description="Provider builtin: once every pod of a revision has this many requests "
        "queued (as the runtime reports) or in flight, the router refuses its sheddable "
        "requests (x-davit-criticality: sheddable) with 429 without sending them; standard "
        "and critical ones still go (0: never on queue depth).",
    )


# CEL: the spec asks for a blue-green rollout.
BLUE_GREEN = (
    "has(self.rollout) && has(self.rollout.strategy) && self.rollout.strategy == 'blueGreen'"
)


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
                cel(
                    f"!({BLUE_GREEN}) || (has(self.traffic) && has(self.traffic.provider) && "
                    "self.traffic.provider in ['gatewayAPI', 'builtin'])",
                    "rollout.strategy blueGreen needs traffic.provider gatewayAPI or builtin: "
                    "with none, requests follow ready replicas, so the new revision would serve "
                    "before the switch",
                ),
                cel(
                    f"!({BLUE_GREEN}) || !has(self.rollout.steps) || "
                    "self.rollout.steps.all(s, !has(s.setWeight))",
                    "rollout.strategy blueGreen switches all traffic at once: its steps are "
                    "pauses and analysis, not setWeight",
                ),
            ]
        }
    )

    model: ModelSource = Field(description="The model to serve.")
    runtime: Runtime = Field(default_factory=Runtime, description="The serving runtime.")
    resources: Resources = Field(default_factory=Resources, description="Per-replica resources.")
    scheduling: Scheduling = Field(
        default_factory=Scheduling, description="Node placement of the replicas."
    )
    replicas: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Replicas of the serving revision; kept within autoscaling's bounds when "
        "autoscaling is set (the HPA then sets it through the scale subresource).",
    )
    autoscaling: Autoscaling | None = Field(
        default=None, description="Autoscaling; absent: a fixed number of replicas."
    )
    rollout: Rollout = Field(default_factory=Rollout, description="How new revisions roll out.")
    traffic: Traffic = Field(default_factory=Traffic, description="Request routing.")


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
    """One aspect of the model's state, in Kubernetes' condition convention."""

    type: str = Field(description="Ready | Available | Progressing | Scheduled.")
    status: str = Field(pattern=r"^(True|False|Unknown)$", description="True | False | Unknown.")
    reason: str = Field(description="Why, in one CamelCase word (e.g. InsufficientGPU).")
    message: str = Field(default="", description="Why, for people.")
    last_transition_time: str = Field(default="", description="When status last changed.")
    observed_generation: int | None = Field(
        default=None, description="The spec generation this condition describes."
    )


class RevisionOutcome(StrEnum):
    PROGRESSING = "Progressing"
    STABLE = "Stable"
    SUPERSEDED = "Superseded"
    ROLLED_BACK = "RolledBack"
    ABORTED = "Aborted"


class MeasuredFigures(ApiModel):
    """One revision's requests over a measurement's window."""

    requests: int = Field(description="Requests answered in the window.")
    error_rate: float = Field(description="The fraction of them answered with a 5xx.")
    p99_latency_ms: float | None = Field(
        default=None, description="99th-percentile latency; absent where none was timed."
    )


class AnalysisRecord(ApiModel):
    """The last measurement of a revision as canary, with the figures behind its verdict."""

    started_at: str = Field(description="The window's start (RFC 3339).")
    ended_at: str = Field(description="The window's end (RFC 3339).")
    verdict: str = Field(description="Pass | Fail | Inconclusive (too few requests).")
    message: str = Field(description="Each check made, with its figures and limit.")
    canary: MeasuredFigures = Field(description="The canary's figures.")
    stable: MeasuredFigures | None = Field(
        default=None, description="Stable's figures over the same window, where read."
    )


class RevisionRecord(ApiModel):
    """One revision: a distinct pod-affecting spec (model, runtime, resources, scheduling)."""

    hash: str = Field(description="Revision hash; its Deployment is <name>-<hash>.")
    number: int | None = Field(
        default=None,
        ge=1,
        description="1, 2, 3, … in the order revisions rolled out (an undo is a new number): "
        "`kubectl davit undo --to-revision N`; its spec is kept in the ControllerRevision "
        "<name>-<hash>.",
    )
    version: str = Field(default="", description="spec.model.version of this revision.")
    model_uri: str = Field(default="", description="spec.model.uri of this revision.")
    created_at: str = Field(default="", description="When this revision started rolling out.")
    outcome: RevisionOutcome = Field(
        default=RevisionOutcome.PROGRESSING,
        description="Progressing | Stable | Superseded | RolledBack | Aborted.",
    )
    analysis: AnalysisRecord | None = Field(
        default=None, description="Its last canary measurement, kept with the outcome."
    )


class ModelDeploymentStatus(ApiModel):
    """What the operator observed and decided; written only by the operator."""

    observed_generation: int | None = Field(
        default=None, description="The spec generation the operator last acted on."
    )
    phase: Phase | None = Field(
        default=None, description="Pending | Progressing | Healthy | Degraded | Failed."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Available, Progressing, Scheduled, ModelLoaded; CanaryHealthy "
        "while a measured canary rolls out.",
    )
    stable_revision: str | None = Field(
        default=None, description="The revision that serves when no rollout is running."
    )
    canary_revision: str | None = Field(
        default=None, description="The revision rolling out, while one is."
    )
    current_step: int | None = Field(default=None, description="Rollout steps completed.")
    canary_weight: int | None = Field(
        default=None,
        description="Percent of traffic the rollout has set for the newest revision (its "
        "steps' setWeight; 100 once no rollout runs); `actualWeight` is what it gets.",
    )
    actual_weight: int | None = Field(
        default=None,
        description="Percent of requests the newest revision gets as the traffic provider "
        "routes them: with none its ready pods' share of every ready pod of the model, with "
        "gatewayAPI its weight in the HTTPRoute, with builtin in the router's configuration.",
    )
    pause_until: str | None = Field(
        default=None,
        description="When the current timed pause step ends (RFC 3339); absent when no timed "
        "pause is running.",
    )
    analysis_started_at: str | None = Field(
        default=None,
        description="When the canary measurement the current analysis step waits for "
        "began (RFC 3339): it names that measurement; absent when none is running.",
    )
    analysis_failures: int | None = Field(
        default=None,
        ge=0,
        description="Consecutive failed measurements at the current analysis step.",
    )
    paused: bool | None = Field(
        default=None,
        description="A person paused the rollout (`kubectl davit pause`): nothing advances "
        "until `kubectl davit resume` or a promote; absent otherwise.",
    )
    last_control: str | None = Field(
        default=None,
        description="The last rollout control (annotation davit.dev/rollout-control, written "
        "by `kubectl davit`) the operator acted on: each request is acted on once.",
    )
    revisions: list[RevisionRecord] = Field(
        default_factory=list, description="Revision history, oldest first."
    )
    replicas: int | None = Field(default=None, description="Pods of every live revision.")
    ready_replicas: int | None = Field(default=None, description="Of those, the ready ones.")
    ready: str | None = Field(default=None, description="ready/desired, for `kubectl get md`.")
    gpus: int | None = Field(default=None, description="GPUs requested by all live replicas.")
    selector: str | None = Field(
        default=None, description="Label selector of the model's pods (scale subresource)."
    )
    url: str | None = Field(default=None, description="In-cluster URL of the model's Service.")


class ModelDeployment(ApiModel):
    """The whole object, as the operator reads it (metadata stays a plain mapping)."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = f"{GROUP}/{VERSION}"
    kind: str = KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus = Field(default_factory=ModelDeploymentStatus)
