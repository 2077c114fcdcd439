"""Loading models (TorchScript, torch.export .pt2, optional ONNX) and running one batch.

A runner takes numpy arrays in the config's input order and returns numpy arrays in the config's
output order. It runs on an executor thread, never on the event loop.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from davit_runtime.batching import Arrays
from davit_runtime.config import ModelConfig, TensorSpec
from davit_runtime.datatypes import DATATYPES
from davit_runtime.errors import ModelLoadError

# Request tensors are views of received bytes (read-only); models must not write to their inputs.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

_PRECISION_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class RuntimeOptions:
    """Process-wide knobs from the CLI."""

    torch_threads: int | None = None
    cache_dir: Path = Path(".cache/davit-runtime")


def configure_torch_threads(threads: int | None) -> None:
    """Apply the intra-op thread count on the calling thread (OpenMP settings are per thread)."""
    if threads is not None:
        torch.set_num_threads(threads)


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' requested but no CUDA device is available")
    return torch.device(requested)


def example_inputs(specs: Sequence[TensorSpec], batch_size: int | None) -> Arrays:
    """Zero tensors matching the specs (-1 dims become 1), with a leading batch dim if given."""
    arrays: Arrays = []
    for spec in specs:
        dims = [1 if d == -1 else d for d in spec.shape]
        if batch_size is not None:
            dims = [batch_size, *dims]
        arrays.append(np.zeros(dims, dtype=DATATYPES[spec.datatype].numpy))
    return arrays


class TorchRunner:
    """Runs a torch module under inference_mode, with optional reduced precision and CUDA graphs."""

    def __init__(self, module: Callable[..., Any], config: ModelConfig, device: torch.device):
        self._module = module
        self._config = config
        self._device = device
        self._compute_dtype = _PRECISION_DTYPES.get(config.precision)
        self._output_dtypes = [
            torch.from_numpy(np.empty(0, DATATYPES[s.datatype].numpy)).dtype for s in config.outputs
        ]
        self._graphs: dict[int, _CapturedGraph] = {}

    def _to_tensor(self, array: np.ndarray[Any, Any]) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if self._device.type != "cpu":
            tensor = tensor.to(self._device, non_blocking=True)
        if self._compute_dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(self._compute_dtype)
        return tensor

    def _to_numpy(self, outputs: Any) -> Arrays:
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        elif isinstance(outputs, dict):
            outputs = tuple(outputs[s.name] for s in self._config.outputs)
        if len(outputs) != len(self._output_dtypes):
            raise RuntimeError(
                f"model returned {len(outputs)} outputs; config declares {len(self._output_dtypes)}"
            )
        arrays: Arrays = []
        for tensor, dtype in zip(outputs, self._output_dtypes, strict=True):
            if tensor.dtype != dtype:  # reduced precision inside, declared type outside
                tensor = tensor.to(dtype)
            arrays.append(tensor.detach().to("cpu").contiguous().numpy())
        return arrays

    def __call__(self, inputs: Arrays) -> Arrays:
        with torch.inference_mode():
            if self._graphs:
                batch = inputs[0].shape[0]
                graph = self._graphs.get(batch)
                if graph is not None:
                    return self._to_numpy(graph.replay([self._to_tensor(a) for a in inputs]))
            return self._to_numpy(self._module(*[self._to_tensor(a) for a in inputs]))

    def capture_cuda_graphs(self, batch_sizes: Sequence[int]) -> None:
        """Capture one CUDA graph per batch size (GPU only; requests of other sizes run eagerly)."""
        with torch.inference_mode():
            for size in batch_sizes:
                static = [self._to_tensor(a) for a in example_inputs(self._config.inputs, size)]
                self._graphs[size] = _CapturedGraph(self._module, static)


class _CapturedGraph:
    def __init__(self, module: Callable[..., Any], static_inputs: list[torch.Tensor]) -> None:
        self._inputs = static_inputs
        stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                module(*static_inputs)
        torch.cuda.current_stream().wait_stream(stream)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._outputs = module(*static_inputs)

    def replay(self, inputs: list[torch.Tensor]) -> Any:
        for static, new in zip(self._inputs, inputs, strict=True):
            static.copy_(new, non_blocking=True)
        self._graph.replay()
        outputs = self._outputs
        if isinstance(outputs, torch.Tensor):
            return outputs.clone()
        return type(outputs)(o.clone() for o in outputs)


class OnnxRunner:
    """Runs an onnxruntime session (imported lazily; optional)."""

    def __init__(self, path: Path, config: ModelConfig, threads: int | None) -> None:
        try:
            ort: Any = importlib.import_module("onnxruntime")
        except ImportError:
            raise ModelLoadError(f"{path}: ONNX models need onnxruntime installed") from None
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input_names = [s.name for s in config.inputs]
        self._output_names = [s.name for s in config.outputs]

    def __call__(self, inputs: Arrays) -> Arrays:
        feed = dict(zip(self._input_names, inputs, strict=True))
        return list(self._session.run(self._output_names, feed))


def load_torch_module(path: Path, fmt: str, device: torch.device) -> Callable[..., Any]:
    try:
        if fmt == "torchscript":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # deprecated, still supported
                scripted: Any = torch.jit.load(  # type: ignore[no-untyped-call]
                    str(path), map_location=device
                )
            scripted.eval()
            return cast(Callable[..., Any], scripted)
        program = torch.export.load(str(path))
        return program.module().to(device)
    except Exception as error:
        raise ModelLoadError(f"{path}: could not load {fmt} model: {error}") from error


def build_runner(path: Path, fmt: str, config: ModelConfig, options: RuntimeOptions) -> RunnerFn:
    """Load the model file and return a callable running one batch."""
    if fmt == "onnx":
        if config.precision != "fp32" or config.compile or config.cuda_graphs:
            raise ModelLoadError(
                f"{config.name}: precision/compile/cuda_graphs need a torch format"
            )
        return OnnxRunner(path, config, options.torch_threads)
    device = resolve_device(config.device)
    module = load_torch_module(path, fmt, device)
    compute_dtype = _PRECISION_DTYPES.get(config.precision)
    if compute_dtype is not None:
        module = module.to(compute_dtype)  # type: ignore[attr-defined]
    if config.compile:
        if fmt != "pt2":
            raise ModelLoadError(f"{config.name}: 'compile' needs a torch.export (.pt2) model")
        module = torch.compile(module, dynamic=config.batches)
    runner = TorchRunner(module, config, device)
    if config.cuda_graphs:
        if device.type != "cuda":
            raise ModelLoadError(f"{config.name}: 'cuda_graphs' needs device cuda")
        if config.instance_count != 1:
            raise ModelLoadError(f"{config.name}: 'cuda_graphs' supports instance_count 1 only")
        runner.capture_cuda_graphs(warmup_batch_sizes(config))
    return runner


RunnerFn = Callable[[Arrays], Arrays]


def warmup_batch_sizes(config: ModelConfig) -> list[int]:
    """Every batch size the dynamic batcher can form (1..max_batch_size)."""
    return list(range(1, config.max_batch_size + 1)) if config.batches else []


def warm_up(runner: RunnerFn, config: ModelConfig) -> int:
    """Run every batch size once so allocations and kernel selection happen before readiness."""
    if not config.batches:
        runner(example_inputs(config.inputs, None))
        return 1
    sizes = warmup_batch_sizes(config)
    for size in sizes:
        runner(example_inputs(config.inputs, size))
    return len(sizes)
