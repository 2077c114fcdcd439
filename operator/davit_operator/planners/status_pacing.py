"""When a planned status patch is written: at once, or after the progress that follows it.

Pure: the clock is an argument. A model coming up moves through small steps (its pods created,
bound, ready), each reported by a different controller at its own pace; under load they arrive
seconds apart, and a status write per step would be most of the operator's writes. So:
- a transition is written at once: a new generation or revision, the phase, Ready changing, a
  condition falling (from True, or to False), a condition first reported, anything with an
  Event (an Event and its status go together, or the next pass would plan the Event again) —
  what a user or `kubectl wait` is waiting for;
- progress — counts, a condition other than Ready turning True (the pods bound, one replica
  available), reasons and messages whose status holds — waits up to `hold_seconds` from the
  first such pass, so that the step after it is written with it; the hold never moves later,
  so `kubectl get md` is never more than that behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from davit_operator import api
from davit_operator.planners.reconcile import Event

# Status fields (as patched) that only count or describe the way to the next transition.
PROGRESS_FIELDS = frozenset(
    {"replicas", "readyReplicas", "ready", "gpus", "canaryWeight", "actualWeight"}
)


def is_progress(
    stored: api.ModelDeploymentStatus, patch: dict[str, Any], events: Sequence[Event]
) -> bool:
    """True when `patch` (with its `events`) only moves progress forward; an empty patch is not
    progress (there is nothing to hold)."""
    if not patch or events:
        return False
    fields = set(patch) - {"conditions"}
    if not fields <= PROGRESS_FIELDS:
        return False
    if "conditions" in patch:
        before = {c.type: c.status for c in stored.conditions}
        for condition in patch["conditions"]:
            kind, status = condition["type"], condition["status"]
            if kind not in before:
                return False
            moved = status != before[kind]
            if moved and (kind == api.ConditionType.READY or status != "True"):
                return False
    return True


def write_due(
    progress: bool, held_until: float | None, now: float, hold_seconds: float
) -> float | None:
    """None to write the patch now; otherwise the time to hold it until (the pass then runs
    again). `held_until` is the due time of the patch already held for this model, if any."""
    if not progress:
        return None
    if held_until is None:
        return now + hold_seconds
    return None if now >= held_until else held_until
