"""Triton Inference Server through nvidia-pytriton, with Triton's dynamic batcher."""

from __future__ import annotations

import shutil

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from bench.peers.common import TorchForward, parse_args


def main() -> None:
    args = parse_args()
    forward = TorchForward(args)

    @batch  # type: ignore[untyped-decorator]
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        return {args.output_name: forward(inputs[args.input_name])}

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        log_verbose=0,
    )
    # PyTriton refuses an existing workspace, and a killed run leaves one behind.
    workspace = args.work_dir / "pytriton-workspace"
    shutil.rmtree(workspace, ignore_errors=True)
    with Triton(config=config, workspace=str(workspace)) as triton:
        triton.bind(
            model_name=args.model_name,
            infer_func=infer,
            inputs=[Tensor(name=args.input_name, dtype=np.float32, shape=args.input_shape)],
            outputs=[Tensor(name=args.output_name, dtype=np.float32, shape=args.output_shape)],
            config=ModelConfig(
                max_batch_size=args.max_batch_size,
                batcher=DynamicBatcher(
                    max_queue_delay_microseconds=int(args.max_queue_delay_ms * 1000)
                ),
            ),
            strict=False,
        )
        triton.serve()


if __name__ == "__main__":
    main()
