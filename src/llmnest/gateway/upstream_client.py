"""The gateway's HTTP/1.1 client for engine replicas, lean enough to relay tens of thousands of chunks/s.

Keep-alive connections per origin (one per request in flight, no cap, so concurrent streams never
queue). Each connection is an asyncio Protocol fed to httptools' C parser; a streamed body is handed
over as all the bytes that arrived since the last call, so when the relay is busy one wake-up moves
many chunks. A slow reader pauses the socket (backpressure reaches the engine).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from urllib.parse import urlsplit

import httptools

IDLE_S = 4.0  # drop kept-alive connections idle longer (uvicorn-based engines close them after 5 s)
HIGH_WATER = 256 * 1024  # unread body bytes at which the socket is paused


class UpstreamError(Exception):
    """The exchange failed. `before_response`: no byte of an answer came, so trying elsewhere is safe."""

    def __init__(self, message: str, before_response: bool = False) -> None:
        super().__init__(message)
        self.before_response = before_response


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; holds the response in progress."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self.timed_out = False
        self.idle_since = 0.0
        self.reused = False
        self._reset()

    def _reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.size = 0
        self.got_bytes = False
        self.complete = False
        self.keep_alive = False
        self.error: UpstreamError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False

    # ---- asyncio callbacks -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"the engine sent malformed HTTP ({exc})")
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            if self.status and "content-length" not in self.headers and \
                    "chunked" not in self.headers.get("transfer-encoding", ""):
                self.complete = True  # a body delimited by the connection's end
            else:
                self._fail(f"the engine closed the connection ({exc or 'end of stream'})")
        self._wake()

    # ---- httptools callbacks ---------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.size += len(body)
        if self.size > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # (asked later, the parser has forgotten)
        self._wake()

    # ---- used by the client ----------------------------------------------------------------------

    def _fail(self, message: str) -> None:
        if self.error is None and not self.complete:
            self.error = UpstreamError(message, before_response=not self.got_bytes)

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _timed_out(self, waiter: asyncio.Future[None], timeout: float) -> None:
        if not waiter.done():
            self.timed_out = True
            self._fail(f"the engine sent nothing for {timeout:g} s")
            self.close()

    async def wait(self, timeout: float) -> None:
        """Until something happens on the connection (bytes, the end, an error) or `timeout` passes."""
        self.waiter = waiter = self.loop.create_future()
        timer = self.loop.call_later(timeout, self._timed_out, waiter, timeout)
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
            self.transport.resume_reading()  # type: ignore[union-attr]
        return data

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class UpstreamResponse:
    """An answer whose head has arrived; read its body whole (`read`) or as it comes (`next`), then `close`."""

    def __init__(self, client: UpstreamClient, origin: tuple[str, str, int], conn: _Connection) -> None:
        self._client, self._origin, self._conn = client, origin, conn
        self._closed = False
        self.status = conn.status
        self.headers = conn.headers

    async def next(self) -> bytes:
        """The body bytes that arrived since the last call (waiting for some); b"" once the body is complete."""
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
        """Read and drop what is left of the body for up to `timeout` seconds (the engine's last bytes
        after [DONE]), so the connection can be reused; then close."""
        conn = self._conn
        while not conn.complete and conn.error is None and not conn.closed:
            conn.take()
            await conn.wait(timeout)
        self.close()

    def abort(self) -> None:
        """Close the connection now (the engine stops generating); a waiting `next` raises UpstreamError."""
        self._conn.close()

    def close(self) -> None:
        """Done with the answer: a completely read connection goes back to the pool, any other is closed
        (which tells the engine to stop generating)."""
        conn, was_closed, self._closed = self._conn, self._closed, True
        if was_closed:
            return
        if conn.complete and conn.keep_alive and not conn.closed and not conn.body:
            self._client._put(self._origin, conn)
        else:
            conn.close()


class UpstreamClient:
    """POSTs to engine replicas over pooled keep-alive connections."""

    def __init__(self, timeout: float, connect_timeout: float = 5.0) -> None:
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._targets: dict[str, tuple[tuple[str, str, int], bytes]] = {}

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> UpstreamResponse:
        """Send the request and wait for the answer's head. Raises UpstreamError."""
        origin, path = self._target(url)
        head = b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Length: %d\r\n%s\r\n" % (
            path, origin[1].encode(), origin[2], len(body),
            b"".join(b"%s: %s\r\n" % (k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()))
        while True:
            conn = self._get(origin) or await self._connect(origin)
            conn.transport.write(head + body)  # type: ignore[union-attr]
            try:
                while not conn.status:
                    if conn.error is not None:
                        raise conn.error
                    await conn.wait(self.timeout)
            except UpstreamError:
                conn.close()
                if conn.reused and not conn.got_bytes and not conn.timed_out:
                    continue  # a kept-alive connection the engine had just closed: again on a fresh one
                raise
            except BaseException:
                conn.close()
                raise
            return UpstreamResponse(self, origin, conn)

    def idle(self) -> int:
        """Kept-alive connections waiting for the next request."""
        return sum(not c.closed for conns in self._idle.values() for c in conns)

    def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

    def _target(self, url: str) -> tuple[tuple[str, str, int], bytes]:
        known = self._targets.get(url)
        if known is None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise UpstreamError(f"not an http(s) URL: {url}", before_response=True)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            known = self._targets[url] = ((parts.scheme, parts.hostname, port), path.encode())
        return known

    def _get(self, origin: tuple[str, str, int]) -> _Connection | None:
        idle, now = self._idle.get(origin), time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_S:
                conn.reused = True
                return conn
            conn.close()
        return None

    def _put(self, origin: tuple[str, str, int], conn: _Connection) -> None:
        conn._reset()
        conn.idle_since = time.monotonic()
        self._idle.setdefault(origin, []).append(conn)

    async def _connect(self, origin: tuple[str, str, int]) -> _Connection:
        scheme, host, port = origin
        context = ssl.create_default_context() if scheme == "https" else None
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(_Connection, host, port, ssl=context),
                                             self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise UpstreamError(f"cannot connect to {host}:{port} ({type(exc).__name__})",
                                before_response=True) from None
        return conn
