"""Table tests of the traffic provider's children: with gatewayAPI an HTTPRoute weighs one Service
per serving revision by the rollout's weight; with none there is nothing to write."""

from __future__ import annotations

import json
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import pytest
from canary_factories import CANARY, STABLE, STEPS, canary, history, rolling, stable

from davit_operator import api
from davit_operator.planners import children, reconcile
from davit_operator.planners.observe import DeploymentState, Observed
from factories import CONFIG, NOW, deployment, md, target_of

GATEWAY = {"parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"}]}
ROUTED = md(replicas=4, rollout={"steps": STEPS}, traffic={"provider": "gatewayAPI",
                                                           "gatewayAPI": GATEWAY})  # fmt: skip
PLAIN = md(replicas=4, rollout={"steps": STEPS})
BLUE_GREEN = md(replicas=4, rollout={"strategy": "blueGreen", "steps": [{"pause": {}}]},
                traffic={"provider": "gatewayAPI", "gatewayAPI": GATEWAY})  # fmt: skip


def route_weights(manifest: dict[str, Any]) -> dict[str, int]:
    [rule] = manifest["spec"]["rules"]
    return {b["name"].removeprefix("resnet-"): b["weight"] for b in rule["backendRefs"]}


def served(manifest: dict[str, Any], **defaults: Any) -> dict[str, Any]:
    """`manifest` as the API server stores it: with the fingerprint the planner applies, and
    the defaults Gateway API fills in (group and kind of each reference, a path match)."""
    stored = reconcile.with_spec_hash(manifest)
    if "spec" not in stored:  # a ConfigMap: stored as written
        return stored
    spec = stored["spec"]
    if stored["kind"] == "HTTPRoute":
        spec = {
            **spec,
            "parentRefs": [
                {"group": "gateway.networking.k8s.io", "kind": "Gateway", **p}
                for p in spec["parentRefs"]
            ],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [
                        {"group": "", "kind": "Service", **b} for b in r["backendRefs"]
                    ],
                }
                for r in spec["rules"]
            ],
        }
    return {**stored, "spec": {**spec, **defaults}}


def route_and_services(model: api.ModelDeployment, weights: list[tuple[str, int]]) -> Observed:
    """The children of a route with `weights` as the server holds them."""
    owner = reconcile.Target.of(model).owner
    gateway = model.spec.traffic.gateway_api or api.GatewayAPI.model_validate(GATEWAY)
    manifests = [children.build_revision_service(owner, rev, CONFIG) for rev, _ in weights] + [
        children.build_http_route(owner, gateway, weights, CONFIG)
    ]
    return Observed(
        children={(m["kind"], m["metadata"]["name"]): served(m, clusterIP="10.0.0.7")
                  for m in manifests},
    )  # fmt: skip


@dataclass(frozen=True)
class Case:
    reason: str
    status: dict[str, Any]
    deployments: tuple[DeploymentState, ...]
    _: KW_ONLY
    model: api.ModelDeployment = field(default_factory=lambda: ROUTED)
    children: Observed = field(default_factory=Observed)  # route and Services already there
    route: dict[str, int] | None = None  # the route applied: weight by revision
    services: list[str] = field(default_factory=list)  # revision Services applied
    deleted: list[str] = field(default_factory=list)  # kind/name of traffic children deleted


CASES = [
    Case("a new model's route sends everything to its one revision", {}, (),
         route={target_of(ROUTED): 100}, services=[target_of(ROUTED)]),
    # The weight moves only once the canary's share is ready: until then it serves nothing.
    Case("a canary scaling up to its share has no weight yet",
         rolling(currentStep=0, canaryWeight=0), (stable(), canary(ready=1, replicas=2)),
         route={STABLE: 100, CANARY: 0}, services=[STABLE, CANARY]),
    Case("the canary's share ready moves the route to 50 %",
         rolling(currentStep=0, canaryWeight=0), (stable(), canary(ready=2)),
         route={STABLE: 50, CANARY: 50}, services=[STABLE, CANARY]),
    # An unchanged route (with the server's defaults) is not applied again.
    Case("a route that holds the weights already is left alone",
         rolling(currentStep=1, canaryWeight=50), (stable(ready=2), canary(ready=2)),
         children=route_and_services(ROUTED, [(STABLE, 50), (CANARY, 50)])),
    Case("the promoted canary takes the whole route and stable's Service goes",
         rolling(currentStep=2, canaryWeight=50), (stable(ready=2), canary(ready=4)),
         children=route_and_services(ROUTED, [(STABLE, 50), (CANARY, 50)]),
         route={CANARY: 100}, deleted=[f"Service/resnet-{STABLE}"]),
    Case("an abort returns the route to stable once stable is back at full size",
         rolling(currentStep=1, canaryWeight=50, revisions=history(outcome="Aborted")),
         (stable(ready=4), canary(ready=2)),
         children=route_and_services(ROUTED, [(STABLE, 50), (CANARY, 50)]),
         route={STABLE: 100, CANARY: 0}),
    # Back to provider none: the route and the revision Services go, the model's Service stays.
    Case("provider none removes the route and the revision Services",
         rolling(currentStep=1, canaryWeight=50), (stable(ready=2), canary(ready=2)),
         model=PLAIN, children=route_and_services(ROUTED, [(STABLE, 50), (CANARY, 50)]),
         deleted=[f"Service/resnet-{STABLE}", f"Service/resnet-{CANARY}", "HTTPRoute/resnet"]),
    Case("provider none writes no traffic children", {}, (), model=PLAIN),
    # blueGreen: the new revision at full size keeps 0 % until the switch, then takes all.
    Case("blueGreen's new revision at full size has no weight before the switch",
         rolling(currentStep=0, canaryWeight=0), (stable(), canary(ready=4)),
         model=BLUE_GREEN, route={STABLE: 100, CANARY: 0}, services=[STABLE, CANARY]),
    Case("blueGreen switches the whole route at once",
         rolling(currentStep=1, canaryWeight=0), (stable(), canary(ready=4)),
         model=BLUE_GREEN, children=route_and_services(BLUE_GREEN, [(STABLE, 100), (CANARY, 0)]),
         route={CANARY: 100}, deleted=[f"Service/resnet-{STABLE}"]),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.reason for c in CASES])
def test_traffic_children(case: Case) -> None:
    model = case.model.model_copy(
        update={"status": api.ModelDeploymentStatus.model_validate(case.status)}
    )
    observed = Observed(deployments=case.deployments, children=case.children.children)
    plan = reconcile.plan(model, observed, CONFIG, NOW)
    routes = [m for m in plan.apply if m["kind"] == "HTTPRoute"]
    assert [route_weights(r) for r in routes] == ([case.route] if case.route else [])
    revision_services = [
        m["metadata"]["name"].removeprefix("resnet-")
        for m in plan.apply
        if m["kind"] == "Service" and m["metadata"]["name"] != "resnet"
    ]
    assert revision_services == case.services
    traffic_deleted = [f"{r.kind}/{r.name}" for r in plan.delete if r.kind != "Deployment"]
    assert traffic_deleted == case.deleted


def test_the_route_attaches_to_the_specs_gateway_through_revision_services() -> None:
    plan = reconcile.plan(ROUTED, Observed(), CONFIG, NOW)
    [route] = [m for m in plan.apply if m["kind"] == "HTTPRoute"]
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["metadata"]["name"] == "resnet"
    assert route["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert route["spec"]["parentRefs"] == [
        {"name": "public", "namespace": "gateways", "sectionName": "https"}
    ]
    [backend] = route["spec"]["rules"][0]["backendRefs"]
    assert backend == {"name": f"resnet-{target_of(ROUTED)}", "port": 8080, "weight": 100}
    [service] = [
        m for m in plan.apply if m["kind"] == "Service" and m["metadata"]["name"] == backend["name"]
    ]
    assert service["spec"]["selector"] == {
        "davit.dev/model": "resnet",
        "davit.dev/revision": target_of(ROUTED),
    }


@dataclass(frozen=True)
class WeightCase:
    reason: str
    model: api.ModelDeployment
    status: dict[str, Any]
    deployments: tuple[DeploymentState, ...]
    want: int  # status.actualWeight: percent of requests the newest revision gets


PLAIN_ROUTED = md(replicas=4, traffic={"provider": "gatewayAPI", "gatewayAPI": GATEWAY})
WEIGHT_CASES = [
    WeightCase("a model with one revision gets everything", PLAIN, {}, (), want=100),
    # With none the Service spreads requests over every ready pod: a canary's pod that is
    # ready serves, whatever weight the step has set.
    WeightCase("with none a canary's first ready pod already serves its share",
               PLAIN, rolling(currentStep=0, canaryWeight=0),
               (stable(), canary(ready=1, replicas=2)), want=20),
    WeightCase("with none the set weight is reached only once stable has shrunk",
               PLAIN, rolling(currentStep=1, canaryWeight=50), (stable(), canary(ready=2)),
               want=33),
    WeightCase("with none a split at the set weight reports it",
               PLAIN, rolling(currentStep=1, canaryWeight=50), (stable(ready=2), canary(ready=2)),
               want=50),
    # The route moves only once the canary's share is ready: until then it has none.
    WeightCase("with gatewayAPI a canary scaling up has no weight yet",
               ROUTED, rolling(currentStep=0, canaryWeight=0),
               (stable(), canary(ready=1, replicas=2)), want=0),
    WeightCase("with gatewayAPI the route's weight is the canary's",
               ROUTED, rolling(currentStep=0, canaryWeight=0), (stable(), canary(ready=2)),
               want=50),
    # Without steps the route stays on stable until the new revision is available and
    # becomes stable itself, while its pods come up beside.
    WeightCase("with gatewayAPI a rollout without steps keeps the route on stable",
               PLAIN_ROUTED, rolling(), (stable(), canary(ready=2)), want=0),
    WeightCase("with the router the canary's weight is the router's",
               md(replicas=4, rollout={"steps": STEPS}, traffic={"provider": "builtin"}),
               rolling(currentStep=0, canaryWeight=0), (stable(), canary(ready=1, replicas=2)),
               want=0),
    WeightCase("an aborted canary with none serves while its pods remain",
               PLAIN, rolling(currentStep=1, canaryWeight=50, revisions=history(outcome="Aborted")),
               (stable(ready=4), canary(ready=1, replicas=0)), want=20),
]  # fmt: skip


@pytest.mark.parametrize("case", WEIGHT_CASES, ids=[c.reason for c in WEIGHT_CASES])
def test_the_weight_reported_is_what_traffic_gets(case: WeightCase) -> None:
    model = case.model.model_copy(
        update={"status": api.ModelDeploymentStatus.model_validate(case.status)}
    )
    plan = reconcile.plan(model, Observed(deployments=case.deployments), CONFIG, NOW)
    stored = model.status.model_dump(by_alias=True, exclude_none=True)
    assert {**stored, **(plan.status or {})}["actualWeight"] == case.want


BUILTIN = md(replicas=4, rollout={"steps": STEPS}, traffic={"provider": "builtin"})
BLUE_GREEN_BUILTIN = md(replicas=4, rollout={"strategy": "blueGreen", "steps": [{"pause": {}}]},
                        traffic={"provider": "builtin"})  # fmt: skip


def router_weights(manifest: dict[str, Any]) -> dict[str, int]:
    document = json.loads(manifest["data"]["router.json"])
    return {r["name"]: r["weight"] for r in document["revisions"]}


def router_children(weights: list[tuple[str, int]]) -> Observed:
    """The model's own Service and PDB, and the router's objects and revision Services for
    `weights`, as the server holds them."""
    owner = reconcile.Target.of(BUILTIN).owner
    manifests = [children.build_revision_service(owner, rev, CONFIG) for rev, _ in weights] + [
        children.build_service(owner, CONFIG, routed=True),
        children.build_pdb(owner),
        children.build_router_config(owner, BUILTIN.spec.traffic, weights),
        *children.build_router_access(owner),
        children.build_router_deployment(owner, CONFIG, BUILTIN.spec.traffic),
        children.build_router_pdb(owner),
    ]
    return Observed(
        children={(m["kind"], m["metadata"]["name"]): served(m) for m in manifests},
    )


@dataclass(frozen=True)
class RouterCase:
    reason: str
    status: dict[str, Any]
    deployments: tuple[DeploymentState, ...]
    _: KW_ONLY
    model: api.ModelDeployment = field(default_factory=lambda: BUILTIN)
    children: Observed = field(default_factory=Observed)
    want: dict[str, int] | None = None  # the router's weights applied; None: none applied
    deleted: list[str] = field(default_factory=list)


ROUTER_CASES = [
    RouterCase("a new model's router sends everything to its one revision", {}, (),
               want={target_of(BUILTIN): 100}),
    # As with a route, the weight moves only once the canary's share is ready.
    RouterCase("a canary scaling up to its share has no weight yet",
               rolling(currentStep=0, canaryWeight=0), (stable(), canary(ready=1, replicas=2)),
               want={STABLE: 100, CANARY: 0}),
    RouterCase("the canary's share ready gives it 50 %",
               rolling(currentStep=0, canaryWeight=0), (stable(), canary(ready=2)),
               want={STABLE: 50, CANARY: 50}),
    RouterCase("a configuration that holds the weights already is not written again",
               rolling(currentStep=1, canaryWeight=50), (stable(ready=2), canary(ready=2)),
               children=router_children([(STABLE, 50), (CANARY, 50)])),
    RouterCase("provider none removes the router's configuration and the revision Services",
               rolling(currentStep=1, canaryWeight=50), (stable(ready=2), canary(ready=2)),
               model=PLAIN, children=router_children([(STABLE, 50), (CANARY, 50)]),
               deleted=[f"Service/resnet-{STABLE}", f"Service/resnet-{CANARY}",
                        "ConfigMap/resnet-router", "ServiceAccount/resnet-router",
                        "Role/resnet-router", "RoleBinding/resnet-router",
                        "Deployment/resnet-router", "PodDisruptionBudget/resnet-router"]),
    # blueGreen behind the router, as behind a Gateway: 0 % at full size, then one switch.
    RouterCase("blueGreen's new revision at full size has no weight in the router",
               rolling(currentStep=0, canaryWeight=0), (stable(), canary(ready=4)),
               model=BLUE_GREEN_BUILTIN, want={STABLE: 100, CANARY: 0}),
    RouterCase("blueGreen switches the router's weights at once",
               rolling(currentStep=1, canaryWeight=0), (stable(), canary(ready=4)),
               model=BLUE_GREEN_BUILTIN,
               children=router_children([(STABLE, 100), (CANARY, 0)]),
               want={CANARY: 100}, deleted=[f"Service/resnet-{STABLE}"]),
]  # fmt: skip


@pytest.mark.parametrize("case", ROUTER_CASES, ids=[c.reason for c in ROUTER_CASES])
def test_the_builtin_routers_configuration(case: RouterCase) -> None:
    model = case.model.model_copy(
        update={"status": api.ModelDeploymentStatus.model_validate(case.status)}
    )
    observed = Observed(deployments=case.deployments, children=case.children.children)
    plan = reconcile.plan(model, observed, CONFIG, NOW)
    configs = [m for m in plan.apply if m["kind"] == "ConfigMap"]
    assert [router_weights(c) for c in configs] == ([case.want] if case.want else [])
    traffic_deleted = [
        f"{r.kind}/{r.name}"
        for r in plan.delete
        if r.kind != "Deployment" or r.name == "resnet-router"
    ]
    assert traffic_deleted == case.deleted
    # The router's other objects are written where they are not there yet, never twice.
    router = {f"{m['kind']}/{m['metadata']['name']}" for m in plan.apply} & ROUTER_OBJECTS
    routed = case.model.spec.traffic.provider is api.TrafficProvider.BUILTIN
    there = {f"{kind}/{name}" for kind, name in case.children.children}
    assert router == (ROUTER_OBJECTS - there if routed else set())


ROUTER_OBJECTS = {
    f"{kind}/resnet-router"
    for kind in ("ServiceAccount", "Role", "RoleBinding", "Deployment", "PodDisruptionBudget")
}


def test_with_the_router_the_models_service_selects_the_router_pods_only() -> None:
    plan = reconcile.plan(BUILTIN, Observed(), CONFIG, NOW)
    manifests = {f"{m['kind']}/{m['metadata']['name']}": m for m in plan.apply}
    router = manifests["Deployment/resnet-router"]
    pod_labels = router["spec"]["template"]["metadata"]["labels"]
    # Until a router pod is ready the Service keeps selecting the model's own pods, so a model
    # switched to the router never goes unreachable while the router starts.
    assert manifests["Service/resnet"]["spec"]["selector"] == {"davit.dev/model": "resnet"}
    serving = Observed(children={("Deployment", "resnet-router"): router_deployment(1)})
    [service] = [
        m for m in reconcile.plan(BUILTIN, serving, CONFIG, NOW).apply if m["kind"] == "Service"
        and m["metadata"]["name"] == "resnet"
    ]  # fmt: skip
    assert service["spec"]["selector"] == {"davit.dev/router": "resnet"}
    assert router["spec"]["selector"]["matchLabels"] == {"davit.dev/router": "resnet"}
    # The model's own selectors (its PDB, the HPA's) never count router pods.
    assert "davit.dev/model" not in pod_labels
    assert manifests["PodDisruptionBudget/resnet"]["spec"]["selector"]["matchLabels"] == {
        "davit.dev/model": "resnet"
    }
    pod = router["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "resnet-router"
    # The ConfigMap is watched through the API, not mounted (a mounted one lags by a minute).
    assert "volumes" not in pod
    [container] = pod["containers"]
    assert container["command"] == ["davit-router"]
    assert container["args"][:3] == ["serve", "--configmap", "resnet-router"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["securityContext"]["runAsNonRoot"] is True
    configmaps, slices = manifests["Role/resnet-router"]["rules"]
    # Its own ConfigMap only, by name; the slices by label (their names are generated).
    assert (configmaps["resources"], configmaps["resourceNames"], configmaps["verbs"]) == (
        ["configmaps"], ["resnet-router"], ["get", "list", "watch"]
    )  # fmt: skip
    assert (slices["resources"], slices["verbs"]) == (["endpointslices"], ["get", "list", "watch"])
    assert "resourceNames" not in slices
    # Without the router the Service selects the model's pods again.
    plain = reconcile.plan(PLAIN, Observed(), CONFIG, NOW)
    [service] = [m for m in plain.apply if m["kind"] == "Service"]
    assert service["spec"]["selector"] == {"davit.dev/model": "resnet"}


def test_the_router_configuration_names_revision_services_and_traffic_settings() -> None:
    traffic = api.Traffic.model_validate(
        {"provider": "builtin", "timeoutMs": 2500, "retries": {"attempts": 1},
         "circuitBreaker": {"consecutiveErrors": 3}}
    )  # fmt: skip
    owner = reconcile.Target.of(BUILTIN).owner
    manifest = children.build_router_config(owner, traffic, [(STABLE, 90), (CANARY, 10)])
    assert manifest["metadata"]["name"] == "resnet-router"
    assert manifest["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    document = json.loads(manifest["data"]["router.json"])
    assert document["revisions"] == [
        {"name": STABLE, "weight": 90, "service": f"resnet-{STABLE}"},
        {"name": CANARY, "weight": 10, "service": f"resnet-{CANARY}"},
    ]
    assert (document["model"], document["timeoutMs"]) == ("resnet", 2500)
    assert document["retries"] == {"attempts": 1, "budgetPercent": 20}
    assert document["circuitBreaker"]["consecutiveErrors"] == 3


def router_deployment(ready: int) -> dict[str, Any]:
    """The router's Deployment as the server holds it, `ready` of its pods ready."""
    owner = reconcile.Target.of(BUILTIN).owner
    stored = served(children.build_router_deployment(owner, CONFIG, BUILTIN.spec.traffic))
    stored["status"] = {"observedGeneration": 1, "replicas": 2, "readyReplicas": ready}
    stored["metadata"]["generation"] = 1
    return stored


@dataclass(frozen=True)
class ReachCase:
    reason: str
    router: dict[str, Any] | None  # the router's Deployment, if there
    want: tuple[str, str]  # phase, Ready's reason


REACH_CASES = [
    # The model's pods are all ready in each case: only the router decides.
    ReachCase("a router not created yet keeps the model from Ready", None,
              ("Progressing", "RouterNotReady")),
    ReachCase("a router with no ready pod keeps the model from Ready", router_deployment(0),
              ("Progressing", "RouterNotReady")),
    ReachCase("one ready router pod is enough to serve", router_deployment(1),
              ("Healthy", "AllReplicasReady")),
]  # fmt: skip


@pytest.mark.parametrize("case", REACH_CASES, ids=[c.reason for c in REACH_CASES])
def test_a_model_behind_the_router_is_ready_once_the_router_is(case: ReachCase) -> None:
    model = BUILTIN.model_copy(
        update={"status": api.ModelDeploymentStatus.model_validate(
            {"stableRevision": target_of(BUILTIN)})}
    )  # fmt: skip
    routers = {("Deployment", "resnet-router"): case.router} if case.router else {}
    observed = Observed(deployments=(deployment(BUILTIN, replicas=4, ready=4),), children=routers)
    status = reconcile.plan(model, observed, CONFIG, NOW).status
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (status["phase"], ready["reason"]) == case.want
