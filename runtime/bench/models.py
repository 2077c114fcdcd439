"""Benchmark models and the model repository the servers load them from.

Every server in a run serves the same TorchScript file: Davit reads it from its model repository
and the peers load that very file, so the weights are identical by construction and the
correctness check compares every server with one local reference.

The repository is written by `davit_runtime.testing.write_model_repository` when the runtime
provides it (the runtime's own seeded test models); otherwise by the seeded builders below, which
produce the same layout (`<model>/config.json`, `<model>/1/model.pt`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

MODEL_KINDS = ("linear", "mlp", "cnn")
SEED = 0
NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype(np.float32),
    "FP16": np.dtype(np.float16),
    "INT64": np.dtype(np.int64),
    "INT32": np.dtype(np.int32),
    "BOOL": np.dtype(np.bool_),
}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    datatype: str
    shape: tuple[int, ...]  # one sample, without the batch dimension


@dataclass(frozen=True)
class BenchModel:
    name: str
    model_file: Path
    input: TensorInfo
    output: TensorInfo

    def sample_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, *self.input.shape)


class _SmallCnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(torch.flatten(self.features(x), 1))
        return logits


FALLBACK_SHAPES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "linear": ((512,), (512,)),
    "mlp": ((512,), (512,)),
    "cnn": ((3, 32, 32), (10,)),
}


def build_fallback_module(kind: str) -> nn.Module:
    """Seeded models used until the runtime ships its own builders."""
    torch.manual_seed(SEED)
    if kind == "linear":
        return nn.Linear(512, 512)
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(512, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 512)
        )
    if kind == "cnn":
        return _SmallCnn()
    raise ValueError(f"unknown model kind {kind!r}; expected one of {MODEL_KINDS}")


def _write_fallback_repository(
    root: Path, kind: str, max_batch_size: int, max_queue_delay_ms: float, instance_count: int
) -> None:
    module = build_fallback_module(kind).eval()
    in_shape, out_shape = FALLBACK_SHAPES[kind]
    version_dir = root / kind / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    scripted = torch.jit.script(module)
    torch.jit.save(scripted, str(version_dir / "model.pt"))
    config = {
        "name": kind,
        "format": "torchscript",
        "max_batch_size": max_batch_size,
        "inputs": [{"name": "input", "datatype": "FP32", "shape": list(in_shape)}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": list(out_shape)}],
        "dynamic_batching": {"max_queue_delay_ms": max_queue_delay_ms},
        "instance_count": instance_count,
    }
    (root / kind / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def runtime_provides_models() -> bool:
    try:
        from davit_runtime import testing  # noqa: F401
    except ImportError:
        return False
    return True


def write_repository(
    root: Path,
    kind: str,
    *,
    max_batch_size: int,
    max_queue_delay_ms: float,
    instance_count: int = 1,
) -> BenchModel:
    """Write model `kind` into repository `root` (TorchScript) and describe it."""
    root.mkdir(parents=True, exist_ok=True)
    if runtime_provides_models():
        from davit_runtime.testing import write_model_repository

        write_model_repository(
            root,
            kind,
            kind,
            max_batch_size=max_batch_size,
            max_queue_delay_ms=max_queue_delay_ms,
            fmt="torchscript",
            instance_count=instance_count,
        )
    else:
        _write_fallback_repository(root, kind, max_batch_size, max_queue_delay_ms, instance_count)
    return read_model(root, kind)


def _tensor(raw: Any) -> TensorInfo:
    return TensorInfo(str(raw["name"]), str(raw["datatype"]), tuple(int(d) for d in raw["shape"]))


def read_model(root: Path, name: str) -> BenchModel:
    config = json.loads((root / name / "config.json").read_text())
    if len(config["inputs"]) != 1 or len(config["outputs"]) != 1:
        raise ValueError(f"{name}: the benchmark drives single-input, single-output models")
    model_files = sorted((root / name).glob("*/model.pt"))
    if not model_files:
        raise FileNotFoundError(f"{name}: no TorchScript model.pt under {root / name}")
    return BenchModel(
        name=name,
        model_file=model_files[-1],
        input=_tensor(config["inputs"][0]),
        output=_tensor(config["outputs"][0]),
    )


def sample_input(model: BenchModel, batch: int = 1) -> np.ndarray:
    """Seeded request payload (the same bytes for every server)."""
    rng = np.random.default_rng(SEED + batch)
    dtype = NUMPY_DTYPES[model.input.datatype]
    values: np.ndarray = rng.standard_normal(model.sample_shape(batch)).astype(dtype)
    return values


def load_reference(model: BenchModel) -> torch.jit.ScriptModule:
    module: torch.jit.ScriptModule = torch.jit.load(  # type: ignore[no-untyped-call]
        str(model.model_file)
    ).eval()
    return module


def reference_output(model: BenchModel, inputs: np.ndarray) -> np.ndarray:
    module = load_reference(model)
    with torch.inference_mode():
        out = module(torch.from_numpy(inputs))
    result: np.ndarray = out.numpy()
    return result


def outputs_match(got: np.ndarray, want: np.ndarray) -> bool:
    """fp32 tolerance: batching changes GEMM blocking, so bit equality is not expected."""
    return got.shape == want.shape and bool(np.allclose(got, want, rtol=1e-4, atol=1e-5))


def flat_size(shape: tuple[int, ...]) -> int:
    return math.prod(shape)
