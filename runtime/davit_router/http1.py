"""HTTP/1.1 messages as the router reads and writes them: whole messages with their bodies.

Requests from clients and responses from the runtime are parsed by httptools (chunked bodies
decoded) and written again with a Content-Length, so a message the router forwards is always
framed the same way whatever the sender did. Hop-by-hop headers (RFC 9110 §7.6.1: Connection
and the headers it names, Keep-Alive, Transfer-Encoding, …) stay on their own hop; every other
header is forwarded as received, repeats and order kept.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import httptools

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",  # written again from the body the router holds
    }
)

REASONS = {
    200: b"OK", 400: b"Bad Request", 404: b"Not Found", 413: b"Payload Too Large",
    429: b"Too Many Requests", 500: b"Internal Server Error", 502: b"Bad Gateway",
    503: b"Service Unavailable", 504: b"Gateway Timeout",
}  # fmt: skip


class MessageTooLargeError(ValueError):
    """A body over the router's limit; the connection is answered 413 and closed."""


def header(headers: Headers, name: bytes) -> bytes | None:
    """The last value of header `name` (lower case), or None."""
    found = None
    for key, value in headers:
        if key == name:
            found = value
    return found


def end_to_end(headers: Headers) -> Headers:
    """`headers` without the hop-by-hop ones, including those the Connection header names."""
    named = {
        token.strip().lower()
        for key, value in headers
        if key == b"connection"
        for token in value.split(b",")
    }
    return [(k, v) for k, v in headers if k not in HOP_BY_HOP and k not in named]


@dataclass(slots=True)
class Request:
    method: bytes
    target: bytes  # the path and query, as sent
    headers: Headers
    body: bytes
    keep_alive: bool


@dataclass(slots=True)
class Response:
    status: int
    headers: Headers
    body: bytes
    keep_alive: bool = True


class _Parsing:
    """httptools' callbacks: the message being parsed; completed ones wait in `done`, each with
    what the parser said of it then (pipelined messages complete before they are read)."""

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self.parser: httptools.HttpRequestParser | httptools.HttpResponseParser | None = None
        self.url = b""
        self.headers: Headers = []
        self.body: list[bytes] = []
        self.size = 0
        self.done: deque[tuple[bytes, Headers, bytes, bool, bytes | int]] = deque()

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body, self.size = b"", [], [], 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.max_body:
            raise MessageTooLargeError(f"body larger than the {self.max_body} byte limit")
        self.body.append(body)

    def on_message_complete(self) -> None:
        parser = self.parser
        assert parser is not None
        kind = (
            parser.get_method()
            if isinstance(parser, httptools.HttpRequestParser)
            else parser.get_status_code()
        )
        body = b"".join(self.body)
        self.done.append((self.url, self.headers, body, parser.should_keep_alive(), kind))


class RequestParser:
    """Client bytes in, whole requests out (pipelined ones in order). `feed` raises
    httptools.HttpParserError for malformed input and MessageTooLargeError."""

    def __init__(self, max_body: int) -> None:
        self._state = _Parsing(max_body)
        self._state.parser = self._parser = httptools.HttpRequestParser(self._state)

    def feed(self, data: bytes) -> list[Request]:
        self._parser.feed_data(data)
        completed = []
        while self._state.done:
            url, headers, body, keep_alive, method = self._state.done.popleft()
            assert isinstance(method, bytes)
            completed.append(Request(method, url, headers, body, keep_alive))
        return completed


class ResponseParser:
    """Upstream bytes in, one whole response out (the runtime frames every response by its
    length, so the end of the stream never completes one: it is a failed exchange)."""

    def __init__(self, max_body: int) -> None:
        self._state = _Parsing(max_body)
        self._state.parser = self._parser = httptools.HttpResponseParser(self._state)

    def feed(self, data: bytes) -> Response | None:
        """The response once complete, else None (more bytes needed)."""
        self._parser.feed_data(data)
        if not self._state.done:
            return None
        _, headers, body, keep_alive, status = self._state.done.popleft()
        assert isinstance(status, int)
        return Response(status, headers, body, keep_alive)


def render_request(request: Request, authority: bytes) -> bytes:
    """`request` for the upstream at `authority` (host:port) on a kept-alive connection."""
    headers = [(k, v) for k, v in end_to_end(request.headers) if k != b"host"]
    lines = [request.method + b" " + request.target + b" HTTP/1.1", b"host: " + authority]
    lines += [k + b": " + v for k, v in headers]
    lines.append(b"content-length: %d" % len(request.body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + request.body


def render_response(
    response: Response, keep_alive: bool, extra: Sequence[tuple[bytes, bytes]] = ()
) -> bytes:
    """`response` for the client, with the router's own `extra` headers."""
    reason = REASONS.get(response.status, b"Unknown")
    lines = [b"HTTP/1.1 %d %s" % (response.status, reason)]
    lines += [k + b": " + v for k, v in end_to_end(response.headers)]
    lines += [k + b": " + v for k, v in extra]
    lines.append(b"content-length: %d" % len(response.body))
    if not keep_alive:
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + response.body
