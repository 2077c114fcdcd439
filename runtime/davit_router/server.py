"""The router process: client connections in, the configuration file watched, an admin port.

Client connections are HTTP/1.1 with keep-alive (connection.py: pipelined requests answered in
order) and, on `grpc_port`, gRPC (grpc_front.py). The admin port serves `/metrics`
(Prometheus), `/figures?window=30s` (each revision's requests, errors and latency quantiles over
that window: the builtin analysis source), `/healthz` and `/config` (the configuration in force,
as JSON), apart from the model's traffic so that a model path can never shadow them.

The configuration file is checked every `reload_seconds` (a mounted ConfigMap changes by a
symlink swap, which inotify on the file would miss) and on SIGHUP. A new one applies from the
next request without dropping those in flight; one that does not parse is logged, and the
router keeps the one it has.

Where revisions name a Service, the configuration in force is the file's with the endpoints
that discovery found put in (discovery.py); discovery runs only while some revision names one,
and `/config` shows the endpoints in force, whichever way they came.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import grpc
import orjson

from davit_router.config import ConfigError, load
from davit_router.connection import ClientConnection, Connections, Handler
from davit_router.discovery import (
    AccessError,
    ClusterAccess,
    Endpoints,
    EndpointSliceWatcher,
    KubeClient,
    discovered_config,
)
from davit_router.grpc_front import GrpcFront
from davit_router.http1 import (
    Request,
    Response,
)
from davit_router.metrics import CONTENT_TYPE, RouterMetrics
from davit_router.router import Router

logger = logging.getLogger(__name__)

READY_PREFIX = "davit-router ready "
_JSON = [(b"content-type", b"application/json")]


@dataclass(frozen=True)
class DiscoverySettings:
    """Where the revisions' Services are (`namespace`) and how to reach the API server;
    `access` is called when discovery first starts, so a router without a Service in its
    configuration never needs a cluster."""

    namespace: str
    access: Callable[[], ClusterAccess]


@dataclass(frozen=True)
class Ports:
    http: int
    admin: int
    grpc: int | None  # None: no gRPC listener


def parse_window(text: str) -> float | None:
    """Seconds in a duration such as `30s`, `2m`, `500ms` or `45` (seconds); None if it is not
    one."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", text.strip())
    if match is None:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match.group(2)]
    return float(match.group(1)) * scale


def _json(status: int, document: object) -> Response:
    return Response(status, list(_JSON), orjson.dumps(document))


class RouterServer:
    def __init__(
        self,
        config_path: Path,
        *,
        host: str,
        port: int,
        admin_port: int,
        grpc_port: int | None = None,
        reload_seconds: float = 1.0,
        max_body: int = 64 << 20,
        idle_seconds: float = 120.0,
        discovery: DiscoverySettings | None = None,
    ) -> None:
        self._config_path = config_path
        self._host, self._port, self._admin_port = host, port, admin_port
        self._grpc_port = grpc_port
        self._reload_seconds = reload_seconds
        self._max_body = max_body
        self.metrics = RouterMetrics()
        self._file_config = load(config_path)  # a bad first file: exit
        self._discovery = discovery
        self._client: KubeClient | None = None
        self._found: dict[str, Endpoints] = {}  # by Service, from the watcher in force
        self._watched: frozenset[str] = frozenset()
        self._watcher: asyncio.Task[None] | None = None
        self.router = Router(self._file_config, self.metrics)
        self._config_stamp = self._stamp()
        self._servers: list[asyncio.Server] = []
        self._connections = Connections()
        self._idle_seconds = idle_seconds
        self._grpc_front: GrpcFront | None = None
        self._grpc_server: grpc.aio.Server | None = None
        self._background: set[asyncio.Task[None]] = set()

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(self._config_path)
        except OSError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def reload(self) -> None:
        """Apply the file's configuration if it changed and parses; else keep the current."""
        stamp = self._stamp()
        if stamp == self._config_stamp:
            return
        self._config_stamp = stamp
        try:
            config = load(self._config_path)
        except ConfigError as error:
            logger.error("configuration not applied, keeping the current one: %s", error)
            return
        self._file_config = config
        try:
            self._follow_services()
        except (ConfigError, AccessError) as error:
            logger.error("endpoint discovery not started, static endpoints in force: %s", error)
        if self._apply():
            weights = ", ".join(f"{name} {weight}" for name, weight in config.weights)
            logger.info("configuration applied: %s", weights)

    def _apply(self) -> bool:
        """Put the file's configuration with the endpoints found in force, if it changed."""
        config = discovered_config(self._file_config, self._found)
        if config == self.router.config:
            return False
        self.router.configure(config)
        self._prune_channels()
        return True

    def _discovered(self, found: dict[str, Endpoints]) -> None:
        self._found = found
        self._apply()

    def _follow_services(self) -> None:
        """Watch the Services the configuration names now: a new watcher when they changed
        (one LIST + WATCH for them all), none when no revision names one. AccessError (or
        ConfigError, with no discovery settings) when some do and the API server cannot be
        reached as told; the Services are then tried again at the next configuration."""
        services = self._file_config.services
        if services == self._watched:
            return
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        # What was found for a Service still named stays until the new watcher lists it.
        self._found = {s: e for s, e in self._found.items() if s in services}
        if not services:
            self._watched = services
            return
        if self._discovery is None:
            raise ConfigError("revisions name a Service, and this router has no discovery")
        if self._client is None:
            self._client = KubeClient(self._discovery.access())
        self._watched = services
        watcher = EndpointSliceWatcher(
            self._client, self._discovery.namespace, services, self._discovered
        )
        self._watcher = asyncio.get_running_loop().create_task(watcher.run())
        logger.info(
            "watching the EndpointSlices of %s in namespace %s",
            ", ".join(sorted(services)),
            self._discovery.namespace,
        )

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._reload_seconds)
            self.reload()

    async def start(self) -> Ports:
        """Listen; the bound ports (0 asks for any free one). AccessError or ConfigError
        when a revision names a Service and the API server cannot be reached as told."""
        self._follow_services()
        loop = asyncio.get_running_loop()
        traffic = await loop.create_server(
            lambda: self._connection(self.router.handle), self._host, self._port, backlog=1024
        )
        admin = await loop.create_server(
            lambda: self._connection(self._admin), self._host, self._admin_port
        )
        self._servers = [traffic, admin]
        grpc_bound = None
        if self._grpc_port is not None:
            self._grpc_front = GrpcFront(self.router)
            self._grpc_server = grpc.aio.server()
            self._grpc_server.add_generic_rpc_handlers((self._grpc_front,))
            grpc_bound = self._grpc_server.add_insecure_port(f"{self._host}:{self._grpc_port}")
            await self._grpc_server.start()
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        self._reloader = asyncio.create_task(self._watch())
        return Ports(
            traffic.sockets[0].getsockname()[1], admin.sockets[0].getsockname()[1], grpc_bound
        )

    def _prune_channels(self) -> None:
        if self._grpc_front is not None:
            task = asyncio.get_running_loop().create_task(self._grpc_front.prune())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def stop(self) -> None:
        """Stop accepting; close idle connections at once and let requests in flight finish
        (up to the model's timeout), answered with `connection: close`."""
        self._reloader.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
        for server in self._servers:
            server.close()
        grace = self.router.config.timeout_ms / 1000
        if self._grpc_server is not None:
            await self._grpc_server.stop(grace)
        await self._connections.stop(grace)
        if self._grpc_front is not None:
            await self._grpc_front.close()
        self.router.close()

    def _connection(self, handle: Handler) -> ClientConnection:
        return ClientConnection(
            handle, self._connections, max_body=self._max_body, idle_seconds=self._idle_seconds
        )

    async def _admin(self, request: Request) -> Response:
        path = request.target.split(b"?", 1)[0]
        if path == b"/metrics":
            for name, phase in self.router.breaker_phases().items():
                self.metrics.breaker_open.labels(name).set(phase != "closed")
            return Response(200, [(b"content-type", CONTENT_TYPE.encode())], self.metrics.render())
        if path == b"/figures":
            return self._figures(request.target)
        if path == b"/healthz":
            return _json(200, {"status": "ok"})
        if path == b"/config":
            return _json(200, asdict(self.router.config))
        return _json(404, {"error": f"no {path.decode('latin-1')} here"})

    def _figures(self, target: bytes) -> Response:
        query = parse_qs(urlsplit(target.decode("latin-1")).query)
        raw = (query.get("window") or ["30s"])[-1]
        window = parse_window(raw)
        horizon = self.router.ledger.horizon_seconds
        if window is None or not 0 < window <= horizon:
            message = f"window {raw!r}: expected a duration up to {horizon}s, such as 30s or 2m"
            return _json(400, {"error": message})
        revisions = {
            name: {
                "requests": f.requests,
                "errors": f.errors,
                "errorRate": f.error_rate,
                "p50Ms": f.p50_ms,
                "p99Ms": f.p99_ms,
            }
            for name, f in self.router.figures(window).items()
        }
        return _json(200, {"windowSeconds": window, "revisions": revisions})
