"""Mapping between Open Inference Protocol datatypes, numpy, torch and Triton's config enums."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from davit_runtime.errors import invalid


@dataclass(frozen=True)
class DataType:
    """One protocol datatype and its equivalents."""

    name: str  # protocol name, e.g. "FP32"
    numpy: np.dtype[np.generic]
    triton_config: str  # Triton model-config name, e.g. "TYPE_FP32"
    triton_enum: int  # Triton model-config DataType enum value (gRPC ModelConfig)


def _make(name: str, numpy_type: type[np.generic], triton_enum: int) -> DataType:
    return DataType(name, np.dtype(numpy_type), f"TYPE_{name}", triton_enum)


# Enum values follow Triton's public model-config DataType numbering (perf_analyzer decodes them).
DATATYPES: dict[str, DataType] = {
    d.name: d
    for d in (
        _make("BOOL", np.bool_, 1),
        _make("UINT8", np.uint8, 2),
        _make("UINT16", np.uint16, 3),
        _make("UINT32", np.uint32, 4),
        _make("UINT64", np.uint64, 5),
        _make("INT8", np.int8, 6),
        _make("INT16", np.int16, 7),
        _make("INT32", np.int32, 8),
        _make("INT64", np.int64, 9),
        _make("FP16", np.float16, 10),
        _make("FP32", np.float32, 11),
        _make("FP64", np.float64, 12),
    )
}

_BY_NUMPY: dict[np.dtype[np.generic], DataType] = {d.numpy: d for d in DATATYPES.values()}


def datatype(name: str) -> DataType:
    """The datatype called `name`; raises an INVALID_ARGUMENT error for unknown names."""
    try:
        return DATATYPES[name]
    except KeyError:
        known = ", ".join(DATATYPES)
        raise invalid(f"unsupported datatype {name!r} (supported: {known})") from None


def datatype_of_numpy(dtype: np.dtype[np.generic]) -> DataType:
    try:
        return _BY_NUMPY[dtype]
    except KeyError:
        raise invalid(f"no protocol datatype for numpy dtype {dtype}") from None
