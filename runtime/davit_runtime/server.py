"""Process lifecycle: load and warm models, serve HTTP and gRPC, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from davit_runtime.backends import (
    RuntimeOptions,
    build_runner,
    configure_torch_threads,
    warm_up,
)
from davit_runtime.batching import Batcher, BatchPolicy
from davit_runtime.config import ModelConfig
from davit_runtime.errors import ModelLoadError
from davit_runtime.grpc_server import GrpcApp
from davit_runtime.http_server import HttpApp
from davit_runtime.inference import ServedModel
from davit_runtime.metrics import Metrics
from davit_runtime.repository import ModelSource, scan_repository
from davit_runtime.state import RuntimeState

PLATFORMS = {"torchscript": "pytorch_libtorch", "pt2": "torch_export", "onnx": "onnxruntime_onnx"}


@dataclass(frozen=True)
class ServeOptions:
    model_repository: Path
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int | None = 8001  # None: no gRPC endpoint
    torch_threads: int | None = None
    max_body_bytes: int = 64 << 20
    cache_dir: Path = Path(".cache/davit-runtime")
    drain_timeout_s: float = 30.0
    # Where a refusal to serve is written for the orchestrator (Kubernetes' termination message).
    termination_log: Path | None = None


def batch_policy(config: ModelConfig) -> BatchPolicy:
    return BatchPolicy(
        max_batch_size=config.max_batch_size,
        max_queue_delay_s=config.batching.max_queue_delay_ms / 1000.0,
        preferred_batch_sizes=config.batching.preferred_batch_sizes,
        adaptive_delay=config.batching.adaptive_delay,
        max_queue=config.shedding.max_queue,
        max_in_flight=config.shedding.max_in_flight,
        queue_timeout_s=config.shedding.queue_timeout_ms / 1000.0,
        request_timeout_s=config.request_timeout_ms / 1000.0,
    )


def load_model(
    source: ModelSource,
    options: RuntimeOptions,
    metrics: Metrics,
    loop: asyncio.AbstractEventLoop,
) -> ServedModel:
    """Build the runner, warm every batch size and start the executor threads (blocking)."""
    config = source.config
    configure_torch_threads(options.torch_threads)
    runner = build_runner(source.path, source.format, config, options)
    if config.warmup:
        with torch.inference_mode():
            warm_up(runner, config)
    holder: list[ServedModel] = []

    def queue_depth() -> float:
        return float(holder[0].batcher.queue_depth) if holder else 0.0

    def inflight() -> float:
        return float(holder[0].batcher.in_flight) if holder else 0.0

    model_metrics = metrics.for_model(config.name, queue_depth, inflight)
    batcher = Batcher(
        config.name,
        batch_policy(config),
        [runner] * config.instance_count,
        loop,
        observe_batch=model_metrics.observe_batch,
        thread_init=lambda: configure_torch_threads(options.torch_threads),
    )
    served = ServedModel(config, source.version, batcher, model_metrics)
    served.platform = PLATFORMS[source.format]
    holder.append(served)
    return served


# Kubernetes keeps at most 4 KiB of a termination message.
TERMINATION_MESSAGE_LIMIT = 4096


def write_termination_message(path: Path | None, message: str) -> None:
    """Best effort: an unwritable path must not hide the refusal (stderr has it too)."""
    if path is None:
        return
    try:
        path.write_text(message.encode()[:TERMINATION_MESSAGE_LIMIT].decode(errors="ignore"))
    except OSError as error:
        print(f"davit-runtime: cannot write {path}: {error}", file=sys.stderr, flush=True)


async def serve(options: ServeOptions, *, announce: bool = True) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit status."""
    loop = asyncio.get_running_loop()
    state = RuntimeState(metrics=Metrics(), max_body_bytes=options.max_body_bytes)
    runtime_options = RuntimeOptions(options.torch_threads, options.cache_dir)
    configure_torch_threads(options.torch_threads)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    http = HttpApp(state, loop)
    grpc_app = GrpcApp(state) if options.grpc_port is not None else None
    try:
        http_port = await http.start(options.host, options.http_port)
        grpc_port = (
            await grpc_app.start(options.host, options.grpc_port)
            if grpc_app is not None and options.grpc_port is not None
            else None
        )
    except OSError as error:
        print(f"davit-runtime: cannot listen: {error}", file=sys.stderr, flush=True)
        return 2

    try:
        sources = await asyncio.to_thread(
            scan_repository, options.model_repository, options.cache_dir
        )
        for source in sources:
            served = await asyncio.to_thread(
                load_model, source, runtime_options, state.metrics, loop
            )
            state.models[served.name] = served
            served.ready = True
    except ModelLoadError as error:
        print(f"davit-runtime: refusing to serve: {error}", file=sys.stderr, flush=True)
        write_termination_message(options.termination_log, f"refusing to serve: {error}")
        await _shutdown(state, http, grpc_app, 0.0)
        return 1
    state.ready = True
    if announce:
        grpc_text = f"{options.host}:{grpc_port}" if grpc_port is not None else "off"
        print(f"davit-runtime ready http={options.host}:{http_port} grpc={grpc_text}", flush=True)

    await stop.wait()
    drained = await _shutdown(state, http, grpc_app, options.drain_timeout_s)
    return 0 if drained else 1


async def _shutdown(
    state: RuntimeState, http: HttpApp, grpc_app: GrpcApp | None, timeout_s: float
) -> bool:
    """Stop accepting, report not ready, finish in-flight requests, stop executor threads."""
    state.draining = True
    http.stop_accepting()
    grpc_stopping = (
        asyncio.ensure_future(grpc_app.stop(timeout_s)) if grpc_app is not None else None
    )
    results = await asyncio.gather(*(m.batcher.drain(timeout_s) for m in state.models.values()))
    http.close_idle_connections()
    if grpc_stopping is not None:
        await grpc_stopping
    for model in state.models.values():
        await asyncio.to_thread(model.batcher.stop)
    return all(results)
