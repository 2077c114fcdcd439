"""Model configuration (`<model>/config.json`): parsing and validation with clear errors.

The file is JSON. Every key except `inputs`, `outputs` and `format` (when a model file is present
it is inferred) is optional; unknown keys are rejected so typos are not silently ignored.
See runtime/README.md for the full format.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from davit_runtime.datatypes import DATATYPES

FORMATS = ("torchscript", "pt2", "onnx")
PRECISIONS = ("fp32", "fp16", "bf16")
DEVICES = ("cpu", "cuda", "auto")
MODEL_FILENAMES = {"torchscript": "model.pt", "pt2": "model.pt2", "onnx": "model.onnx"}
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
# Tensor names may also hold ':' (ONNX and TensorFlow exports name them `input:0`). The
# ModelDeployment API states the same rule; a contract test (e2e) holds the two together.
TENSOR_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]*$"
_TENSOR_NAME = re.compile(TENSOR_NAME_PATTERN)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the offending key."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # excludes the batch dimension when the model batches; -1 = any


@dataclass(frozen=True)
class BatchingConfig:
    max_queue_delay_ms: float = 0.0
    preferred_batch_sizes: tuple[int, ...] = ()
    # Wait for more requests only while fewer samples are queued than the previous batch held:
    # a lone client is not delayed, a crowd still fills its batches.
    adaptive_delay: bool = True


@dataclass(frozen=True)
class SheddingConfig:
    max_in_flight: int = 1024
    max_queue: int = 512
    queue_timeout_ms: float = 5000.0


@dataclass(frozen=True)
class ModelConfig:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    format: str | None = None
    max_batch_size: int = 0
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    shedding: SheddingConfig = field(default_factory=SheddingConfig)
    instance_count: int = 1
    precision: str = "fp32"
    device: str = "cpu"
    compile: bool = False
    cuda_graphs: bool = False
    warmup: bool = True
    request_timeout_ms: float = 30000.0
    uri: str | None = None
    sha256: str | None = None

    @property
    def batches(self) -> bool:
        return self.max_batch_size > 0


_TOP_KEYS = {
    "name",
    "format",
    "max_batch_size",
    "inputs",
    "outputs",
    "dynamic_batching",
    "load_shedding",
    "instance_count",
    "precision",
    "device",
    "compile",
    "cuda_graphs",
    "warmup",
    "request_timeout_ms",
    "uri",
    "sha256",
}


def _require_keys(obj: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _int(value: Any, where: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{where}: must be >= {minimum}, got {value}")
    return value


def _number(value: Any, where: str, *, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: must be a number, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{where}: must be >= {minimum}, got {value}")
    return float(value)


def _choice(value: Any, where: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(f"{where}: must be one of {list(choices)}, got {value!r}")
    return str(value)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: must be true or false, got {value!r}")
    return value


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: must be an object, got {type(value).__name__}")
    return value


def _tensors(value: Any, where: str) -> tuple[TensorSpec, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: must be a non-empty list of tensors")
    specs: list[TensorSpec] = []
    for index, raw in enumerate(value):
        here = f"{where}[{index}]"
        item = _mapping(raw, here)
        _require_keys(item, {"name", "datatype", "shape"}, here)
        name = item.get("name")
        if not isinstance(name, str) or not _TENSOR_NAME.match(name):
            raise ConfigError(f"{here}.name: must be a name of letters, digits, _ . : -")
        datatype = item.get("datatype")
        if datatype not in DATATYPES:
            raise ConfigError(
                f"{here}.datatype: must be one of {list(DATATYPES)}, got {datatype!r}"
            )
        shape = item.get("shape")
        if not isinstance(shape, list):
            raise ConfigError(f"{here}.shape: must be a list of integers (-1 = any size)")
        dims = tuple(_int(d, f"{here}.shape", minimum=-1) for d in shape)
        if 0 in dims:
            raise ConfigError(f"{here}.shape: dimensions must be positive or -1")
        specs.append(TensorSpec(name, str(datatype), dims))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: tensor names must be unique, got {names}")
    return tuple(specs)


def parse_model_config(raw: Any, *, default_name: str, where: str = "config") -> ModelConfig:
    """Validate a decoded config document and build a ModelConfig (raises ConfigError)."""
    doc = _mapping(raw, where)
    _require_keys(doc, _TOP_KEYS, where)
    name = doc.get("name", default_name)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where}.name: must be a name of letters, digits, _ . -, got {name!r}")
    if "inputs" not in doc or "outputs" not in doc:
        raise ConfigError(f"{where}: 'inputs' and 'outputs' are required")
    max_batch_size = _int(doc.get("max_batch_size", 0), f"{where}.max_batch_size", minimum=0)

    batching_doc = _mapping(doc.get("dynamic_batching", {}), f"{where}.dynamic_batching")
    _require_keys(
        batching_doc,
        {"max_queue_delay_ms", "preferred_batch_sizes", "adaptive_delay"},
        f"{where}.dynamic_batching",
    )
    preferred_raw = batching_doc.get("preferred_batch_sizes", [])
    if not isinstance(preferred_raw, list):
        raise ConfigError(f"{where}.dynamic_batching.preferred_batch_sizes: must be a list")
    preferred = tuple(
        sorted(
            _int(p, f"{where}.dynamic_batching.preferred_batch_sizes", minimum=1)
            for p in preferred_raw
        )
    )
    if any(p > max_batch_size for p in preferred):
        raise ConfigError(
            f"{where}.dynamic_batching.preferred_batch_sizes: {list(preferred)} exceed "
            f"max_batch_size {max_batch_size}"
        )
    batching = BatchingConfig(
        max_queue_delay_ms=_number(
            batching_doc.get("max_queue_delay_ms", 0.0),
            f"{where}.dynamic_batching.max_queue_delay_ms",
            minimum=0.0,
        ),
        preferred_batch_sizes=preferred,
        adaptive_delay=_bool(
            batching_doc.get("adaptive_delay", True), f"{where}.dynamic_batching.adaptive_delay"
        ),
    )

    shed_doc = _mapping(doc.get("load_shedding", {}), f"{where}.load_shedding")
    _require_keys(
        shed_doc, {"max_in_flight", "max_queue", "queue_timeout_ms"}, f"{where}.load_shedding"
    )
    defaults = SheddingConfig()
    shedding = SheddingConfig(
        max_in_flight=_int(
            shed_doc.get("max_in_flight", defaults.max_in_flight),
            f"{where}.load_shedding.max_in_flight",
            minimum=1,
        ),
        max_queue=_int(
            shed_doc.get("max_queue", defaults.max_queue),
            f"{where}.load_shedding.max_queue",
            minimum=1,
        ),
        queue_timeout_ms=_number(
            shed_doc.get("queue_timeout_ms", defaults.queue_timeout_ms),
            f"{where}.load_shedding.queue_timeout_ms",
            minimum=0.001,
        ),
    )

    fmt = doc.get("format")
    if fmt is not None:
        fmt = _choice(fmt, f"{where}.format", FORMATS)
    uri = doc.get("uri")
    if uri is not None and (not isinstance(uri, str) or not uri):
        raise ConfigError(f"{where}.uri: must be a non-empty string")
    sha256 = doc.get("sha256")
    if sha256 is not None and (not isinstance(sha256, str) or not _SHA256.match(sha256)):
        raise ConfigError(f"{where}.sha256: must be 64 lowercase hex digits")
    if uri is not None and fmt is None:
        raise ConfigError(f"{where}.format: required when 'uri' is set")

    inputs = _tensors(doc["inputs"], f"{where}.inputs")
    outputs = _tensors(doc["outputs"], f"{where}.outputs")
    return ModelConfig(
        name=name,
        inputs=inputs,
        outputs=outputs,
        format=fmt,
        max_batch_size=max_batch_size,
        batching=batching,
        shedding=shedding,
        instance_count=_int(doc.get("instance_count", 1), f"{where}.instance_count", minimum=1),
        precision=_choice(doc.get("precision", "fp32"), f"{where}.precision", PRECISIONS),
        device=_choice(doc.get("device", "cpu"), f"{where}.device", DEVICES),
        compile=_bool(doc.get("compile", False), f"{where}.compile"),
        cuda_graphs=_bool(doc.get("cuda_graphs", False), f"{where}.cuda_graphs"),
        warmup=_bool(doc.get("warmup", True), f"{where}.warmup"),
        request_timeout_ms=_number(
            doc.get("request_timeout_ms", 30000.0), f"{where}.request_timeout_ms", minimum=1.0
        ),
        uri=uri,
        sha256=sha256,
    )
