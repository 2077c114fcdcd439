"""Names and labels of everything the operator creates: one place, so selectors always agree."""

from __future__ import annotations

MODEL_LABEL = "davit.dev/model"
REVISION_LABEL = "davit.dev/revision"
ROUTER_LABEL = "davit.dev/router"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY = "davit-operator"
FIELD_MANAGER = "davit-operator"

# Kubernetes names are at most 63 characters where they become labels or DNS labels.
_MAX_NAME = 63
# Revisions are named by this many hex digits of their spec's hash.
REVISION_HASH_LENGTH = 10
# A model's name becomes its Service's name and label values (a DNS-1035 label), and its
# revisions' Deployments are named `<model>-<revision hash>`: both must stay within 63.
MODEL_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
MAX_MODEL_NAME_LENGTH = _MAX_NAME - 1 - REVISION_HASH_LENGTH


def common_labels(model: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "davit-model",
        "app.kubernetes.io/instance": model,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": "davit",
        MODEL_LABEL: model,
    }


def revision_labels(model: str, revision: str) -> dict[str, str]:
    return {**common_labels(model), COMPONENT_LABEL: "predictor", REVISION_LABEL: revision}


def model_selector(model: str) -> dict[str, str]:
    """Selects every pod of a model, whatever its revision (the Service, PDB, HPA/scale)."""
    return {MODEL_LABEL: model}


def revision_selector(model: str, revision: str) -> dict[str, str]:
    return {MODEL_LABEL: model, REVISION_LABEL: revision}


def selector_string(selector: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def revision_deployment_name(model: str, revision: str) -> str:
    """`<model>-<revision>`: within 63 characters for every name the API accepts."""
    return f"{model}-{revision}"


def service_name(model: str) -> str:
    return model


def revision_service_name(model: str, revision: str) -> str:
    """One revision's Service, for the weights of a gateway or router: as its Deployment."""
    return revision_deployment_name(model, revision)


def history_name(model: str, revision: str) -> str:
    """The ControllerRevision that keeps a revision's spec: named as its Deployment."""
    return revision_deployment_name(model, revision)


def history_labels(model: str, revision: str) -> dict[str, str]:
    return {**common_labels(model), REVISION_LABEL: revision}


def route_name(model: str) -> str:
    return model


def router_name(model: str) -> str:
    """Every object of the Davit router (traffic.provider builtin): its Deployment, ConfigMap,
    PDB and service account. "router" is no revision hash, so it never meets a revision's."""
    return f"{model}-router"


def router_labels(model: str) -> dict[str, str]:
    """The router's objects: the model's label, so they are watched and owned as its children."""
    return {**common_labels(model), COMPONENT_LABEL: "router"}


def router_pod_labels(model: str) -> dict[str, str]:
    """The router's pods carry no `davit.dev/model` label: every selector of the model's own
    pods (its Service without a router, its PDB, the HPA's scale selector) leaves them out."""
    return {
        "app.kubernetes.io/name": "davit-router",
        "app.kubernetes.io/instance": model,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": "davit",
        COMPONENT_LABEL: "router",
        ROUTER_LABEL: model,
    }


def router_selector(model: str) -> dict[str, str]:
    return {ROUTER_LABEL: model}


def pdb_name(model: str) -> str:
    return model


def hpa_name(model: str) -> str:
    return model
