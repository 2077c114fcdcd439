"""The router process: client connections in, its configuration followed, an admin port.

Client connections are HTTP/1.1 with keep-alive (connection.py: pipelined requests answered in
order) and, on `grpc_port`, gRPC (grpc_front.py). The admin port serves, apart from the model's
traffic so that a model path can never shadow them:
- `/metrics` (Prometheus);
- `/figures?window=30s[&end=UNIX]`: each revision's requests, errors, latency quantiles and
  histogram over that window, ending now or at `end` (the builtin analysis source);
- `/healthz` (the process answers) and `/readyz` (it can route: a configuration is in force
  and discovery has listed the Services it names);
- `/config`: the configuration in force, as JSON.

The configuration comes from one of two sources:
- `ConfigMapSource`, in a cluster: the operator's ConfigMap, watched through the API
  (configmap.py), so a rollout step is in force within a watch event's delay. Until the first
  usable one arrives only the admin port listens (not ready);
- `ConfigFile`, for the process tests and a static setup: a file checked every
  `reload_seconds` (a rename swaps it whole) and on SIGHUP.

A new configuration applies from the next request without dropping those in flight; one that
does not parse is logged, and the router keeps the one it has.

Where revisions name a Service, the configuration in force is the given one with the endpoints
that discovery found put in (discovery.py); discovery runs only while some revision names one,
and `/config` shows the endpoints in force, whichever way they came.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import orjson

from davit_router.config import ConfigError, RouterConfig, load
from davit_router.configmap import ConfigMapWatcher
from davit_router.connection import ClientConnection, Connections, Handler
from davit_router.discovery import Endpoints, EndpointSliceWatcher, discovered_config
from davit_router.grpc_front import GrpcFront
from davit_router.hostport import host_port
from davit_router.http1 import Request, Response
from davit_router.kubeapi import AccessError, ClusterAccess, KubeClient
from davit_router.metrics import CONTENT_TYPE, RouterMetrics
from davit_router.router import Router
from davit_runtime.metrics import LATENCY_BUCKETS

logger = logging.getLogger(__name__)

READY_PREFIX = "davit-router ready "
ADMIN_PREFIX = "davit-router admin "  # printed once the admin port listens, before any wait
_JSON = [(b"content-type", b"application/json")]


@dataclass(frozen=True)
class DiscoverySettings:
    """The namespace of the router's ConfigMap and the revisions' Services, and how to reach
    the API server; `access` is called when the API is first needed, so a router configured by
    a file without a Service in it never needs a cluster."""

    namespace: str
    access: Callable[[], ClusterAccess]


@dataclass(frozen=True)
class ConfigFile:
    """The configuration in the file at `path`, checked every `reload_seconds` and on SIGHUP."""

    path: Path
    reload_seconds: float = 1.0


@dataclass(frozen=True)
class ConfigMapSource:
    """The configuration in the ConfigMap `name` of the discovery namespace, watched."""

    name: str


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
        source: ConfigFile | ConfigMapSource,
        *,
        host: str,
        port: int,
        admin_port: int,
        grpc_port: int | None = None,
        max_body: int = 64 << 20,
        idle_seconds: float = 120.0,
        discovery: DiscoverySettings | None = None,
    ) -> None:
        if isinstance(source, ConfigMapSource) and discovery is None:
            raise ConfigError("a ConfigMap source needs the API server (discovery settings)")
        self._source = source
        self._host, self._port, self._admin_port = host, port, admin_port
        self._grpc_port = grpc_port
        self._max_body = max_body
        self.metrics = RouterMetrics()
        # The configuration as given (before discovery puts endpoints in); a bad first file
        # is refused here, and a ConfigMap's first usable configuration is awaited in start.
        self._given: RouterConfig | None = (
            load(source.path) if isinstance(source, ConfigFile) else None
        )
        self._config_stamp = self._stamp()
        self._discovery = discovery
        self._client: KubeClient | None = None
        self._found: dict[str, Endpoints] = {}  # by Service, from the watcher in force
        self._watched: frozenset[str] = frozenset()
        # Whether discovery has listed the Services once: ready from then on, through later
        # changes of the Services named (what was found for those that stay stays in force).
        self._listed_once = False
        self._tasks: dict[str, asyncio.Task[None]] = {}  # the watchers and the reloader
        self._router: Router | None = None  # from the first configuration on
        self._waiting_for = ""  # what the router waits for before it can route
        self._draining = False  # stopping: serving on a little while, no longer ready
        self._servers: list[asyncio.Server] = []
        self._admin_server: asyncio.Server | None = None
        self._connections = Connections()
        self._idle_seconds = idle_seconds
        self._grpc_front: GrpcFront | None = None
        self._grpc_server: grpc.aio.Server | None = None
        self._background: set[asyncio.Task[None]] = set()

    @property
    def router(self) -> Router:
        """The router in force (from `start` on)."""
        if self._router is None:
            raise RuntimeError("the router has no configuration yet: start it first")
        return self._router

    def _stamp(self) -> tuple[int, int, int] | None:
        if not isinstance(self._source, ConfigFile):
            return None
        try:
            stat = os.stat(self._source.path)
        except OSError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def reload(self) -> None:
        """Apply the file's configuration if it changed and parses; else keep the current.
        (A ConfigMap's configuration is followed by its watch, not reloaded.)"""
        if not isinstance(self._source, ConfigFile):
            return
        stamp = self._stamp()
        if stamp == self._config_stamp:
            return
        self._config_stamp = stamp
        try:
            config = load(self._source.path)
        except ConfigError as error:
            logger.error("configuration not applied, keeping the current one: %s", error)
            return
        self._configure(config)

    def _configure(self, config: RouterConfig) -> None:
        """Put `config` (as given) in force: follow the Services it names, and apply it with
        the endpoints found."""
        self._given = config
        try:
            self._follow_services()
        except (ConfigError, AccessError) as error:
            logger.error("endpoint discovery not started, static endpoints in force: %s", error)
        if self._apply():
            weights = ", ".join(f"{name} {weight}" for name, weight in config.weights)
            logger.info("configuration applied: %s", weights)

    def _apply(self) -> bool:
        """Put the given configuration with the endpoints found in force, if it changed."""
        assert self._given is not None
        assert self._router is not None
        config = discovered_config(self._given, self._found)
        if config == self._router.config:
            return False
        self._router.configure(config)
        self._prune_channels()
        return True

    def _discovered(self, found: dict[str, Endpoints]) -> None:
        self._found = found
        self._listed_once = True
        self._apply()

    def _api(self) -> KubeClient:
        if self._discovery is None:
            raise ConfigError("revisions name a Service, and this router has no discovery")
        if self._client is None:
            self._client = KubeClient(self._discovery.access())
        return self._client

    def _run(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` as the task `name`, in place of the one of that name."""
        self._cancel(name)
        self._tasks[name] = asyncio.get_running_loop().create_task(work)

    def _cancel(self, name: str) -> None:
        if (task := self._tasks.pop(name, None)) is not None:
            task.cancel()

    def _follow_services(self) -> None:
        """Watch the Services the configuration names now: a new watcher when they changed
        (one LIST + WATCH for them all), none when no revision names one. AccessError (or
        ConfigError, with no discovery settings) when some do and the API server cannot be
        reached as told; the Services are then tried again at the next configuration."""
        assert self._given is not None
        services = self._given.services
        if services == self._watched:
            return
        self._cancel("slices")
        # What was found for a Service still named stays until the new watcher lists it.
        self._found = {s: e for s, e in self._found.items() if s in services}
        if not services:
            self._watched = services
            return
        client = self._api()
        assert self._discovery is not None  # _api says so
        self._watched = services
        slices = EndpointSliceWatcher(client, self._discovery.namespace, services, self._discovered)
        self._run("slices", slices.run())
        logger.info(
            "watching the EndpointSlices of %s in namespace %s",
            ", ".join(sorted(services)),
            self._discovery.namespace,
        )

    async def _reload_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self.reload()

    async def _first_from(self, source: ConfigMapSource) -> None:
        """Watch the ConfigMap, and wait for its first usable configuration (in `_given`);
        each one after the router is made is put in force as it comes."""
        assert self._discovery is not None
        arrived = asyncio.Event()

        def found(config: RouterConfig) -> None:
            if self._router is None:  # not routing yet: the newest is the one to start with
                self._given = config
                arrived.set()
            else:
                self._configure(config)

        watcher = ConfigMapWatcher(self._api(), self._discovery.namespace, source.name, found)
        self._waiting_for = f"a usable configuration in {watcher.where}"
        logger.info("reading the configuration from %s", watcher.where)
        self._run("configmap", watcher.run())
        await arrived.wait()

    async def open_admin(self) -> int:
        """Listen on the admin port (if not yet): its bound port. `start` does it first; called
        before, it lets a caller say where to look while the router waits for a ConfigMap."""
        if self._admin_server is None:
            self._admin_server = await asyncio.get_running_loop().create_server(
                lambda: self._connection(self._admin), self._host or None, self._admin_port
            )
            self._servers.append(self._admin_server)
        port: int = self._admin_server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> Ports:
        """Listen; the bound ports (0 asks for any free one). The admin port listens first;
        with a ConfigMap source, traffic only once the ConfigMap's first usable configuration
        is in force. AccessError or ConfigError when the API server is needed (a ConfigMap,
        or a revision that names a Service) and cannot be reached as told."""
        loop = asyncio.get_running_loop()
        admin_port = await self.open_admin()
        if isinstance(self._source, ConfigMapSource):
            await self._first_from(self._source)
        assert self._given is not None
        self._router = Router(self._given, self.metrics)
        self._waiting_for = ""
        self._follow_services()
        traffic = await loop.create_server(
            lambda: self._connection(self.router.handle),
            self._host or None,  # none: every interface, both families
            self._port,
            backlog=1024,
        )
        self._servers.append(traffic)
        grpc_bound = None
        if self._grpc_port is not None:
            self._grpc_front = GrpcFront(self.router)
            self._grpc_server = grpc.aio.server()
            self._grpc_server.add_generic_rpc_handlers((self._grpc_front,))
            where = (
                host_port(self._host, self._grpc_port) if self._host else f"[::]:{self._grpc_port}"
            )
            grpc_bound = self._grpc_server.add_insecure_port(where)
            await self._grpc_server.start()
        if isinstance(self._source, ConfigFile):
            loop.add_signal_handler(signal.SIGHUP, self.reload)
            self._run("reload", self._reload_every(self._source.reload_seconds))
        return Ports(traffic.sockets[0].getsockname()[1], admin_port, grpc_bound)

    def _prune_channels(self) -> None:
        if self._grpc_front is not None:
            task = asyncio.get_running_loop().create_task(self._grpc_front.prune())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def stop(self, drain_seconds: float = 0.0) -> None:
        """Stop routing as a pod being deleted should. First, for `drain_seconds`, serve on
        (new connections too, configuration changes too) while `/readyz` says draining: the
        pod's endpoint takes a moment to leave every client's and proxy's view of the
        model's Service, and a router that stopped accepting at once would refuse what they
        still send. Then stop accepting, close idle connections, and let the requests in
        flight finish, HTTP and gRPC together, up to the model's timeout (answered with
        `connection: close`)."""
        self._draining = True
        if drain_seconds > 0 and self._router is not None:
            logger.info("draining: serving %.1f s more while this endpoint goes", drain_seconds)
            await asyncio.sleep(drain_seconds)
        tasks, self._tasks = list(self._tasks.values()), {}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # the watchers' sockets closed
        if isinstance(self._source, ConfigFile):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for server in self._servers:
            server.close()
        if self._router is None:
            return  # never configured: nothing was routed
        grace = self._router.config.timeout_ms / 1000
        finishing = [self._connections.stop(grace)]
        if self._grpc_server is not None:
            finishing.append(self._grpc_server.stop(grace))
        await asyncio.gather(*finishing)
        if self._grpc_front is not None:
            await self._grpc_front.close()
        self._router.close()

    def _connection(self, handle: Handler) -> ClientConnection:
        return ClientConnection(
            handle, self._connections, max_body=self._max_body, idle_seconds=self._idle_seconds
        )

    def not_ready(self) -> str | None:
        """Why the router cannot route yet (None: it can): no configuration in force, or the
        Services it names never listed yet (every request would find no endpoint). Once
        listed it stays ready: a later change of the Services (a canary starting) reaches
        every router pod at once, and a slow list then must not take them all out of the
        model's Service, while the endpoints of the Services that stay serve on."""
        if self._draining:
            return "draining: the router is stopping"
        if self._router is None:
            return f"waiting for {self._waiting_for or 'a configuration'}"
        if self._watched and not self._listed_once:
            return "waiting for the first list of the revisions' EndpointSlices"
        return None

    async def _admin(self, request: Request) -> Response:
        path = request.target.split(b"?", 1)[0]
        if path == b"/metrics":
            if self._router is not None:
                for name, phase in self._router.breaker_phases().items():
                    self.metrics.breaker_open.labels(name).set(phase != "closed")
            return Response(200, [(b"content-type", CONTENT_TYPE.encode())], self.metrics.render())
        if path == b"/healthz":
            return _json(200, {"status": "ok"})
        if path == b"/readyz":
            reason = self.not_ready()
            if reason is not None:
                return _json(503, {"status": "not ready", "reason": reason})
            return _json(200, {"status": "ready"})
        if self._router is None and path in (b"/figures", b"/config"):
            return _json(503, {"error": self.not_ready()})
        if path == b"/figures":
            return self._figures(request.target)
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
        now = time.time()
        raw_end = query.get("end", [""])[-1]
        try:
            end = float(raw_end) if raw_end else now
        except ValueError:
            end = math.nan
        # An end a little ahead of this clock (another machine's) reads up to now; one far
        # ahead is a mistake.
        ago = max(0.0, now - end) if math.isfinite(end) and end <= now + 60 else math.inf
        if ago + window > horizon:
            message = (
                f"end {raw_end!r}: expected a Unix time, at most a minute ahead, whose window "
                f"lies within the last {horizon}s (the figures kept)"
            )
            return _json(400, {"error": message})
        revisions = {
            name: {
                "requests": f.requests,
                "errors": f.errors,
                "errorRate": f.error_rate,
                "p50Ms": f.p50_ms,
                "p99Ms": f.p99_ms,
                "latencyCounts": list(f.latency_counts),
            }
            for name, f in self.router.figures(window, ago).items()
        }
        return _json(200, {
            "windowSeconds": window,
            "end": now - ago,
            # The buckets' upper bounds; each revision's latencyCounts has one more (above all),
            # so that every replica's can be added up before a quantile is read.
            "latencyBoundsSeconds": list(LATENCY_BUCKETS),
            "revisions": revisions,
        })  # fmt: skip
