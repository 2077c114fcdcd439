"""Small builders of ModelDeployments and observed snapshots for the planner tables."""

from __future__ import annotations

from typing import Any

from davit_operator import api, naming
from davit_operator.config import OperatorConfig
from davit_operator.planners import children, revision
from davit_operator.planners.observe import DeploymentState, Observed, PodState

CONFIG = OperatorConfig()
NOW = "2026-11-23T12:00:00Z"


def md(
    *,
    name: str = "resnet",
    status: dict[str, Any] | None = None,
    generation: int = 1,
    **spec: Any,
) -> api.ModelDeployment:
    body: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "ml", "uid": "uid-1", "generation": generation},
        "spec": {"model": {"uri": "pvc://models/resnet/v3", "version": "v3"}, **spec},
        "status": status or {},
    }
    return api.ModelDeployment.model_validate(body)


def target_of(model: api.ModelDeployment) -> str:
    return revision.revision_hash(model.spec)


def deployment(
    model: api.ModelDeployment,
    rev: str | None = None,
    *,
    replicas: int | None = None,
    ready: int = 0,
    available: int | None = None,
    gpus: int = 0,
) -> DeploymentState:
    rev = rev or target_of(model)
    want = children.desired_replicas(model.spec) if replicas is None else replicas
    owner = children.Owner("resnet", "ml", "uid-1")
    manifest = children.build_deployment(owner, model.spec, rev, want, CONFIG)
    return DeploymentState(
        revision=rev,
        name=naming.revision_deployment_name("resnet", rev),
        spec_replicas=want,
        replicas=want,
        ready_replicas=ready,
        available_replicas=ready if available is None else available,
        updated_replicas=want,
        gpus_per_pod=gpus,
        up_to_date=True,
        manifest=manifest,
    )


def pod(
    rev: str, *, scheduled: bool | None = True, message: str = "", ready: bool = False
) -> PodState:
    return PodState(
        name=f"p-{rev}",
        revision=rev,
        ready=ready,
        scheduled=scheduled,
        scheduling_reason="" if scheduled else "Unschedulable",
        scheduling_message=message,
    )


def observed(*deployments: DeploymentState, pods: tuple[PodState, ...] = ()) -> Observed:
    return Observed(deployments=deployments, pods=pods)
