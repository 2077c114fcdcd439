"""Each revision's endpoints from its Service's EndpointSlices, watched on the API server.

A revision that names a Service (`"service": "resnet-232d26766d"`, config.py) is served by the
ready endpoints of that Service's EndpointSlices (discovery.k8s.io/v1), found here and handed to
the router whenever they change; the router keeps the breakers and ejections of what stays.

The decisions are pure and come first:

    endpoints_of       a Service's slices → its (http, grpc) `ip:port` lists
    SliceCache         a LIST snapshot plus WATCH events → the slices by Service
    discovered_config  the file's configuration with the endpoints found put in
    backoff            the wait before the next try after a failure

then the I/O: `ClusterAccess` (in-cluster, or a kubeconfig file for tests and development),
`KubeClient` (GET and WATCH over asyncio streams, httptools for the chunked watch stream: the
runtime image has no HTTP client library and gets none) and `EndpointSliceWatcher`.

One watch per namespace, not one per Service: a single LIST + WATCH with the label selector
`kubernetes.io/service-name in (a,b,...)` asks the API server for exactly the slices of the
configured Services (no other slice in the namespace crosses the wire), over one connection
however many revisions there are. When the set of Services changes (a revision added or
removed), the watcher is replaced by one with the new selector.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import logging
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit

import httptools

from davit_router.config import RouterConfig

logger = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
HTTP_PORT, GRPC_PORT = "http", "grpc"  # the port names of a revision's Service
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

Document = dict[str, Any]


# ---- pure: what a Service's slices say ---------------------------------------------------------
class Endpoints(NamedTuple):
    """A Service's ready endpoints, `ip:port` sorted and without repeats."""

    http: tuple[str, ...]
    grpc: tuple[str, ...]


def _host_port(address: str, port: int) -> str:
    """`address:port`, an IPv6 address bracketed (`[fd00::1]:8080`) so the port stays apart."""
    try:
        is_v6 = ipaddress.ip_address(address).version == 6
    except ValueError:  # an FQDN slice's name
        is_v6 = False
    return f"[{address}]:{port}" if is_v6 else f"{address}:{port}"


def _takes_traffic(endpoint: Mapping[str, Any]) -> bool:
    """Whether new requests may go to `endpoint`: ready (absent means ready, by the API's
    contract) and not terminating. A terminating endpoint may still be `serving` what it has
    (and `ready` where the Service publishes not-ready addresses); it is drained all the same."""
    conditions = endpoint.get("conditions") or {}
    return conditions.get("ready") is not False and conditions.get("terminating") is not True


def _named_port(slice_: Mapping[str, Any], name: str) -> int | None:
    for port in slice_.get("ports") or ():
        # A port without a number means "all ports" (a Service without ports): none for us.
        numbered = isinstance(port.get("port"), int)
        if port.get("name") == name and numbered and port.get("protocol", "TCP") == "TCP":
            return int(port["port"])
    return None


def endpoints_of(slices: Iterable[Mapping[str, Any]]) -> Endpoints:
    """The (http, grpc) `ip:port` lists of the endpoints that take traffic (`_takes_traffic`)
    in a Service's EndpointSlices. Ports are found by name (`http`, `grpc`) in each slice's own
    `ports`, so a slice without a `grpc` port gives only HTTP endpoints. Sorted, deduplicated
    (one address may be listed by two slices while the controller moves it)."""
    found: dict[str, set[str]] = {HTTP_PORT: set(), GRPC_PORT: set()}
    for slice_ in slices:
        ports = {name: number for name in found if (number := _named_port(slice_, name))}
        for endpoint in slice_.get("endpoints") or ():
            if not _takes_traffic(endpoint):
                continue
            for address in endpoint.get("addresses") or ():
                for name, number in ports.items():
                    found[name].add(_host_port(address, number))
    return Endpoints(tuple(sorted(found[HTTP_PORT])), tuple(sorted(found[GRPC_PORT])))


def _name(document: Mapping[str, Any]) -> str:
    return str((document.get("metadata") or {}).get("name", ""))


def _service_of(slice_: Mapping[str, Any]) -> str | None:
    labels = (slice_.get("metadata") or {}).get("labels") or {}
    service = labels.get(SERVICE_NAME_LABEL)
    return service if isinstance(service, str) else None


class SliceCache:
    """The EndpointSlices of some Services as the API server last said: replaced by a LIST,
    updated by WATCH events."""

    def __init__(self, services: frozenset[str]) -> None:
        self.services = services
        self._slices: dict[str, Mapping[str, Any]] = {}

    def replace(self, items: Iterable[Mapping[str, Any]]) -> None:
        """A LIST's items: everything known before is forgotten."""
        self._slices = {_name(s): s for s in items if _service_of(s) in self.services}

    def apply(self, kind: str, slice_: Mapping[str, Any]) -> None:
        """One watch event (ADDED, MODIFIED, DELETED; others change nothing). A slice relabelled
        away from our Services is dropped like a deleted one."""
        name = _name(slice_)
        if kind == "DELETED" or (kind in ("ADDED", "MODIFIED") and
                                 _service_of(slice_) not in self.services):  # fmt: skip
            self._slices.pop(name, None)
        elif kind in ("ADDED", "MODIFIED"):
            self._slices[name] = slice_

    def endpoints(self) -> dict[str, Endpoints]:
        """Every watched Service's endpoints; a Service without a slice has none."""
        by_service: dict[str, list[Mapping[str, Any]]] = {s: [] for s in self.services}
        for slice_ in self._slices.values():
            service = _service_of(slice_)
            if service is not None:
                by_service[service].append(slice_)
        return {service: endpoints_of(slices) for service, slices in by_service.items()}


def label_selector(services: Iterable[str]) -> str:
    """The selector of the slices of `services` (set-based, so one LIST + WATCH serves all)."""
    return f"{SERVICE_NAME_LABEL} in ({','.join(sorted(services))})"


def discovered_config(config: RouterConfig, found: Mapping[str, Endpoints]) -> RouterConfig:
    """`config` (the file's) with each revision that names a Service given the endpoints found
    for it; a Service not listed yet leaves the revision's static endpoints in force (and a
    Service listed with no ready endpoint leaves it none). Every other field as it is."""
    revisions = tuple(
        replace(r, endpoints=found[r.service].http, grpc_endpoints=found[r.service].grpc)
        if r.service is not None and r.service in found
        else r
        for r in config.revisions
    )
    return replace(config, revisions=revisions)


FIRST_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS = 1.0, 30.0


def backoff(previous: float | None) -> float:
    """The wait before the next try: 1 s after a first failure, doubled after each further one
    in a row, at most 30 s."""
    if previous is None:
        return FIRST_BACKOFF_SECONDS
    return min(previous * 2, MAX_BACKOFF_SECONDS)


# ---- the API server: where it is and who we are -----------------------------------------------
class AccessError(ValueError):
    """The API server cannot be reached with what was given (no in-cluster environment, a
    kubeconfig that cannot be used); the message says why."""


class ApiError(Exception):
    """The API server answered `status` (not 200); `message` is its Status's, if it gave one."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class ProtocolError(Exception):
    """What came back is not the HTTP or JSON it should be."""


class TokenFile:
    """A bearer token read from a file and read again every `reread_seconds`: the kubelet
    rotates a projected service-account token well before it expires (about hourly), so one
    read once would stop working. `expire` asks for a read on the next use (after a 401)."""

    def __init__(
        self,
        path: Path,
        *,
        reread_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._reread_seconds = reread_seconds
        self._clock = clock
        self._token: str | None = None
        self._read_at = 0.0

    def value(self) -> str:
        now = self._clock()
        if self._token is None or now - self._read_at >= self._reread_seconds:
            try:
                self._token = self._path.read_text().strip()
            except OSError as error:
                if self._token is None:
                    raise AccessError(f"{self._path}: {error.strerror or error}") from error
                # Keep the one we have: it may well be valid still, and a 401 will say if not.
            self._read_at = now
        return self._token

    def expire(self) -> None:
        self._token = None


class StaticToken:
    def __init__(self, token: str) -> None:
        self._token = token

    def value(self) -> str:
        return self._token

    def expire(self) -> None:
        """A fixed token cannot be refreshed."""


@dataclass(frozen=True)
class ClusterAccess:
    """How to reach the API server: its address, TLS (its CA, and our client certificate where
    the kubeconfig uses one), and our bearer token if we have one."""

    host: str
    port: int
    tls: ssl.SSLContext | None  # None: plain HTTP (a `kubectl proxy`)
    token: TokenFile | StaticToken | None


def in_cluster(
    environ: Mapping[str, str], account_dir: Path = SERVICE_ACCOUNT_DIR
) -> ClusterAccess:
    """The pod's own access: `KUBERNETES_SERVICE_HOST`/`_PORT` and its service account's CA and
    (rotating) token."""
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port or not port.isdigit():
        raise AccessError(
            "not in a cluster (KUBERNETES_SERVICE_HOST/PORT unset): pass --kubeconfig"
        )
    try:
        tls = ssl.create_default_context(cafile=str(account_dir / "ca.crt"))
    except (OSError, ssl.SSLError) as error:
        raise AccessError(f"{account_dir / 'ca.crt'}: {error}") from error
    token = TokenFile(account_dir / "token")
    token.value()  # fail now, with the path, rather than on the first request
    return ClusterAccess(host, int(port), tls, token)


def in_cluster_namespace(account_dir: Path = SERVICE_ACCOUNT_DIR) -> str | None:
    """The pod's namespace, as its service account says; None outside a cluster."""
    try:
        return (account_dir / "namespace").read_text().strip() or None
    except OSError:
        return None


def _read_document(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as error:
        raise AccessError(f"{path}: {error.strerror or error}") from error
    try:
        return json.loads(text)  # `kubectl config view --raw -o json` needs nothing more
    except json.JSONDecodeError:
        pass
    try:
        import yaml  # only for a YAML kubeconfig (tests, development): the image has none
    except ImportError as error:
        raise AccessError(f"{path}: a YAML kubeconfig needs PyYAML; give it as JSON") from error
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise AccessError(f"{path}: not YAML: {error}") from error


def _named(entries: Any, name: Any, what: str, path: Path) -> Mapping[str, Any]:
    for entry in entries if isinstance(entries, list) else ():
        if isinstance(entry, dict) and entry.get("name") == name:
            found = entry.get(what)
            if isinstance(found, dict):
                return found
    raise AccessError(f"{path}: no {what} named {name!r}")


def _pem(section: Mapping[str, Any], key: str, base: Path, path: Path) -> bytes | None:
    """A certificate or key given inline (`<key>-data`, base64) or as a file (`<key>`, relative
    to the kubeconfig's folder)."""
    if section.get(f"{key}-data"):
        try:
            return base64.b64decode(section[f"{key}-data"], validate=True)
        except (ValueError, TypeError) as error:
            raise AccessError(f"{path}: {key}-data is not base64") from error
    if section.get(key):
        try:
            return (base / str(section[key])).read_bytes()
        except OSError as error:
            raise AccessError(f"{path}: {key}: {error.strerror or error}") from error
    return None


def from_kubeconfig(path: Path) -> ClusterAccess:
    """The access of a kubeconfig file's current context: its cluster's server and CA, and its
    user's client certificate and key, token or token file. Exec and auth-provider plugins are
    not run (they would need their binaries in the router's image)."""
    document = _read_document(path)
    if not isinstance(document, dict):
        raise AccessError(f"{path}: not a kubeconfig")
    context = _named(document.get("contexts"), document.get("current-context"), "context", path)
    cluster = _named(document.get("clusters"), context.get("cluster"), "cluster", path)
    user = (
        _named(document.get("users"), context["user"], "user", path) if context.get("user") else {}
    )
    base = path.parent
    server = urlsplit(str(cluster.get("server", "")))
    if server.scheme not in ("https", "http") or not server.hostname:
        raise AccessError(f"{path}: cluster server {cluster.get('server')!r} is not a URL")
    if server.path not in ("", "/"):
        raise AccessError(f"{path}: a server under a path ({server.path}) is not supported")
    if "exec" in user or "auth-provider" in user:
        raise AccessError(f"{path}: exec and auth-provider credentials are not supported")
    tls = None
    if server.scheme == "https":
        tls = ssl.create_default_context()
        if cluster.get("insecure-skip-tls-verify"):
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
        ca = _pem(cluster, "certificate-authority", base, path)
        try:
            if ca is not None:
                tls.load_verify_locations(cadata=ca.decode())
            certificate = _pem(user, "client-certificate", base, path)
            key = _pem(user, "client-key", base, path)
            if certificate is not None and key is not None:
                # load_cert_chain reads files only: written to a private folder, loaded, gone.
                with tempfile.TemporaryDirectory(prefix="davit-router-") as folder:
                    (Path(folder) / "cert.pem").write_bytes(certificate)
                    (Path(folder) / "key.pem").write_bytes(key)
                    tls.load_cert_chain(Path(folder) / "cert.pem", Path(folder) / "key.pem")
        except (ssl.SSLError, ValueError, UnicodeDecodeError) as error:
            message = f"{path}: the CA or client certificate cannot be used: {error}"
            raise AccessError(message) from error
    token: TokenFile | StaticToken | None = None
    if user.get("token"):
        token = StaticToken(str(user["token"]))
    elif user.get("tokenFile"):
        token = TokenFile(base / str(user["tokenFile"]))
    port = server.port or (443 if server.scheme == "https" else 80)
    return ClusterAccess(server.hostname, port, tls, token)


# ---- the API server: requests --------------------------------------------------------------
class _Response:
    """httptools' callbacks for one response: its status once the head is in, then its body in
    chunks (dechunked) as they come."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status: int | None = None
        self.chunks: list[bytes] = []
        self.complete = False

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.complete = True

    def feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            raise ProtocolError(f"malformed HTTP from the API server: {error}") from error

    def take(self) -> bytes:
        body, self.chunks = b"".join(self.chunks), []
        return body


def _status_message(body: bytes) -> str:
    """The message of the Status the API server answers an error with, else the body's start."""
    with contextlib.suppress(ValueError):
        status = json.loads(body)
        if isinstance(status, dict) and isinstance(status.get("message"), str):
            return str(status["message"])
    return body[:200].decode("utf-8", "replace") or "no message"


_READ_SIZE = 64 * 1024


def _json_object(raw: bytes, what: str) -> Document:
    """`raw` decoded as one JSON object, or ProtocolError saying `what` it was not."""
    try:
        document = json.loads(raw)
    except ValueError as error:
        raise ProtocolError(f"{what} is not JSON: {error}") from error
    if not isinstance(document, dict):
        raise ProtocolError(f"{what} is not a JSON object")
    return document


class KubeClient:
    """GET and WATCH on the API server, one connection each (a watch holds its own for as long
    as it lasts; lists are rare). `timeout_s` bounds connecting and a whole GET; a watch may
    be silent for `idle_s` at most (the API server sends bookmarks and ends a watch itself
    after its `timeoutSeconds`, so a longer silence is a dead connection)."""

    def __init__(
        self, access: ClusterAccess, *, timeout_s: float = 30.0, idle_s: float = 120.0
    ) -> None:
        self._access = access
        self._timeout_s = timeout_s
        self._idle_s = idle_s

    async def _open(
        self, path: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, _Response]:
        access = self._access
        async with asyncio.timeout(self._timeout_s):
            reader, writer = await asyncio.open_connection(
                access.host, access.port, ssl=access.tls,
                server_hostname=access.host if access.tls is not None else None,
            )  # fmt: skip
        authority = _host_port(access.host, access.port)
        lines = [f"GET {path} HTTP/1.1", f"host: {authority}", "accept: application/json",
                 "user-agent: davit-router", "connection: close"]  # fmt: skip
        if access.token is not None:
            lines.append(f"authorization: Bearer {access.token.value()}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        return reader, writer, _Response()

    def _refused(self, status: int, body: bytes) -> ApiError:
        if status == 401 and self._access.token is not None:
            self._access.token.expire()  # rotated under us: the next try reads it again
        return ApiError(status, _status_message(body))

    async def get(self, path: str) -> Document:
        """The JSON object at `path`; ApiError if the answer is not 200."""
        reader, writer, response = await self._open(path)
        try:
            async with asyncio.timeout(self._timeout_s):
                while not response.complete:
                    data = await reader.read(_READ_SIZE)
                    if not data:
                        raise ProtocolError("the API server closed the connection mid-answer")
                    response.feed(data)
        finally:
            writer.close()
        body = response.take()
        if response.status != 200:
            raise self._refused(response.status or 0, body)
        return _json_object(body, "the API server's answer")

    @contextlib.asynccontextmanager
    async def watch(self, path: str) -> AsyncIterator[AsyncIterator[Document]]:
        """The events of the watch at `path`, as they come, once the API server has accepted
        it (ApiError if it did not). The events end when the API server ends the watch."""
        reader, writer, response = await self._open(path)
        try:
            while response.status is None:  # the head: refused, or the stream begins
                await self._read_into(reader, response)
            if response.status != 200:
                while not response.complete:
                    await self._read_into(reader, response)
                raise self._refused(response.status, response.take())
            yield self._events(reader, response)
        finally:
            writer.close()

    async def _read_into(self, reader: asyncio.StreamReader, response: _Response) -> None:
        async with asyncio.timeout(self._idle_s):
            data = await reader.read(_READ_SIZE)
        if not data:
            raise ProtocolError("the API server closed the watch mid-answer")
        response.feed(data)

    async def _events(
        self, reader: asyncio.StreamReader, response: _Response
    ) -> AsyncIterator[Document]:
        pending = b""  # an event's first part: one JSON document a line, lines split anywhere
        while True:
            pending += response.take()
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    yield _json_object(line, "a watch event")
            if response.complete:
                return
            await self._read_into(reader, response)


# ---- the watcher ---------------------------------------------------------------------------
class _GoneError(Exception):
    """The resource version to watch from is too old (410): list again."""


Expected = (OSError, TimeoutError, ApiError, ProtocolError, AccessError)


class EndpointSliceWatcher:
    """The endpoints of `services` in `namespace`, kept current: LIST their slices, then WATCH
    from the list's resource version (with bookmarks, so that version stays recent); on 410
    Gone, list again. `on_change` is given every Service's endpoints after the first list and
    after each change. A failure is retried after `backoff` (1 s → 30 s), logged once per
    streak of failures and once when it is over; `run` never ends but by cancellation."""

    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        services: frozenset[str],
        on_change: Callable[[dict[str, Endpoints]], None],
        *,
        watch_seconds: int = 300,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self._client = client
        self._namespace = namespace
        self._cache = SliceCache(services)
        self._on_change = on_change
        self._watch_seconds = watch_seconds
        self._sleep = sleep
        self._published: dict[str, Endpoints] | None = None
        self._failing = False  # in a streak of failures (logged at its first)
        self._traced = False  # and an unexpected one of them logged with its traceback
        self._delay: float | None = None  # the last wait of the streak
        selector = quote(label_selector(services), safe="")
        self._path = (
            f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
            f"?labelSelector={selector}"
        )

    async def run(self) -> None:
        resource_version: str | None = None
        while True:
            try:
                if resource_version is None:
                    resource_version = await self._list()
                    self._recovered()
                resource_version = await self._watch(resource_version)
            except _GoneError:
                resource_version = None  # at once: the API server is there, our version is old
            except Expected as error:
                self._failed(error, unexpected=False)
                await self._sleep(self._next_delay())
            except Exception as error:
                self._failed(error, unexpected=True)
                await self._sleep(self._next_delay())

    def _next_delay(self) -> float:
        self._delay = backoff(self._delay)
        return self._delay

    async def _list(self) -> str:
        listed = await self._client.get(self._path)
        items = listed.get("items") or []
        self._cache.replace(s for s in items if isinstance(s, dict))
        self._publish()
        return str((listed.get("metadata") or {}).get("resourceVersion", ""))

    async def _watch(self, resource_version: str) -> str:
        """Follow the watch until the API server ends it; the last resource version seen."""
        path = (
            f"{self._path}&watch=true&allowWatchBookmarks=true"
            f"&resourceVersion={quote(resource_version)}&timeoutSeconds={self._watch_seconds}"
        )
        try:
            async with self._client.watch(path) as events:
                async for event in events:
                    kind, found = event.get("type"), event.get("object")
                    if not isinstance(found, dict):
                        raise ProtocolError(f"a {kind} event without an object")
                    if kind == "ERROR":
                        if found.get("code") == 410:
                            raise _GoneError
                        message = str(found.get("message") or "an error in the watch")
                        raise ApiError(int(found.get("code") or 0), message)
                    resource_version = str(
                        (found.get("metadata") or {}).get("resourceVersion", resource_version)
                    )
                    if kind != "BOOKMARK":
                        self._cache.apply(str(kind), found)
                        self._publish()
                    # Over only once an event is taken: a watch that is accepted and then
                    # fails every time is one streak, not a recovery and a failure each try.
                    self._recovered()
        except ApiError as error:
            if error.status == 410:
                raise _GoneError from error
            raise
        self._recovered()  # the API server ended the watch (its timeoutSeconds): all well
        return resource_version

    def _publish(self) -> None:
        found = self._cache.endpoints()
        if found == self._published:
            return
        for service, endpoints in sorted(found.items()):
            before = (self._published or {}).get(service)
            if endpoints != before:
                http = ", ".join(endpoints.http) or "none"
                grpc = ", ".join(endpoints.grpc) or "none"
                logger.info("service %s: endpoints http %s; grpc %s", service, http, grpc)
        self._published = found
        self._on_change(found)

    def _failed(self, error: Exception, *, unexpected: bool) -> None:
        """Log the first failure of a streak, and the first unexpected one (a bug: its
        traceback is what a fix needs) even where an expected one came before it."""
        where = f"EndpointSlices in {self._namespace}"
        if unexpected and not self._traced:
            logger.exception("watching %s failed; retrying with backoff", where)
        elif not self._failing:
            logger.warning("watching %s failed: %s; retrying with backoff", where, error)
        self._failing = True
        self._traced = self._traced or unexpected

    def _recovered(self) -> None:
        if self._failing:
            logger.info("watching EndpointSlices in %s again", self._namespace)
        self._failing = self._traced = False
        self._delay = None
