"""A scripted stand-in for `davit_router.kubeapi.KubeClient`: the watch loops' tests follow a
LIST, its WATCH, 410 Gone and failures step by step (e2e/test_router_discovery.py and
e2e/test_router_configmap.py run the same loops against a real API server)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ScriptedClient:
    """Answers each GET and WATCH with the next step of its script; the paths asked are kept.
    When the script is over the watcher is stopped (a CancelledError, as the server does)."""

    script: list[tuple[str, Any]]
    asked: list[str] = field(default_factory=list)

    def _next(self, kind: str, path: str) -> Any:
        self.asked.append(f"{kind} {path}")
        if not self.script:
            raise asyncio.CancelledError
        expected, answer = self.script.pop(0)
        assert expected == kind, f"asked {kind} {path}, the script has {expected} next"
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def get(self, path: str) -> dict[str, Any]:
        answer: dict[str, Any] = self._next("LIST", path)
        return answer

    @contextlib.asynccontextmanager
    async def watch(self, path: str) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        events: list[dict[str, Any]] = self._next("WATCH", path)

        async def stream() -> AsyncIterator[dict[str, Any]]:
            for event in events:
                if isinstance(event, Exception):
                    raise event
                yield event

        yield stream()


def listed(version: str, *items: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"resourceVersion": version}, "items": list(items)}


def event(kind: str, found: dict[str, Any], version: str) -> dict[str, Any]:
    found = {**found, "metadata": {**found.get("metadata", {}), "resourceVersion": version}}
    return {"type": kind, "object": found}


def bookmark(version: str) -> dict[str, Any]:
    return {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": version}}}


GONE = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}}


class Sleeps:
    """An injected sleep that only records how long it was asked to wait."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)
