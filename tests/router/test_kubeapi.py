"""The router's Kubernetes API client: access from a kubeconfig or a token file, GET and WATCH
over a real socket, and `ListWatch`'s way through a LIST, its WATCH, 410 Gone and failures (over
a scripted client)."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from scripted_api import GONE, ScriptedClient, Sleeps, bookmark, event, listed

from davit_router.kubeapi import (
    AccessError,
    ApiError,
    KubeClient,
    ListWatch,
    TokenFile,
    backoff,
    from_kubeconfig,
)


def test_backoff_doubles_from_one_second_to_thirty() -> None:
    delays, delay = [], None
    for _ in range(7):
        delay = backoff(delay)
        delays.append(delay)
    assert delays == [1, 2, 4, 8, 16, 30, 30]


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


# ---- ListWatch, over a scripted client ------------------------------------------------------
def item(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}}


def run_list_watch(
    script: list[tuple[str, Any]],
    path: str = "/api/v1/namespaces/prod/configmaps",
    min_watch_seconds: float = 0.0,  # the scripted watches end at once: no pause by default
) -> tuple[list[tuple[str, Any]], list[float], ScriptedClient]:
    client = ScriptedClient(script)
    seen: list[tuple[str, Any]] = []
    sleeps = Sleeps()
    watch = ListWatch(
        client,  # type: ignore[arg-type]  # the two methods the loop uses
        path, "ConfigMaps in prod",
        lambda items: seen.append(("LIST", [i["metadata"]["name"] for i in items])),
        lambda kind, found: seen.append((kind, found["metadata"]["name"])),
        sleep=sleeps, min_watch_seconds=min_watch_seconds,
    )  # fmt: skip
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(watch.run())
    return seen, sleeps.slept, client


def test_it_lists_then_watches_from_the_lists_version_and_hands_on_each_event() -> None:
    seen, slept, client = run_list_watch([
        ("LIST", listed("10", item("a"))),
        ("WATCH", [event("MODIFIED", item("a"), "11"), bookmark("15")]),
        # The API server ended the watch after its timeoutSeconds: again from the bookmark's.
        ("WATCH", [event("ADDED", item("b"), "16"), event("DELETED", item("a"), "17")]),
    ])  # fmt: skip
    assert seen == [("LIST", ["a"]), ("MODIFIED", "a"), ("ADDED", "b"), ("DELETED", "a")]
    assert slept == []
    assert client.asked[0] == "LIST /api/v1/namespaces/prod/configmaps"
    assert client.asked[1].startswith("WATCH /api/v1/namespaces/prod/configmaps?watch=true&")
    assert "&allowWatchBookmarks=true&resourceVersion=10&" in client.asked[1]
    assert "&resourceVersion=15&" in client.asked[2]
    assert "&resourceVersion=17&" in client.asked[3]


def test_a_path_with_a_query_gets_the_watch_parameters_after_it() -> None:
    _, _, client = run_list_watch(
        [("LIST", listed("3")), ("WATCH", [])], path="/api/v1/configmaps?fieldSelector=x"
    )
    assert client.asked[1].startswith("WATCH /api/v1/configmaps?fieldSelector=x&watch=true&")


def test_a_watch_that_ends_at_once_is_asked_again_only_after_a_pause() -> None:
    _, slept, client = run_list_watch(
        [("LIST", listed("1")), ("WATCH", []), ("WATCH", [])], min_watch_seconds=1.0
    )
    assert slept == [1.0, 1.0]  # not a failure (no backoff growth), not a tight loop
    assert len(client.asked) == 4


def test_410_gone_lists_again_at_once_and_replaces_what_was_known() -> None:
    seen, slept, client = run_list_watch([
        ("LIST", listed("10", item("a"))),
        ("WATCH", [GONE]),  # said in the stream
        ("LIST", listed("50", item("b"))),
        ("WATCH", ApiError(410, "too old")),  # said as the watch's answer
        ("LIST", listed("60", item("b"))),
    ])  # fmt: skip
    assert seen == [("LIST", ["a"]), ("LIST", ["b"]), ("LIST", ["b"])]
    assert slept == []
    assert "&resourceVersion=50&" in client.asked[3]


def test_an_error_event_other_than_410_is_a_failure_retried_after_backoff() -> None:
    error = {"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "etcd"}}
    seen, slept, _ = run_list_watch([
        ("LIST", listed("10")), ("WATCH", [error]), ("WATCH", []),
    ])  # fmt: skip
    assert seen == [("LIST", [])]  # the watch resumes from the list's version: no relist
    assert slept == [1]


def test_failures_back_off_and_are_logged_once_a_streak(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="davit_router.kubeapi")
    seen, slept, _ = run_list_watch([
        ("LIST", ConnectionRefusedError("refused")),
        ("LIST", ApiError(500, "etcd")),
        ("LIST", TimeoutError()),
        ("LIST", listed("10")),  # recovered: the streak is over
        ("WATCH", ConnectionResetError("reset")),  # a new streak starts from 1 s
        ("WATCH", []),
    ])  # fmt: skip
    assert slept == [1, 2, 4, 1]
    assert seen == [("LIST", [])]
    messages = [r.getMessage() for r in caplog.records]
    failed = [m for m in messages if "failed" in m]
    assert len(failed) == 2
    assert "refused" in failed[0]
    assert "ConfigMaps in prod" in failed[0]
    assert "reset" in failed[1]
    assert messages.count("watching ConfigMaps in prod again") == 2


def test_an_unexpected_error_is_logged_with_its_traceback_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, slept, _ = run_list_watch([
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
    one = json.dumps(event("ADDED", item("a"), "1")).encode() + b"\n"
    two = json.dumps(event("DELETED", item("a"), "2")).encode() + b"\n"
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
