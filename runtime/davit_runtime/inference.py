"""Transport-independent request handling: input validation, output selection, served models."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from davit_runtime.batching import Arrays, Batcher
from davit_runtime.config import ModelConfig, TensorSpec
from davit_runtime.datatypes import DATATYPES
from davit_runtime.errors import invalid
from davit_runtime.metrics import ModelMetrics


@dataclass(slots=True)
class DecodedInput:
    """One request tensor as received: declared name, datatype and shape, and its data."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    array: np.ndarray[Any, Any]


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape)


def check_shape(spec: TensorSpec, shape: tuple[int, ...], batches: bool, max_batch: int) -> None:
    expected = ([-1] if batches else []) + list(spec.shape)
    if len(shape) != len(expected) or any(
        want not in (-1, got) for want, got in zip(expected, shape, strict=True)
    ):
        described = "[batch, " + ", ".join(map(str, spec.shape)) + "]" if batches else spec.shape
        raise invalid(
            f"input {spec.name!r}: shape {list(shape)} does not match the model's {described} "
            "(-1 = any size)"
        )
    if any(d < 0 for d in shape):
        raise invalid(f"input {spec.name!r}: negative dimension in shape {list(shape)}")
    if batches and not 1 <= shape[0] <= max_batch:
        raise invalid(
            f"input {spec.name!r}: batch size {shape[0]} outside 1..{max_batch} (max_batch_size)"
        )


def validate_inputs(config: ModelConfig, decoded: Sequence[DecodedInput]) -> tuple[Arrays, int]:
    """Match request tensors to the config's inputs: arrays in config order, and the batch size."""
    by_name: dict[str, DecodedInput] = {}
    for item in decoded:
        if item.name in by_name:
            raise invalid(f"input {item.name!r} given more than once")
        by_name[item.name] = item
    arrays: Arrays = []
    batch_size = 1
    for index, spec in enumerate(config.inputs):
        if spec.name not in by_name:
            raise invalid(f"missing input {spec.name!r} (model {config.name!r} expects it)")
        item = by_name.pop(spec.name)
        if item.datatype != spec.datatype:
            raise invalid(
                f"input {spec.name!r}: datatype {item.datatype} does not match the model's "
                f"{spec.datatype}"
            )
        check_shape(spec, item.shape, config.batches, config.max_batch_size)
        if config.batches:
            if index == 0:
                batch_size = item.shape[0]
            elif item.shape[0] != batch_size:
                raise invalid(
                    f"input {spec.name!r}: batch size {item.shape[0]} differs from other "
                    f"inputs' {batch_size}"
                )
        arrays.append(item.array)
    if by_name:
        known = [s.name for s in config.inputs]
        raise invalid(f"unknown input(s) {sorted(by_name)}; model {config.name!r} takes {known}")
    return arrays, batch_size


def select_outputs(config: ModelConfig, requested: Sequence[str] | None) -> list[int]:
    """Indices of the outputs to return (all when the request names none)."""
    if not requested:
        return list(range(len(config.outputs)))
    index = {spec.name: i for i, spec in enumerate(config.outputs)}
    chosen: list[int] = []
    for name in requested:
        if name not in index:
            raise invalid(f"unknown output {name!r}; model {config.name!r} returns {list(index)}")
        chosen.append(index[name])
    return chosen


def decode_array(
    name: str, datatype: str, shape: tuple[int, ...], buffer: bytes | bytearray | memoryview
) -> np.ndarray[Any, Any]:
    """A zero-copy view of raw little-endian tensor bytes, checked against the shape."""
    dtype = DATATYPES[datatype].numpy
    expected = element_count(shape) * dtype.itemsize
    if len(buffer) != expected:
        raise invalid(
            f"input {name!r}: {len(buffer)} bytes of data, expected {expected} for {datatype} "
            f"{list(shape)}"
        )
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


class ServedModel:
    """A loaded, warmed model: its config, version, batcher and metrics."""

    def __init__(
        self, config: ModelConfig, version: str, batcher: Batcher, metrics: ModelMetrics
    ) -> None:
        self.config = config
        self.name = config.name
        self.version = version
        self.batcher = batcher
        self.metrics = metrics
        self.platform = "pytorch_libtorch"
        self.ready = False

    def submit(self, decoded: Sequence[DecodedInput]) -> asyncio.Future[Arrays]:
        arrays, batch_size = validate_inputs(self.config, decoded)
        return self.batcher.submit(arrays, batch_size)

    def metadata(self) -> dict[str, Any]:
        batch_dim = [-1] if self.config.batches else []
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": self.platform,
            "inputs": [
                {"name": s.name, "datatype": s.datatype, "shape": batch_dim + list(s.shape)}
                for s in self.config.inputs
            ],
            "outputs": [
                {"name": s.name, "datatype": s.datatype, "shape": batch_dim + list(s.shape)}
                for s in self.config.outputs
            ],
        }

    def triton_config(self) -> dict[str, Any]:
        """The model's configuration in Triton's JSON shape (perf_analyzer reads it)."""
        config = self.config
        document: dict[str, Any] = {
            "name": self.name,
            "platform": self.platform,
            "backend": "pytorch",
            "max_batch_size": config.max_batch_size,
            "input": [
                {"name": s.name, "data_type": DATATYPES[s.datatype].triton_config,
                 "dims": list(s.shape)}
                for s in config.inputs
            ],
            "output": [
                {"name": s.name, "data_type": DATATYPES[s.datatype].triton_config,
                 "dims": list(s.shape)}
                for s in config.outputs
            ],
            "instance_group": [
                {"count": config.instance_count,
                 "kind": "KIND_GPU" if config.device == "cuda" else "KIND_CPU"}
            ],
        }  # fmt: skip
        if config.batches:
            document["dynamic_batching"] = {
                "preferred_batch_size": list(config.batching.preferred_batch_sizes),
                "max_queue_delay_microseconds": int(config.batching.max_queue_delay_ms * 1000),
            }
        return document
