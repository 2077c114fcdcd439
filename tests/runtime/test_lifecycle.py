"""Component tests: load shedding, timeouts, sha256 pinning and graceful drain."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from davit_runtime.testing import reference_outputs, sample_inputs, write_model_repository

pytestmark = pytest.mark.component

Server = Any


def binary_request(array: np.ndarray[Any, Any]) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(
        {
            "inputs": [
                {"name": "input", "datatype": "FP32", "shape": list(array.shape),
                 "parameters": {"binary_data_size": array.nbytes}}
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()  # fmt: skip
    return header + array.tobytes(), {"Inference-Header-Content-Length": str(len(header))}


def post_infer(
    server: Server, model: str, array: np.ndarray[Any, Any]
) -> tuple[int, dict[str, str], bytes]:
    body, headers = binary_request(array)
    host, port = server.http.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request("POST", f"/v2/models/{model}/infer", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def decode_binary_output(headers: dict[str, str], payload: bytes) -> np.ndarray[Any, Any]:
    header_length = int(headers["inference-header-content-length"])
    document = json.loads(payload[:header_length])
    output = document["outputs"][0]
    return np.frombuffer(payload[header_length:], np.float32).reshape(output["shape"])


def in_background(call: Callable[[], Any]) -> Callable[[], Any]:
    """Run `call` on a thread; the returned function joins and returns its result."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = call()
        except Exception as error:
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()

    def join() -> Any:
        thread.join(timeout=60)
        assert not thread.is_alive(), "background request did not finish"
        if "error" in box:
            raise box["error"]
        return box["result"]

    return join


def wait_for(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def shedding_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shedding")
    # Requests sit in the queue for 2 s (non-adaptive delay, batch never fills): room for 4.
    write_model_repository(
        root, "crowded", "linear", max_batch_size=64, max_queue_delay_ms=2000.0,
        adaptive_delay=False, load_shedding={"max_queue": 4, "max_in_flight": 6},
    )  # fmt: skip
    write_model_repository(
        root, "queue-timeout", "linear", max_batch_size=64, max_queue_delay_ms=1500.0,
        adaptive_delay=False, load_shedding={"queue_timeout_ms": 200},
    )  # fmt: skip
    write_model_repository(
        root, "request-timeout", "linear", max_batch_size=64, max_queue_delay_ms=1500.0,
        adaptive_delay=False, request_timeout_ms=200,
    )  # fmt: skip
    return root


def test_overload_sheds_with_429_and_accepted_requests_succeed(
    start_server: Callable[..., Server], shedding_repository: Path
) -> None:
    server = start_server(shedding_repository)
    accepted_inputs = [sample_inputs("linear", 1, seed=i)[0] for i in range(4)]
    accepted = [in_background(partial(post_infer, server, "crowded", a)) for a in accepted_inputs]
    wait_for(lambda: server.metric("davit_queue_depth", model="crowded") == 4)

    for seed in range(4, 8):
        status, headers, payload = post_infer(
            server, "crowded", sample_inputs("linear", 1, seed)[0]
        )
        assert status == 429
        assert headers["retry-after"] == "1"
        assert "queue is full (maxQueue 4)" in json.loads(payload)["error"]

    client = grpcclient.InferenceServerClient(server.grpc)
    grpc_input = grpcclient.InferInput("input", [1, 512], "FP32")
    grpc_input.set_data_from_numpy(sample_inputs("linear", 1, 9)[0])
    with pytest.raises(InferenceServerException) as error:
        client.infer("crowded", [grpc_input])
    assert error.value.status() == "StatusCode.RESOURCE_EXHAUSTED"

    for array, join in zip(accepted_inputs, accepted, strict=True):
        status, headers, payload = join()
        assert status == 200
        np.testing.assert_allclose(
            decode_binary_output(headers, payload),
            reference_outputs("linear", [array])[0],
            rtol=1e-5,
            atol=1e-5,
        )
    # Four HTTP and one gRPC request shed (gRPC results are counted under HTTP-equivalent codes).
    assert server.metric("davit_requests_total", model="crowded", code="429") == 5
    assert server.metric("davit_requests_total", model="crowded", code="200") == 4
    assert server.metric("davit_inflight", model="crowded") == 0


def test_queue_timeout_and_request_timeout(
    start_server: Callable[..., Server], shedding_repository: Path
) -> None:
    server = start_server(shedding_repository)
    x = sample_inputs("linear", 1)[0]
    status, headers, payload = post_infer(server, "queue-timeout", x)
    assert status == 429
    assert headers["retry-after"] == "1"
    assert "queueTimeout" in json.loads(payload)["error"]

    started = time.monotonic()
    status, _, payload = post_infer(server, "request-timeout", x)
    assert status == 504
    assert "timed out after 200 ms" in json.loads(payload)["error"]
    assert time.monotonic() - started < 1.4  # answered at the timeout, not after the batch


def test_sha256_mismatch_refuses_to_serve(tmp_path: Path) -> None:
    write_model_repository(
        tmp_path / "repo", "pinned", "linear", max_batch_size=4, max_queue_delay_ms=0.0,
        sha256="0" * 64,
    )  # fmt: skip
    termination_log = tmp_path / "termination-log"
    completed = subprocess.run(
        [sys.executable, "-m", "davit_runtime", "serve", "--model-repository",
         str(tmp_path / "repo"), "--http-port", "0", "--grpc-port", "0",
         "--termination-log", str(termination_log)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert completed.returncode == 1
    assert "ready" not in completed.stdout
    assert "sha256 mismatch" in completed.stderr
    assert "refusing" in completed.stderr
    # What Kubernetes shows as the container's termination message, and Davit in its status.
    message = termination_log.read_text()
    assert message.startswith("refusing to serve: ")
    assert "sha256 mismatch" in message


def test_sigterm_drains_in_flight_requests_and_exits_zero(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    write_model_repository(
        tmp_path / "repo", "slow", "linear", max_batch_size=8, max_queue_delay_ms=1500.0,
        adaptive_delay=False,
    )  # fmt: skip
    server = start_server(tmp_path / "repo")
    x = sample_inputs("linear", 2)[0]
    in_flight = in_background(lambda: post_infer(server, "slow", x))
    wait_for(lambda: server.metric("davit_inflight", model="slow") == 1)

    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # draining: no longer accepting
    host, port = server.http.split(":")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=5)

    status, headers, payload = in_flight()
    assert status == 200
    np.testing.assert_allclose(
        decode_binary_output(headers, payload),
        reference_outputs("linear", [x])[0],
        rtol=1e-5,
        atol=1e-5,
    )
    assert server.process.wait(timeout=30) == 0
