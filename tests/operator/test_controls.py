"""Rollout controls as `kubectl davit` writes them: the annotation's round trip and its refusals."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from davit_operator.planners.controls import CONTROL_ANNOTATION, Pending, Request, pending
from davit_operator.planners.rollout import Control

ABORT = Request(Control.ABORT, "232d26766d", "2026-12-03T14:00:00.000001+00:00")


def test_a_request_survives_the_annotation() -> None:
    for control in Control:
        request = Request(control, "232d26766d", "id-1")
        assert Request.decode(request.encode()) == request


@dataclass(frozen=True)
class BadCase:
    reason: str
    annotation: str
    says: str  # part of the message the user reads (in a ControlRefused Event)


BAD = [
    BadCase("not JSON at all", "promote please", "is not JSON"),
    BadCase("JSON but not an object", '["promote"]', "must be a JSON object"),
    # The message lists what would have worked.
    BadCase("a control that does not exist", '{"control": "rollback", "revision": "r", "id": "1"}',
            "'rollback' is none of promote, promoteFull, abort, retry"),
    BadCase("no revision to aim at", '{"control": "abort", "id": "1"}', "revision"),
    BadCase("no id to be told apart", '{"control": "abort", "revision": "r"}', "id is missing"),
]  # fmt: skip


@pytest.mark.parametrize("case", BAD, ids=[c.reason for c in BAD])
def test_an_unreadable_control_says_what_is_wrong(case: BadCase) -> None:
    with pytest.raises(ValueError, match=re.escape(CONTROL_ANNOTATION)) as error:
        Request.decode(case.annotation)
    assert case.says in str(error.value)
    found = pending({CONTROL_ANNOTATION: case.annotation}, last_control=None)
    assert found is not None
    assert found.request is None
    assert case.says in found.problem


def test_pending_is_each_request_once() -> None:
    value = ABORT.encode()
    assert pending({}, last_control=None) is None
    assert pending({CONTROL_ANNOTATION: value}, last_control=None) == Pending(value, ABORT)
    assert pending({CONTROL_ANNOTATION: value}, last_control=value) is None
    # The same control asked again is a new request (a new id).
    again = Request(Control.ABORT, ABORT.revision, "another id").encode()
    assert pending({CONTROL_ANNOTATION: again}, last_control=value) is not None
