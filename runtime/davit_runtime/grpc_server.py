"""The GRPCInferenceService (Open Inference Protocol v2) on grpc.aio, sharing the event loop."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NoReturn

import grpc
import numpy as np

from davit_runtime.datatypes import DATATYPES
from davit_runtime.errors import InferenceError, Status, invalid
from davit_runtime.headers import QUEUE_DEPTH
from davit_runtime.inference import DecodedInput, decode_array, element_count, select_outputs
from davit_runtime.protocol import inference_pb2 as pb
from davit_runtime.protocol import inference_pb2_grpc as pb_grpc
from davit_runtime.state import RuntimeState

GRPC_CODES: dict[Status, grpc.StatusCode] = {
    Status.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    Status.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Status.PAYLOAD_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Status.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Status.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Status.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    Status.INTERNAL: grpc.StatusCode.INTERNAL,
}

# Which typed `contents` field carries each datatype (FP16 has none: raw bytes only).
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def decode_grpc_inputs(request: Any) -> list[DecodedInput]:
    """Request tensors from raw_input_contents (zero-copy views) or typed contents."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise invalid(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; give one per input"
        )
    decoded: list[DecodedInput] = []
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        datatype = tensor.datatype
        if datatype not in DATATYPES:
            raise invalid(
                f"input {name!r}: unsupported datatype {datatype!r} "
                f"(supported: {', '.join(DATATYPES)})"
            )
        shape = tuple(tensor.shape)
        if any(d < 0 for d in shape):
            raise invalid(f"input {name!r}: negative dimension in shape {list(shape)}")
        if raw:
            array = decode_array(name, datatype, shape, raw[index])
        else:
            field = CONTENTS_FIELD.get(datatype)
            if field is None:
                raise invalid(f"input {name!r}: {datatype} data must come in raw_input_contents")
            values = getattr(tensor.contents, field)
            if len(values) != element_count(shape):
                raise invalid(
                    f"input {name!r}: {len(values)} values in contents, shape {list(shape)} "
                    f"needs {element_count(shape)}"
                )
            array = np.asarray(values, dtype=DATATYPES[datatype].numpy).reshape(shape)
        decoded.append(DecodedInput(name, datatype, shape, array))
    return decoded


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: InferenceError) -> NoReturn:
    trailing: Sequence[tuple[str, str]] = ()
    if error.status in (Status.RESOURCE_EXHAUSTED, Status.UNAVAILABLE):
        trailing = (("retry-after", "1"),)
    await context.abort(GRPC_CODES[error.status], error.message, trailing_metadata=trailing)
    raise AssertionError("context.abort returned")  # abort always raises


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, state: RuntimeState) -> None:
        self._state = state

    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        state = self._state
        return pb.ServerReadyResponse(ready=state.ready and not state.draining)

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            model = self._state.model(request.name, request.version or None)
        except InferenceError as error:
            await _abort(context, error)
        return pb.ModelReadyResponse(ready=model.ready and not self._state.draining)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        meta = self._state.server_metadata()
        return pb.ServerMetadataResponse(
            name=meta["name"], version=meta["version"], extensions=meta["extensions"]
        )

    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            meta = self._state.model(request.name, request.version or None).metadata()
        except InferenceError as error:
            await _abort(context, error)
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in meta["inputs"]],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in meta["outputs"]],
        )

    async def ModelConfig(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            model = self._state.model(request.name, request.version or None)
        except InferenceError as error:
            await _abort(context, error)
        doc = model.triton_config()
        config = pb.ModelConfig(
            name=doc["name"],
            platform=doc["platform"],
            backend=doc["backend"],
            max_batch_size=doc["max_batch_size"],
            input=[
                pb.ModelInput(name=i["name"], data_type=i["data_type"], dims=i["dims"])
                for i in doc["input"]
            ],
            output=[
                pb.ModelOutput(name=o["name"], data_type=o["data_type"], dims=o["dims"])
                for o in doc["output"]
            ],
            instance_group=[
                pb.ModelInstanceGroup(count=g["count"], kind=g["kind"])
                for g in doc["instance_group"]
            ],
        )
        batching = doc.get("dynamic_batching")
        if batching is not None:
            config.dynamic_batching.preferred_batch_size.extend(batching["preferred_batch_size"])
            config.dynamic_batching.max_queue_delay_microseconds = batching[
                "max_queue_delay_microseconds"
            ]
        return pb.ModelConfigResponse(config=config)

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        started = time.perf_counter()
        try:
            model = self._state.ready_model(request.model_name, request.model_version or None)
        except InferenceError as error:
            await _abort(context, error)
        try:
            decoded = decode_grpc_inputs(request)
            chosen = select_outputs(model.config, [o.name for o in request.outputs] or None)
            arrays = await model.submit(decoded)
        except InferenceError as error:
            model.metrics.record(error.http_status, time.perf_counter() - started)
            await _abort(context, error)
        specs = model.config.outputs
        response = pb.ModelInferResponse(
            model_name=model.name, model_version=model.version, id=request.id
        )
        raw_outputs = response.raw_output_contents
        for index in chosen:
            spec = specs[index]
            array = arrays[index]
            response.outputs.add(name=spec.name, datatype=spec.datatype, shape=array.shape)
            raw_outputs.append(np.ascontiguousarray(array).tobytes())
        model.metrics.record(200, time.perf_counter() - started)
        # The load signal the router balances on, as HTTP answers carry it in a header.
        context.set_trailing_metadata(((QUEUE_DEPTH, str(model.batcher.queue_depth)),))
        return response


class GrpcApp:
    def __init__(self, state: RuntimeState) -> None:
        self._state = state
        limit = state.max_body_bytes
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),
            ]
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(state), self.server)

    async def start(self, host: str, port: int) -> int:
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        bound = self.server.add_insecure_port(address)
        if bound == 0:
            raise OSError(f"could not bind gRPC port {address}")
        await self.server.start()
        return int(bound)

    async def stop(self, grace_s: float) -> None:
        await self.server.stop(grace_s)
