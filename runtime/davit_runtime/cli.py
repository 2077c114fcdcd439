"""`davit-runtime serve --model-repository DIR ...`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from davit_runtime.server import ServeOptions, serve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="davit-runtime", description="Davit inference runtime (Open Inference Protocol v2)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve a model repository over HTTP and gRPC")
    run.add_argument("--model-repository", type=Path, required=True, help="repository root")
    run.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    run.add_argument("--http-port", type=int, default=8000, help="0 picks a free port")
    run.add_argument(
        "--grpc-port", type=int, default=8001, help="0 picks a free port, -1 disables gRPC"
    )
    run.add_argument(
        "--torch-threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    run.add_argument(
        "--max-body-bytes", type=int, default=64 << 20, help="largest request body (413 above)"
    )
    run.add_argument(
        "--cache-dir", type=Path, default=Path(".cache/davit-runtime"),
        help="where models fetched from http(s)/s3 URIs are kept",
    )  # fmt: skip
    run.add_argument(
        "--drain-timeout", type=float, default=30.0,
        help="seconds to finish in-flight requests after SIGTERM",
    )  # fmt: skip
    run.add_argument(
        "--termination-log", type=Path, default=None,
        help="write why the runtime refused to serve here (Kubernetes: /dev/termination-log)",
    )  # fmt: skip
    run.add_argument(
        "--no-uvloop", action="store_true", help="use asyncio's default event loop instead"
    )
    return parser


def options_from_args(args: argparse.Namespace) -> ServeOptions:
    if args.torch_threads is not None and args.torch_threads < 1:
        raise SystemExit("davit-runtime: --torch-threads must be >= 1")
    return ServeOptions(
        model_repository=args.model_repository,
        host=args.host,
        http_port=args.http_port,
        grpc_port=None if args.grpc_port < 0 else args.grpc_port,
        torch_threads=args.torch_threads,
        max_body_bytes=args.max_body_bytes,
        cache_dir=args.cache_dir,
        drain_timeout_s=args.drain_timeout,
        termination_log=args.termination_log,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = options_from_args(args)
    if args.no_uvloop:
        return asyncio.run(serve(options))
    import uvloop

    return uvloop.run(serve(options))


if __name__ == "__main__":
    sys.exit(main())
