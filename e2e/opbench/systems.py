"""The two systems under test, behind one interface: Davit (ModelDeployments reconciled by the
operator) and the peer (plain Deployments reconciled by the Deployment controller).

Each knows how to create N objects, change their spec, delete them, and when they are done.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client

from opbench.cluster import Obj

GROUP, VERSION, PLURAL = "serving.davit.dev", "v1alpha1", "modeldeployments"
# What goes with either system's objects when they are deleted, so the delete phase waits for it
# too: Davit's Services and PDBs by garbage collection, the peer's by its own deletes, the pods by
# their ReplicaSets'. Each system has a namespace to itself, so all of them are the system's.
DELETED_WITH_THE_OBJECTS = ("services", "poddisruptionbudgets", "pods")


def model_spec(version: str) -> dict[str, Any]:
    """A CPU model of one replica; small requests so that 1,000 fit on the benchmark's nodes."""
    return {
        "model": {
            "uri": f"s3://models/bench/{version}",
            "version": version,
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [16]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [16]}],
        },
        "resources": {"cpu": "100m", "memory": "128Mi"},
        "replicas": 1,
    }


def _condition(obj: Obj, kind: str) -> dict[str, Any] | None:
    conditions = obj.get("status", {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), None)


def model_ready(obj: Obj) -> bool:
    ready = _condition(obj, "Ready")
    return bool(ready and ready.get("status") == "True")


def model_rolled_out(obj: Obj, version: str) -> bool:
    """Ready on `version`, its spec acted on, and the old revision's pods gone."""
    status = obj.get("status", {})
    stable = next(
        (r for r in status.get("revisions") or [] if r.get("hash") == status.get("stableRevision")),
        None,
    )
    return bool(
        model_ready(obj)
        and status.get("observedGeneration") == obj["metadata"].get("generation")
        and stable is not None
        and stable.get("version") == version
        and not status.get("canaryRevision")
        and status.get("replicas") == 1
    )


def deployment_available(obj: Obj) -> bool:
    status = obj.get("status", {})
    return bool(
        status.get("observedGeneration") == obj["metadata"].get("generation")
        and status.get("availableReplicas") == 1
    )


def deployment_rolled_out(obj: Obj) -> bool:
    status = obj.get("status", {})
    return (
        deployment_available(obj)
        and status.get("updatedReplicas") == 1
        and status.get("replicas") == 1  # the old ReplicaSet's pod is gone
    )


class System(Protocol):
    key: str  # in results.json
    label: str
    kind: str  # what the Collection watches

    def create(self, name: str) -> None: ...
    def change(self, name: str) -> None: ...
    def delete(self, name: str) -> None: ...
    def ready(self, obj: Obj) -> bool: ...
    def rolled_out(self, obj: Obj) -> bool: ...


class Davit:
    key = "davit"
    label = "Davit"
    kind = "modeldeployments"
    version_after_change = "v2"

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self._api = client.CustomObjectsApi(api_client)
        self._namespace = namespace

    def create(self, name: str) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelDeployment",
            "metadata": {"name": name},
            "spec": model_spec("v1"),
        }
        self._api.create_namespaced_custom_object(GROUP, VERSION, self._namespace, PLURAL, body)

    def change(self, name: str) -> None:
        # PUT, not PATCH: the write counts tell the benchmark's writes from the operator's
        # (apistats: the operator only PATCHes ModelDeployments).
        current = self._api.get_namespaced_custom_object(
            GROUP, VERSION, self._namespace, PLURAL, name
        )
        current["spec"] = model_spec(self.version_after_change)
        self._api.replace_namespaced_custom_object(
            GROUP, VERSION, self._namespace, PLURAL, name, current
        )

    def delete(self, name: str) -> None:
        self._api.delete_namespaced_custom_object(GROUP, VERSION, self._namespace, PLURAL, name)

    def ready(self, obj: Obj) -> bool:
        return model_ready(obj)

    def rolled_out(self, obj: Obj) -> bool:
        return model_rolled_out(obj, self.version_after_change)


@dataclass(frozen=True)
class PeerTemplate:
    """What Davit renders for one model, to be written directly by the peers: the pod template,
    and the specs of its Service and PodDisruptionBudget (selectors rewritten per model)."""

    pod: Obj
    service_spec: Obj
    pdb_spec: Obj


class PlainDeployments:
    """The issue's peer: one Deployment per model with the pod template Davit renders for it."""

    key = "peer"
    label = "Deployment controller"
    kind = "deployments"

    def __init__(
        self, api_client: client.ApiClient, namespace: str, template: PeerTemplate
    ) -> None:
        self._apps = client.AppsV1Api(api_client)
        self._namespace = namespace
        self._template = template

    def _body(self, name: str, version: str) -> Obj:
        template = copy.deepcopy(self._template.pod)
        template["metadata"]["labels"] = {"app": name}
        template["metadata"].setdefault("annotations", {})["bench.davit.dev/version"] = version
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": template,
            },
        }

    def create(self, name: str) -> None:
        self._apps.create_namespaced_deployment(self._namespace, self._body(name, "v1"))

    def change(self, name: str) -> None:
        current = self._apps.read_namespaced_deployment(name, self._namespace)
        current.spec.template.metadata.annotations["bench.davit.dev/version"] = "v2"
        self._apps.replace_namespaced_deployment(name, self._namespace, current)

    def delete(self, name: str) -> None:
        self._apps.delete_namespaced_deployment(name, self._namespace)

    def ready(self, obj: Obj) -> bool:
        return deployment_available(obj)

    def rolled_out(self, obj: Obj) -> bool:
        return deployment_rolled_out(obj)


class PlainChildren(PlainDeployments):
    """A second peer: every child Davit makes (Deployment, Service, PDB), written directly, as a
    user applying the same manifests by hand would. Davit's ratio to it is the operator's own
    overhead; to PlainDeployments, that plus the cluster's work for the Service and the PDB."""

    key = "peer-children"
    label = "Deployment + Service + PDB"

    def __init__(
        self, api_client: client.ApiClient, namespace: str, template: PeerTemplate
    ) -> None:
        super().__init__(api_client, namespace, template)
        self._core = client.CoreV1Api(api_client)
        self._policy = client.PolicyV1Api(api_client)

    def create(self, name: str) -> None:
        super().create(name)
        selector = {"app": name}
        service_spec = {**copy.deepcopy(self._template.service_spec), "selector": selector}
        self._core.create_namespaced_service(
            self._namespace, {"metadata": {"name": name}, "spec": service_spec}
        )
        pdb_spec = {**copy.deepcopy(self._template.pdb_spec), "selector": {"matchLabels": selector}}
        self._policy.create_namespaced_pod_disruption_budget(
            self._namespace, {"metadata": {"name": name}, "spec": pdb_spec}
        )

    def delete(self, name: str) -> None:
        super().delete(name)
        self._core.delete_namespaced_service(name, self._namespace)
        self._policy.delete_namespaced_pod_disruption_budget(name, self._namespace)


class TemplateIncompleteError(LookupError):
    """The operator has not made every child of the template model yet; says which it has not."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__(" and ".join(missing))
        self.missing = missing


def missing_children(children: Mapping[str, Sequence[object]]) -> list[str]:
    """The kinds of which `children` (found objects by kind) has none, in its order."""
    return [kind for kind, found in children.items() if not found]


def peer_template(api_client: client.ApiClient, namespace: str, model: str) -> PeerTemplate:
    """What Davit made for `model`, without Davit's labels, selectors and server-set fields.
    Raises TemplateIncompleteError while the operator has not made all of it yet."""
    selector = f"davit.dev/model={model}"
    children = {
        "Deployment": client.AppsV1Api(api_client)
        .list_namespaced_deployment(namespace, label_selector=selector)
        .items,
        "Service": client.CoreV1Api(api_client)
        .list_namespaced_service(namespace, label_selector=selector)
        .items,
        "PodDisruptionBudget": client.PolicyV1Api(api_client)
        .list_namespaced_pod_disruption_budget(namespace, label_selector=selector)
        .items,
    }
    if missing := missing_children(children):
        raise TemplateIncompleteError(missing)
    # One of each for a new model; more would be a bug in the operator, not a wait.
    [deployment], [service], [pdb] = children.values()
    pod: Obj = api_client.sanitize_for_serialization(deployment.spec.template)
    pod["metadata"] = {"annotations": pod["metadata"].get("annotations", {})}
    service_spec: Obj = api_client.sanitize_for_serialization(service.spec)
    kept = {"ports", "type", "sessionAffinity"}
    service_spec = {k: v for k, v in service_spec.items() if k in kept}
    pdb_spec: Obj = api_client.sanitize_for_serialization(pdb.spec)
    return PeerTemplate(pod=pod, service_spec=service_spec, pdb_spec=pdb_spec)
