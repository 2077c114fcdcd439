"""The upstream pool against real sockets on 127.0.0.1: reuse, a stale kept-alive connection,
a deadline, an answer cut short."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from davit_router.upstream import Pool, UpstreamError

REQUEST = b"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def with_server(serve: Serve, use: Callable[[Pool], Awaitable[None]]) -> None:
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = Pool(f"127.0.0.1:{port}")
    try:
        await use(pool)
    finally:
        pool.close()
        server.close()


def test_a_kept_alive_connection_serves_the_next_request() -> None:
    connections = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(OK)

    async def use(pool: Pool) -> None:
        for _ in range(3):
            assert (await pool.exchange(REQUEST, 5)).body == b"ok"

    asyncio.run(with_server(serve, use))
    assert len(connections) == 1


def test_a_connection_the_server_closed_while_idle_is_replaced_without_a_failure() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(OK)  # kept alive as far as the client knows, then closed
        await writer.drain()
        writer.close()

    async def use(pool: Pool) -> None:
        assert (await pool.exchange(REQUEST, 5)).body == b"ok"
        await asyncio.sleep(0.05)  # the close arrives while the connection is idle
        assert (await pool.exchange(REQUEST, 5)).body == b"ok"

    asyncio.run(with_server(serve, use))


def test_no_answer_by_the_deadline_is_a_timeout() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    async def use(pool: Pool) -> None:
        with pytest.raises(UpstreamError) as error:
            await pool.exchange(REQUEST, 0.2)
        assert error.value.timed_out
        assert not error.value.answered

    asyncio.run(with_server(serve, use))


def test_an_answer_cut_short_is_answered_and_not_to_be_sent_again() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
        await writer.drain()
        writer.close()

    async def use(pool: Pool) -> None:
        with pytest.raises(UpstreamError) as error:
            await pool.exchange(REQUEST, 5)
        assert error.value.answered

    asyncio.run(with_server(serve, use))


def test_a_refused_connection_is_nothing_answered() -> None:
    async def use() -> None:
        with pytest.raises(UpstreamError) as error:
            await Pool("127.0.0.1:9").exchange(REQUEST, 5)
        assert "connect" in str(error.value)
        assert not error.value.answered

    asyncio.run(use())
