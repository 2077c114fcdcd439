"""A canary rollout of CANARY from STABLE, 4 replicas, steps setWeight 50 then a 3 s pause: the
statuses and Deployments the canary planner tables (reconcile, traffic) start from."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from davit_operator.planners import reconcile
from davit_operator.planners.controls import Request
from davit_operator.planners.observe import DeploymentState
from davit_operator.planners.rollout import Control
from factories import NOW, deployment, md, target_of

STABLE = "0ld57ab1e"
STEPS = [{"setWeight": 50}, {"pause": {"duration": "3s"}}]
MODEL = md(replicas=4, rollout={"steps": STEPS})
CANARY = target_of(MODEL)
START = datetime.fromisoformat(NOW)
PAUSE_END = (START + timedelta(seconds=3)).isoformat()
GPU_SHORTAGE = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."


def history(canary: str | None = CANARY, outcome: str = "Progressing") -> list[dict[str, Any]]:
    stable = {"hash": STABLE, "outcome": "Stable"}
    return [stable] if canary is None else [stable, {"hash": canary, "outcome": outcome}]


def control(name: str, revision: str = CANARY, request_id: str = "1") -> str:
    """The annotation `kubectl davit NAME` writes."""
    return Request(Control(name), revision, request_id).encode()


ABORT, RETRY, PROMOTE = control("abort"), control("retry", request_id="2"), control("promote")


def rolling(**fields: Any) -> dict[str, Any]:
    """The stored status of a canary rollout of CANARY under way from STABLE."""
    return {
        "stableRevision": STABLE,
        "canaryRevision": CANARY,
        "revisions": history(),
        **fields,
    }


def stable(ready: int = 4, replicas: int | None = None) -> DeploymentState:
    return deployment(MODEL, STABLE, replicas=ready if replicas is None else replicas, ready=ready)


def canary(ready: int, replicas: int | None = None) -> DeploymentState:
    """The canary's Deployment as the planner applied it (so only its replicas can differ)."""
    state = deployment(MODEL, CANARY, replicas=ready if replicas is None else replicas, ready=ready)
    return replace(state, manifest=reconcile.with_spec_hash(state.manifest))
