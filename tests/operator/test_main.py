"""The operator's kopf settings: what kopf is told to do and, above all, not to do."""

from __future__ import annotations

import itertools

import kopf

from davit_operator.config import OperatorConfig
from davit_operator.main import settings_for

BODY = kopf.Body(
    {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "m", "namespace": "ns", "annotations": {"a": "b"}},
        "spec": {"replicas": 1},
        "status": {"replicas": 1},
    }
)


def test_kopf_keeps_no_diff_base_and_writes_none() -> None:
    # kopf's default stores the last handled spec in an annotation and copies every object on
    # every event to compare with it; the on.event handlers never use that comparison.
    storage = settings_for(OperatorConfig()).persistence.diffbase_storage
    assert storage.build(body=BODY) == {}
    assert storage.fetch(body=BODY) is None
    patch = kopf.Patch()
    storage.store(body=BODY, patch=patch, essence=kopf.BodyEssence({"spec": {"replicas": 2}}))
    assert not patch


def test_kopf_posts_no_events_and_retries_api_requests_forever() -> None:
    settings = settings_for(OperatorConfig())
    assert settings.posting.enabled is False
    backoffs = settings.networking.error_backoffs
    assert not isinstance(backoffs, float)
    delays = list(itertools.islice(iter(backoffs), 6))
    assert delays == [1.0, 2.0, 5.0, 10.0, 10.0, 10.0]
