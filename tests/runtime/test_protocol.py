"""The generated gRPC modules are reproducible and wire-compatible with tritonclient's."""

from __future__ import annotations

from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2, service_pb2

from davit_runtime.protocol import inference_pb2 as pb
from davit_runtime.protocol.generate import generate, source_root

GENERATED = ("inference_pb2.py", "inference_pb2_grpc.py")


def test_regenerating_gives_identical_files(tmp_path: Path) -> None:
    generate(tmp_path)
    committed = source_root() / "davit_runtime" / "protocol"
    for name in GENERATED:
        fresh = tmp_path / "davit_runtime" / "protocol" / name
        assert fresh.read_text() == (committed / name).read_text(), (
            f"{name} is stale: run python -m davit_runtime.protocol.generate"
        )


def _fields(descriptor: object) -> dict[str, tuple[int, int]]:
    return {f.name: (f.number, f.type) for f in descriptor.fields}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (pb.ModelInferRequest, service_pb2.ModelInferRequest),
        (pb.ModelInferRequest.InferInputTensor, service_pb2.ModelInferRequest.InferInputTensor),
        (
            pb.ModelInferRequest.InferRequestedOutputTensor,
            service_pb2.ModelInferRequest.InferRequestedOutputTensor,
        ),
        (pb.ModelInferResponse, service_pb2.ModelInferResponse),
        (pb.ModelInferResponse.InferOutputTensor, service_pb2.ModelInferResponse.InferOutputTensor),
        (pb.InferParameter, service_pb2.InferParameter),
        (pb.InferTensorContents, service_pb2.InferTensorContents),
        (pb.ModelMetadataResponse, service_pb2.ModelMetadataResponse),
        (pb.ModelMetadataResponse.TensorMetadata, service_pb2.ModelMetadataResponse.TensorMetadata),
        (pb.ServerMetadataResponse, service_pb2.ServerMetadataResponse),
        (pb.ModelReadyRequest, service_pb2.ModelReadyRequest),
        (pb.ModelConfigRequest, service_pb2.ModelConfigRequest),
        (pb.ModelConfigResponse, service_pb2.ModelConfigResponse),
    ],
)
def test_messages_match_the_public_protocol(ours: object, theirs: object) -> None:
    assert _fields(ours.DESCRIPTOR) == _fields(theirs.DESCRIPTOR)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (pb.ModelConfig, model_config_pb2.ModelConfig),
        (pb.ModelInput, model_config_pb2.ModelInput),
        (pb.ModelOutput, model_config_pb2.ModelOutput),
        (pb.ModelInstanceGroup, model_config_pb2.ModelInstanceGroup),
        (pb.ModelDynamicBatching, model_config_pb2.ModelDynamicBatching),
    ],
)
def test_model_config_subset_matches_triton_numbers(ours: object, theirs: object) -> None:
    their_fields = _fields(theirs.DESCRIPTOR)  # type: ignore[attr-defined]
    for name, numbered in _fields(ours.DESCRIPTOR).items():  # type: ignore[attr-defined]
        assert their_fields[name] == numbered, name


def test_service_methods_share_triton_paths() -> None:
    ours = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert ours.full_name == theirs.full_name == "inference.GRPCInferenceService"
    their_methods = {m.name: m for m in theirs.methods}
    for method in ours.methods:
        assert method.name in their_methods
        assert method.input_type.name == their_methods[method.name].input_type.name


def test_bytes_round_trip_between_implementations() -> None:
    request = pb.ModelInferRequest(model_name="m", id="7", raw_input_contents=[b"\x01\x02"])
    request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    request.parameters["binary_data_output"].bool_param = True
    theirs = service_pb2.ModelInferRequest.FromString(request.SerializeToString())
    assert theirs.inputs[0].shape == [1, 2]
    assert theirs.parameters["binary_data_output"].bool_param
    assert theirs.raw_input_contents == [b"\x01\x02"]
