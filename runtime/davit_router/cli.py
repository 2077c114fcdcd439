"""`davit-router serve --configmap NAME` (in a cluster) or `--config router.json`: the router in
front of a model's revisions."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from davit_router.config import ConfigError
from davit_router.kubeapi import (
    AccessError,
    ClusterAccess,
    from_kubeconfig,
    in_cluster,
    in_cluster_namespace,
)
from davit_router.server import (
    ADMIN_PREFIX,
    READY_PREFIX,
    ConfigFile,
    ConfigMapSource,
    DiscoverySettings,
    RouterServer,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="davit-router", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="route requests by the configuration")
    source = serve.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--configmap",
        metavar="NAME",
        help="read the configuration from this ConfigMap's router.json in --namespace, "
        "watched through the API (the operator's `<model>-router`)",
    )
    source.add_argument(
        "--config", type=Path, metavar="FILE", help="read the JSON configuration from a file"
    )
    serve.add_argument(
        "--host",
        default="",
        help="address to listen on (default: every interface, IPv4 and IPv6)",
    )
    serve.add_argument("--port", type=int, default=8080, help="traffic port (0: any free)")
    serve.add_argument(
        "--admin-port",
        type=int,
        default=9090,
        help="metrics, figures, health and config port (0: any free)",
    )
    serve.add_argument(
        "--grpc-port", type=int, default=8081, help="gRPC traffic port (0: any free; -1: none)"
    )
    serve.add_argument(
        "--reload-seconds",
        type=float,
        default=1.0,
        help="how often the configuration file is checked for a change (with --config)",
    )
    serve.add_argument(
        "--namespace",
        help="the namespace of the ConfigMap and the revisions' Services "
        "(default: the pod's own, else default)",
    )
    serve.add_argument(
        "--kubeconfig",
        type=Path,
        help="reach the API server as this kubeconfig says (default: in-cluster)",
    )
    serve.add_argument(
        "--drain-seconds",
        type=float,
        default=5.0,
        help="after SIGTERM, serve on this long (not ready) while the pod leaves the "
        "Service's endpoints, then finish the requests in flight",
    )
    serve.add_argument("--log-level", default="INFO")  # fmt: skip
    return parser.parse_args(argv)


def discovery_settings(args: argparse.Namespace) -> DiscoverySettings:
    """Where the ConfigMap and the revisions' Services are watched, by the flags (the access is
    read only once the API is needed)."""
    kubeconfig: Path | None = args.kubeconfig

    def access() -> ClusterAccess:
        if kubeconfig is not None:
            return from_kubeconfig(kubeconfig)
        return in_cluster(os.environ)

    return DiscoverySettings(args.namespace or in_cluster_namespace() or "default", access)


async def serve(args: argparse.Namespace) -> None:
    source: ConfigFile | ConfigMapSource = (
        ConfigMapSource(args.configmap)
        if args.configmap is not None
        else ConfigFile(args.config, args.reload_seconds)
    )
    server = RouterServer(
        source,
        host=args.host,
        port=args.port,
        admin_port=args.admin_port,
        grpc_port=None if args.grpc_port < 0 else args.grpc_port,
        discovery=discovery_settings(args),
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    # Where to ask /readyz while the first configuration is awaited (the router logs why).
    shown = args.host or "*"
    print(f"{ADMIN_PREFIX}admin={shown}:{await server.open_admin()}", flush=True)
    starting = asyncio.ensure_future(server.start())
    stopped = asyncio.ensure_future(stopping.wait())
    await asyncio.wait([starting, stopped], return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():  # a stop while it waits for its first configuration
        starting.cancel()
        await server.stop()  # nothing routed yet: nothing to drain
        return
    ports = starting.result()
    # Tests and scripts wait for this line to know the (possibly random) ports.
    line = f"{READY_PREFIX}http={shown}:{ports.http} admin={shown}:{ports.admin}"
    if ports.grpc is not None:
        line += f" grpc={shown}:{ports.grpc}"
    print(line, flush=True)
    await stopped
    await server.stop(args.drain_seconds)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    try:
        asyncio.run(serve(args))
    except (ConfigError, AccessError) as error:
        print(f"davit-router: {error}", file=sys.stderr)
        sys.exit(2)
