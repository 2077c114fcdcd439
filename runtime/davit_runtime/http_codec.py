"""Open Inference Protocol v2 HTTP bodies: JSON tensors and the binary tensor data extension."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from davit_runtime.datatypes import DATATYPES
from davit_runtime.errors import invalid
from davit_runtime.inference import DecodedInput, decode_array, element_count

HEADER_LENGTH = "inference-header-content-length"


@dataclass(slots=True)
class InferRequest:
    request_id: str | None
    inputs: list[DecodedInput]
    outputs: list[str] | None  # names requested, None = all
    binary_outputs: dict[str, bool]  # per requested output, explicit binary_data choice
    binary_default: bool  # request-level binary_data_output


def parse_header_length(value: bytes | str | None, body_length: int) -> int | None:
    """The JSON header length from Inference-Header-Content-Length, validated against the body."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    try:
        length = int(text.strip())
    except ValueError:
        raise invalid(f"Inference-Header-Content-Length {text!r} is not an integer") from None
    if not 0 <= length <= body_length:
        raise invalid(
            f"Inference-Header-Content-Length {length} outside the body's {body_length} bytes"
        )
    return length


def _shape(raw: Any, name: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in raw
    ):
        raise invalid(f"input {name!r}: 'shape' must be a list of integers")
    shape = tuple(raw)
    if any(d < 0 for d in shape):
        raise invalid(f"input {name!r}: negative dimension in shape {list(shape)}")
    return shape


def _json_array(
    name: str, datatype: str, shape: tuple[int, ...], data: Any
) -> np.ndarray[Any, Any]:
    dtype = DATATYPES[datatype].numpy
    try:
        array = np.asarray(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError):
        raise invalid(f"input {name!r}: 'data' is not a list of {datatype} values") from None
    if datatype == "BOOL" and isinstance(data, list) and data and not _all_bools(data):
        raise invalid(f"input {name!r}: BOOL data must be true/false values")
    if array.size != element_count(shape):
        raise invalid(
            f"input {name!r}: {array.size} values in 'data', shape {list(shape)} needs "
            f"{element_count(shape)}"
        )
    return array.reshape(shape)


def _all_bools(data: list[Any]) -> bool:
    stack: list[Any] = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif not isinstance(item, bool):
            return False
    return True


def parse_infer_request(body: bytes | bytearray, header_length: int | None) -> InferRequest:
    """Decode an infer request body; raises INVALID_ARGUMENT errors with a clear message."""
    view = memoryview(body)
    json_part = view if header_length is None else view[:header_length]
    try:
        document = orjson.loads(json_part)
    except orjson.JSONDecodeError as error:
        raise invalid(f"request body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise invalid("request body must be a JSON object")
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise invalid("'inputs' must be a non-empty list")
    binary = view[header_length:] if header_length is not None else view[:0]
    offset = 0
    inputs: list[DecodedInput] = []
    for raw in raw_inputs:
        if not isinstance(raw, dict):
            raise invalid("each input must be a JSON object")
        name = raw.get("name")
        if not isinstance(name, str):
            raise invalid("input without a string 'name'")
        datatype = raw.get("datatype")
        if datatype not in DATATYPES:
            raise invalid(
                f"input {name!r}: unsupported datatype {datatype!r} "
                f"(supported: {', '.join(DATATYPES)})"
            )
        shape = _shape(raw.get("shape"), name)
        parameters = raw.get("parameters") or {}
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise invalid(f"input {name!r}: binary_data_size must be a non-negative integer")
            if offset + size > len(binary):
                raise invalid(
                    f"input {name!r}: binary data truncated: needs {size} bytes at offset "
                    f"{offset}, body has {len(binary)} binary bytes"
                )
            array = decode_array(name, datatype, shape, binary[offset : offset + size])
            offset += size
        elif "data" in raw:
            array = _json_array(name, datatype, shape, raw["data"])
        else:
            raise invalid(f"input {name!r}: neither 'data' nor binary_data_size given")
        inputs.append(DecodedInput(name, datatype, shape, array))
    if offset != len(binary):
        raise invalid(f"{len(binary) - offset} unused bytes of binary data after the inputs")

    request_parameters = document.get("parameters") or {}
    binary_default = bool(
        isinstance(request_parameters, dict) and request_parameters.get("binary_data_output")
    )
    outputs: list[str] | None = None
    binary_outputs: dict[str, bool] = {}
    raw_outputs = document.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise invalid("'outputs' must be a list")
        outputs = []
        for raw in raw_outputs:
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                raise invalid("each requested output must be an object with a 'name'")
            outputs.append(raw["name"])
            parameters = raw.get("parameters")
            if isinstance(parameters, dict) and "binary_data" in parameters:
                binary_outputs[raw["name"]] = bool(parameters["binary_data"])
    request_id = document.get("id")
    return InferRequest(
        request_id if isinstance(request_id, str) else None,
        inputs,
        outputs,
        binary_outputs,
        binary_default,
    )


@dataclass(slots=True)
class OutputTensor:
    name: str
    datatype: str
    array: np.ndarray[Any, Any]


def encode_infer_response(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Sequence[OutputTensor],
    binary: Sequence[bool],
) -> tuple[list[bytes], int | None]:
    """Body chunks of an infer response and the JSON header length when binary data follows."""
    described: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for tensor, as_binary in zip(outputs, binary, strict=True):
        array = np.ascontiguousarray(tensor.array)
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(array.shape),
        }
        if as_binary:
            data = array.tobytes()
            entry["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            entry["data"] = array.reshape(-1)
        described.append(entry)
    document: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        document["id"] = request_id
    document["outputs"] = described
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return [header], None
    return [header, *chunks], len(header)


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})
