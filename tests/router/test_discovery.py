"""Endpoint discovery: what a Service's EndpointSlices say, and the watcher's way through a LIST,
its WATCH, 410 Gone and failures (over a scripted client; e2e/test_router_discovery.py runs it
against a real API server)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from davit_router.config import parse
from davit_router.discovery import (
    AccessError,
    ApiError,
    Endpoints,
    EndpointSliceWatcher,
    KubeClient,
    SliceCache,
    TokenFile,
    backoff,
    discovered_config,
    endpoints_of,
    from_kubeconfig,
    label_selector,
)

PORTS = [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "grpc", "port": 8081}]


def slice_(
    *endpoints: dict[str, Any],
    service: str = "resnet-a",
    name: str = "resnet-a-1",
    ports: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": PORTS if ports is None else ports,
        "endpoints": list(endpoints),
    }


def endpoint(*addresses: str, **conditions: bool) -> dict[str, Any]:
    found: dict[str, Any] = {"addresses": list(addresses)}
    if conditions:
        found["conditions"] = conditions
    return found


@dataclass(frozen=True)
class Case:
    reason: str
    slices: list[dict[str, Any]]
    want: tuple[tuple[str, ...], tuple[str, ...]]  # (http, grpc)


CASES = [
    Case("no slice, no endpoint", [], ((), ())),
    Case("ready endpoints on both named ports, sorted",
         [slice_(endpoint("10.0.0.2", ready=True), endpoint("10.0.0.1", ready=True))],
         (("10.0.0.1:8080", "10.0.0.2:8080"), ("10.0.0.1:8081", "10.0.0.2:8081"))),
    # discovery.k8s.io/v1: "a nil value should be interpreted as true".
    Case("no conditions at all means ready", [slice_(endpoint("10.0.0.1"))],
         (("10.0.0.1:8080",), ("10.0.0.1:8081",))),
    Case("a not ready endpoint is left out",
         [slice_(endpoint("10.0.0.1", ready=True), endpoint("10.0.0.2", ready=False))],
         (("10.0.0.1:8080",), ("10.0.0.1:8081",))),
    # A pod being deleted still serves what it has (serving: true) but takes nothing new.
    Case("a terminating endpoint that still serves is drained",
         [slice_(endpoint("10.0.0.1", ready=False, serving=True, terminating=True))], ((), ())),
    # With publishNotReadyAddresses a terminating endpoint may say ready: drained all the same.
    Case("a terminating endpoint that says ready is drained",
         [slice_(endpoint("10.0.0.1", ready=True, terminating=True))], ((), ())),
    Case("ports are taken by name, not by order",
         [slice_(endpoint("10.0.0.1"),
                 ports=[{"name": "grpc", "port": 9001}, {"name": "http", "port": 9000}])],
         (("10.0.0.1:9000",), ("10.0.0.1:9001",))),
    Case("a slice without a grpc port gives HTTP endpoints only",
         [slice_(endpoint("10.0.0.1"), ports=[{"name": "http", "port": 8080}])],
         (("10.0.0.1:8080",), ())),
    Case("other port names (metrics) are not ours",
         [slice_(endpoint("10.0.0.1"), ports=[{"name": "metrics", "port": 8002}])], ((), ())),
    Case("a UDP port of the right name is not ours",
         [slice_(endpoint("10.0.0.1"), ports=[{"name": "http", "port": 8080, "protocol": "UDP"}])],
         ((), ())),
    # A Service without ports has slices whose port has no number ("all ports").
    Case("a port without a number is not one", [slice_(endpoint("10.0.0.1"), ports=[{}])],
         ((), ())),
    # While the controller moves an endpoint between slices it may be in both.
    Case("an endpoint in two slices is listed once",
         [slice_(endpoint("10.0.0.1"), name="s1"), slice_(endpoint("10.0.0.1"), name="s2")],
         (("10.0.0.1:8080",), ("10.0.0.1:8081",))),
    # Each slice's endpoints take that slice's ports (a port change rolls out slice by slice).
    Case("each slice's own ports",
         [slice_(endpoint("10.0.0.1"), name="s1"),
          slice_(endpoint("10.0.0.2"), name="s2", ports=[{"name": "http", "port": 9000}])],
         (("10.0.0.1:8080", "10.0.0.2:9000"), ("10.0.0.1:8081",))),
    Case("IPv6 addresses are bracketed", [slice_(endpoint("fd00::1"))],
         (("[fd00::1]:8080",), ("[fd00::1]:8081",))),
    Case("every address of an endpoint (they are fungible, by the API)",
         [slice_(endpoint("10.0.0.1", "10.0.0.9"))],
         (("10.0.0.1:8080", "10.0.0.9:8080"), ("10.0.0.1:8081", "10.0.0.9:8081"))),
    # An empty slice comes with `endpoints: null`.
    Case("a slice without endpoints", [{**slice_(), "endpoints": None}], ((), ())),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.reason for c in CASES])
def test_endpoints_of(case: Case) -> None:
    assert endpoints_of(case.slices) == case.want


def test_the_cache_follows_a_list_then_events_for_the_watched_services_only() -> None:
    cache = SliceCache(frozenset({"resnet-a", "resnet-b"}))
    cache.replace([slice_(endpoint("10.0.0.1")), slice_(endpoint("10.9.9.9"), service="other")])
    assert cache.endpoints() == {
        "resnet-a": (("10.0.0.1:8080",), ("10.0.0.1:8081",)),
        "resnet-b": ((), ()),  # named, no slice yet: no endpoint
    }
    cache.apply("ADDED", slice_(endpoint("10.0.0.2"), service="resnet-b", name="resnet-b-1"))
    cache.apply("MODIFIED", slice_(endpoint("10.0.0.1", ready=False)))
    assert cache.endpoints() == {
        "resnet-a": ((), ()),
        "resnet-b": (("10.0.0.2:8080",), ("10.0.0.2:8081",)),
    }
    # Relabelled away from our Services: as good as deleted.
    cache.apply("MODIFIED", slice_(endpoint("10.0.0.2"), service="other", name="resnet-b-1"))
    assert cache.endpoints()["resnet-b"] == ((), ())
    cache.apply("ADDED", slice_(endpoint("10.0.0.3")))
    cache.apply("DELETED", slice_(name="resnet-a-1"))
    assert cache.endpoints()["resnet-a"] == ((), ())
    cache.replace([])  # a list forgets all that came before
    assert cache.endpoints() == {"resnet-a": ((), ()), "resnet-b": ((), ())}


def test_the_label_selector_names_every_service_once_in_order() -> None:
    assert (
        label_selector({"resnet-b", "resnet-a"})
        == "kubernetes.io/service-name in (resnet-a,resnet-b)"
    )


def test_backoff_doubles_from_one_second_to_thirty() -> None:
    delays, delay = [], None
    for _ in range(7):
        delay = backoff(delay)
        delays.append(delay)
    assert delays == [1, 2, 4, 8, 16, 30, 30]


CONFIG = parse({
    "model": "resnet", "timeoutMs": 5000,
    "revisions": [
        {"name": "a", "weight": 90, "service": "resnet-a", "endpoints": ["10.9.0.1:8080"]},
        {"name": "b", "weight": 10, "service": "resnet-b"},
        {"name": "c", "weight": 0, "endpoints": ["10.9.0.3:8080"]},
    ],
})  # fmt: skip


def test_the_endpoints_found_replace_the_static_ones_and_nothing_else() -> None:
    found = {"resnet-a": Endpoints(("10.0.0.1:8080",), ("10.0.0.1:8081",))}
    config = discovered_config(CONFIG, found)
    a, b, c = config.revisions
    assert (a.endpoints, a.grpc_endpoints, a.service) == (
        ("10.0.0.1:8080",), ("10.0.0.1:8081",), "resnet-a"
    )  # fmt: skip
    assert b == CONFIG.revisions[1]  # not listed yet: its static lists (none) stay
    assert c == CONFIG.revisions[2]  # no Service: static
    assert (config.model, config.timeout_ms, config.weights) == ("resnet", 5000, CONFIG.weights)


def test_a_service_listed_without_ready_endpoints_leaves_its_revision_none() -> None:
    config = discovered_config(CONFIG, {"resnet-a": Endpoints((), ())})
    assert config.revisions[0].endpoints == ()


def test_the_token_is_read_again_after_a_while_and_after_a_401(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("one\n")
    now = [0.0]
    token = TokenFile(path, reread_seconds=60, clock=lambda: now[0])
    assert token.value() == "one"
    path.write_text("two")  # the kubelet rotated it
    assert token.value() == "one"  # within the minute: the one read
    now[0] = 60.0
    assert token.value() == "two"
    path.write_text("three")
    token.expire()  # a 401: read at once
    assert token.value() == "three"
    path.unlink()  # mid-swap: keep the one we have
    now[0] = 200.0
    assert token.value() == "three"


def test_a_token_file_that_was_never_there_says_where(tmp_path: Path) -> None:
    with pytest.raises(AccessError, match="token"):
        TokenFile(tmp_path / "token").value()


def kubeconfig(tmp_path: Path, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "current-context": "here",
        "contexts": [{"name": "here", "context": {"cluster": "c", "user": "u"}}],
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
    }))  # fmt: skip
    return path


def test_a_kubeconfig_gives_the_server_and_the_token(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, {"server": "http://127.0.0.1:8001"}, {"token": "secret"})
    access = from_kubeconfig(path)
    assert (access.host, access.port, access.tls) == ("127.0.0.1", 8001, None)
    assert access.token is not None
    assert access.token.value() == "secret"


@dataclass(frozen=True)
class BadKubeconfig:
    reason: str
    cluster: dict[str, Any]
    user: dict[str, Any]
    message: str


BAD_KUBECONFIGS = [
    BadKubeconfig("no server URL", {"server": "127.0.0.1"}, {}, "is not a URL"),
    BadKubeconfig("a server under a path", {"server": "https://h/k8s"}, {},
                  "under a path (/k8s)"),
    # An exec plugin's binary (aws, gke-gcloud-auth-plugin) is not in the router's image.
    BadKubeconfig("exec credentials", {"server": "https://h"}, {"exec": {"command": "aws"}},
                  "exec and auth-provider credentials are not supported"),
    BadKubeconfig("a CA that is not base64", {"server": "https://h",
                                              "certificate-authority-data": "%%"}, {},
                  "certificate-authority-data is not base64"),
    BadKubeconfig("a CA file that is not there",
                  {"server": "https://h", "certificate-authority": "ca.crt"}, {},
                  "certificate-authority"),
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_KUBECONFIGS, ids=[c.reason for c in BAD_KUBECONFIGS])
def test_a_kubeconfig_that_cannot_be_used_says_why(tmp_path: Path, case: BadKubeconfig) -> None:
    with pytest.raises(AccessError, match=case.message.replace("(", r"\(").replace(")", r"\)")):
        from_kubeconfig(kubeconfig(tmp_path, case.cluster, case.user))


# ---- the watcher, over a scripted client ----------------------------------------------------
Step = Callable[[], Any]  # a GET's answer (a list) or a WATCH's events, or raises


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


GONE = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}}


def run_watcher(script: list[tuple[str, Any]]) -> tuple[list[Any], list[float], ScriptedClient]:
    client = ScriptedClient(script)
    changes: list[Any] = []
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    watcher = EndpointSliceWatcher(
        client,  # type: ignore[arg-type]  # the two methods the watcher uses
        "prod", frozenset({"resnet-a"}), changes.append, sleep=sleep,
    )  # fmt: skip
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(watcher.run())
    return changes, slept, client


def test_the_watcher_lists_then_watches_from_the_lists_version() -> None:
    ready = slice_(endpoint("10.0.0.1"))
    changes, slept, client = run_watcher([
        ("LIST", listed("10", ready)),
        ("WATCH", [event("MODIFIED", slice_(endpoint("10.0.0.1"), endpoint("10.0.0.2")), "11"),
                   {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}}]),
        # The API server ended the watch after its timeoutSeconds: again from the bookmark's.
        ("WATCH", [event("DELETED", ready, "16")]),
    ])  # fmt: skip
    assert changes == [
        {"resnet-a": (("10.0.0.1:8080",), ("10.0.0.1:8081",))},
        {"resnet-a": (("10.0.0.1:8080", "10.0.0.2:8080"), ("10.0.0.1:8081", "10.0.0.2:8081"))},
        {"resnet-a": ((), ())},
    ]
    assert slept == []
    selector = "labelSelector=kubernetes.io%2Fservice-name%20in%20%28resnet-a%29"
    assert (
        client.asked[0]
        == f"LIST /apis/discovery.k8s.io/v1/namespaces/prod/endpointslices?{selector}"
    )
    assert "&watch=true&allowWatchBookmarks=true&resourceVersion=10&" in client.asked[1]
    assert "&resourceVersion=15&" in client.asked[2]
    assert "&resourceVersion=16&" in client.asked[3]


def test_410_gone_lists_again_at_once_and_replaces_what_was_known() -> None:
    changes, slept, client = run_watcher([
        ("LIST", listed("10", slice_(endpoint("10.0.0.1")))),
        ("WATCH", [GONE]),  # said in the stream
        ("LIST", listed("50", slice_(endpoint("10.0.0.2")))),
        ("WATCH", ApiError(410, "too old")),  # said as the watch's answer
        ("LIST", listed("60", slice_(endpoint("10.0.0.2")))),
    ])  # fmt: skip
    assert [c["resnet-a"][0] for c in changes] == [("10.0.0.1:8080",), ("10.0.0.2:8080",)]
    assert slept == []
    assert "&resourceVersion=50&" in client.asked[3]


def test_failures_back_off_and_are_logged_once_a_streak(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="davit_router.discovery")
    changes, slept, _ = run_watcher([
        ("LIST", ConnectionRefusedError("refused")),
        ("LIST", ApiError(500, "etcd")),
        ("LIST", TimeoutError()),
        ("LIST", listed("10")),  # recovered: the streak is over
        ("WATCH", ConnectionResetError("reset")),  # a new streak starts from 1 s
        ("WATCH", []),
    ])  # fmt: skip
    assert slept == [1, 2, 4, 1]
    assert changes == [{"resnet-a": ((), ())}]
    messages = [r.getMessage() for r in caplog.records]
    failed = [m for m in messages if "failed" in m]
    assert len(failed) == 2
    assert "refused" in failed[0]
    assert "reset" in failed[1]
    assert messages.count("watching EndpointSlices in prod again") == 2


def test_an_unexpected_error_is_logged_with_its_traceback_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, slept, _ = run_watcher([
        ("LIST", ConnectionRefusedError("refused")),
        ("LIST", KeyError("a bug")),  # within the streak: still logged, with the traceback
        ("LIST", KeyError("a bug")),  # and once only
        ("LIST", listed("10")),
    ])  # fmt: skip
    assert slept == [1, 2, 4]
    traced = [r for r in caplog.records if r.exc_info is not None]
    assert len(traced) == 1
    assert isinstance(traced[0].exc_info[1], KeyError)  # type: ignore[index]


# ---- the client, over a real socket -------------------------------------------------------------
async def serve_once(answer: bytes) -> tuple[asyncio.Server, int, list[bytes]]:
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        for piece in answer.split(b"|"):  # `|` marks where the bytes go out separately
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], heads


def client_for(port: int, tmp_path: Path) -> KubeClient:
    path = kubeconfig(tmp_path, {"server": f"http://127.0.0.1:{port}"}, {"token": "secret"})
    return KubeClient(from_kubeconfig(path), timeout_s=5, idle_s=5)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def test_a_watch_stream_gives_each_event_however_its_chunks_split_it(tmp_path: Path) -> None:
    one = json.dumps(event("ADDED", slice_(), "1")).encode() + b"\n"
    two = json.dumps(event("DELETED", slice_(), "2")).encode() + b"\n"
    stream = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n|"
        + chunk(one[:10]) + b"|" + chunk(one[10:] + two[:5]) + b"|" + chunk(two[5:]) + b"|0\r\n\r\n"
    )  # fmt: skip

    async def main() -> tuple[list[str], list[bytes]]:
        server, port, heads = await serve_once(stream)
        async with server, client_for(port, tmp_path).watch("/w?watch=true") as events:
            return [e["type"] async for e in events], heads

    kinds, heads = asyncio.run(main())
    assert kinds == ["ADDED", "DELETED"]
    assert heads[0].startswith(b"GET /w?watch=true HTTP/1.1\r\n")
    assert b"authorization: Bearer secret\r\n" in heads[0]


def test_a_refusal_is_an_api_error_with_the_status_message(tmp_path: Path) -> None:
    body = json.dumps({"kind": "Status", "code": 403, "message": "forbidden: no list"}).encode()
    answer = b"HTTP/1.1 403 Forbidden\r\ncontent-length: %d\r\n\r\n|%s" % (len(body), body)

    async def main() -> None:
        server, port, _ = await serve_once(answer)
        async with server:
            await client_for(port, tmp_path).get("/apis")

    with pytest.raises(ApiError) as error:
        asyncio.run(main())
    assert (error.value.status, error.value.message) == (403, "forbidden: no list")
