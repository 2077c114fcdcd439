"""Request bodies for the three transports and the one-request correctness probe.

The bodies are built once per (server, model) and written to files that wrk and h2load replay,
so the load generators spend no CPU on encoding.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from bench.models import NUMPY_DTYPES
from bench.stats import frame_grpc_message

HTTP_JSON = "http-json"
HTTP_BINARY = "http-binary"
GRPC = "grpc"
TRANSPORTS = (HTTP_JSON, HTTP_BINARY, GRPC)


@dataclass(frozen=True)
class WireTensor:
    name: str
    datatype: str


@dataclass(frozen=True)
class Body:
    data: bytes
    content_type: str
    header_length: int | None  # Inference-Header-Content-Length for binary bodies


def json_body(model_name: str, tensor: WireTensor, inputs: np.ndarray) -> Body:
    doc = {
        "inputs": [
            {
                "name": tensor.name,
                "shape": list(inputs.shape),
                "datatype": tensor.datatype,
                "data": inputs.reshape(-1).tolist(),
            }
        ]
    }
    return Body(json.dumps(doc).encode(), "application/json", None)


def binary_body(tensor: WireTensor, output_name: str, inputs: np.ndarray) -> Body:
    raw = np.ascontiguousarray(inputs).tobytes()
    header = {
        "inputs": [
            {
                "name": tensor.name,
                "shape": list(inputs.shape),
                "datatype": tensor.datatype,
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "outputs": [{"name": output_name, "parameters": {"binary_data": True}}],
    }
    encoded = json.dumps(header).encode()
    return Body(encoded + raw, "application/octet-stream", len(encoded))


def grpc_request(model_name: str, tensor: WireTensor, inputs: np.ndarray) -> Any:
    request = service_pb2.ModelInferRequest(model_name=model_name)
    wire = request.inputs.add()
    wire.name = tensor.name
    wire.datatype = tensor.datatype
    wire.shape.extend(inputs.shape)
    request.raw_input_contents.append(np.ascontiguousarray(inputs).tobytes())
    return request


def grpc_body(model_name: str, tensor: WireTensor, inputs: np.ndarray) -> Body:
    message = grpc_request(model_name, tensor, inputs).SerializeToString()
    return Body(frame_grpc_message(message), "application/grpc", None)


def write_body(body: Body, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body.data)
    return path


def _decode_json_output(doc: Any, datatype: str) -> np.ndarray:
    out = doc["outputs"][0]
    values: np.ndarray = np.asarray(out["data"], dtype=NUMPY_DTYPES[datatype])
    return values.reshape(out["shape"])


def http_infer(port: int, path: str, body: Body, datatype: str, timeout_s: float) -> np.ndarray:
    """One POST to 127.0.0.1:port; decodes a JSON or binary-extension response."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        headers = {"Content-Type": body.content_type}
        if body.header_length is not None:
            headers["Inference-Header-Content-Length"] = str(body.header_length)
        connection.request("POST", path, body=body.data, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {payload[:500]!r}")
        header_length = response.getheader("Inference-Header-Content-Length")
        if header_length is None:
            return _decode_json_output(json.loads(payload), datatype)
        split = int(header_length)
        doc = json.loads(payload[:split])
        out = doc["outputs"][0]
        if "data" in out:
            return _decode_json_output(doc, datatype)
        size = int(out["parameters"]["binary_data_size"])
        raw = payload[split : split + size]
        decoded: np.ndarray = np.frombuffer(raw, dtype=NUMPY_DTYPES[datatype])
        return decoded.reshape(out["shape"])
    finally:
        connection.close()


def grpc_infer(
    port: int, model_name: str, tensor: WireTensor, inputs: np.ndarray, timeout_s: float
) -> tuple[np.ndarray, int]:
    """One ModelInfer; returns the output and the size of the framed response message."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(grpc_request(model_name, tensor, inputs), timeout=timeout_s)
    out = response.outputs[0]
    dtype = NUMPY_DTYPES[out.datatype]
    values: np.ndarray
    if response.raw_output_contents:
        values = np.frombuffer(response.raw_output_contents[0], dtype=dtype)
    else:
        contents = out.contents
        field = {"FP32": "fp32_contents", "INT64": "int64_contents", "INT32": "int_contents"}
        values = np.asarray(getattr(contents, field[out.datatype]), dtype=dtype)
    framed_size = len(frame_grpc_message(response.SerializeToString()))
    return values.reshape(tuple(out.shape)), framed_size
