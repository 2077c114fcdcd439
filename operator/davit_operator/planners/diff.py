"""Semantic comparison of a desired manifest with the object the API server returns.

The server adds defaults (protocol, imagePullPolicy, uid, managedFields, …), so equality is
"every field Davit sets has Davit's value", plus a fingerprint annotation that catches fields
Davit stopped setting.
"""

from __future__ import annotations

from typing import Any

SPEC_HASH_ANNOTATION = "davit.dev/spec-hash"


def semantic_diff(desired: Any, observed: Any, path: str = "") -> list[str]:
    """Paths where `observed` does not carry `desired`'s value; empty means nothing to apply."""
    if isinstance(desired, dict):
        if not isinstance(observed, dict):
            return [path or "."]
        differences: list[str] = []
        for key, value in desired.items():
            differences += semantic_diff(value, observed.get(key), f"{path}.{key}")
        return differences
    if isinstance(desired, list):
        if not isinstance(observed, list) or len(desired) != len(observed):
            return [path]
        differences = []
        for index, (want, have) in enumerate(zip(desired, observed, strict=True)):
            differences += semantic_diff(want, have, f"{path}[{index}]")
        return differences
    if desired != observed and str(desired) != str(observed):
        # str() equality: the server may return quantities and int-or-strings either way.
        return [path]
    return []
