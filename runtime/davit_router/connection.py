"""One client connection, as an asyncio Protocol: bytes in, requests answered in order.

No stream buffers between the socket and the parser (the router's hot path): `data_received`
feeds httptools, each whole request joins the connection's queue, and one task answers the
queue in order (HTTP/1.1 pipelining), writing each answer to the transport. Reading pauses
while too many requests wait, so a client cannot make the router buffer without bound; an
idle connection is closed after `idle_seconds`; `Expect: 100-continue` is answered as soon
as the head is in. A client that goes away mid-request does not cancel its request: the
revision's breaker must judge the revision by its answer, not by the client's patience.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

import httptools
import orjson

from davit_router.http1 import (
    CONTINUE,
    MessageTooLargeError,
    Request,
    RequestParser,
    Response,
    render_response,
)

logger = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]
_MAX_QUEUED = 16
_JSON = [(b"content-type", b"application/json")]


def _json(status: int, document: object) -> Response:
    return Response(status, list(_JSON), orjson.dumps(document))


def refusal(error: Exception) -> Response:
    """The answer to a request the router cannot parse, before it closes the connection."""
    if isinstance(error, MessageTooLargeError):
        return _json(413, {"error": str(error)})
    if isinstance(error, httptools.HttpParserUpgrade):
        return _json(400, {"error": "protocol upgrades (h2c, websocket) are not supported"})
    return _json(400, {"error": f"malformed HTTP request: {error}"})


class Connections:
    """The server's open connections, for a stop that closes idle ones at once and lets
    those with a request in hand finish."""

    def __init__(self) -> None:
        self.open: set[ClientConnection] = set()
        self.stopping = False

    async def stop(self, grace_s: float) -> None:
        self.stopping = True
        busy = [c.worker for c in self.open if c.worker is not None]
        for connection in list(self.open):
            if connection.worker is None:
                connection.close()
        if busy:
            await asyncio.wait(busy, timeout=grace_s)
        for connection in list(self.open):
            connection.close()


class ClientConnection(asyncio.Protocol):
    def __init__(
        self, handle: Handler, connections: Connections, *, max_body: int, idle_seconds: float
    ) -> None:
        self._handle = handle
        self._connections = connections
        self._parser = RequestParser(max_body)
        self._queue: deque[Request] = deque()
        self._idle_seconds = idle_seconds
        self._transport: asyncio.Transport | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._paused = False
        self.worker: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a socket transport
        self._connections.open.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.open.discard(self)
        self._transport = None
        if self._idle is not None:
            self._idle.cancel()

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        try:
            requests = self._parser.feed(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade,
                MessageTooLargeError) as error:  # fmt: skip
            transport.write(render_response(refusal(error), keep_alive=False))
            self.close()
            return
        if self._parser.take_continue():
            transport.write(CONTINUE)  # the client sends its body after this
        if not requests:
            return
        self._queue.extend(requests)
        if len(self._queue) >= _MAX_QUEUED and not self._paused:
            transport.pause_reading()
            self._paused = True
        if self.worker is None:
            if self._idle is not None:
                self._idle.cancel()
            self.worker = asyncio.get_running_loop().create_task(self._answer_all())

    async def _answer_all(self) -> None:
        try:
            while self._queue and self._transport is not None:
                request = self._queue.popleft()
                if self._paused and len(self._queue) < _MAX_QUEUED // 2:
                    self._transport.resume_reading()
                    self._paused = False
                try:
                    response = await self._handle(request)
                except Exception:
                    logger.exception("request %s failed in the router", request.target)
                    response = _json(500, {"error": "the router failed on this request"})
                transport = self._transport
                if transport is None:
                    return  # the client went away; its answer has nobody to go to
                keep_alive = request.keep_alive and not self._connections.stopping
                transport.write(
                    render_response(response, keep_alive=keep_alive, http10=request.http10)
                )
                if not keep_alive:
                    self.close()
                    return
        finally:
            self.worker = None
            self._arm_idle()

    def _arm_idle(self) -> None:
        if self._transport is None:
            return
        if self._idle is not None:
            self._idle.cancel()
        # Between requests a connection may wait this long; then it is closed, so idle or
        # stalled clients cannot hold connections for ever.
        self._idle = asyncio.get_running_loop().call_later(self._idle_seconds, self._expire)

    def _expire(self) -> None:
        if self.worker is None:
            self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
