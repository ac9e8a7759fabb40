"""The gateway's HTTP/1.1 client against small raw-socket servers that answer in every framing and
fail in every way an engine can."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from llmnest.gateway.upstream_client import UpstreamClient, UpstreamError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    return head + await reader.readexactly(length)


def serve(handler: Handler, check: Callable[[str, list[int]], Awaitable[None]]) -> list[int]:
    """Run `check(base_url, connections)` against a server that hands each connection to `handler`."""
    connections: list[int] = []

    async def main() -> None:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.append(len(connections))
            try:
                await handler(reader, writer, len(connections))
            finally:
                writer.close()

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        async with server:
            await check(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", connections)

    asyncio.run(main())
    return connections


def test_framings_keep_alive_and_a_kept_connection_the_engine_closed() -> None:
    async def handler(reader, writer, n):
        request = await read_request(reader)
        assert request.startswith(b"POST /v1/x HTTP/1.1\r\n") and b"Authorization: Bearer k" in request
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" if await read_request(reader) else b"")
        writer.write(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        await writer.drain()
        if n == 1:
            await read_request(reader)  # the third request on this connection: closed unanswered
            return
        await reader.read()

    async def check(url, connections):
        client = UpstreamClient(timeout=5)
        first = await client.post(url + "/v1/x", b"{}", {"Authorization": "Bearer k"})
        assert (first.status, first.headers["content-type"], await first.read()) == (200, "application/json", b"{}")
        first.close()
        second = await client.post(url + "/v1/x", b"{}", {"Authorization": "Bearer k"})
        assert await second.read() == b"hello world" and len(connections) == 1
        second.close()
        third = await client.post(url + "/v1/x", b"{}", {"Authorization": "Bearer k"})  # tried again on a new one
        assert third.status == 200 and await third.read() == b"{}" and len(connections) == 2
        third.close()
        client.close()

    assert serve(handler, check) == [0, 1]


def test_a_body_until_close_and_bytes_that_wait_come_back_in_one_piece() -> None:
    async def handler(reader, writer, n):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n")
        for i in range(50):
            writer.write(b"data: %d\n\n" % i)
        await writer.drain()

    async def check(url, connections):
        client = UpstreamClient(timeout=5)
        resp = await client.post(url + "/v1/x", b"{}", {})
        await asyncio.sleep(0.2)  # the relay is busy elsewhere: everything sent meanwhile waits
        assert await resp.next() == b"".join(b"data: %d\n\n" % i for i in range(50))
        assert await resp.next() == b""
        resp.close()

    serve(handler, check)


def test_failures_say_whether_the_engine_answered_at_all() -> None:
    async def handler(reader, writer, n):
        await read_request(reader)
        if n == 1:
            return  # closed with no answer
        if n == 2:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await writer.drain()
            return  # died mid-body
        await asyncio.sleep(5)  # silent

    async def check(url, connections):
        client = UpstreamClient(timeout=0.5)
        with pytest.raises(UpstreamError) as cut:
            await client.post(url + "/v1/x", b"{}", {})
        assert cut.value.before_response
        resp = await client.post(url + "/v1/x", b"{}", {})
        assert await resp.next() == b"hello"
        with pytest.raises(UpstreamError) as died:
            await resp.next()
        assert not died.value.before_response
        resp.close()
        with pytest.raises(UpstreamError, match="nothing for 0.5 s"):
            await client.post(url + "/v1/x", b"{}", {})

    serve(handler, check)
    with pytest.raises(UpstreamError, match="cannot connect") as refused:
        asyncio.run(UpstreamClient(timeout=1).post("http://127.0.0.1:9/v1/x", b"{}", {}))
    assert refused.value.before_response
