"""Kept-alive connections to one endpoint (a runtime pod), and one exchange over them.

An exchange either gives a whole response or fails with UpstreamError — nothing answered: the
connection was refused, reset, closed early, or the answer took too long. The router decides
what a failure means (retry elsewhere, count it against the endpoint); this module only keeps
connections. A connection taken from the idle list may have been closed by the server meanwhile
(its keep-alive timeout): when such a reused connection fails before any byte of an answer, the
request is sent once more on a fresh one, as HTTP clients do, and that is not a failure of the
endpoint.
"""

from __future__ import annotations

import asyncio

import httptools

from davit_router.http1 import MessageTooLargeError, Response, ResponseParser


class UpstreamError(Exception):
    """No (whole) response from the endpoint. `timed_out`: the deadline passed; `answered`:
    part of an answer came, so the request reached the model and must not run again."""

    def __init__(
        self, endpoint: str, reason: str, *, timed_out: bool = False, answered: bool = False
    ) -> None:
        super().__init__(f"{endpoint}: {reason}")
        self.endpoint = endpoint
        self.timed_out = timed_out
        self.answered = answered


class _NothingAnsweredError(Exception):
    """The connection failed before any byte of a response."""


class _Connection(asyncio.Protocol):
    """One kept-alive connection: an exchange writes a request and awaits `answer`, which the
    parser completes from `data_received` (no stream buffers in between: the router's hot
    path). Closed by the endpoint, or by a bad answer, it fails the exchange in flight."""

    def __init__(self, max_body: int) -> None:
        self._max_body = max_body
        self.transport: asyncio.Transport | None = None
        self._parser: ResponseParser | None = None
        self._answer: asyncio.Future[Response] | None = None
        self._answered = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a socket transport

    def send(self, request: bytes, deadline: float) -> asyncio.Future[Response]:
        """Write `request`; the future of its answer, failed with TimeoutError (and the
        connection closed) at `deadline` (the loop's clock). A timer handle per exchange, not
        a timeout context: this is every request's path."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._parser = ResponseParser(self._max_body)
        self._answered = False
        answer = self._answer = loop.create_future()
        timer = loop.call_at(deadline, self._expire, answer)
        answer.add_done_callback(lambda _: timer.cancel())
        self.transport.write(request)
        return answer

    def _expire(self, answer: asyncio.Future[Response]) -> None:
        if not answer.done():
            self._answer = None
            answer.set_exception(TimeoutError())
            self.close()  # a late answer must not be read by the next request

    def data_received(self, data: bytes) -> None:
        answer, parser = self._answer, self._parser
        if answer is None or parser is None or answer.done():
            self.close()  # bytes nobody asked for: the connection cannot be trusted
            return
        self._answered = True
        try:
            response = parser.feed(data)
        except (MessageTooLargeError, httptools.HttpParserError) as error:
            self._fail(error)
            return
        if response is not None:
            self._answer, self._parser = None, None
            answer.set_result(response)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("closed by the endpoint"))

    def _fail(self, error: BaseException) -> None:
        answer = self._answer
        self._answer = None
        self.close()
        if answer is None or answer.done():
            return
        if self._answered:
            answer.set_exception(_CutShortError(str(error)))
        else:
            answer.set_exception(_NothingAnsweredError(str(error)))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _CutShortError(Exception):
    """Part of an answer came, then the connection failed or the answer was bad."""


class Pool:
    """Connections to `endpoint` (host:port): at most `max_idle` kept between requests."""

    def __init__(self, endpoint: str, *, max_idle: int = 64, max_body: int = 64 << 20) -> None:
        host, _, port = endpoint.rpartition(":")
        self.endpoint = endpoint
        self.authority = endpoint.encode()
        # An IPv6 address comes bracketed ([fd00::1]:8080); connecting wants it bare.
        self._host = host[1:-1] if host.startswith("[") else host
        self._port = int(port)
        self._max_idle = max_idle
        self._max_body = max_body
        self._idle: list[_Connection] = []
        self._closed = False

    async def exchange(self, request: bytes, timeout_s: float) -> Response:
        """Send `request` (a whole rendered request) and read its response within
        `timeout_s`; UpstreamError when nothing (whole) answered."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            while self._idle:
                connection = self._idle.pop()
                if connection.closed:
                    continue
                try:
                    return await self._over(connection, request, deadline)
                except _NothingAnsweredError:
                    continue  # closed while idle: try the next one, then a fresh one
            connection = await asyncio.wait_for(self._connect(), deadline - loop.time())
            try:
                return await self._over(connection, request, deadline)
            except _NothingAnsweredError as error:
                raise UpstreamError(self.endpoint, str(error) or "closed") from None
        except TimeoutError:
            raise UpstreamError(
                self.endpoint, f"no answer within {timeout_s:.3g} s", timed_out=True
            ) from None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self._max_body), self._host, self._port
            )
        except OSError as error:
            raise UpstreamError(self.endpoint, f"connect: {error.strerror or error}") from None
        return connection

    async def _over(self, connection: _Connection, request: bytes, deadline: float) -> Response:
        try:
            response = await connection.send(request, deadline)
        except asyncio.CancelledError:
            connection.close()  # a half-read answer must not be read by the next request
            raise
        except _CutShortError as error:
            raise UpstreamError(
                self.endpoint, f"answer cut short: {error}", answered=True
            ) from None
        if response.keep_alive and not self._closed and len(self._idle) < self._max_idle:
            self._idle.append(connection)
        else:
            connection.close()
        return response

    def close(self) -> None:
        """Close the idle connections; those in use close when their exchange ends."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()
