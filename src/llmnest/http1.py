"""One HTTP/1.1 client for streamed answers, shared by the gateway (relaying an engine's stream) and the
benchmark (timing a server's stream).

Keep-alive connections per origin (one per request in flight, no cap, so concurrent streams never
queue); each is an asyncio Protocol fed to httptools' C parser, which reads the head and the body's
framing (chunked, sized, or until close). The body of a 200 answer goes one of two ways:

- pushed: a `sink(data, arrived)` is called once per socket read with all the body bytes that read
  carried and the `perf_counter` time it arrived (one clock reading per read, no task switch: the
  benchmark stamps chunks with it). A sink that returns a true value lets the connection gather
  reads that come faster than `gather_s` apart (reading is paused that long), so a very fast stream
  costs a fraction of one read per chunk;
- pulled: `Response.next` hands over all the bytes that arrived since the last call (one wake-up moves
  many chunks when the reader is busy); unread bytes past HIGH_WATER pause the socket, so backpressure
  reaches the server. Any non-200 answer's body is pulled too.

A request sent on a kept-alive connection that the server had just closed (no byte came back) is sent
again on a new one; any other failure raises HttpError, which says whether any byte of an answer came.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from time import monotonic, perf_counter
from urllib.parse import urlsplit

import httptools

IDLE_S = 4.0  # drop kept-alive connections idle longer (uvicorn-based servers close them after 5 s)
HIGH_WATER = 256 * 1024  # unread pulled body bytes at which the socket is paused
MAX_HEAD = 64 * 1024  # bytes a response head may take

Sink = Callable[[bytes, float], object]  # (one read's body bytes, when it came) -> true: reads may be gathered
Origin = tuple[str, str, int]


class HttpError(Exception):
    """The exchange failed. `before_response`: no byte of an answer came, so trying elsewhere is safe;
    `written`: when the request was written (perf_counter), if it was."""

    def __init__(self, message: str, before_response: bool = False) -> None:
        super().__init__(message)
        self.before_response = before_response
        self.written: float | None = None


class HttpTimeout(HttpError, TimeoutError):
    """Nothing came for the time allowed (or the connection could not be made in time)."""


class ConnectionBroken(HttpError, ConnectionError):
    """The connection could not be made, or closed before the answer was complete."""


class BadResponse(HttpError, ValueError):
    """The server's bytes are not an HTTP/1.1 response (or its head is over MAX_HEAD)."""


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; holds the response in progress."""

    def __init__(self, gather_s: float = 0.0) -> None:
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.gather_s = gather_s
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        self.last = 0.0  # when the previous read came
        self.held = False  # reading paused to gather a fast stream's reads
        self._reset()

    def _reset(self) -> None:
        """Ready for the next request (a fresh parser, no response)."""
        self.parser = httptools.HttpResponseParser(self)
        self.sink: Sink | None = None
        self.push: Sink | None = None  # the sink, once the answer is a 200
        self.busy = False  # a request was sent and its answer is awaited
        self.status = 0
        self.headers: dict[str, str] = {}
        self.head_size = 0
        self.body: list[bytes] = []
        self.size = 0
        self.got_bytes = False
        self.complete = False
        self.keep_alive = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False
        self.written = 0.0

    def send(self, data: bytes, sink: Sink | None) -> None:
        """Write a request (on a new or a reset connection); its answer's body goes to `sink` if given
        (and the answer is a 200)."""
        self.sink = sink
        self.busy = True
        self.written = perf_counter()
        self.transport.write(data)  # type: ignore[union-attr]

    # ---- asyncio callbacks -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if sink is None and self.status:  # a pulled body's read, the gateway's usual one: at the least cost
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError as exc:
                self._malformed(exc)
                return
            if self.body:  # (self._pulled(), inline)
                if self.size > HIGH_WATER and not self.paused:
                    self.paused = True
                    self.transport.pause_reading()  # type: ignore[union-attr]
                waiter = self.waiter
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            return
        arrived = perf_counter() if sink is not None else 0.0
        heading = not self.status
        if heading:
            if not self.busy:  # bytes nobody asked for: this connection cannot be trusted
                self.close()
                return
            self.head_size += len(data)
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._malformed(exc)
            return
        if heading and not self.status and self.head_size > MAX_HEAD:
            self._fail(BadResponse(f"the server's response head is over {MAX_HEAD} bytes"))
            self.close()
            return
        body = self.body
        if body:
            push = self.push
            if push is None:
                self._pulled()
                return
            data = body[0] if len(body) == 1 else b"".join(body)
            body.clear()
            self.size = 0
            try:
                gather = push(data, arrived)
            except Exception as exc:  # the sink refused the stream (e.g. an endless event): this request fails
                self._fail(exc)
                self.close()
                return
            if gather and arrived - self.last < self.gather_s and not self.held and not self.complete:
                self.held = True
                self.transport.pause_reading()  # type: ignore[union-attr]
                self.loop.call_later(self.gather_s, self._release_hold)
        if sink is not None:
            self.last = arrived

    def _pulled(self) -> None:
        """Body bytes came for the reader to pull: wake it; too many unread pause the socket."""
        if self.size > HIGH_WATER and not self.paused:
            self.paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]
        self._wake()

    def _malformed(self, exc: Exception) -> None:
        self._fail(BadResponse(f"the server sent malformed HTTP ({exc})"))
        self.close()

    def _release_hold(self) -> None:
        self.held = False
        if not self.closed and not self.paused:
            self.last = perf_counter()
            self.transport.resume_reading()  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.busy and not self.complete:
            if self.status and "content-length" not in self.headers and \
                    "chunked" not in self.headers.get("transfer-encoding", ""):
                self.complete = True  # a body delimited by the connection's end
            else:
                self._fail(ConnectionBroken(f"the server closed the connection ({exc or 'end of stream'})",
                                            before_response=not self.got_bytes))
        self._wake()

    # ---- httptools callbacks ---------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.status == 200 and self.sink is not None:
            self.push = self.sink  # (the waiter waits for the end)
        else:
            self._wake()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.size += len(body)

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # (asked later, the parser has forgotten)
        self._wake()

    # ---- used by the client ----------------------------------------------------------------------

    def _fail(self, error: BaseException) -> None:
        if self.error is None and not self.complete:
            self.error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _timed_out(self, waiter: asyncio.Future[None], allowed: float) -> None:
        if not waiter.done():
            why = "no complete answer within" if self.push is not None else "the server sent nothing for"
            self._fail(HttpTimeout(f"{why} {allowed:g} s", before_response=not self.got_bytes))
            self.close()

    async def wait(self, timeout: float, allowed: float | None = None) -> None:
        """Until something happens on the connection (the head, pulled bytes, the end, an error) or
        `timeout` passes: then the connection fails (HttpTimeout naming `allowed` seconds, `timeout` by
        default) and closes."""
        self.waiter = waiter = self.loop.create_future()
        timer = self.loop.call_later(timeout, self._timed_out, waiter, allowed or timeout)
        try:
            await waiter
        finally:
            timer.cancel()
            self.waiter = None

    def take(self) -> bytes:
        body = self.body
        data = body[0] if len(body) == 1 else b"".join(body)
        self.body, self.size = [], 0
        if self.paused and not self.closed:
            self.paused = False
            if not self.held:
                self.transport.resume_reading()  # type: ignore[union-attr]
        return data

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Response:
    """An answer whose head has arrived (and, when pushed to a sink, whose body is complete): pull its
    body (`read` whole, `next` as it comes), then `close`."""

    def __init__(self, client: Client, origin: Origin, conn: Connection) -> None:
        self._client, self._origin, self._conn = client, origin, conn
        self._closed = False
        self.status = conn.status
        self.headers = conn.headers
        self.written = conn.written  # when the request was written (perf_counter)

    async def next(self) -> bytes:
        """The body bytes that arrived since the last call (waiting for some, up to the client's timeout
        between two reads); b"" once the body is complete."""
        conn = self._conn
        while not conn.body:
            if conn.complete:
                return b""
            if conn.error is not None:
                raise conn.error
            await conn.wait(self._client.timeout)
        return conn.take()

    async def read(self) -> bytes:
        chunks = []
        while data := await self.next():
            chunks.append(data)
        return b"".join(chunks)

    async def finish(self, timeout: float) -> None:
        """Read and drop what is left of the body for up to `timeout` seconds (a server's last bytes
        after the end of the stream), so the connection can be reused; then close."""
        conn = self._conn
        while not conn.complete and conn.error is None and not conn.closed:
            conn.take()
            await conn.wait(timeout)
        self.close()

    def abort(self) -> None:
        """Close the connection now (the server stops); a waiting `next` raises HttpError."""
        self._conn.close()

    def close(self) -> None:
        """Done with the answer: a completely read connection goes back to the pool, any other is closed
        (which tells the server to stop generating)."""
        conn, was_closed, self._closed = self._conn, self._closed, True
        if was_closed:
            return
        if conn.complete and conn.keep_alive and not conn.closed and not conn.body:
            self._client._put(self._origin, conn)
        else:
            conn.close()


class Client:
    """POSTs over pooled keep-alive connections. `timeout`: the most a server may stay silent (before
    the head, and between two pulled reads); `gather_s`: see the module's docstring."""

    def __init__(self, timeout: float, connect_timeout: float = 5.0, gather_s: float = 0.0) -> None:
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.gather_s = gather_s
        self._idle: dict[Origin, list[Connection]] = {}
        self._targets: dict[str, tuple[Origin, bytes]] = {}

    async def post(self, url: str, body: bytes, headers: dict[str, str], sink: Sink | None = None,
                   timeout: float | None = None) -> Response:
        """Send the request and wait for the answer's head or, when its body is pushed to `sink` (a 200),
        for its end; connecting included, up to `timeout` (the client's by default). Raises HttpError
        or what the sink raised, with `written` set when the request had been written."""
        timeout = self.timeout if timeout is None else timeout
        began = perf_counter()
        origin, path = self.target(url)
        head = b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Length: %d\r\n%s\r\n" % (
            path, origin[1].encode(), origin[2], len(body),
            b"".join(b"%s: %s\r\n" % (k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()))
        while True:
            conn = self._get(origin) or await self._connect(origin, timeout - (perf_counter() - began))
            conn.send(head + body, sink)
            try:
                while not conn.status or (conn.push is not None and not conn.complete):
                    if conn.error is not None:
                        raise conn.error
                    await conn.wait(timeout - (perf_counter() - began), timeout)
            except Exception as exc:
                conn.close()
                if isinstance(exc, ConnectionBroken) and conn.reused and not conn.got_bytes:
                    continue  # a kept-alive connection the server had just closed: again on a fresh one
                exc.written = conn.written  # type: ignore[attr-defined]
                raise
            except BaseException:
                conn.close()
                raise
            return Response(self, origin, conn)

    def idle(self) -> int:
        """Kept-alive connections waiting for the next request."""
        return sum(not c.closed for conns in self._idle.values() for c in conns)

    def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

    def target(self, url: str) -> tuple[Origin, bytes]:
        """The URL's (scheme, host, port) and path. Raises HttpError for anything but an http(s) URL."""
        known = self._targets.get(url)
        if known is None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise HttpError(f"not an http(s) URL: {url}", before_response=True)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            known = self._targets[url] = ((parts.scheme, parts.hostname, port), path.encode())
        return known

    def _get(self, origin: Origin) -> Connection | None:
        idle, now = self._idle.get(origin), monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_S:
                conn.reused = True
                return conn
            conn.close()
        return None

    def _put(self, origin: Origin, conn: Connection) -> None:
        conn._reset()
        conn.idle_since = monotonic()
        self._idle.setdefault(origin, []).append(conn)

    async def _connect(self, origin: Origin, timeout: float) -> Connection:
        scheme, host, port = origin
        context = ssl.create_default_context() if scheme == "https" else None
        loop = asyncio.get_running_loop()
        gather_s, limit = self.gather_s, min(self.connect_timeout, timeout)
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: Connection(gather_s), host, port, ssl=context), max(limit, 0.001))
        except asyncio.TimeoutError:
            raise HttpTimeout(f"cannot connect to {host}:{port} within {limit:.3g} s", before_response=True) from None
        except OSError as exc:
            raise ConnectionBroken(f"cannot connect to {host}:{port} ({exc.strerror or type(exc).__name__})",
                                   before_response=True) from None
        return conn
