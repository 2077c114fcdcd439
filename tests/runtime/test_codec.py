"""Unit tests for the HTTP body codec, header parsing, validation and datatype mapping."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from davit_runtime.config import parse_model_config
from davit_runtime.datatypes import DATATYPES, datatype, datatype_of_numpy
from davit_runtime.errors import InferenceError, Status
from davit_runtime.http_codec import (
    OutputTensor,
    encode_infer_response,
    parse_header_length,
    parse_infer_request,
)
from davit_runtime.http_server import render_response, split_route
from davit_runtime.inference import DecodedInput, select_outputs, validate_inputs


@pytest.mark.parametrize(
    ("name", "numpy_dtype", "triton"),
    [
        ("FP32", np.float32, "TYPE_FP32"),
        ("FP16", np.float16, "TYPE_FP16"),
        ("INT64", np.int64, "TYPE_INT64"),
        ("INT32", np.int32, "TYPE_INT32"),
        ("BOOL", np.bool_, "TYPE_BOOL"),
        ("UINT8", np.uint8, "TYPE_UINT8"),
        ("FP64", np.float64, "TYPE_FP64"),
    ],
)
def test_datatype_mapping(name: str, numpy_dtype: type[np.generic], triton: str) -> None:
    entry = datatype(name)
    assert entry.numpy == np.dtype(numpy_dtype)
    assert entry.triton_config == triton
    assert datatype_of_numpy(np.dtype(numpy_dtype)).name == name


def test_triton_enum_values_match_tritonclient() -> None:
    from tritonclient.grpc import model_config_pb2

    for entry in DATATYPES.values():
        assert model_config_pb2.DataType.Value(entry.triton_config) == entry.triton_enum


def test_unknown_datatype_is_invalid_argument() -> None:
    with pytest.raises(InferenceError, match="unsupported datatype 'FP8'") as error:
        datatype("FP8")
    assert error.value.status is Status.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("value", "body_length", "expected"),
    [(None, 10, None), (b"4", 10, 4), (b" 10 ", 10, 10), ("0", 0, 0)],
)
def test_parse_header_length(value: bytes | str | None, body_length: int, expected: int) -> None:
    assert parse_header_length(value, body_length) == expected


@pytest.mark.parametrize(
    ("value", "body_length", "message"),
    [(b"x", 10, "not an integer"), (b"11", 10, "outside"), (b"-1", 10, "outside")],
)
def test_parse_header_length_errors(value: bytes, body_length: int, message: str) -> None:
    with pytest.raises(InferenceError, match=message):
        parse_header_length(value, body_length)


def test_parse_json_request() -> None:
    body = json.dumps(
        {
            "id": "r1",
            "inputs": [
                {"name": "x", "datatype": "INT32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()
    request = parse_infer_request(body, None)
    assert request.request_id == "r1"
    assert request.inputs[0].array.dtype == np.int32
    assert request.inputs[0].array.tolist() == [[1, 2], [3, 4]]
    assert request.outputs == ["y"]
    assert request.binary_outputs == {"y": True}
    assert not request.binary_default


def test_parse_binary_request_is_zero_copy_and_in_order() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([True, False], dtype=np.bool_)
    header = json.dumps(
        {
            "inputs": [
                {"name": "a", "datatype": "FP32", "shape": [2, 3],
                 "parameters": {"binary_data_size": a.nbytes}},
                {"name": "b", "datatype": "BOOL", "shape": [2],
                 "parameters": {"binary_data_size": b.nbytes}},
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()  # fmt: skip
    body = bytearray(header + a.tobytes() + b.tobytes())
    request = parse_infer_request(body, len(header))
    np.testing.assert_array_equal(request.inputs[0].array, a)
    np.testing.assert_array_equal(request.inputs[1].array, b)
    assert np.shares_memory(request.inputs[0].array, np.frombuffer(body, np.uint8))
    assert request.binary_default


def _input(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}
    base.update(fields)
    return base


@pytest.mark.parametrize(
    ("document", "binary", "message"),
    [
        ({"inputs": []}, b"", "non-empty list"),
        ({"inputs": [5]}, b"", "must be a JSON object"),
        ({"inputs": [_input(name=3)]}, b"", "string 'name'"),
        ({"inputs": [_input(datatype="X")]}, b"", "unsupported datatype 'X'"),
        ({"inputs": [_input(shape="12")]}, b"", "list of integers"),
        ({"inputs": [_input(shape=[1, -2])]}, b"", "negative dimension"),
        ({"inputs": [_input(data=["a", "b"])]}, b"", "not a list of FP32"),
        ({"inputs": [_input(data=[1.0])]}, b"", "1 values in 'data'"),
        ({"inputs": [_input(datatype="BOOL", data=[1, 0])]}, b"", "true/false"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}, b"", "neither 'data'"),
        (
            {"inputs": [_input(data=None, parameters={"binary_data_size": 8})]},
            b"\0" * 4,
            "truncated",
        ),
        (
            {"inputs": [_input(data=None, parameters={"binary_data_size": 4})]},
            b"\0" * 4,
            "4 bytes of data, expected 8",
        ),
        (
            {"inputs": [_input(data=None, parameters={"binary_data_size": 8})]},
            b"\0" * 12,
            "4 unused bytes",
        ),
        ({"inputs": [_input()], "outputs": "y"}, b"", "'outputs' must be a list"),
    ],
)
def test_parse_errors(document: dict[str, Any], binary: bytes, message: str) -> None:
    header = json.dumps(document).encode()
    with pytest.raises(InferenceError, match=message) as error:
        parse_infer_request(header + binary, len(header) if binary else None)
    assert error.value.http_status == 400


def test_encode_response_json_and_binary() -> None:
    outputs = [
        OutputTensor("a", "FP32", np.array([[1.5, 2.5]], np.float32)),
        OutputTensor("b", "INT64", np.array([[7]], np.int64)),
    ]
    chunks, header_length = encode_infer_response("m", "1", "id9", outputs, [False, True])
    assert header_length == len(chunks[0])
    document = json.loads(chunks[0])
    assert document["id"] == "id9"
    assert document["outputs"][0] == {
        "name": "a", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2.5],
    }  # fmt: skip
    assert document["outputs"][1]["parameters"] == {"binary_data_size": 8}
    assert np.frombuffer(b"".join(chunks[1:]), np.int64).tolist() == [7]
    only_json, none = encode_infer_response("m", "1", None, outputs[:1], [False])
    assert none is None
    assert "id" not in json.loads(only_json[0])


CONFIG = parse_model_config(
    {
        "max_batch_size": 4,
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [3, -1]},
            {"name": "b", "datatype": "INT64", "shape": [1]},
        ],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [3]}],
    },
    default_name="m",
)


def _decoded(name: str, datatype: str, shape: tuple[int, ...]) -> DecodedInput:
    return DecodedInput(name, datatype, shape, np.zeros(shape, DATATYPES[datatype].numpy))


def test_validate_inputs_orders_by_config_and_reports_batch() -> None:
    arrays, batch = validate_inputs(
        CONFIG, [_decoded("b", "INT64", (2, 1)), _decoded("a", "FP32", (2, 3, 7))]
    )
    assert batch == 2
    assert [a.shape for a in arrays] == [(2, 3, 7), (2, 1)]


@pytest.mark.parametrize(
    ("decoded", "message"),
    [
        ([("a", "FP32", (1, 3, 2))], "missing input 'b'"),
        ([("a", "FP32", (1, 3, 2)), ("b", "INT64", (1, 1)), ("c", "FP32", (1,))], "unknown input"),
        ([("a", "FP16", (1, 3, 2)), ("b", "INT64", (1, 1))], "datatype FP16 does not match"),
        ([("a", "FP32", (1, 4, 2)), ("b", "INT64", (1, 1))], "does not match the model's"),
        ([("a", "FP32", (3, 2)), ("b", "INT64", (1, 1))], "does not match the model's"),
        ([("a", "FP32", (5, 3, 2)), ("b", "INT64", (5, 1))], "outside 1..4"),
        ([("a", "FP32", (2, 3, 2)), ("b", "INT64", (1, 1))], "differs from other inputs"),
        ([("a", "FP32", (1, 3, 2)), ("a", "FP32", (1, 3, 2))], "more than once"),
    ],
)
def test_validate_inputs_errors(
    decoded: list[tuple[str, str, tuple[int, ...]]], message: str
) -> None:
    with pytest.raises(InferenceError, match=message):
        validate_inputs(CONFIG, [_decoded(*d) for d in decoded])


def test_select_outputs() -> None:
    assert select_outputs(CONFIG, None) == [0]
    assert select_outputs(CONFIG, ["y"]) == [0]
    with pytest.raises(InferenceError, match="unknown output 'z'"):
        select_outputs(CONFIG, ["z"])


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        ("/v2/models/m/infer", ["v2", "models", "m", "infer"]),
        ("/v2/models/m/versions/3/ready?x=1", ["v2", "models", "m", "versions", "3", "ready"]),
        ("/v2/", ["v2"]),
        ("/", []),
    ],
)
def test_split_route(path: str, parts: list[str]) -> None:
    assert split_route(path) == parts


def test_render_response_headers() -> None:
    text = render_response(
        429, [b'{"error":"x"}'], b"application/json", keep_alive=False, http10=False,
        extra_headers=[(b"retry-after", b"1")],
    )  # fmt: skip
    head, body = text.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 429 Too Many Requests\r\n")
    assert b"content-length: 13" in head
    assert b"retry-after: 1" in head
    assert b"connection: close" in head
    assert body == b'{"error":"x"}'
    keep = render_response(200, [b""], b"application/json", keep_alive=True, http10=True)
    assert b"connection: keep-alive" in keep
