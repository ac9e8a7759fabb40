"""The HTTP edge: one streamed OpenAI chat/completions call per request, timed, failures named by cause.

Streaming requests go over keep-alive HTTP/1.1 connections of our own (an asyncio Protocol): each
socket read is handed straight to the pure parser in `stream` with one clock reading, so a chunk
costs no task switch, no stream-reader buffer and no per-line object (see docs/bench.md). The clock starts just before the request is written, as in `vllm bench serve`. Every
request, connection included, is bounded by `timeout`.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any, Literal

from ..errors import BadInput, LlmnestError
from .datasets import Prompt
from .record import RequestRecord
from .stream import EventReader, Response, parse_url, request_head, status_detail

try:
    from orjson import dumps
except ImportError:  # pragma: no cover - orjson is part of the bench extra
    import json

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj).encode()

__all__ = ["Client", "Endpoint", "RequestRecord", "classify"]

Endpoint = Literal["chat", "completions"]
PATHS = {"chat": "/chat/completions", "completions": "/completions"}
CONNECT_TIMEOUT_S = 10.0
# A stream whose chunks come less than this apart is read at most once per interval (uvloop's timers
# fire at 1 ms resolution, so up to ~2 ms): a chunk is stamped at most that late, and never the first
# one (TTFT) nor any chunk of a stream slower than 1,000 chunks/s, i.e. of any real server's stream.
# It keeps the cost per chunk of a very fast stream at a fraction of one socket read per chunk.
COALESCE_S = 0.001


def classify(exc: BaseException) -> str:
    """A failure cause people can group by: timeout, connection, or the exception's name."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(exc, (ConnectionError, OSError, EOFError)):
        return "connection"
    return type(exc).__name__


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; feeds the response in progress as bytes arrive."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.response: Response | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.lost = False
        self.last = 0.0  # when the previous read came
        self.paused = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.loop = asyncio.get_running_loop()

    def begin(self, response: Response, waiter: asyncio.Future[None], data: bytes) -> None:
        self.response, self.waiter = response, waiter
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        arrived = time.perf_counter()
        response = self.response
        if response is None:  # bytes nobody asked for: this connection cannot be trusted
            self.transport.close()
            return
        try:
            response.feed(data, arrived)
        except Exception as exc:  # a malformed answer fails this request only
            self.fail(exc)
            return
        if response.finished:
            self._settle(None)
        elif arrived - self.last < COALESCE_S and not self.paused and response.events.record.chunks:
            self.paused = True  # a stream faster than one read per COALESCE_S: let its next chunks gather
            self.transport.pause_reading()
            self.loop.call_later(COALESCE_S, self._resume)
        self.last = arrived

    def _resume(self) -> None:
        self.paused = False
        if not self.lost:
            self.last = time.perf_counter()
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        response = self.response
        if response is not None:
            if response.eof():
                self._settle(None)
            else:
                self.fail(exc or ConnectionResetError("the server closed the connection mid-response"))

    def fail(self, exc: BaseException) -> None:
        self._settle(exc)

    def _settle(self, exc: BaseException | None) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)

    def reusable(self) -> bool:
        response = self.response
        return not self.lost and response is not None and response.finished and response.keep_alive

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()


class Client:
    """Streamed requests to one OpenAI-compatible base URL (…/v1), with a Bearer key, over a pool of
    keep-alive connections (one per request in flight)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        model: str | None,
        endpoint: Endpoint = "chat",
        timeout_s: float = 300.0,
        ignore_eos: bool = False,
        temperature: float | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + PATHS[endpoint]
        try:
            self._target = parse_url(self.url)
        except ValueError:
            raise BadInput(f"{base_url} is not an http(s) URL; give e.g. http://host:8000/v1") from None
        self.model = model
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.ignore_eos = ignore_eos
        self.temperature = temperature
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self._idle: list[_Connection] = []

    def __getstate__(self) -> dict[str, Any]:
        """Configuration only (a worker process opens its own connections)."""
        return {**self.__dict__, "_idle": []}

    async def __aenter__(self) -> Client:
        self._idle = []
        return self

    async def __aexit__(self, *exc: object) -> None:
        for conn in self._idle:
            conn.close()
        self._idle = []

    async def list_models(self) -> list[str]:
        """GET /models: the served model ids. Unreachable, 401 and non-OpenAI answers are one clear line."""
        import aiohttp

        url = self.base_url + "/models"
        try:
            async with aiohttp.ClientSession(headers=self.headers) as session, \
                    session.get(url, timeout=aiohttp.ClientTimeout(total=30)) as resp:
                if resp.status == 401:
                    if "Authorization" in self.headers:
                        raise BadInput(f"{self.base_url} refused the API key (HTTP 401); pass the right --api-key")
                    raise BadInput(f"{self.base_url} needs an API key (HTTP 401); pass --api-key")
                if resp.status != 200:
                    raise BadInput(
                        f"GET {url} answered HTTP {resp.status}; is {self.base_url} an OpenAI-compatible "
                        "base URL (usually ending in /v1)?"
                    )
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise LlmnestError(f"cannot reach {self.base_url} ({classify(exc)}); is the server up?") from None
        except ValueError:
            raise BadInput(f"GET {url} did not answer JSON; is {self.base_url} an OpenAI-compatible base URL?") from None
        data = body.get("data") if isinstance(body, dict) else None
        return [m["id"] for m in data or [] if isinstance(m, dict) and "id" in m]

    async def check_model(self) -> str:
        """The model to ask for: --model if served, else the server's first model."""
        served = await self.list_models()
        if self.model is None:
            if not served:
                raise BadInput(f"{self.base_url} lists no model; pass --model")
            self.model = served[0]
        elif served and self.model not in served:
            raise BadInput(f"model {self.model!r} is not served at {self.base_url} (it serves: {', '.join(served)})")
        return self.model

    def payload(self, prompt: Prompt) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": prompt.output_len,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": prompt.text}]
        else:
            body["prompt"] = prompt.text
        if self.ignore_eos:
            body["ignore_eos"] = True
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body

    async def send(self, prompt: Prompt, record: RequestRecord, t0: float) -> RequestRecord:
        """POST one streamed request and fill `record`; never raises except on cancellation."""
        body = dumps(self.payload(prompt))
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        record.sent = start - t0
        events = EventReader(record, self.endpoint == "chat", start)
        response = Response(events)
        conn: _Connection | None = None
        timer = None
        try:
            conn = await self._connection(start)
            waiter: asyncio.Future[None] = loop.create_future()
            timer = loop.call_later(self.timeout_s - (time.perf_counter() - start), conn.fail,
                                 TimeoutError(f"no complete answer within {self.timeout_s:g} s"))
            data = self._head(len(body)) + body
            record.written = time.perf_counter() - t0
            conn.begin(response, waiter, data)
            await waiter
            if response.status != 200:
                record.error, record.detail = f"http {response.status}", status_detail(response)
        except asyncio.CancelledError:
            record.error, record.detail = "interrupted", "the run was stopped"
            raise
        except Exception as exc:  # every other failure is data: counted by cause, never fatal
            record.error, record.detail = classify(exc), str(exc)[:300] or type(exc).__name__
        finally:
            record.ended = time.perf_counter() - t0
            if timer is not None:
                timer.cancel()
            if conn is not None:
                self._release(conn)
        if record.error is None and not record.chunks:
            record.error, record.detail = "no content", "the stream ended without generated text"
        record.ok = record.error is None
        if record.ok and record.output_tokens is None:
            record.text = "".join(events.texts)
        return record

    def _head(self, length: int) -> bytes:
        _, host, port, path = self._target
        return request_head("POST", path, host, port, self.headers, length)

    async def _connection(self, start: float) -> _Connection:
        """An idle keep-alive connection, or a new one (the connect bounded by the request's timeout)."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.lost:
                return conn
        scheme, host, port, _ = self._target
        context = ssl.create_default_context() if scheme == "https" else None
        connect = asyncio.get_running_loop().create_connection(_Connection, host, port, ssl=context)
        limit = min(CONNECT_TIMEOUT_S, self.timeout_s - (time.perf_counter() - start))
        _, conn = await asyncio.wait_for(connect, max(limit, 0.001))
        return conn

    def _release(self, conn: _Connection) -> None:
        if conn.reusable():
            conn.response = conn.waiter = None
            self._idle.append(conn)
        else:
            conn.close()
