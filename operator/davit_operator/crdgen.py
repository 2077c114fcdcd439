"""Generate the ModelDeployment CRD from the pydantic models in `api`.

`make crds` (`python -m davit_operator.crdgen crds/ charts/davit/crds/`) writes the CRD; a unit
test regenerates it in memory and fails when a committed copy differs, so the schema cannot drift
from the types.

The API server needs a *structural* schema: no `$ref`, no `anyOf` for optional fields, every node
typed. pydantic's JSON schema is close; `to_structural` closes the gap.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from davit_operator import api

# Keys of pydantic's JSON schema that have a meaning in a CRD schema; the rest (title, …) is noise.
_KEPT_KEYS = {
    "type",
    "description",
    "default",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "pattern",
    "maxLength",
    "minLength",
    "maxItems",
    "minItems",
    "format",
    "required",
    "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields",
}

CRD_FILE = "serving.davit.dev_modeldeployments.yaml"


def to_structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline `$ref`s, collapse `Optional[X]` to X, and type free-form objects."""
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return to_structural(merged, defs)
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"only Optional[X] unions can be expressed in a CRD: {node}")
        # An absent field is the CRD's way to say None. The branch is converted once, with the
        # rest: converting its converted form again would read its own Optional fields as
        # sub-objects that default to {}.
        rest = {
            k: v for k, v in node.items() if k != "anyOf" and not (k == "default" and v is None)
        }
        return to_structural({**branches[0], **rest}, defs)

    out: dict[str, Any] = {k: v for k, v in node.items() if k in _KEPT_KEYS}
    if out.get("type") == "object" or "properties" in node or "additionalProperties" in node:
        out["type"] = "object"
        if "properties" in node:
            required = set(node.get("required", []))
            out["properties"] = {}
            for name, child in node["properties"].items():
                prop = to_structural(child, defs)
                optional = "anyOf" in child  # Optional[X]: absent means None, so no default
                if name not in required and not optional and prop["type"] == "object":
                    prop.setdefault("default", {})  # a default_factory sub-object
                out["properties"][name] = prop
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            out["additionalProperties"] = to_structural(extra, defs)
        elif "properties" not in node:
            # dict[str, Any]: an opaque object (affinity, tolerations); keep it as written.
            out["x-kubernetes-preserve-unknown-fields"] = True
    elif out.get("type") == "array":
        out["items"] = to_structural(node.get("items", {"type": "object"}), defs)
    elif "type" not in out and "enum" in node:
        out["type"] = "string"
    elif "type" not in out:
        out["type"] = "object"
        out["x-kubernetes-preserve-unknown-fields"] = True
    # OpenAPI v3 (as CRDs speak it) has boolean exclusive bounds beside minimum/maximum.
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), int | float) and not isinstance(out[bound], bool):
            out[limit] = out[bound]
            out[bound] = True
    if out.get("type") == "integer" and isinstance(out.get("default"), float):
        out["default"] = int(out["default"])
    # Fields that always hold a value (defaults) are optional on the wire: the API server defaults
    # them. `required` stays only for fields with no default.
    if "required" in out:
        props = out.get("properties", {})
        out["required"] = [r for r in out["required"] if "default" not in props.get(r, {})]
        if not out["required"]:
            del out["required"]
    return out


def _schema_of(model: type[api.ApiModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return to_structural(raw, raw.get("$defs", {}))


def _normalise_defaults(node: dict[str, Any]) -> dict[str, Any]:
    """Sub-objects default to `{}` so the API server creates them and fills in the leaf defaults
    (and CEL rules can rely on them); arrays carry no default (the operator's models supply it)."""
    out = dict(node)
    if out.get("type") == "object" and "default" in out:
        out["default"] = {}
    if out.get("type") == "array":
        out.pop("default", None)
    if "properties" in out:
        out["properties"] = {k: _normalise_defaults(v) for k, v in out["properties"].items()}
    if "items" in out:
        out["items"] = _normalise_defaults(out["items"])
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _normalise_defaults(out["additionalProperties"])
    return out


def build_crd() -> dict[str, Any]:
    spec_schema = _normalise_defaults(_schema_of(api.ModelDeploymentSpec))
    status_schema = _normalise_defaults(_schema_of(api.ModelDeploymentStatus))
    columns = [
        ("Version", "string", ".spec.model.version", "Model version label"),
        ("Phase", "string", ".status.phase", "Pending, Progressing, Healthy, Degraded, …"),
        ("Weight", "integer", ".status.actualWeight", "Percent of requests on the newest revision"),
        ("Step", "integer", ".status.currentStep", "Rollout steps completed"),
        ("Ready", "string", ".status.ready", "Ready replicas / desired"),
        ("GPUs", "integer", ".status.gpus", "GPUs held by live replicas"),
    ]
    printer_columns: list[dict[str, Any]] = [
        {"name": name, "type": typ, "jsonPath": path, "description": desc}
        for name, typ, path, desc in columns
    ]
    ready = '.status.conditions[?(@.type=="Ready")]'
    printer_columns += [
        {"name": "Reason", "type": "string", "jsonPath": f"{ready}.reason",
         "description": "Why the model is or is not Ready"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Message", "type": "string", "jsonPath": f"{ready}.message", "priority": 1,
         "description": "The Ready condition's message (kubectl get md -o wide)"},
    ]  # fmt: skip
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{api.PLURAL}.{api.GROUP}",
            "labels": {"app.kubernetes.io/part-of": "davit"},
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": api.SHORT_NAMES,
                "categories": ["davit", "all"],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": printer_columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A model served by Davit: revisions, autoscaling, "
                            "rollouts and traffic for one model.",
                            "required": ["spec"],
                            "x-kubernetes-validations": api.METADATA_RULES,
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def render_crd() -> str:
    """YAML text of the CRD, in a stable order so that regenerating it is byte-identical."""
    header = "# Generated by `make crds` from operator/davit_operator/api.py. Do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> int:
    """Write the CRD into each directory given (default: crds/)."""
    out_dirs = [Path(d) for d in (sys.argv[1:] if argv is None else argv)] or [Path("crds")]
    text = render_crd()
    for out_dir in out_dirs:
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / CRD_FILE
        target.write_text(text)
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
