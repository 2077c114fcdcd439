"""Component tests: real `davit-runtime` processes on 127.0.0.1, driven by tritonclient."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from davit_runtime.protocol import inference_pb2 as pb
from davit_runtime.protocol import inference_pb2_grpc as pb_grpc
from davit_runtime.testing import reference_outputs, sample_inputs

pytestmark = pytest.mark.component

# Fixtures (main_server, main_repository, start_server) come from conftest.py, RunningServer
# from davit_runtime.testing.
Server = Any


def http_inputs(arrays: list[np.ndarray[Any, Any]], names: list[str], binary: bool) -> list[Any]:
    inputs = []
    for name, array in zip(names, arrays, strict=True):
        tensor = httpclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return inputs


def grpc_inputs(arrays: list[np.ndarray[Any, Any]], names: list[str]) -> list[Any]:
    inputs = []
    for name, array in zip(names, arrays, strict=True):
        tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def raw_post(server: Server, path: str, body: bytes, headers: dict[str, str] | None = None) -> Any:
    host, port = server.http.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("POST", path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_health_and_metadata_over_http(main_server: Server, main_repository: Any) -> None:
    client = httpclient.InferenceServerClient(main_server.http)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("linear")
    assert client.is_model_ready("linear", "1")
    assert not client.is_model_ready("no-such-model")
    server_meta = client.get_server_metadata()
    assert server_meta["name"] == "davit-runtime"
    assert "binary_tensor_data" in server_meta["extensions"]
    meta = client.get_model_metadata("linear")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 512]}]
    assert meta["versions"] == ["1"]
    config = client.get_model_config("typed")
    assert config["max_batch_size"] == 8
    assert [i["data_type"] for i in config["input"]] == [
        "TYPE_FP32", "TYPE_FP16", "TYPE_INT64", "TYPE_INT32", "TYPE_BOOL",
    ]  # fmt: skip
    assert config["input"][0]["dims"] == [4]
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.get_model_metadata("no-such-model")
    with pytest.raises(InferenceServerException, match="no version"):
        client.get_model_metadata("linear", "7")


def test_health_and_metadata_over_grpc(main_server: Server) -> None:
    client = grpcclient.InferenceServerClient(main_server.grpc)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("cnn")
    assert client.get_server_metadata().name == "davit-runtime"
    meta = client.get_model_metadata("cnn")
    assert list(meta.inputs[0].shape) == [-1, 3, 32, 32]
    config = client.get_model_config("linear").config
    assert config.max_batch_size == 32
    assert config.input[0].name == "input"
    assert list(config.input[0].dims) == [512]
    assert config.dynamic_batching.max_queue_delay_microseconds == 5000
    with pytest.raises(InferenceServerException, match="NOT_FOUND"):
        client.get_model_metadata("no-such-model")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("kind", ["linear", "cnn", "typed"])
def test_http_infer_matches_torch(main_server: Server, kind: str, binary: bool) -> None:
    client = httpclient.InferenceServerClient(main_server.http)
    spec_names = {
        "linear": (["input"], ["output"]),
        "cnn": (["input"], ["output"]),
        "typed": (
            ["in_fp32", "in_fp16", "in_int64", "in_int32", "in_flags"],
            ["out_fp32", "out_fp16", "out_int64", "out_int32", "out_flags"],
        ),
    }[kind]
    arrays = sample_inputs(kind, 3)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in spec_names[1]]
    result = client.infer(kind, http_inputs(arrays, spec_names[0], binary), outputs=outputs)
    expected = reference_outputs(kind, arrays)
    for name, want in zip(spec_names[1], expected, strict=True):
        got = result.as_numpy(name)
        assert got.dtype == want.dtype
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_grpc_infer_matches_torch(main_server: Server) -> None:
    client = grpcclient.InferenceServerClient(main_server.grpc)
    arrays = sample_inputs("typed", 2)
    names = ["in_fp32", "in_fp16", "in_int64", "in_int32", "in_flags"]
    result = client.infer("typed", grpc_inputs(arrays, names), request_id="req-7")
    assert result.get_response().id == "req-7"
    for index, want in enumerate(reference_outputs("typed", arrays)):
        got = result.as_numpy(names[index].replace("in_", "out_"))
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    # Only the requested output comes back.
    only = client.infer(
        "typed", grpc_inputs(arrays, names), outputs=[grpcclient.InferRequestedOutput("out_int32")]
    )
    assert [o.name for o in only.get_response().outputs] == ["out_int32"]


def test_concurrent_requests_are_batched(main_server: Server) -> None:
    requests = 32
    before_count = main_server.metric("davit_batch_size_count", model="batched")
    before_sum = main_server.metric("davit_batch_size_sum", model="batched")
    client = httpclient.InferenceServerClient(main_server.http, concurrency=requests)
    arrays = [sample_inputs("linear", 1, seed=i)[0] for i in range(requests)]
    pending = [
        client.async_infer("batched", http_inputs([a], ["input"], binary=True)) for a in arrays
    ]
    results = [p.get_result(timeout=60) for p in pending]
    for array, result in zip(arrays, results, strict=True):
        np.testing.assert_allclose(
            result.as_numpy("output"), reference_outputs("linear", [array])[0], rtol=1e-5, atol=1e-5
        )
    batches = main_server.metric("davit_batch_size_count", model="batched") - before_count
    samples = main_server.metric("davit_batch_size_sum", model="batched") - before_sum
    assert samples == requests
    assert batches < requests, f"{requests} requests ran as {batches} batches: nothing merged"
    client.close()


def test_grpc_concurrent_requests_succeed(main_server: Server) -> None:
    client = grpcclient.InferenceServerClient(main_server.grpc)
    arrays = [sample_inputs("linear", 1, seed=100 + i)[0] for i in range(32)]
    results: list[Any] = [None] * len(arrays)

    def done(index: int) -> Callable[[Any, Any], None]:
        def callback(result: Any, error: Any) -> None:
            results[index] = error if error is not None else result

        return callback

    for index, array in enumerate(arrays):
        client.async_infer("linear", grpc_inputs([array], ["input"]), done(index))
    import time

    deadline = time.monotonic() + 60
    while any(r is None for r in results) and time.monotonic() < deadline:
        time.sleep(0.01)
    for array, result in zip(arrays, results, strict=True):
        assert not isinstance(result, Exception), result
        np.testing.assert_allclose(
            result.as_numpy("output"), reference_outputs("linear", [array])[0], rtol=1e-5, atol=1e-5
        )
    client.close()


def _infer_body(inputs: list[dict[str, Any]]) -> bytes:
    return json.dumps({"inputs": inputs}).encode()


def _truncated_binary() -> tuple[bytes, dict[str, str]]:
    header = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 512],
                     "parameters": {"binary_data_size": 2048}}]}
    ).encode()  # fmt: skip
    return header + b"\0" * 100, {"Inference-Header-Content-Length": str(len(header))}


MALFORMED: list[tuple[str, bytes, dict[str, str], int, str]] = [
    ("bad json", b"{not json", {}, 400, "not valid JSON"),
    ("not an object", b"[1, 2]", {}, 400, "must be a JSON object"),
    (
        "unknown input",
        _infer_body([{"name": "bogus", "datatype": "FP32", "shape": [1, 512], "data": [0] * 512}]),
        {}, 400, "missing input 'input'",
    ),
    (
        "extra input",
        _infer_body([
            {"name": "input", "datatype": "FP32", "shape": [1, 512], "data": [0] * 512},
            {"name": "bogus", "datatype": "FP32", "shape": [1, 1], "data": [0]},
        ]),
        {}, 400, "unknown input(s) ['bogus']",
    ),
    (
        "wrong shape",
        _infer_body([{"name": "input", "datatype": "FP32", "shape": [1, 500], "data": [0] * 500}]),
        {}, 400, "does not match the model's [batch, 512]",
    ),
    (
        "batch too large",
        _infer_body([{"name": "input", "datatype": "FP32", "shape": [33, 512],
                      "data": [0] * (33 * 512)}]),
        {}, 400, "outside 1..32",
    ),
    (
        "wrong datatype",
        _infer_body([{"name": "input", "datatype": "INT32", "shape": [1, 512], "data": [0] * 512}]),
        {}, 400, "datatype INT32 does not match the model's FP32",
    ),
    (
        "unknown datatype",
        _infer_body([{"name": "input", "datatype": "FP8", "shape": [1, 512], "data": [0] * 512}]),
        {}, 400, "unsupported datatype 'FP8'",
    ),
    (
        "data count mismatch",
        _infer_body([{"name": "input", "datatype": "FP32", "shape": [1, 512], "data": [0] * 5}]),
        {}, 400, "5 values in 'data'",
    ),
    ("truncated binary body", *_truncated_binary(), 400, "binary data truncated"),
    (
        "header length beyond body",
        b"{}", {"Inference-Header-Content-Length": "99"}, 400, "outside the body",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_requests_get_clear_4xx(
    main_server: Server, body: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    got_status, _, payload = raw_post(main_server, "/v2/models/linear/infer", body, headers)
    assert got_status == status
    error = json.loads(payload)["error"]
    assert message in error
    # The server keeps serving.
    client = httpclient.InferenceServerClient(main_server.http)
    assert client.is_server_ready()


def test_routing_errors(main_server: Server) -> None:
    status, _, payload = raw_post(main_server, "/v2/models/nope/infer", b"{}")
    assert status == 404
    assert "unknown model 'nope'" in json.loads(payload)["error"]
    host, port = main_server.http.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("GET", "/v2/models/linear/infer")
    response = connection.getresponse()
    assert response.status == 405
    assert "use POST" in json.loads(response.read())["error"]
    connection.request("GET", "/v2/nothing/here")
    response = connection.getresponse()
    assert response.status == 404
    response.read()
    connection.close()


def test_oversized_body_gets_413_and_server_keeps_serving(
    main_server: Server, main_server_max_body: int
) -> None:
    body = b"x" * (main_server_max_body + 1024)
    status, headers, payload = raw_post(main_server, "/v2/models/linear/infer", body)
    assert status == 413
    assert "larger than the" in json.loads(payload)["error"]
    assert headers.get("connection") == "close"
    assert httpclient.InferenceServerClient(main_server.http).is_server_ready()


def test_grpc_errors_map_to_status_codes(main_server: Server) -> None:
    client = grpcclient.InferenceServerClient(main_server.grpc)
    wrong_shape = grpc_inputs([np.zeros((1, 500), np.float32)], ["input"])
    with pytest.raises(InferenceServerException) as error:
        client.infer("linear", wrong_shape)
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "does not match" in error.value.message()
    with pytest.raises(InferenceServerException) as error:
        client.infer("nope", wrong_shape)
    assert error.value.status() == "StatusCode.NOT_FOUND"
    wrong_type = grpc_inputs([np.zeros((1, 512), np.int32)], ["input"])
    with pytest.raises(InferenceServerException) as error:
        client.infer("linear", wrong_type)
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert client.is_server_ready()


def test_expect_100_continue_is_honoured(main_server: Server) -> None:
    host, port = main_server.http.split(":")
    body = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 512], "data": [0.0] * 512}]}
    ).encode()
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(
            b"POST /v2/models/linear/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        assert connection.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        connection.sendall(body)
        reply = b""
        while b"model_name" not in reply:
            chunk = connection.recv(65536)
            assert chunk, "connection closed before the response"
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 OK")


def test_a_grpc_inference_answer_carries_the_queue_depth_in_its_trailers(
    main_server: Server,
) -> None:
    request = pb.ModelInferRequest(model_name="linear")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 512])
    request.raw_input_contents.append(np.zeros((1, 512), dtype=np.float32).tobytes())
    with grpc.insecure_channel(main_server.grpc) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        _, call = stub.ModelInfer.with_call(request, timeout=10)
    assert dict(call.trailing_metadata())["x-davit-queue-depth"] == "0"


def test_every_inference_answer_carries_the_queue_depth(main_server: Server) -> None:
    """The load signal the router balances on: on answers and on refusals alike."""
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 512], "datatype": "FP32",
                                   "data": [0.0] * 512}]}).encode()  # fmt: skip
    status, headers, _ = raw_post(main_server, "/v2/models/linear/infer", body)
    assert (status, headers.get("x-davit-queue-depth")) == (200, "0")
    status, headers, _ = raw_post(main_server, "/v2/models/linear/infer", b"{}")
    assert (status, headers.get("x-davit-queue-depth")) == (400, "0")
