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
import contextlib

import httptools

from davit_router.http1 import MessageTooLargeError, Response, ResponseParser

_READ_SIZE = 256 * 1024


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


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class _NothingAnsweredError(Exception):
    """The connection failed before any byte of a response."""


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
        `timeout_s`; UpstreamError when nothing answered."""
        try:
            async with asyncio.timeout(timeout_s):
                while self._idle:
                    connection = self._idle.pop()
                    try:
                        return await self._over(connection, request)
                    except _NothingAnsweredError:
                        continue  # closed while idle: try the next one, then a fresh one
                connection = await self._connect()
                try:
                    return await self._over(connection, request)
                except _NothingAnsweredError as error:
                    raise UpstreamError(self.endpoint, str(error) or "closed") from None
        except TimeoutError:
            raise UpstreamError(
                self.endpoint, f"no answer within {timeout_s:.3g} s", timed_out=True
            ) from None

    async def _connect(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(self._host, self._port)
        except OSError as error:
            raise UpstreamError(self.endpoint, f"connect: {error.strerror or error}") from None
        return _Connection(reader, writer)

    async def _over(self, connection: _Connection, request: bytes) -> Response:
        parser = ResponseParser(self._max_body)
        answered = False
        try:
            connection.writer.write(request)
            await connection.writer.drain()
            while True:
                data = await connection.reader.read(_READ_SIZE)
                if not data:
                    raise ConnectionResetError("closed by the endpoint")
                answered = True
                response = parser.feed(data)
                if response is not None:
                    break
        except asyncio.CancelledError:
            connection.close()  # a half-read answer must not be read by the next request
            raise
        except (OSError, MessageTooLargeError, httptools.HttpParserError) as error:
            connection.close()  # a bad answer ends the connection
            if not answered:
                raise _NothingAnsweredError(str(error)) from None
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
