"""Tiny models built in code with a fixed seed, model repositories holding them, and the
runtime as a real process serving them.

Used by the component tests, the e2e suite and the benchmark: `write_model_repository` exports
a model (TorchScript or torch.export) and writes its `config.json`; `build_model` and
`sample_inputs` give the same module and data for raw-torch baselines and correctness checks;
`launch_server` starts `davit-runtime serve` on loopback ports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from davit_runtime.config import MODEL_FILENAMES
from davit_runtime.datatypes import DATATYPES
from davit_runtime.fetch import sha256_of
from davit_runtime.processes import Samples, await_ready_line, metric_samples

KINDS = ("linear", "mlp", "cnn", "typed", "flaky")
Format = Literal["torchscript", "pt2"]


@dataclass(frozen=True)
class TensorInfo:
    name: str
    datatype: str
    shape: tuple[int, ...]  # per sample (no batch dim)


@dataclass(frozen=True)
class ModelSpec:
    """What a written model expects and returns, for clients of the repository."""

    name: str
    kind: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    model_dir: Path
    model_file: Path
    config: Mapping[str, Any]

    @property
    def input(self) -> TensorInfo:
        return self.inputs[0]

    @property
    def output(self) -> TensorInfo:
        return self.outputs[0]


class _Typed(nn.Module):
    """One input of each common datatype, each mapped to an output of the same type."""

    def forward(
        self,
        fp32: torch.Tensor,
        fp16: torch.Tensor,
        int64: torch.Tensor,
        int32: torch.Tensor,
        flags: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return fp32 * 2, fp16 * 2, int64 + 1, int32 + 1, torch.logical_not(flags)


class _Flaky(nn.Module):
    """Doubles its input, and fails a share of requests: those whose first element is over
    0.8416, the standard normal's 80th percentile, so about 20 % of `sample_inputs`' draws (a
    canary that analysis must catch). Scripted, not traced, to keep the branch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.flatten()[0] > 0.8416):
            raise RuntimeError("injected failure")
        return x * 2


_TYPED_IO = (("fp32", "FP32"), ("fp16", "FP16"), ("int64", "INT64"), ("int32", "INT32"),
             ("flags", "BOOL"))  # fmt: skip


def tensor_infos(kind: str) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
    """Input and output descriptions of a model kind."""
    if kind in ("linear", "mlp", "flaky"):
        return (TensorInfo("input", "FP32", (512,)),), (TensorInfo("output", "FP32", (512,)),)
    if kind == "cnn":
        return (TensorInfo("input", "FP32", (3, 32, 32)),), (TensorInfo("output", "FP32", (10,)),)
    if kind == "typed":
        return (
            tuple(TensorInfo(f"in_{n}", t, (4,)) for n, t in _TYPED_IO),
            tuple(TensorInfo(f"out_{n}", t, (4,)) for n, t in _TYPED_IO),
        )
    raise ValueError(f"unknown model kind {kind!r}; choose from {KINDS}")


def build_model(kind: str, seed: int = 0) -> nn.Module:
    """The model of `kind` with weights drawn from `seed`, in eval mode."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        module: nn.Module
        if kind == "linear":
            module = nn.Linear(512, 512)
        elif kind == "mlp":
            module = nn.Sequential(
                nn.Linear(512, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(),
                nn.Linear(2048, 512),
            )  # fmt: skip
        elif kind == "cnn":
            module = nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                nn.Flatten(), nn.Linear(32, 10),
            )  # fmt: skip
        elif kind == "typed":
            module = _Typed()
        elif kind == "flaky":
            module = _Flaky()
        else:
            raise ValueError(f"unknown model kind {kind!r}; choose from {KINDS}")
    finally:
        torch.random.set_rng_state(generator_state)
    return module.eval()


def sample_inputs(kind: str, batch_size: int, seed: int = 1) -> list[np.ndarray[Any, Any]]:
    """Deterministic request data for `kind`, with a leading batch dimension."""
    rng = np.random.default_rng(seed)
    inputs, _ = tensor_infos(kind)
    arrays: list[np.ndarray[Any, Any]] = []
    for info in inputs:
        shape = (batch_size, *info.shape)
        dtype = DATATYPES[info.datatype].numpy
        if info.datatype in ("FP32", "FP16"):
            arrays.append(rng.standard_normal(shape).astype(dtype))
        elif info.datatype == "BOOL":
            arrays.append(rng.integers(0, 2, shape).astype(dtype))
        else:
            arrays.append(rng.integers(-1000, 1000, shape).astype(dtype))
    return arrays


def reference_outputs(
    kind: str, inputs: Sequence[np.ndarray[Any, Any]], seed: int = 0
) -> list[np.ndarray[Any, Any]]:
    """What the model of `kind` returns for `inputs`, computed with plain torch."""
    module = build_model(kind, seed)
    with torch.inference_mode():
        result = module(*[torch.from_numpy(np.array(a)) for a in inputs])
    if isinstance(result, torch.Tensor):
        result = (result,)
    return [t.numpy() for t in result]


def export_model(kind: str, fmt: Format, path: Path, *, max_batch_size: int, seed: int = 0) -> None:
    """Write the model of `kind` as TorchScript (`torch.jit.trace`) or torch.export `.pt2`."""
    module = build_model(kind, seed)
    example_batch = 2 if max_batch_size != 1 else 1
    examples = tuple(torch.from_numpy(a) for a in sample_inputs(kind, example_batch))
    if max_batch_size == 0:
        examples = tuple(e[0] for e in examples)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "flaky":
        if fmt != "torchscript" or max_batch_size != 0:
            raise ValueError(
                "the flaky model is TorchScript without batching (one request fails alone)"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecated, still served
            torch.jit.save(torch.jit.script(module), str(path))
        return
    if fmt == "torchscript":
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter(
                "ignore", FutureWarning
            )  # TorchScript is deprecated, still served
            traced = torch.jit.trace(module, examples)  # type: ignore[no-untyped-call]
            torch.jit.save(traced, str(path))
        return
    dynamic: tuple[dict[int, Any], ...] | None = None
    if max_batch_size > 1:
        batch = torch.export.Dim("batch", min=1, max=max_batch_size)
        dynamic = tuple({0: batch} for _ in examples)
    program = torch.export.export(module, examples, dynamic_shapes=dynamic)
    torch.export.save(program, str(path))


def write_model_repository(
    root: Path,
    model: str,
    kind: str,
    *,
    max_batch_size: int,
    max_queue_delay_ms: float,
    fmt: Format = "torchscript",
    preferred_batch_sizes: Sequence[int] = (),
    adaptive_delay: bool = True,
    instance_count: int = 1,
    load_shedding: Mapping[str, Any] | None = None,
    request_timeout_ms: float | None = None,
    sha256: str | bool | None = None,
    version: str = "1",
    seed: int = 0,
    extra_config: Mapping[str, Any] | None = None,
) -> ModelSpec:
    """Export the `kind` model to `root/model/version/` and write `root/model/config.json`.

    `sha256=True` pins the exported file's real digest; a string pins that digest (tests use a
    wrong one to check that the server refuses to load).
    """
    inputs, outputs = tensor_infos(kind)
    model_dir = root / model
    model_file = model_dir / version / MODEL_FILENAMES[fmt]
    export_model(kind, fmt, model_file, max_batch_size=max_batch_size, seed=seed)
    config: dict[str, Any] = {
        "name": model,
        "format": fmt,
        "max_batch_size": max_batch_size,
        "inputs": [
            {"name": i.name, "datatype": i.datatype, "shape": list(i.shape)} for i in inputs
        ],
        "outputs": [
            {"name": o.name, "datatype": o.datatype, "shape": list(o.shape)} for o in outputs
        ],
        "instance_count": instance_count,
    }
    if max_batch_size > 0:
        config["dynamic_batching"] = {
            "max_queue_delay_ms": max_queue_delay_ms,
            "preferred_batch_sizes": list(preferred_batch_sizes),
            "adaptive_delay": adaptive_delay,
        }
    if load_shedding is not None:
        config["load_shedding"] = dict(load_shedding)
    if request_timeout_ms is not None:
        config["request_timeout_ms"] = request_timeout_ms
    if sha256 is True:
        config["sha256"] = sha256_of(model_file)
    elif isinstance(sha256, str):
        config["sha256"] = sha256
    if extra_config:
        config.update(extra_config)
    (model_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return ModelSpec(model, kind, inputs, outputs, model_dir, model_file, config)


READY_PREFIX = "davit-runtime ready "


@dataclass
class RunningServer:
    process: subprocess.Popen[str]
    http: str  # host:port
    grpc: str
    log: Path

    def samples(self, name: str) -> Samples:
        """Current values of one metric from /metrics, keyed by sorted labels."""
        return metric_samples(self.http, name)

    def metric(self, name: str, **labels: str) -> float:
        return self.samples(name).get(tuple(sorted(labels.items())), 0.0)

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)


def launch_server(
    repository: Path, log: Path, *extra: str, ready_timeout_s: float = 120.0
) -> RunningServer:
    """Start `davit-runtime serve` on random loopback ports and wait for its ready line."""
    command = [
        sys.executable, "-m", "davit_runtime", "serve", "--model-repository", str(repository),
        "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0", "--torch-threads", "1",
        "--cache-dir", str(log.parent / "model-cache"), *extra,
    ]  # fmt: skip
    log_handle = log.open("w")
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=log_handle, text=True, env=dict(os.environ)
    )
    log_handle.close()
    fields = await_ready_line(process, READY_PREFIX, ready_timeout_s, log, "the server")
    return RunningServer(process, fields["http"], fields["grpc"], log)
