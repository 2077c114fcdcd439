"""The committed CRD is generated from the pydantic models and must not drift from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from davit_operator import crdgen

REPO = Path(__file__).resolve().parents[2]


def _walk(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        return [node, *(n for v in node.values() for n in _walk(v))]
    if isinstance(node, list):
        return [n for v in node for n in _walk(v)]
    return []


@pytest.mark.parametrize("directory", ["crds", "charts/davit/crds"])
def test_committed_crd_matches_models(directory: str) -> None:
    committed = (REPO / directory / crdgen.CRD_FILE).read_text()
    assert committed == crdgen.render_crd(), f"{directory}/ drifted from api.py: run `make crds`"


def test_schema_is_structural() -> None:
    crd = crdgen.build_crd()
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for node in _walk(schema["properties"]["spec"]) + _walk(schema["properties"]["status"]):
        if "properties" in node or "items" in node:
            assert "type" in node
        assert "$ref" not in node
        assert "anyOf" not in node


def test_a_defaulted_object_requires_nothing() -> None:
    # The API server refuses a CRD whose default lacks a required field: an object that
    # defaults to {} must have a default for every field (an Optional one has no default).
    crd = crdgen.build_crd()
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for node in _walk(schema):
        if node.get("type") == "object" and node.get("default") == {}:
            assert not node.get("required"), node


def test_an_optional_object_within_an_optional_one_has_no_default() -> None:
    crd = crdgen.build_crd()
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    analysis = status["properties"]["revisions"]["items"]["properties"]["analysis"]
    assert "default" not in analysis
    assert "default" not in analysis["properties"]["stable"]


def test_scale_and_status_subresources_and_columns() -> None:
    version = crdgen.build_crd()["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert "status" in version["subresources"]
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert names[:1] == ["Version"]
    assert {"Version", "Phase", "Ready", "GPUs", "Age"} <= set(names)


def test_cel_rules_are_attached() -> None:
    rules = [
        rule["rule"]
        for node in _walk(crdgen.build_crd())
        for rule in node.get("x-kubernetes-validations", [])
    ]
    assert "self.minReplicas <= self.maxReplicas" in rules
    assert any("isSorted()" in r for r in rules)
    assert any(r.startswith("self.matches(") for r in rules)


def test_rendered_yaml_round_trips() -> None:
    assert yaml.safe_load(crdgen.render_crd()) == crdgen.build_crd()


def _fields(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    """Every property below `node`, with its dotted path (`[]` for array items)."""
    found = []
    for name, child in (node.get("properties") or {}).items():
        found.append((f"{path}.{name}", child))
        found += _fields(child, f"{path}.{name}")
    if "items" in node:
        found += _fields(node["items"], f"{path}[]")
    return found


def test_every_field_is_documented_for_kubectl_explain() -> None:
    schema = crdgen.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    fields = _fields(schema["properties"]["spec"], "spec")
    fields += _fields(schema["properties"]["status"], "status")
    undocumented = [path for path, node in fields if not node.get("description", "").strip()]
    assert undocumented == []


def test_initialisms_follow_kubernetes_conventions() -> None:
    """`maxSurgeGPUs`, not `maxSurgeGpus` (as in `podIP`, `clusterIP`)."""
    schema = crdgen.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    names = [path.rsplit(".", 1)[-1] for path, _ in _fields(schema["properties"]["spec"], "spec")]
    assert "maxSurgeGPUs" in names
    spelled_wrong = [n for n in names if any(w in n for w in ("Gpu", "Url", "Uri", "Cpu", "Id"))]
    assert spelled_wrong == []
