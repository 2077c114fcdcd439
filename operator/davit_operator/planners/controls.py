"""Rollout controls: a person's promote, abort or retry, as `kubectl davit` writes them.

A request is an annotation on the ModelDeployment naming the control, the revision it is meant
for (the canary the person saw) and an id of its own. An annotation, because the manifest that
GitOps re-applies does not carry it, so a re-apply leaves it alone; status, because what a
control did must outlive it: the operator acts on each request once, records it as
`status.lastControl`, and keeps its effect (an abort, say) in status, so neither removing the
annotation nor re-applying the manifest undoes it.

Pure: reading a request and saying what became of it; the rollout planner applies the control.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from davit_operator.planners.rollout import Control

CONTROL_ANNOTATION = "davit.dev/rollout-control"


@dataclass(frozen=True)
class Request:
    control: Control
    revision: str  # the canary revision it is meant for
    id: str  # unique per request: the same control asked twice is two requests

    def encode(self) -> str:
        """The annotation's value."""
        return json.dumps(
            {"control": self.control.value, "revision": self.revision, "id": self.id},
            sort_keys=True,
        )

    @classmethod
    def decode(cls, text: str) -> Request:
        """The request an annotation holds; ValueError, saying what is wrong, otherwise."""
        try:
            fields = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{CONTROL_ANNOTATION} is not JSON: {error}") from error
        if not isinstance(fields, dict):
            raise ValueError(f"{CONTROL_ANNOTATION} must be a JSON object")
        choices = ", ".join(c.value for c in Control)
        named = fields.get("control")
        if named not in {c.value for c in Control}:
            raise ValueError(f"{CONTROL_ANNOTATION}: control {named!r} is none of {choices}")
        control = Control(named)
        revision, request_id = fields.get("revision"), fields.get("id")
        if not isinstance(revision, str) or not revision:
            raise ValueError(f"{CONTROL_ANNOTATION}: revision (the canary's hash) is missing")
        if not isinstance(request_id, str) or not request_id:
            raise ValueError(f"{CONTROL_ANNOTATION}: id is missing")
        return cls(control, revision, request_id)


@dataclass(frozen=True)
class Pending:
    """A request the operator has not acted on yet."""

    value: str  # the annotation as written: status.lastControl once acted on
    request: Request | None  # None when the annotation cannot be read
    problem: str = ""  # why it cannot be read


def pending(annotations: Mapping[str, str], last_control: str | None) -> Pending | None:
    """The annotation's request, unless there is none or it was acted on already."""
    value = annotations.get(CONTROL_ANNOTATION)
    if value is None or value == last_control:
        return None
    try:
        return Pending(value, Request.decode(value))
    except ValueError as error:
        return Pending(value, None, str(error))
