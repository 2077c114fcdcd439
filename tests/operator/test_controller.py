"""One reconcile pass end to end, against an in-memory API (writes recorded, a simulated clock):
what reaches the API server, and when."""

from __future__ import annotations

import asyncio
import copy
import datetime
from typing import Any

import httpx2
import pytest
from lightkube.core.exceptions import ApiError

from davit_operator import api
from davit_operator.caches import ClusterCache
from davit_operator.config import OperatorConfig
from davit_operator.controller import Controller
from davit_operator.planners import analysis, children
from davit_operator.planners.analysis import Figures, Window
from davit_operator.planners.reconcile import ChildRef, Event, with_spec_hash
from davit_operator.planners.revision import revision_hash
from davit_operator.scheduler import RetryLaterError
from davit_operator.sources import SourceError, Subject

KEY = ("ml", "resnet")
CONFIG = OperatorConfig(status_hold_seconds=2.0)


class RecordingApi:
    """The writes a pass makes, answered the way the API server would (a new resourceVersion)."""

    def __init__(self, cache: ClusterCache) -> None:
        self.cache = cache
        self.version = 100
        self.status_patches: list[dict[str, Any]] = []
        self.applied: list[str] = []
        self.events: list[str] = []

    def _next_version(self) -> str:
        self.version += 1
        return str(self.version)

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.applied.append(manifest["kind"])
        meta = {**manifest["metadata"], "uid": f"uid-{manifest['kind']}",
                "resourceVersion": self._next_version(), "generation": 1}  # fmt: skip
        return {**manifest, "metadata": meta}

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> Any:
        self.status_patches.append(status)
        body = self.cache.model((namespace, name))
        assert body is not None
        merged = {**(body.get("status") or {}), **status}
        meta = {**body["metadata"], "resourceVersion": self._next_version()}
        return {**body, "metadata": meta, "status": merged}

    async def record_event(self, involved: dict[str, Any], event: Event) -> None:
        self.events.append(event.reason)

    async def scale(self, ref: ChildRef, replicas: int) -> str:
        raise AssertionError("no scale expected")

    async def delete(self, ref: ChildRef) -> None:
        raise AssertionError("no delete expected")


class Source:
    """An analysis source answering from a table of figures per revision (a revision not in
    it: the source fails), recording what was asked."""

    def __init__(self, figures: dict[str, Figures]) -> None:
        self.table = figures
        self.asked: list[tuple[Subject, Window]] = []

    async def figures(self, settings: api.Analysis, subject: Subject, window: Window) -> Figures:
        self.asked.append((subject, window))
        if subject.revision not in self.table:
            raise SourceError(f"{settings.prometheus.url}/api/v1/query unreachable")
        return self.table[subject.revision]


NO_FIGURES = Source({})


def controller_for(kube: Any, cache: ClusterCache, clock: Any, figures: Any) -> Controller:
    """A controller over a recording stand-in for Kube, reading every source's figures from
    `figures`."""
    return Controller(CONFIG, kube, cache, clock, sources=dict.fromkeys(analysis.Source, figures))


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def model() -> dict[str, Any]:
    return {
        "apiVersion": f"{api.GROUP}/{api.VERSION}",
        "kind": api.KIND,
        "metadata": {"name": "resnet", "namespace": "ml", "uid": "uid-md", "generation": 1,
                     "resourceVersion": "1"},
        "spec": {"model": {"uri": "pvc://models/resnet/v3"}, "replicas": 1},
    }  # fmt: skip


def start() -> tuple[Controller, ClusterCache, RecordingApi, Clock, dict[str, Any]]:
    """A model after its first pass: children applied, status Progressing written."""
    cache = ClusterCache()
    cache.upsert(api.KIND, model())
    recording = RecordingApi(cache)
    clock = Clock(1000.0)
    controller = controller_for(recording, cache, clock, NO_FIGURES)
    assert asyncio.run(controller.reconcile(KEY)) is None
    assert recording.applied == [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ControllerRevision",
    ]
    assert len(recording.status_patches) == 1
    [deployment] = [c for (kind, _), c in cache.children(KEY).items() if kind == "Deployment"]
    return controller, cache, recording, clock, deployment


def deployment_with(deployment: dict[str, Any], version: int, **status: int) -> dict[str, Any]:
    changed = copy.deepcopy(deployment)
    changed["metadata"]["resourceVersion"] = str(version)
    changed["status"] = {"observedGeneration": 1, **status}
    return changed


def pod(deployment: dict[str, Any], version: int, *, ready: bool) -> dict[str, Any]:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    conditions = [{"type": "PodScheduled", "status": "True"}]
    if ready:
        conditions.append({"type": "Ready", "status": "True"})
    return {
        "metadata": {"name": "resnet-pod", "namespace": "ml", "uid": "uid-pod",
                     "resourceVersion": str(version), "labels": labels},
        "status": {"phase": "Running" if ready else "Pending", "conditions": conditions},
    }  # fmt: skip


def test_progress_then_readiness_within_the_hold_is_one_status_write() -> None:
    controller, cache, recording, clock, deployment = start()
    # The pod exists and is bound: counts and a condition's reason move, nothing transitions.
    cache.upsert("Deployment", deployment_with(deployment, 200, replicas=1, updatedReplicas=1))
    cache.upsert("Pod", pod(deployment, 201, ready=False))
    clock.now = 1001.0
    assert asyncio.run(controller.reconcile(KEY)) == 1003.0  # held, the pass comes back then
    assert len(recording.status_patches) == 1
    # Ready before the hold ends: one patch carries the progress and the transition.
    cache.upsert(
        "Deployment",
        deployment_with(deployment, 202, replicas=1, updatedReplicas=1, readyReplicas=1,
                        availableReplicas=1),
    )  # fmt: skip
    cache.upsert("Pod", pod(deployment, 203, ready=True))
    clock.now = 1001.5
    assert asyncio.run(controller.reconcile(KEY)) is None
    assert len(recording.status_patches) == 2
    written = recording.status_patches[1]
    assert (written["phase"], written["ready"], written["replicas"]) == ("Healthy", "1/1", 1)
    assert recording.events == ["RevisionCreated", "RevisionAvailable"]


def test_progress_alone_is_written_when_the_hold_ends() -> None:
    controller, cache, recording, clock, deployment = start()
    cache.upsert("Deployment", deployment_with(deployment, 200, replicas=1, updatedReplicas=1))
    clock.now = 1001.0
    assert asyncio.run(controller.reconcile(KEY)) == 1003.0
    clock.now = 1002.0  # another pod event meanwhile: the hold does not move
    assert asyncio.run(controller.reconcile(KEY)) == 1003.0
    assert len(recording.status_patches) == 1
    clock.now = 1003.0
    assert asyncio.run(controller.reconcile(KEY)) is None
    assert len(recording.status_patches) == 2
    assert recording.status_patches[1]["replicas"] == 1
    # Written: nothing is held any more, and a pass with nothing new writes nothing.
    clock.now = 1010.0
    assert asyncio.run(controller.reconcile(KEY)) is None
    assert len(recording.status_patches) == 2


def routed_model() -> dict[str, Any]:
    """The model, its traffic through an HTTPRoute (a kind the NoGatewayApi cluster lacks)."""
    routed = model()
    routed["spec"]["traffic"] = {
        "provider": "gatewayAPI",
        "gatewayAPI": {"parentRefs": [{"name": "public"}]},
    }
    return routed


class NoGatewayApi(RecordingApi):
    """A cluster without the Gateway API CRDs: the API server has no HTTPRoute resource."""

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        if manifest["kind"] == "HTTPRoute":
            raise ApiError(
                request=httpx2.Request("PATCH", "https://api/httproutes/resnet"),
                response=httpx2.Response(
                    404,
                    json={"kind": "Status", "code": 404, "message": "the server could not "
                          "find the requested resource"},
                ),
            )  # fmt: skip
        return await super().apply(manifest)


def test_a_route_the_cluster_cannot_hold_is_refused_with_what_to_install() -> None:
    cache = ClusterCache()
    cache.upsert(api.KIND, routed_model())
    recording = NoGatewayApi(cache)
    controller = controller_for(recording, cache, Clock(1000.0), NO_FIGURES)
    with pytest.raises(RetryLaterError):  # retried with backoff, not in a hot loop
        asyncio.run(controller.reconcile(KEY))
    [status] = recording.status_patches
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (status["phase"], ready["reason"]) == ("Failed", "InvalidSpec")
    assert "serves no gateway.networking.k8s.io/v1 HTTPRoute" in ready["message"]
    assert "the Gateway API CRDs" in ready["message"]
    assert recording.events == ["InvalidSpec"]


class NamespaceGone(RecordingApi):
    """The model's namespace was deleted (and the model with it) before any watch said so."""

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        raise ApiError(
            request=httpx2.Request("PATCH", "https://api/deployments/resnet"),
            response=httpx2.Response(
                404,
                json={"kind": "Status", "code": 404, "reason": "NotFound",
                      "message": 'namespaces "ml" not found',
                      "details": {"name": "ml", "kind": "namespaces"}},
            ),
        )  # fmt: skip


def test_a_model_whose_namespace_is_gone_is_let_go_quietly() -> None:
    cache = ClusterCache()
    cache.upsert(api.KIND, model())
    recording = NamespaceGone(cache)
    controller = controller_for(recording, cache, Clock(1000.0), NO_FIGURES)
    assert asyncio.run(controller.reconcile(KEY)) is None  # no error, so no retry, no traceback
    assert recording.status_patches == []
    assert recording.events == []


class ModelGone(RecordingApi):
    """The model was deleted while its status patch was due."""

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> Any:
        raise ApiError(
            request=httpx2.Request("PATCH", "https://api/modeldeployments/resnet/status"),
            response=httpx2.Response(
                404,
                json={"kind": "Status", "code": 404, "reason": "NotFound",
                      "message": 'modeldeployments.serving.davit.dev "resnet" not found',
                      "details": {"name": "resnet", "group": "serving.davit.dev",
                                  "kind": "modeldeployments"}},
            ),
        )  # fmt: skip


def test_a_model_deleted_before_its_status_write_is_let_go_quietly() -> None:
    cache = ClusterCache()
    cache.upsert(api.KIND, model())
    recording = ModelGone(cache)
    controller = controller_for(recording, cache, Clock(1000.0), NO_FIGURES)
    assert asyncio.run(controller.reconcile(KEY)) is None
    assert recording.events == []


def at_analysis(
    since: datetime.datetime, *, builtin: bool = False
) -> tuple[ClusterCache, str, str]:
    """A canary of v4 beside stable v3 at 50 %, at its analysis step, measuring since `since`:
    from a Prometheus, or (`builtin`) behind the Davit router with no Prometheus named."""
    body = model()
    body["spec"]["replicas"] = 4
    source = {} if builtin else {"prometheus": {"url": "http://prom:9090"}}
    body["spec"]["rollout"] = {
        "steps": [{"setWeight": 50}, {"analysis": {}}],
        "analysis": {"interval": "10s", "failureLimit": 0, **source},
    }
    if builtin:
        body["spec"]["traffic"] = {"provider": "builtin"}
    stable_spec = api.ModelDeploymentSpec.model_validate(body["spec"])
    body["spec"]["model"] = {"uri": "pvc://models/resnet/v4"}
    canary_spec = api.ModelDeploymentSpec.model_validate(body["spec"])
    stable, canary = revision_hash(stable_spec), revision_hash(canary_spec)
    body["status"] = {
        "stableRevision": stable, "canaryRevision": canary, "currentStep": 1,
        "canaryWeight": 50, "analysisStartedAt": since.isoformat(),
        "revisions": [{"hash": stable, "outcome": "Stable"}, {"hash": canary}],
    }  # fmt: skip
    cache = ClusterCache()
    cache.upsert(api.KIND, body)
    owner = children.Owner("resnet", "ml", "uid-md")
    for spec, rev in ((stable_spec, stable), (canary_spec, canary)):
        manifest = with_spec_hash(children.build_deployment(owner, spec, rev, 2, CONFIG))
        manifest["metadata"].update(uid=f"uid-{rev}", resourceVersion="10", generation=1)
        manifest["status"] = {"observedGeneration": 1, "replicas": 2, "readyReplicas": 2,
                              "availableReplicas": 2, "updatedReplicas": 2}  # fmt: skip
        cache.upsert("Deployment", manifest)
    return cache, stable, canary


class AnalysedApi(RecordingApi):
    async def scale(self, ref: ChildRef, replicas: int) -> str:
        return self._next_version()


def test_a_measurement_due_reads_both_revisions_over_its_window() -> None:
    since = datetime.datetime.now(datetime.UTC).replace(microsecond=0) - datetime.timedelta(
        seconds=60
    )
    cache, stable, canary = at_analysis(since)
    source = Source({stable: Figures(4000, 4, 30), canary: Figures(400, 0, 35)})
    recording = AnalysedApi(cache)
    controller = controller_for(recording, cache, Clock(1000.0), source)
    asyncio.run(controller.reconcile(KEY))
    # The window the status names (not up to now), once per revision.
    window = Window(since, since + datetime.timedelta(seconds=10))
    assert sorted(source.asked, key=lambda a: a[0].revision) == sorted(
        [(Subject("ml", "resnet", canary), window), (Subject("ml", "resnet", stable), window)],
        key=lambda a: a[0].revision,
    )
    [status] = recording.status_patches
    assert status["currentStep"] == 2  # passed
    [record] = [r for r in status["revisions"] if r["hash"] == canary]
    assert record["analysis"]["verdict"] == "Pass"
    assert record["analysis"]["canary"] == {"requests": 400, "errorRate": 0.0, "p99LatencyMs": 35.0}
    assert record["analysis"]["stable"]["requests"] == 4000
    assert "RolloutStepCompleted" in recording.events


def test_a_builtin_models_measurement_reads_the_routers_figures() -> None:
    since = datetime.datetime.now(datetime.UTC).replace(microsecond=0) - datetime.timedelta(
        seconds=60
    )
    cache, stable, canary = at_analysis(since, builtin=True)
    routers = Source({stable: Figures(4000, 4, 30), canary: Figures(400, 0, 35)})
    prometheus = Source({})  # would fail: no revision known
    sources = {analysis.Source.PROMETHEUS: prometheus, analysis.Source.ROUTER: routers}
    recording = AnalysedApi(cache)
    controller = Controller(CONFIG, recording, cache, Clock(1000.0), sources=sources)  # type: ignore[arg-type]
    asyncio.run(controller.reconcile(KEY))
    assert sorted(subject.revision for subject, _ in routers.asked) == sorted([stable, canary])
    assert prometheus.asked == []
    [status] = recording.status_patches
    assert status["currentStep"] == 2  # passed on the routers' figures


def test_a_source_that_fails_is_no_verdict_and_no_error() -> None:
    since = datetime.datetime.now(datetime.UTC).replace(microsecond=0) - datetime.timedelta(
        seconds=60
    )
    cache, _, _ = at_analysis(since)
    recording = AnalysedApi(cache)
    source, clock = Source({}), Clock(1000.0)
    controller = controller_for(recording, cache, clock, source)
    wake = asyncio.run(controller.reconcile(KEY))
    assert wake is not None  # the same window is read again later
    assert len(source.asked) == 2  # each revision once
    # Another pass within the interval (any child's event) does not ask the source again...
    clock.now = 1009.0
    asyncio.run(controller.reconcile(KEY))
    assert len(source.asked) == 2
    # ...one after it does.
    clock.now = 1010.0
    asyncio.run(controller.reconcile(KEY))
    assert len(source.asked) == 4
    [status] = recording.status_patches
    progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "MetricsUnavailable"
    assert "http://prom:9090/api/v1/query unreachable" in progressing["message"]
    assert status.get("currentStep", 1) == 1
    assert recording.events == []


class DeploymentGone(RecordingApi):
    """A person deleted the Deployment after the pass read the cache, before its scale."""

    async def scale(self, ref: ChildRef, replicas: int) -> str:
        raise ApiError(
            request=httpx2.Request("PATCH", f"https://api/deployments/{ref.name}/scale"),
            response=httpx2.Response(
                404,
                json={"kind": "Status", "code": 404, "reason": "NotFound",
                      "message": f'deployments.apps "{ref.name}" not found',
                      "details": {"name": ref.name, "group": "apps", "kind": "deployments"}},
            ),
        )  # fmt: skip


def test_a_child_deleted_before_its_scale_is_dropped_from_the_cache_not_a_bug() -> None:
    controller, cache, _, _, _ = start()
    body = cache.model(KEY)
    assert body is not None
    meta = {**body["metadata"], "resourceVersion": "500", "generation": 2}
    cache.upsert(api.KIND, {**body, "metadata": meta, "spec": {**body["spec"], "replicas": 3}})
    gone = DeploymentGone(cache)
    controller._kube = gone  # type: ignore[assignment]
    # No error (so no traceback and no backoff): the Deployment's DELETED event wakes the
    # model, and its next pass creates it again.
    asyncio.run(controller.reconcile(KEY))
    kinds = [kind for kind, _ in cache.children(KEY)]
    assert "Deployment" not in kinds
    asyncio.run(controller.reconcile(KEY))
    assert "Deployment" in gone.applied


class SpecChangedMeanwhile(RecordingApi):
    """A user changed the spec after the pass read the cache, before its status patch: the
    patch's answer is the first the operator sees of it (the watch event, older, is ignored)."""

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> Any:
        answer = await super().patch_status(namespace, name, status)
        meta = {**answer["metadata"], "generation": answer["metadata"]["generation"] + 1}
        return {**answer, "metadata": meta, "spec": {**answer["spec"], "replicas": 3}}


def test_a_spec_change_first_seen_in_a_status_answer_runs_the_pass_again_at_once() -> None:
    cache = ClusterCache()
    cache.upsert(api.KIND, model())
    clock = Clock(1000.0)
    changed = SpecChangedMeanwhile(cache)
    controller = controller_for(changed, cache, clock, NO_FIGURES)
    # The newer spec is in the cache now, and no event will wake the model for it: the pass
    # asks to run again at once.
    assert asyncio.run(controller.reconcile(KEY)) == clock.now
    body = cache.model(KEY)
    assert body is not None
    assert body["spec"]["replicas"] == 3


def test_the_routers_role_is_written_before_the_binding_that_names_it() -> None:
    cache = ClusterCache()
    routed = model()
    routed["spec"]["traffic"] = {"provider": "builtin"}
    cache.upsert(api.KIND, routed)
    recording = RecordingApi(cache)
    controller = controller_for(recording, cache, Clock(1000.0), NO_FIGURES)
    asyncio.run(controller.reconcile(KEY))
    # The API server checks a RoleBinding against its Role: one applied first is refused.
    assert recording.applied[0] == "Role"
    assert "RoleBinding" in recording.applied[1:]


class RefusedThenFixed(NoGatewayApi, SpecChangedMeanwhile):
    """A route the cluster cannot hold, and the user's fix landing before the refusal's
    status patch."""


def test_a_fix_that_lands_during_a_refusal_is_planned_at_once_not_after_the_backoff() -> None:
    cache = ClusterCache()
    cache.upsert(api.KIND, routed_model())
    clock = Clock(1000.0)
    controller = controller_for(RefusedThenFixed(cache), cache, clock, NO_FIGURES)
    assert asyncio.run(controller.reconcile(KEY)) == clock.now  # no RetryLaterError
