"""A lean HTTP/1.1 server (asyncio protocol + httptools parser) for the v2 REST endpoints.

One request per connection is handled at a time (responses stay in order with pipelining);
further pipelined requests wait in a short per-connection list and reading pauses when it
grows, so a client cannot make the server buffer without bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, cast

import httptools
import orjson

from davit_runtime.batching import Arrays
from davit_runtime.errors import InferenceError, Status, invalid
from davit_runtime.headers import QUEUE_DEPTH
from davit_runtime.http_codec import (
    HEADER_LENGTH,
    InferRequest,
    OutputTensor,
    encode_infer_response,
    error_body,
    parse_header_length,
    parse_infer_request,
)
from davit_runtime.inference import ServedModel, select_outputs
from davit_runtime.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from davit_runtime.state import RuntimeState

_REASONS = {
    200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
    413: b"Payload Too Large", 429: b"Too Many Requests", 500: b"Internal Server Error",
    503: b"Service Unavailable", 504: b"Gateway Timeout",
}  # fmt: skip
_JSON = b"application/json"
_OCTETS = b"application/octet-stream"
_MAX_PIPELINED = 16
# After answering 413 the rest of the body is read and dropped for this long before closing, so
# the client is not reset while still sending and gets to read the answer.
_LINGER_S = 2.0
_HEADER_LENGTH_KEY = HEADER_LENGTH.encode()
_QUEUE_DEPTH_KEY = QUEUE_DEPTH.encode()

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Request:
    method: bytes
    path: str
    headers: dict[bytes, bytes]
    body: bytes
    keep_alive: bool
    http10: bool
    rejected: InferenceError | None = None  # set while parsing (e.g. oversized body)


def status_line(code: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (code, _REASONS.get(code, b"Unknown"))


def render_response(
    code: int,
    body_chunks: list[bytes],
    content_type: bytes,
    *,
    keep_alive: bool,
    http10: bool,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> bytes:
    length = sum(len(c) for c in body_chunks)
    head = [
        status_line(code),
        b"content-type: ",
        content_type,
        b"\r\ncontent-length: ",
        str(length).encode(),
        b"\r\n",
    ]
    if extra_headers:
        for name, value in extra_headers:
            head.extend((name, b": ", value, b"\r\n"))
    if not keep_alive:
        head.append(b"connection: close\r\n")
    elif http10:
        head.append(b"connection: keep-alive\r\n")
    head.append(b"\r\n")
    head.extend(body_chunks)
    return b"".join(head)


def split_route(path: str) -> list[str]:
    """Path segments without the query string: '/v2/models/m/infer' → [v2, models, m, infer]."""
    return [part for part in path.split("?", 1)[0].split("/") if part]


class HttpApp:
    """Routes parsed requests; owns the listening server and open connections."""

    def __init__(self, state: RuntimeState, loop: asyncio.AbstractEventLoop) -> None:
        self.state = state
        self.loop = loop
        self.connections: set[HttpConnection] = set()
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        self.server = await self.loop.create_server(
            lambda: HttpConnection(self), host, port, reuse_address=True, backlog=1024
        )
        return int(self.server.sockets[0].getsockname()[1])

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    def close_idle_connections(self) -> None:
        for connection in list(self.connections):
            connection.close_when_idle()

    # ---- routing ---------------------------------------------------------------------------
    def handle(self, conn: HttpConnection, request: Request) -> None:
        try:
            if request.rejected is not None:
                raise request.rejected
            self._route(conn, request)
        except InferenceError as error:
            conn.respond_error(request, error)
        except Exception:  # a bug: logged with its traceback, never shown to the client
            logger.exception("%s %s failed", request.method.decode(), request.path)
            conn.respond_error(request, InferenceError(Status.INTERNAL, "internal error"))

    def _route(self, conn: HttpConnection, request: Request) -> None:
        parts = split_route(request.path)
        method = request.method
        state = self.state
        if len(parts) >= 3 and parts[0] == "v2" and parts[1] == "models":
            name = parts[2]
            rest = parts[3:]
            version: str | None = None
            if len(rest) >= 2 and rest[0] == "versions":
                version = rest[1]
                rest = rest[2:]
            action = rest[0] if len(rest) == 1 else ("" if not rest else None)
            if action == "infer":
                self._expect(method, b"POST")
                self._infer(conn, request, state.ready_model(name, version))
                return
            if action == "ready":
                self._expect(method, b"GET")
                model = state.model(name, version)
                code = 200 if model.ready and not state.draining else 503
                conn.respond(request, code, [b""], _JSON)
                return
            if action == "":
                self._expect(method, b"GET")
                conn.respond_json(request, state.model(name, version).metadata())
                return
            if action == "config":
                self._expect(method, b"GET")
                conn.respond_json(request, state.model(name, version).triton_config())
                return
        elif parts == ["v2", "health", "live"]:
            self._expect(method, b"GET")
            conn.respond(request, 200, [b""], _JSON)
            return
        elif parts == ["v2", "health", "ready"]:
            self._expect(method, b"GET")
            ready = state.ready and not state.draining
            conn.respond(request, 200 if ready else 503, [b""], _JSON)
            return
        elif parts == ["v2"]:
            self._expect(method, b"GET")
            conn.respond_json(request, state.server_metadata())
            return
        elif parts == ["metrics"]:
            self._expect(method, b"GET")
            body = state.metrics.exposition()
            conn.respond(request, 200, [body], METRICS_CONTENT_TYPE.encode())
            return
        raise InferenceError(Status.NOT_FOUND, f"no route for {request.path!r}")

    @staticmethod
    def _expect(method: bytes, allowed: bytes) -> None:
        if method != allowed:
            raise _MethodNotAllowedError(
                f"method {method.decode()} not allowed; use {allowed.decode()}"
            )

    def _infer(self, conn: HttpConnection, request: Request, model: ServedModel) -> None:
        started = time.perf_counter()
        try:
            header_length = parse_header_length(
                request.headers.get(_HEADER_LENGTH_KEY), len(request.body)
            )
            if request.headers.get(b"content-encoding", b"identity") != b"identity":
                raise invalid("compressed request bodies (Content-Encoding) are not supported")
            parsed = parse_infer_request(request.body, header_length)
            chosen = select_outputs(model.config, parsed.outputs)
            future = model.submit(parsed.inputs)
        except InferenceError as error:
            model.metrics.record(error.http_status, time.perf_counter() - started)
            conn.respond_error(request, error, [_load_of(model)])  # a 429 carries it too
            return
        future.add_done_callback(_InferCompletion(conn, request, model, parsed, chosen, started))


def _load_of(model: ServedModel) -> tuple[bytes, bytes]:
    """The load signal every inference answer carries, for the router (headers.QUEUE_DEPTH)."""
    return (_QUEUE_DEPTH_KEY, b"%d" % model.batcher.queue_depth)


class _MethodNotAllowedError(InferenceError):
    def __init__(self, message: str) -> None:
        super().__init__(Status.INVALID_ARGUMENT, message)

    @property
    def http_status(self) -> int:
        return 405


class _InferCompletion:
    """Turns a finished batch future into the HTTP response (runs on the event loop)."""

    __slots__ = ("chosen", "conn", "model", "parsed", "request", "started")

    def __init__(
        self,
        conn: HttpConnection,
        request: Request,
        model: ServedModel,
        parsed: InferRequest,
        chosen: list[int],
        started: float,
    ) -> None:
        self.conn = conn
        self.request = request
        self.model = model
        self.parsed = parsed
        self.chosen = chosen
        self.started = started

    def __call__(self, future: asyncio.Future[Arrays]) -> None:
        model = self.model
        request = self.request
        error = future.exception()
        if error is not None:
            failure = (
                error
                if isinstance(error, InferenceError)
                else InferenceError(Status.INTERNAL, str(error))
            )
            model.metrics.record(failure.http_status, time.perf_counter() - self.started)
            self.conn.respond_error(request, failure, [_load_of(model)])
            return
        arrays = future.result()
        specs = model.config.outputs
        parsed = self.parsed
        tensors = [OutputTensor(specs[i].name, specs[i].datatype, arrays[i]) for i in self.chosen]
        binary = [parsed.binary_outputs.get(t.name, parsed.binary_default) for t in tensors]
        chunks, header_length = encode_infer_response(
            model.name, model.version, parsed.request_id, tensors, binary
        )
        load = _load_of(model)
        if header_length is None:
            self.conn.respond(request, 200, chunks, _JSON, [load])
        else:
            self.conn.respond(
                request,
                200,
                chunks,
                _OCTETS,
                [(_HEADER_LENGTH_KEY, str(header_length).encode()), load],
            )
        model.metrics.record(200, time.perf_counter() - self.started)


class HttpConnection(asyncio.Protocol):
    """One client connection: parses requests and writes responses in order."""

    def __init__(self, app: HttpApp) -> None:
        self._app = app
        self._max_body = app.state.max_body_bytes
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._pending: deque[Request] = deque()
        self._busy = False
        self._paused = False
        self._closing = False
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._rejected: InferenceError | None = None

    # ---- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._app.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._app.connections.discard(self)
        self._transport = None
        self._pending.clear()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # closing (e.g. lingering after a 413): input is dropped unread
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail_connection(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as error:
            self._fail_connection(400, f"malformed HTTP request: {error}")

    # ---- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0
        self._rejected = None

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        length = self._headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            self._reject_too_large()
        elif (
            self._headers.get(b"expect", b"").lower() == b"100-continue"
            and self._transport is not None
        ):
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits for this

    def on_body(self, body: bytes) -> None:
        if self._rejected is not None:
            return
        self._body_size += len(body)
        if self._body_size > self._max_body:
            self._reject_too_large()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._closing:
            return
        parser = self._parser
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        keep_alive = parser.should_keep_alive() and self._rejected is None
        request = Request(
            parser.get_method(),
            self._url.decode("latin-1"),
            self._headers,
            body,
            keep_alive,
            parser.get_http_version() == "1.0",
            self._rejected,
        )
        self._body = []
        if self._busy:
            self._pending.append(request)
            if len(self._pending) >= _MAX_PIPELINED and self._transport is not None:
                self._transport.pause_reading()
                self._paused = True
            return
        self._busy = True
        self._app.handle(self, request)

    def _reject_too_large(self) -> None:
        self._rejected = InferenceError(
            Status.PAYLOAD_TOO_LARGE, f"request body larger than the {self._max_body} byte limit"
        )
        self._body = []
        if self._transport is not None:  # answer now; the rest of the body is not read
            self._closing = True
            request = Request(b"POST", "", {}, b"", False, False, self._rejected)
            if not self._busy:
                self._busy = True
                self._app.handle(self, request)
            else:
                self._pending.append(request)

    # ---- responses ---------------------------------------------------------------------------
    def respond(
        self,
        request: Request,
        code: int,
        chunks: list[bytes],
        content_type: bytes,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        keep_alive = request.keep_alive and not self._closing
        transport.write(
            render_response(
                code,
                chunks,
                content_type,
                keep_alive=keep_alive,
                http10=request.http10,
                extra_headers=extra_headers,
            )
        )
        if not keep_alive:
            self._closing = True
            self._pending.clear()
            if request.rejected is not None and request.rejected.status is Status.PAYLOAD_TOO_LARGE:
                self._app.loop.call_later(_LINGER_S, transport.close)
            else:
                transport.close()
            return
        self._busy = False
        if self._pending:
            next_request = self._pending.popleft()
            if self._paused and len(self._pending) < _MAX_PIPELINED // 2:
                self._paused = False
                transport.resume_reading()
            self._busy = True
            self._app.handle(self, next_request)

    def respond_json(self, request: Request, document: Any) -> None:
        self.respond(request, 200, [orjson.dumps(document)], _JSON)

    def respond_error(
        self,
        request: Request,
        error: InferenceError,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        code = error.http_status
        extra = [(b"retry-after", b"1")] if code in (429, 503) else []
        extra += extra_headers or []
        self.respond(request, code, [error_body(error.message)], _JSON, extra or None)

    def _fail_connection(self, code: int, message: str) -> None:
        transport = self._transport
        self._closing = True
        if transport is None:
            return
        transport.write(
            render_response(code, [error_body(message)], _JSON, keep_alive=False, http10=False)
        )
        transport.close()

    def close_when_idle(self) -> None:
        self._closing = True
        if not self._busy and self._transport is not None:
            self._transport.close()
