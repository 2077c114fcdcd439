"""The ceiling: the same TorchScript forward called in a loop, no server, in its own process.

`python -m bench.rawtorch --model-file F --input-shape 512 --threads 1 --batches 1,8 --duration 3`
prints one JSON object per batch size.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from bench.stats import percentile


def measure(
    module: torch.jit.ScriptModule, inputs: torch.Tensor, duration_s: float
) -> dict[str, float]:
    with torch.inference_mode():
        for _ in range(5):
            module(inputs)
        latencies: list[float] = []
        started = time.perf_counter()
        deadline = started + duration_s
        now = started
        while now < deadline:
            before = time.perf_counter()
            module(inputs)
            now = time.perf_counter()
            latencies.append(now - before)
    elapsed = now - started
    latencies.sort()
    batch = int(inputs.shape[0])
    return {
        "batch": batch,
        "samples_per_s": batch * len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "calls": len(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-file", type=Path, required=True)
    parser.add_argument("--input-shape", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--batches", required=True)
    parser.add_argument("--duration", type=float, required=True)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(args.threads)
    module = torch.jit.load(str(args.model_file)).eval()  # type: ignore[no-untyped-call]
    shape = tuple(int(d) for d in args.input_shape.split(","))
    rng = np.random.default_rng(0)
    for batch in (int(b) for b in args.batches.split(",")):
        inputs = torch.from_numpy(rng.standard_normal((batch, *shape)).astype(np.float32))
        print(json.dumps({"threads": args.threads, **measure(module, inputs, args.duration)}))


if __name__ == "__main__":
    main()
