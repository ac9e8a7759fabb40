"""The shared HTTP/1.1 client (the gateway's to its engines, the benchmark's) against small raw-socket
servers that answer in every framing and fail in every way an engine can; and its connection fed reads
cut at every byte (there a stand-in for the socket decides the cuts, which a real socket may join)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from llmnest import http1

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
        client = http1.Client(timeout=5)
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
        client = http1.Client(timeout=5)
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
        client = http1.Client(timeout=0.5)
        with pytest.raises(http1.HttpError) as cut:
            await client.post(url + "/v1/x", b"{}", {})
        assert cut.value.before_response
        resp = await client.post(url + "/v1/x", b"{}", {})
        assert await resp.next() == b"hello"
        with pytest.raises(http1.HttpError) as died:
            await resp.next()
        assert not died.value.before_response
        resp.close()
        with pytest.raises(http1.HttpError, match="nothing for 0.5 s"):
            await client.post(url + "/v1/x", b"{}", {})

    serve(handler, check)
    with pytest.raises(http1.HttpError, match="cannot connect") as refused:
        asyncio.run(http1.Client(timeout=1).post("http://127.0.0.1:9/v1/x", b"{}", {}))
    assert refused.value.before_response


class Socket:
    """Stands in for the socket under a Connection fed by hand: records what the connection does to it."""

    def __init__(self) -> None:
        self.closed = False
        self.paused = False

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


def feed(reads: list[bytes], push: bool, status_seen: list[int] | None = None) -> tuple[http1.Connection, bytes]:
    """A connection given `reads` one by one: it and the body it delivered (to a sink, or pulled)."""
    pushed: list[bytes] = []

    def sink(data: bytes, arrived: float) -> bool:
        pushed.append(data)
        return False

    async def go() -> tuple[http1.Connection, bytes]:
        conn = http1.Connection()
        conn.connection_made(Socket())  # type: ignore[arg-type]
        conn.send(b"POST / HTTP/1.1\r\n\r\n", sink if push else None)
        for data in reads:
            conn.data_received(data)
        return conn, b"".join(pushed) + conn.take()

    return asyncio.run(go())


BODY = b"data: {\"a\":1}\n\n" * 3 + b"data: [DONE]\n\n"
CHUNKED = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + b"7\r\n" + BODY[:7] + b"\r\n"
           + b"%x;name=value\r\n" % (len(BODY) - 7) + BODY[7:] + b"\r\n0\r\nX-Trailer: 1\r\n\r\n")
SIZED = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(BODY) + BODY


@pytest.mark.parametrize("push", [True, False], ids=["pushed", "pulled"])
@pytest.mark.parametrize("whole", [CHUNKED, SIZED], ids=["chunked", "content-length"])
def test_a_body_cut_at_any_two_bytes_comes_out_whole(whole: bytes, push: bool) -> None:
    for first in range(1, len(whole)):
        for second in (first + 1, first + 5, first + 33):
            conn, body = feed([p for p in (whole[:first], whole[first:second], whole[second:]) if p], push)
            assert (conn.status, conn.complete, conn.keep_alive, body) == (200, True, True, BODY), (first, second)
            assert conn.error is None


def test_one_read_per_chunk_is_pushed_with_its_arrival_and_a_refusing_sink_fails_the_request() -> None:
    seen: list[tuple[bytes, float]] = []

    async def go() -> tuple[http1.Connection, Socket]:
        conn, socket = http1.Connection(), Socket()
        conn.connection_made(socket)  # type: ignore[arg-type]
        conn.send(b"", lambda data, arrived: seen.append((data, arrived)) or False)
        conn.data_received(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nab\n\n\r\n")
        before = time.perf_counter()
        conn.data_received(b"4\r\ncd\n\n\r\n4\r\nef\n\n\r\n")  # two chunks, one read: one call
        assert [d for d, _ in seen] == [b"ab\n\n", b"cd\n\nef\n\n"] and seen[1][1] >= before
        conn.sink = conn.push = lambda data, arrived: 1 / 0
        conn.data_received(b"1\r\nx\r\n")
        return conn, socket

    conn, socket = asyncio.run(go())
    assert isinstance(conn.error, ZeroDivisionError) and socket.closed


def test_only_a_200_is_pushed_and_keep_alive_follows_the_server() -> None:
    conn, body = feed([b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 4\r\n\r\nnope"], push=True)
    assert conn.status == 401 and conn.complete and body == b"nope"  # (the sink never saw it: pulled)
    for head in (b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n{}",
                 b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}"):
        conn, body = feed([head], push=True)
        assert conn.complete and body == b"{}" and not conn.keep_alive


def test_an_oversize_head_and_bytes_nobody_asked_for_close_the_connection() -> None:
    endless = [b"HTTP/1.1 200 OK\r\n"] + [b"x-filler: %s\r\n" % (b"y" * 1000)] * 70
    conn, _ = feed(endless, push=True)
    assert isinstance(conn.error, http1.BadResponse) and "head is over" in str(conn.error) and conn.closed

    async def idle() -> http1.Connection:
        conn = http1.Connection()
        conn.connection_made(Socket())  # type: ignore[arg-type]
        conn.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")  # no request was sent
        return conn

    conn = asyncio.run(idle())
    assert conn.closed and not conn.status


def test_an_unread_body_pauses_the_socket_until_it_is_taken() -> None:
    async def go() -> None:
        conn, socket = http1.Connection(), Socket()
        conn.connection_made(socket)  # type: ignore[arg-type]
        conn.send(b"", None)
        conn.data_received(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        big = b"x" * 70000
        for _ in range(3):
            conn.data_received(b"%x\r\n%s\r\n" % (len(big), big))
        assert not socket.paused
        conn.data_received(b"%x\r\n%s\r\n" % (len(big), big))  # past HIGH_WATER
        assert socket.paused
        assert len(conn.take()) == 4 * len(big) and not socket.paused

    asyncio.run(go())


def test_a_slow_stream_is_bounded_between_reads_when_pulled_and_in_all_when_pushed() -> None:
    async def handler(reader, writer, n):
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for _ in range(6):
                writer.write(b"4\r\nab\n\n\r\n")
                await writer.drain()
                await asyncio.sleep(0.15)
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async def check(url, connections):
        client = http1.Client(timeout=0.5)
        pulled = await client.post(url + "/v1/x", b"{}", {})
        assert await pulled.read() == b"ab\n\n" * 6  # 0.9 s in all, never 0.5 s silent
        pulled.close()
        with pytest.raises(http1.HttpTimeout, match="no complete answer within 0.5 s"):
            await client.post(url + "/v1/x", b"{}", {}, sink=lambda data, arrived: False)
        assert len(connections) == 1 and client.idle() == 0  # the first was reused, then closed by the timeout

    serve(handler, check)


def test_a_timeout_on_a_kept_connection_is_not_retried_elsewhere() -> None:
    async def handler(reader, writer, n):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()
        await read_request(reader)
        await asyncio.sleep(2)  # the second request on this connection: silent

    async def check(url, connections):
        client = http1.Client(timeout=0.3)
        first = await client.post(url + "/v1/x", b"{}", {"Accept": "text/event-stream"})
        assert await first.read() == b"{}"
        first.close()
        with pytest.raises(http1.HttpTimeout, match="nothing for 0.3 s") as silent:
            await client.post(url + "/v1/x", b"{}", {})
        assert silent.value.before_response and silent.value.written is not None
        assert len(connections) == 1

    serve(handler, check)


def test_the_request_head() -> None:
    seen: list[bytes] = []

    async def handler(reader, writer, n):
        seen.append(await read_request(reader))
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()

    async def check(url, connections):
        client = http1.Client(timeout=5)
        resp = await client.post(url + "/v1/chat/completions?x=1", b'{"a":1}', {"Authorization": "Bearer k"})
        assert resp.status == 204 and await resp.read() == b""
        resp.close()
        with pytest.raises(http1.HttpError, match="not an http"):
            await client.post("ftp://host/x", b"", {})

    serve(handler, check)
    port = seen[0].split(b"Host: 127.0.0.1:")[1].split(b"\r\n")[0]
    assert seen == [b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nContent-Length: 7\r\n"
                    b"Authorization: Bearer k\r\n\r\n{\"a\":1}" % port]
