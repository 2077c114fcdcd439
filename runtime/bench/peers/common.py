"""What every peer server shares: its arguments, the TorchScript forward and a batch counter.

Runs inside the peer venvs (numpy and torch only). The batch counter is a two-slot int64 file
mapping (batches, samples) that the bench reads before and after each load point, so every peer
reports its mean batch size the same way, at the cost of two memory writes per forward.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class PeerArgs:
    model_file: Path
    model_name: str
    input_name: str
    output_name: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    http_port: int
    grpc_port: int
    metrics_port: int
    threads: int
    max_batch_size: int
    max_queue_delay_ms: float
    counter_file: Path
    work_dir: Path


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


def parse_args(argv: Sequence[str] | None = None) -> PeerArgs:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-file", type=Path, required=True)
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--input-name", required=True)
    parser.add_argument("--output-name", required=True)
    parser.add_argument("--input-shape", type=_shape, required=True)
    parser.add_argument("--output-shape", type=_shape, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, required=True)
    parser.add_argument("--max-queue-delay-ms", type=float, required=True)
    parser.add_argument("--counter-file", type=Path, required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    ns = parser.parse_args(argv)
    return PeerArgs(**vars(ns))


class BatchCounter:
    def __init__(self, path: Path) -> None:
        path.write_bytes(np.zeros(2, dtype=np.int64).tobytes())
        self._slots = np.memmap(path, dtype=np.int64, mode="r+", shape=(2,))

    def add(self, batch_size: int) -> None:
        self._slots[0] += 1
        self._slots[1] += batch_size


class TorchForward:
    """The served computation: the same TorchScript file Davit serves."""

    def __init__(self, args: PeerArgs) -> None:
        torch.set_num_threads(args.threads)
        warnings.filterwarnings("ignore", category=FutureWarning)
        self._module = torch.jit.load(str(args.model_file)).eval()  # type: ignore[no-untyped-call]
        self._counter = BatchCounter(args.counter_file)
        with torch.inference_mode():  # one warm-up call so the first request is not an outlier
            self._module(torch.zeros((1, *args.input_shape)))

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        self._counter.add(int(inputs.shape[0]))
        with torch.inference_mode():
            result: np.ndarray = self._module(torch.from_numpy(inputs)).numpy()
        return result
