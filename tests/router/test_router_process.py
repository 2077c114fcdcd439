"""The router as a real process in front of real runtimes: two revisions of two `davit-runtime`
processes each, all on 127.0.0.1, under bounded load.

Every runtime serves the tiny `flaky` model: it doubles its input and answers 500 when the
input's first element is above 0.8416, so a client decides per request whether the revision
fails (`FAIL`) or not (`OK`).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import signal
import socket
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from davit_operator import api
from davit_operator.planners.analysis import Figures, Window
from davit_operator.sources import RouterFigures, SourceError, Subject
from davit_router import testing as router_testing
from davit_router.testing import RunningRouter, launch_router, write_config
from davit_runtime.testing import RunningServer, launch_server, write_model_repository

pytestmark = pytest.mark.component

STABLE, CANARY = "0ld57ab1e", "232d26766d"
OK = json.dumps({"inputs": [{"name": "input", "shape": [512], "datatype": "FP32",
                             "data": [0.0] * 512}]})  # fmt: skip
FAIL = json.dumps({"inputs": [{"name": "input", "shape": [512], "datatype": "FP32",
                               "data": [5.0] + [0.0] * 511}]})  # fmt: skip
INFER = "/v2/models/resnet/infer"


@dataclass(frozen=True)
class Revisions:
    servers: dict[str, list[RunningServer]]  # by revision
    repository: Path

    def endpoints(self, revision: str) -> list[str]:
        return [s.http for s in self.servers[revision]]


@pytest.fixture(scope="module")
def revisions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Revisions]:
    work = tmp_path_factory.mktemp("router")
    repository = work / "models"
    write_model_repository(repository, "resnet", "flaky", max_batch_size=0, max_queue_delay_ms=0)
    names = [(rev, n) for rev in (STABLE, CANARY) for n in range(2)]
    with ThreadPoolExecutor(len(names)) as pool:
        started = list(
            pool.map(lambda rn: launch_server(repository, work / f"{rn[0]}-{rn[1]}.log"), names)
        )
    servers: dict[str, list[RunningServer]] = {STABLE: [], CANARY: []}
    for (rev, _), server in zip(names, started, strict=True):
        servers[rev].append(server)
    try:
        yield Revisions(servers, repository)
    finally:
        for server in started:
            server.stop()


def config(revisions: Revisions, weights: dict[str, int], **extra: Any) -> dict[str, Any]:
    return {
        "model": "resnet",
        "revisions": [
            {"name": rev, "weight": weight, "endpoints": revisions.endpoints(rev),
             "grpcEndpoints": [s.grpc for s in revisions.servers[rev]]}
            for rev, weight in weights.items()
        ],
        **extra,
    }  # fmt: skip


@pytest.fixture
def start_router(tmp_path: Path) -> Iterator[Any]:
    routers: list[RunningRouter] = []

    def start(document: dict[str, Any]) -> RunningRouter:
        name = f"router-{len(routers)}"
        router = launch_router(tmp_path / f"{name}.json", document, tmp_path / f"{name}.log")
        routers.append(router)
        return router

    yield start
    for router in routers:
        assert router.stop() == 0, router.log.read_text()


@dataclass
class Answers:
    by_revision: Counter[str]
    by_status: Counter[int]


async def _send(
    url: str, count: int, body: str, concurrency: int, headers: dict[str, str] | None = None
) -> Answers:
    answers = Answers(Counter(), Counter())
    queue = iter(range(count))
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            for _ in queue:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    answers.by_status[response.status] += 1
                    answers.by_revision[response.headers.get("x-davit-revision", "-")] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answers


def send(router: RunningRouter, count: int, body: str = OK, *, concurrency: int = 8,
         headers: dict[str, str] | None = None) -> Answers:  # fmt: skip
    """`count` inference requests through the router, `concurrency` at a time."""
    return asyncio.run(_send(f"http://{router.http}{INFER}", count, body, concurrency, headers))


def test_a_90_10_split_holds_over_10000_requests(revisions: Revisions, start_router: Any) -> None:
    router = start_router(config(revisions, {STABLE: 90, CANARY: 10}))
    answers = send(router, 10_000, concurrency=16)
    assert answers.by_status == {200: 10_000}
    share = 100 * answers.by_revision[CANARY] / 10_000
    assert abs(share - 10) <= 1.5, answers.by_revision
    # Within each revision the balancer used both endpoints.
    for rev in (STABLE, CANARY):
        for server in revisions.servers[rev]:
            assert server.metric("davit_requests_total", model="resnet", code="200") > 0


def test_a_header_pins_a_revision(revisions: Revisions, start_router: Any) -> None:
    router = start_router(config(revisions, {STABLE: 100, CANARY: 0}))
    pinned = send(router, 50, headers={"x-davit-revision": CANARY})
    assert pinned.by_revision == {CANARY: 50}
    unknown = send(router, 1, headers={"x-davit-revision": "nosuch"})
    assert unknown.by_status == {400: 1}


def test_a_requests_criticality_is_read_from_its_header(
    revisions: Revisions, start_router: Any
) -> None:
    router = start_router(config(revisions, {STABLE: 100, CANARY: 0}))
    for level in ("critical", "standard", "Sheddable"):
        assert send(router, 4, headers={"x-davit-criticality": level}).by_status == {200: 4}
    request = urllib.request.Request(
        f"http://{router.http}{INFER}", data=OK.encode(), method="POST",
        headers={"x-davit-criticality": "urgent"},
    )  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400
    assert "'urgent' is not one of critical, standard, sheddable" in refused.value.read().decode()


def test_a_stopping_router_serves_on_while_it_drains_then_exits_cleanly(
    revisions: Revisions, tmp_path: Path
) -> None:
    document = config(revisions, {STABLE: 100, CANARY: 0})
    write_config(tmp_path / "router.json", document)
    router = router_testing.start_router(
        tmp_path / "router.log", "--config", str(tmp_path / "router.json"),
        "--drain-seconds", "3",
    ).ready()  # fmt: skip
    try:
        assert send(router, 5).by_status == {200: 5}
        router.process.send_signal(signal.SIGTERM)
        # Draining: no longer ready, so the pod leaves the Service, but what still comes
        # (on a new connection too) is served.
        wait_for_status(f"http://{router.admin}/readyz", 503)
        assert send(router, 20, concurrency=4).by_status == {200: 20}
        assert router.process.wait(timeout=30) == 0
    finally:
        router.stop()
    log = router.log.read_text()
    assert "draining: serving 3.0 s more" in log
    assert "Traceback" not in log


def wait_for_status(url: str, status: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                got = response.status
        except urllib.error.HTTPError as error:
            got = error.code
        if got == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"{url} did not answer {status} within {timeout_s} s")


def test_a_weight_change_under_load_drops_no_request(
    revisions: Revisions, start_router: Any
) -> None:
    router = start_router(config(revisions, {STABLE: 100, CANARY: 0}))

    async def load_and_reweigh() -> Answers:
        task = asyncio.create_task(
            _send(f"http://{router.http}{INFER}", 3000, OK, concurrency=16, headers=None)
        )
        await asyncio.sleep(0.5)
        await asyncio.to_thread(router.configure, config(revisions, {STABLE: 50, CANARY: 50}))
        return await task

    answers = asyncio.run(load_and_reweigh())
    assert answers.by_status == {200: 3000}
    assert answers.by_revision[CANARY] > 0
    assert answers.by_revision[STABLE] > 0
    after = send(router, 1000)
    assert abs(after.by_revision[CANARY] - 500) <= 15, after.by_revision


def test_a_revision_answering_500s_opens_its_breaker_then_closes_once_healthy(
    revisions: Revisions, start_router: Any
) -> None:
    # Ejection would hide the failing endpoints from the breaker: a high streak keeps it out.
    breaker = {"consecutiveErrors": 10_000, "errorRateThreshold": 0.5}
    router = start_router(config(revisions, {CANARY: 100}, circuitBreaker=breaker))
    failing = send(router, 60, FAIL, concurrency=1)
    # 500s are not retried (the model ran): the breaker opens once 20 answers are in, then
    # the router refuses at once with 503 while it is open.
    assert failing.by_status[500] >= 20
    assert failing.by_status[503] > 0
    assert router.total("davit_router_breaker_open", revision=CANARY) == 1
    time.sleep(5.2)  # open_seconds: then half-open, and healthy probes close it
    healthy = send(router, 20, OK, concurrency=1)
    assert healthy.by_status == {200: 20}
    assert router.total("davit_router_breaker_open", revision=CANARY) == 0


def test_a_backend_that_fails_to_connect_is_ejected_and_retried_elsewhere(
    revisions: Revisions, start_router: Any, tmp_path: Path
) -> None:
    dead = "127.0.0.1:9"  # discard port: nothing listens, every connect is refused
    document = config(revisions, {STABLE: 100})
    document["revisions"][0]["endpoints"].append(dead)
    router = start_router(document)
    answers = send(router, 300, concurrency=4)
    assert answers.by_status == {200: 300}  # each refused connect retried on a live endpoint
    assert router.total("davit_router_ejections_total", endpoint=dead) >= 1
    assert router.total("davit_router_retries_total") <= 10  # ejected after 5 refusals


def test_with_every_backend_failing_attempts_stay_within_the_budget(
    revisions: Revisions, start_router: Any
) -> None:
    dead = ["127.0.0.1:9", "127.0.0.1:7"]
    document = {"model": "resnet", "revisions": [{"name": STABLE, "weight": 100,
                                                  "endpoints": dead}],
                # Neither ejection nor the breaker may step in: the budget alone bounds it.
                "circuitBreaker": {"consecutiveErrors": 10_000},
                "breaker": {"minRequests": 100_000}}  # fmt: skip
    router = start_router(document)
    answers = send(router, 1000, concurrency=4)
    assert answers.by_status.keys() <= {502, 503}
    attempts = router.total("davit_router_upstream_attempts_total")
    assert attempts <= 1.2 * 1000 + 10, attempts  # 20 % budget plus the bucket's reserve
    assert attempts >= 1.15 * 1000, attempts  # and the budget was spent: retries were tried


def test_the_figures_give_each_revisions_requests_errors_and_latency(
    revisions: Revisions, start_router: Any
) -> None:
    router = start_router(config(revisions, {STABLE: 50, CANARY: 50}))
    send(router, 40, OK, concurrency=1)  # the split alternates: 20 each
    send(router, 10, FAIL, headers={"x-davit-revision": CANARY})
    with urllib.request.urlopen(f"http://{router.admin}/figures?window=1m") as response:
        figures = json.load(response)
    stable, canary = figures["revisions"][STABLE], figures["revisions"][CANARY]
    assert (stable["requests"], stable["errors"], stable["errorRate"]) == (20, 0, 0)
    assert (canary["requests"], canary["errors"], canary["errorRate"]) == (30, 10, 1 / 3)
    assert 0 < canary["p50Ms"] <= canary["p99Ms"] < 1000
    assert figures["windowSeconds"] == 60
    # The histogram the quantiles come from, for a sum over replicas: one count per bound and
    # one above them all.
    assert len(canary["latencyCounts"]) == len(figures["latencyBoundsSeconds"]) + 1
    assert sum(canary["latencyCounts"]) == 30
    # A window that ended before these requests (a late reader's) holds none of them.
    earlier = time.time() - 120
    with urllib.request.urlopen(
        f"http://{router.admin}/figures?window=1m&end={earlier}"
    ) as response:
        before = json.load(response)
    assert before["revisions"][CANARY]["requests"] == 0
    assert before["end"] == pytest.approx(earlier, abs=0.01)
    for query in ("window=soon", "window=1m&end=1", "window=1m&end=tomorrow"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://{router.admin}/figures?{query}")
        assert refused.value.code == 400, query


def test_the_operators_router_source_adds_up_every_router_replicas_figures(
    revisions: Revisions, start_router: Any
) -> None:
    first = start_router(config(revisions, {STABLE: 50, CANARY: 50}))
    second = start_router(config(revisions, {STABLE: 50, CANARY: 50}))
    send(first, 40, OK, concurrency=1)  # 20 to each revision
    send(second, 10, FAIL, headers={"x-davit-revision": CANARY})
    send(second, 6, OK, headers={"x-davit-revision": STABLE})
    end = datetime.datetime.now(datetime.UTC)
    window = Window(end - datetime.timedelta(seconds=60), end)
    admins = [first.admin, second.admin]

    async def listed(namespace: str, name: str) -> list[str]:
        assert (namespace, name) == ("ml", "resnet")
        return admins

    async def read(revision: str) -> Figures:
        source = RouterFigures(listed, timeout_seconds=5)
        try:
            return await source.figures(api.Analysis(), Subject("ml", "resnet", revision), window)
        finally:
            await source.close()

    canary, stable = asyncio.run(read(CANARY)), asyncio.run(read(STABLE))
    assert (canary.requests, canary.errors) == (30, 10)
    assert (stable.requests, stable.errors) == (26, 0)
    assert canary.p99_ms is not None
    assert stable.p99_ms is not None
    assert 0 < stable.p99_ms < 1000
    # A replica that cannot answer makes the measurement unreadable (part of the traffic
    # would judge the canary), not a smaller sum.
    assert second.stop() == 0
    with pytest.raises(SourceError, match=f"router {second.admin} unreachable"):
        asyncio.run(read(CANARY))


def test_a_backend_killed_under_load_is_ejected_then_returns_after_its_ejection(
    revisions: Revisions, start_router: Any, tmp_path: Path
) -> None:
    doomed = launch_server(revisions.repository, tmp_path / "doomed.log")
    live = revisions.endpoints(STABLE)[0]
    document = config(revisions, {STABLE: 100}, circuitBreaker={"ejectionSeconds": 2})
    document["revisions"][0]["endpoints"] = [live, doomed.http]
    router = start_router(document)

    async def load_and_kill() -> Answers:
        task = asyncio.create_task(
            _send(f"http://{router.http}{INFER}", 2000, OK, concurrency=8, headers=None)
        )
        await asyncio.sleep(0.5)
        doomed.process.send_signal(signal.SIGKILL)
        return await task

    try:
        answers = asyncio.run(load_and_kill())
        # Requests cut off on the killed process and refused connects were retried on the live
        # one, within the budget: the clients saw no failure.
        assert answers.by_status == {200: 2000}
        assert router.total("davit_router_ejections_total", endpoint=doomed.http) == 1
        port = doomed.http.rpartition(":")[2]
        back = launch_server(revisions.repository, tmp_path / "back.log", "--http-port", port)
    finally:
        doomed.process.wait()
    try:
        time.sleep(2.0)  # the ejection's end
        assert send(router, 200).by_status == {200: 200}
        assert back.metric("davit_requests_total", model="resnet", code="200") > 0
    finally:
        back.stop()


def exchange(router: RunningRouter, data: bytes, *, wait_continue: bool = False) -> bytes:
    """Raw bytes to the router, its raw answer (until it closes or 2 s of quiet)."""
    host, port = router.http.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        if wait_continue:
            head, body = data.split(b"\r\n\r\n", 1)
            sock.sendall(head + b"\r\n\r\n")
            interim = sock.recv(1024)
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n", interim
            sock.sendall(body)
        else:
            sock.sendall(data)
        sock.settimeout(2)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            pass
        return answer


def post(body: str, *headers: str, version: str = "1.1") -> bytes:
    lines = [f"POST {INFER} HTTP/{version}", "host: router", "content-type: application/json",
             f"content-length: {len(body)}", *headers]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def test_the_router_speaks_http_1_1_as_clients_expect(
    revisions: Revisions, start_router: Any
) -> None:
    router = start_router(config(revisions, {STABLE: 100}))
    # curl sends bodies over 1 KB with Expect: 100-continue and waits for the interim answer.
    answer = exchange(router, post(OK, "expect: 100-continue", "connection: close"),
                      wait_continue=True)  # fmt: skip
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer[:200]
    assert answer.count(b"HTTP/1.1") == 1  # the runtime's own 100 is not passed on
    # An HTTP/1.0 client asking for keep-alive is told it got it, and gets both answers.
    twice = post(OK, "connection: keep-alive", version="1.0") * 2
    answers = exchange(router, twice)
    assert answers.count(b"HTTP/1.1 200 OK") == 2
    assert b"connection: keep-alive" in answers
    # Refusals, each with a reason and the connection closed.
    assert exchange(router, b"HEAD / HTTP/1.1\r\nhost: r\r\n\r\n").startswith(
        b"HTTP/1.1 405 Method Not Allowed"
    )
    upgrade = b"GET / HTTP/1.1\r\nhost: r\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n"
    assert exchange(router, upgrade).startswith(b"HTTP/1.1 400 Bad Request")
    huge = f"POST {INFER} HTTP/1.1\r\nhost: r\r\ncontent-length: {1 << 30}\r\n\r\n".encode()
    assert exchange(router, huge).startswith(b"HTTP/1.1 413 Request Entity Too Large")
    assert exchange(router, b"NOT HTTP\r\n\r\n").startswith(b"HTTP/1.1 400 Bad Request")


def figures(router: RunningRouter) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{router.admin}/figures?window=5m") as response:
        revisions: dict[str, Any] = json.load(response)["revisions"]
    return revisions


def test_tritonclient_grpc_infers_through_the_router(
    revisions: Revisions, start_router: Any
) -> None:
    router = start_router(config(revisions, {STABLE: 50, CANARY: 50}))
    client = grpcclient.InferenceServerClient(router.grpc)
    try:
        assert client.is_server_live()
        before = figures(router)
        tensor = grpcclient.InferInput("input", [512], "FP32")
        data = np.linspace(-1, 0, 512, dtype=np.float32)
        tensor.set_data_from_numpy(data)
        for _ in range(20):
            np.testing.assert_allclose(client.infer("resnet", [tensor]).as_numpy("output"),
                                       data * 2)  # fmt: skip
        client.infer("resnet", [tensor], headers={"x-davit-revision": CANARY})
        after = figures(router)
        served = {r: after[r]["requests"] - before[r]["requests"] for r in (STABLE, CANARY)}
        assert served == {STABLE: 10, CANARY: 11}  # the split alternates, plus one pinned
        # The model's own error comes back as the runtime said it, not retried.
        failing = grpcclient.InferInput("input", [512], "FP32")
        failing.set_data_from_numpy(np.full(512, 5.0, dtype=np.float32))
        with pytest.raises(InferenceServerException) as error:
            client.infer("resnet", [failing])
        assert error.value.status() == "StatusCode.INTERNAL"
        with pytest.raises(InferenceServerException) as error:
            client.infer("resnet", [tensor], headers={"x-davit-revision": "nosuch"})
        assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "no revision 'nosuch' here" in error.value.message()
        # Criticality rides in the metadata, as in HTTP's headers.
        client.infer("resnet", [tensor], headers={"x-davit-criticality": "sheddable"})
        with pytest.raises(InferenceServerException) as error:
            client.infer("resnet", [tensor], headers={"x-davit-criticality": "urgent"})
        assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "'urgent' is not one of" in error.value.message()
    finally:
        client.close()


def test_a_grpc_clients_own_short_deadline_is_not_held_against_the_endpoint(
    start_router: Any, tmp_path: Path
) -> None:
    # A runtime that holds each request 300 ms for a batch: longer than the clients' deadline
    # below, far shorter than the model's timeout.
    repository = tmp_path / "slow"
    write_model_repository(repository, "resnet", "linear", max_batch_size=8,
                           max_queue_delay_ms=300, adaptive_delay=False)  # fmt: skip
    slow = launch_server(repository, tmp_path / "slow.log")
    try:
        revision = {"name": STABLE, "weight": 100, "endpoints": [slow.http],
                    "grpcEndpoints": [slow.grpc]}  # fmt: skip
        router = start_router({"model": "resnet", "revisions": [revision]})
        client = grpcclient.InferenceServerClient(router.grpc)
        tensor = grpcclient.InferInput("input", [1, 512], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 512), dtype=np.float32))
        try:
            for _ in range(8):  # past the 5 errors in a row that would eject the endpoint
                with pytest.raises(InferenceServerException) as gave_up:
                    client.infer("resnet", [tensor], client_timeout=0.1)
                assert gave_up.value.status() == "StatusCode.DEADLINE_EXCEEDED"
                # The abandoned request's batch runs 300 ms after it came: let it go, so
                # that the next one waits its own full delay.
                time.sleep(0.35)
            abandoned = router.total("davit_router_upstream_attempts_total", outcome="abandoned")
            # The router ended each attempt just before the client's deadline, and knew whose
            # deadline it was (a loaded machine may let a cancellation win a few races).
            assert abandoned >= 6
            assert router.total("davit_router_upstream_attempts_total", outcome="gateway") == 0
            assert router.total("davit_router_ejections_total") == 0
            # Not the revision's errors either: the clients' own (499).
            assert figures(router)[STABLE]["errors"] == 0
            client.infer("resnet", [tensor])  # and it serves on, on the same endpoint
        finally:
            client.close()
    finally:
        slow.stop()


def test_shadow_traffic_reaches_the_canary_at_its_share_and_never_changes_an_answer(
    revisions: Revisions, start_router: Any
) -> None:
    shadow = {"revision": CANARY, "percent": 50}
    router = start_router(config(revisions, {STABLE: 100, CANARY: 0}, shadow=shadow))
    answers = send(router, 200, concurrency=4)
    assert answers.by_revision == {STABLE: 200}
    wait_until(lambda: router.total("davit_router_shadow_total", revision=CANARY) >= 100)
    assert router.total("davit_router_shadow_total", outcome="success") == 100
    assert figures(router)[CANARY]["requests"] == 100  # its figures count what it answered

    # A canary that answers nothing: the clients see none of it.
    dead = config(revisions, {STABLE: 100, CANARY: 0}, shadow=shadow)
    dead["revisions"][1]["endpoints"] = ["127.0.0.1:9"]
    router.configure(dead)
    answers = send(router, 100, concurrency=4)
    assert answers.by_status == {200: 100}
    assert answers.by_revision == {STABLE: 100}
    wait_until(lambda: router.total("davit_router_shadow_total", outcome="gateway") >= 50)


def wait_until(probe: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
