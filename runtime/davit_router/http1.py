"""HTTP/1.1 messages as the router reads and writes them: whole messages with their bodies.

Requests from clients and responses from the runtime are parsed by httptools (chunked bodies
decoded) and written again with a Content-Length, so a message the router forwards is always
framed the same way whatever the sender did. Hop-by-hop headers (RFC 9110 §7.6.1: Connection
and the headers it names, Keep-Alive, Transfer-Encoding, …) stay on their own hop; every other
header is forwarded as received, repeats and order kept. `Expect: 100-continue` is the router's
to answer (it reads the whole body before it picks an endpoint), so it is not forwarded, and an
interim 1xx answer from upstream is never taken for the response.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from http import HTTPStatus

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
        b"expect",  # answered by the router itself
    }
)
# The request line and headers of one message, at most: a client cannot make the router hold
# more than this before a body.
MAX_HEAD_BYTES = 64 * 1024


@cache
def reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


class MessageTooLargeError(ValueError):
    """A head or body over the router's limit; the connection is answered 413 and closed."""


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
    http10: bool = False  # keep-alive must then be said in the answer


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
        self.head_size = 0
        self.too_large: MessageTooLargeError | None = None  # raised inside a callback
        self.wants_continue = False  # a client waits for 100 Continue before its body
        self.done: deque[tuple[bytes, Headers, bytes, bool, bytes | int]] = deque()

    def _refuse(self, what: str, limit: int) -> None:
        self.too_large = MessageTooLargeError(f"{what} larger than the {limit} byte limit")
        raise self.too_large

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body, self.size, self.head_size = b"", [], [], 0, 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))
        self._count_head(len(name) + len(value))

    def _count_head(self, size: int) -> None:
        self.head_size += size
        if self.head_size > MAX_HEAD_BYTES:
            self._refuse("request line and headers", MAX_HEAD_BYTES)

    def on_headers_complete(self) -> None:
        length = header(self.headers, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            self._refuse("body", self.max_body)  # refused before it is sent or read
        expect = header(self.headers, b"expect")
        self.wants_continue = expect is not None and expect.lower() == b"100-continue"

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.max_body:
            self._refuse("body", self.max_body)
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


def _feed(state: _Parsing, parser: httptools.HttpRequestParser | httptools.HttpResponseParser,
          data: bytes) -> None:  # fmt: skip
    try:
        parser.feed_data(data)
    except httptools.HttpParserCallbackError:
        if state.too_large is not None:
            raise state.too_large from None  # httptools wraps what a callback raised
        raise


class RequestParser:
    """Client bytes in, whole requests out (pipelined ones in order). `feed` raises
    httptools.HttpParserError (malformed input), httptools.HttpParserUpgrade (a protocol
    switch, which the router does not do) and MessageTooLargeError."""

    def __init__(self, max_body: int) -> None:
        self._state = _Parsing(max_body)
        self._state.parser = self._parser = httptools.HttpRequestParser(self._state)

    def feed(self, data: bytes) -> list[Request]:
        _feed(self._state, self._parser, data)
        completed = []
        while self._state.done:
            url, headers, body, keep_alive, method = self._state.done.popleft()
            assert isinstance(method, bytes)
            http10 = self._parser.get_http_version() == "1.0"
            completed.append(Request(method, url, headers, body, keep_alive, http10))
        return completed

    def take_continue(self) -> bool:
        """Whether the client now waits for `100 Continue` (asked once per request)."""
        wanted, self._state.wants_continue = self._state.wants_continue, False
        return wanted


class ResponseParser:
    """Upstream bytes in, one whole response out (the runtime frames every response by its
    length, so the end of the stream never completes one: it is a failed exchange)."""

    def __init__(self, max_body: int) -> None:
        self._state = _Parsing(max_body)
        self._state.parser = self._parser = httptools.HttpResponseParser(self._state)

    def feed(self, data: bytes) -> Response | None:
        """The final response once complete, else None (more bytes needed); interim 1xx
        answers are passed over."""
        _feed(self._state, self._parser, data)
        while self._state.done:
            _, headers, body, keep_alive, status = self._state.done.popleft()
            assert isinstance(status, int)
            if status >= 200:
                return Response(status, headers, body, keep_alive)
        return None


def render_request(request: Request, authority: bytes) -> bytes:
    """`request` for the upstream at `authority` (host:port) on a kept-alive connection."""
    headers = [(k, v) for k, v in end_to_end(request.headers) if k != b"host"]
    lines = [request.method + b" " + request.target + b" HTTP/1.1", b"host: " + authority]
    lines += [k + b": " + v for k, v in headers]
    lines.append(b"content-length: %d" % len(request.body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + request.body


def render_response(
    response: Response,
    keep_alive: bool,
    extra: Sequence[tuple[bytes, bytes]] = (),
    *,
    http10: bool = False,
) -> bytes:
    """`response` for the client, with the router's own `extra` headers."""
    lines = [b"HTTP/1.1 %d %s" % (response.status, reason(response.status))]
    lines += [k + b": " + v for k, v in end_to_end(response.headers)]
    lines += [k + b": " + v for k, v in extra]
    lines.append(b"content-length: %d" % len(response.body))
    if not keep_alive:
        lines.append(b"connection: close")
    elif http10:
        lines.append(b"connection: keep-alive")  # an HTTP/1.0 client closes otherwise
    return b"\r\n".join(lines) + b"\r\n\r\n" + response.body


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
