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
