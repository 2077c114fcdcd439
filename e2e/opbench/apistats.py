"""The API server's own count of requests, turned into writes per phase and per client.

Pure: text in, counts out. The benchmark scrapes `apiserver_request_total` from the API server's
/metrics before and after each phase; the difference is every request the cluster served in it.
The metric has no client label, so the operator's share is read from what only it does (see
`is_operator_write`): the phases of one system run alone, one after the other.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

METRIC = "apiserver_request_total"
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"})

# The operator's children; it writes them with server-side apply (verb APPLY) and deletes those
# it no longer wants. No other client applies these kinds, and during a Davit phase only the
# operator deletes them, except in the delete phase, where the garbage collector does.
CHILD_RESOURCES = frozenset(
    {
        "deployments",
        "services",
        "poddisruptionbudgets",
        "horizontalpodautoscalers",
        "controllerrevisions",
        "httproutes",
    }
)
# The benchmark itself writes ModelDeployments only with POST (create), PUT (the spec change) and
# DELETE; the operator only PATCHes them (status, metadata) and the Deployment's scale.
OPERATOR_PATCHED = frozenset({("modeldeployments", ""), ("modeldeployments", "status")})
OPERATOR_SCALED = ("deployments", "scale")


@dataclass(frozen=True, order=True)
class RequestKey:
    """One row of the write table: what was written and how."""

    resource: str
    subresource: str
    verb: str

    def label(self) -> str:
        target = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return f"{self.verb} {target}"


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"')


def parse_labels(text: str) -> dict[str, str]:
    """`a="1",b="x\\"y"` → {"a": "1", "b": 'x"y'} (Prometheus text format escapes)."""
    return {
        m["key"]: m["value"].replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
        for m in _LABEL.finditer(text)
    }


def request_totals(exposition: str) -> Counter[RequestKey]:
    """Requests served so far, by resource, subresource and verb (summed over codes, groups,
    scopes), from the API server's /metrics text."""
    totals: Counter[RequestKey] = Counter()
    for line in exposition.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match["name"] != METRIC:
            continue
        labels = parse_labels(match["labels"] or "")
        if labels.get("dry_run"):
            continue  # a dry run writes nothing
        key = RequestKey(labels.get("resource", ""), labels.get("subresource", ""), labels["verb"])
        totals[key] += int(float(match["value"]))
    return totals


def writes_between(
    before: Mapping[RequestKey, int], after: Mapping[RequestKey, int]
) -> Counter[RequestKey]:
    """Write requests served between two scrapes (counters only grow, unless the API server
    restarted: then `after` alone is the best account there is)."""
    restarted = any(after.get(key, 0) < count for key, count in before.items())
    base: Mapping[RequestKey, int] = {} if restarted else before
    return Counter(
        {
            key: count - base.get(key, 0)
            for key, count in after.items()
            if key.verb in WRITE_VERBS and count - base.get(key, 0) > 0
        }
    )


def is_operator_write(key: RequestKey, *, deletes_are_operators: bool) -> bool:
    """Whether, in a phase where only Davit runs, this write is the operator's.

    `deletes_are_operators` is False in the delete phase: there the garbage collector removes the
    children of deleted ModelDeployments."""
    if key.verb == "APPLY":
        # Controllers apply too (e.g. pod conditions); the operator applies its children only.
        return key.resource in CHILD_RESOURCES and not key.subresource
    if key.verb == "PATCH":
        return (key.resource, key.subresource) in OPERATOR_PATCHED or (
            key.resource,
            key.subresource,
        ) == OPERATOR_SCALED
    if key.verb == "DELETE":
        return deletes_are_operators and key.resource in CHILD_RESOURCES and not key.subresource
    return False


def operator_writes(
    writes: Mapping[RequestKey, int], *, deletes_are_operators: bool = True
) -> Counter[RequestKey]:
    return Counter(
        {
            key: count
            for key, count in writes.items()
            if is_operator_write(key, deletes_are_operators=deletes_are_operators)
        }
    )


def event_writes(writes: Mapping[RequestKey, int]) -> int:
    """Event objects created or updated, by anyone (the operator's are counted apart)."""
    return sum(
        c
        for k, c in writes.items()
        if k.resource == "events" and k.verb in {"POST", "PATCH", "PUT"}
    )


def without_events(writes: Mapping[RequestKey, int]) -> Counter[RequestKey]:
    return Counter({k: c for k, c in writes.items() if k.resource != "events"})
