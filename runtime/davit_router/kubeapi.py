"""The Kubernetes API server as the router needs it: where it is, who we are, GET and WATCH,
and a collection kept current by LIST + WATCH.

The runtime image has no HTTP client library and gets none, so this is a small one over asyncio
streams, with httptools for the chunked watch stream:

    ClusterAccess   in-cluster (the pod's service account), or a kubeconfig file (tests,
                    development)
    KubeClient      GET a JSON object; WATCH a stream of events
    ListWatch       one collection kept current: LIST, WATCH from the list's resource version
                    (with bookmarks), LIST again on 410 Gone, back off on failures, logged once
                    per streak; what it finds goes to its `on_list` and `on_event`

discovery.py (each revision's endpoints) and configmap.py (the router's configuration) are its
two users.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httptools

from davit_router.hostport import host_port

logger = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

Document = dict[str, Any]


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
        authority = host_port(access.host, access.port)
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


# ---- a collection kept current -----------------------------------------------------------------
class _GoneError(Exception):
    """The resource version to watch from is too old (410): list again."""


Expected = (OSError, TimeoutError, ApiError, ProtocolError, AccessError)
MIN_WATCH_SECONDS = 1.0  # a watch that ends sooner is asked again only after this long


class ListWatch:
    """The objects at `path` (a collection, its selectors in the query) kept current: LIST,
    then WATCH from the list's resource version (with bookmarks, so that version stays recent);
    on 410 Gone, list again at once. `on_list` is given a list's items (everything known before
    is to be forgotten), `on_event` each ADDED, MODIFIED or DELETED event with its object.
    A failure is retried after `backoff` (1 s → 30 s), logged once per streak of failures (an
    unexpected one with its traceback) and once when it is over, naming `what` is watched;
    `run` never ends but by cancellation."""

    def __init__(
        self,
        client: KubeClient,
        path: str,
        what: str,
        on_list: Callable[[list[Document]], None],
        on_event: Callable[[str, Document], None],
        *,
        watch_seconds: int = 300,
        sleep: Callable[[float], Any] = asyncio.sleep,
        min_watch_seconds: float = MIN_WATCH_SECONDS,
    ) -> None:
        self._client = client
        self._min_watch_seconds = min_watch_seconds
        self._path = path
        self.what = what
        self._on_list = on_list
        self._on_event = on_event
        self._watch_seconds = watch_seconds
        self._sleep = sleep
        self._failing = False  # in a streak of failures (logged at its first)
        self._traced = False  # and an unexpected one of them logged with its traceback
        self._delay: float | None = None  # the last wait of the streak

    async def run(self) -> None:
        resource_version: str | None = None
        while True:
            try:
                if resource_version is None:
                    resource_version = await self._list()
                    self._recovered()
                began = time.monotonic()
                resource_version = await self._watch(resource_version)
                if time.monotonic() - began < self._min_watch_seconds:
                    # Ended at once without an error (a proxy that closes streams?): not a
                    # failure, but not a reason to ask again in a tight loop either.
                    await self._sleep(self._min_watch_seconds)
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
        self._on_list([item for item in items if isinstance(item, dict)])
        return str((listed.get("metadata") or {}).get("resourceVersion", ""))

    async def _watch(self, resource_version: str) -> str:
        """Follow the watch until the API server ends it; the last resource version seen."""
        separator = "&" if "?" in self._path else "?"
        path = (
            f"{self._path}{separator}watch=true&allowWatchBookmarks=true"
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
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        self._on_event(str(kind), found)
                    # Over only once an event is taken: a watch that is accepted and then
                    # fails every time is one streak, not a recovery and a failure each try.
                    self._recovered()
        except ApiError as error:
            if error.status == 410:
                raise _GoneError from error
            raise
        self._recovered()  # the API server ended the watch (its timeoutSeconds): all well
        return resource_version

    def _failed(self, error: Exception, *, unexpected: bool) -> None:
        """Log the first failure of a streak, and the first unexpected one (a bug: its
        traceback is what a fix needs) even where an expected one came before it."""
        if unexpected and not self._traced:
            logger.exception("watching %s failed; retrying with backoff", self.what)
        elif not self._failing:
            logger.warning("watching %s failed: %s; retrying with backoff", self.what, error)
        self._failing = True
        self._traced = self._traced or unexpected

    def _recovered(self) -> None:
        if self._failing:
            logger.info("watching %s again", self.what)
        self._failing = self._traced = False
        self._delay = None
