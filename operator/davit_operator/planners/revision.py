"""Revisions: which spec fields make a new revision, and the history kept in status."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from davit_operator import api
from davit_operator.naming import REVISION_HASH_LENGTH

# Only fields that change the pods make a new revision. Replicas, autoscaling, rollout and
# traffic settings apply to the running revision in place.
POD_AFFECTING_FIELDS = ("model", "runtime", "resources", "scheduling")


def revision_hash(spec: api.ModelDeploymentSpec) -> str:
    canonical = json.dumps(pod_spec_of(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:REVISION_HASH_LENGTH]


def object_hash(manifest: dict[str, Any]) -> str:
    """Fingerprint of a manifest as Davit wants it; stored on the child to detect removed fields."""
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


LIVE_OUTCOMES = (api.RevisionOutcome.PROGRESSING, api.RevisionOutcome.STABLE)
STOPPED_OUTCOMES = (api.RevisionOutcome.ABORTED, api.RevisionOutcome.ROLLED_BACK)


def record_target(
    history: list[api.RevisionRecord], target: str, spec: api.ModelDeploymentSpec, now: str,
    rolling_out: str | None = None,
) -> tuple[list[api.RevisionRecord], bool]:  # fmt: skip
    """History with `target` present; True when a rollout of it starts (it was not live).

    A target that is still the revision rolling out (`rolling_out`) but was stopped (aborted,
    rolled back) stays stopped: that is the same manifest applied again, and only a retry
    starts it again. Any other earlier revision comes back as a new rollout (an undo)."""
    records = [r.model_copy() for r in history]
    for record in records:
        if record.hash == target:
            stopped_here = target == rolling_out and record.outcome in STOPPED_OUTCOMES
            if record.outcome in LIVE_OUTCOMES or stopped_here:
                return records, False
            # Going back to an earlier spec (undo): the same revision rolls out again.
            records.remove(record)
            break
    numbers = [r.number for r in records if r.number is not None]
    records.append(
        api.RevisionRecord(
            hash=target,
            number=max(numbers, default=0) + 1,
            version=spec.model.version,
            model_uri=spec.model.uri,
            created_at=now,
            outcome=api.RevisionOutcome.PROGRESSING,
        )
    )
    return records, True


def pod_spec_of(spec: api.ModelDeploymentSpec) -> dict[str, Any]:
    """The fields that make a revision, as the manifest writes them: what an undo restores."""
    return spec.model_dump(
        mode="json", by_alias=True, include=set(POD_AFFECTING_FIELDS), exclude_none=True
    )


def promote(history: list[api.RevisionRecord], target: str) -> list[api.RevisionRecord]:
    """`target` serves all traffic: it becomes Stable and every other live revision Superseded."""
    promoted = []
    for record in history:
        if record.hash == target:
            outcome = api.RevisionOutcome.STABLE
        elif record.outcome in LIVE_OUTCOMES:
            outcome = api.RevisionOutcome.SUPERSEDED
        else:
            outcome = record.outcome
        promoted.append(record.model_copy(update={"outcome": outcome}))
    return promoted


def trim(
    history: list[api.RevisionRecord], limit: int, keep: str | None = None
) -> list[api.RevisionRecord]:
    """Keep the newest `limit` records, never dropping a live one or `keep` (the target, whose
    record says whether its rollout was stopped)."""
    excess = len(history) - limit
    kept = []
    for record in history:
        if excess > 0 and record.outcome not in LIVE_OUTCOMES and record.hash != keep:
            excess -= 1
            continue
        kept.append(record)
    return kept


def record_analysis(
    history: list[api.RevisionRecord], target: str, measured: api.AnalysisRecord
) -> list[api.RevisionRecord]:
    """History with `measured` as the target's last canary measurement."""
    return [
        r.model_copy(update={"analysis": measured}) if r.hash == target else r.model_copy()
        for r in history
    ]
