"""Relaying an admitted call: sent to a replica (the next one when a replica fails before answering),
the answer passed back whole, assembled from the engine's stream, or streamed event by event, and the
call settled before the client sees its end. A client that leaves stops the engine."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import Response

from ..sse import EventTooLarge
from .accounting import Accounting, Call, release, stream_usage, usage_of
from .assemble import Assembler, assemblable, streamed_body
from .errors import GatewayError, error_response
from .metrics import Metrics
from .router import prompt_prefix
from .routing import Routing, auth, engine_url
from .stream import DONE, StreamTap, upstream_body
from .upstream_client import UpstreamClient, UpstreamError, UpstreamResponse

log = logging.getLogger("llmnest.gateway")

RETRY_STATUSES = {502, 503, 504}
END_WAIT_S = 1.0  # how long the end of an engine's answer after [DONE] is awaited (to reuse its connection)
SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class Relay:
    """Carries calls to the engines over the gateway's own HTTP/1.1 client (the hot path)."""

    def __init__(self, routing: Routing, accounting: Accounting, metrics: Metrics, upstream_timeout: float) -> None:
        self.routing = routing
        self.accounting = accounting
        self.metrics = metrics
        self.upstream = UpstreamClient(upstream_timeout)

    async def handle(self, call: Call, body: dict[str, Any], raw: bytes, receive: Receive, send: Send,
                     extra: list[tuple[bytes, bytes]]) -> Response | None:
        """The answer to send, or None when it was sent here (streamed, or the client left)."""
        try:
            if body.get("stream") is True:
                if call.endpoint in ("chat", "completions"):
                    return await self._stream(call, body, receive, send, extra)
                return await self._passthrough(call, body, raw, receive, send, extra)
            return await self._unary(call, body, raw, receive)
        except BaseException:  # the request broke off (or a bug): still free its replica and slot, write its row
            release(call, call.tap)
            self.accounting.settle_later(call, 500)
            raise

    async def _send(self, call: Call, body: dict[str, Any], raw: bytes,
                    stream: bool) -> tuple[UpstreamResponse, bytes]:
        """Send to a replica, trying the next one when a replica fails before the answer's head (and,
        unless streaming, before the whole answer): the response, and its body unless streaming."""
        router = self.routing.router
        tried: set[str] = set()
        prefix = prompt_prefix(body, router.affinity_chars)
        last_error = "no replica is ready (starting or restarting)"
        if router.pick(call.model, prefix) is None:
            await self.routing.catch_up(call.started)
        while (replica := router.pick(call.model, prefix, frozenset(tried))) is not None:
            tried.add(replica.id)
            replica.outstanding += 1
            resp = None
            try:
                resp = await self.upstream.post(engine_url(replica, call.path), raw, {
                    "Content-Type": "application/json", **auth(replica.upstream.internal_key)})
                content = b"" if stream and resp.status == 200 else await resp.read()
            except UpstreamError as exc:  # refused, reset, timed out before the answer: out at once
                replica.outstanding -= 1
                replica.healthy = False
                self.metrics.replica_up.labels(call.model, replica.id).set(0)
                last_error = f"replica {replica.id}: {exc}"
                continue
            except BaseException:  # (cancelled: the client left) the engine stops
                replica.outstanding -= 1
                if resp is not None:
                    resp.abort()
                raise
            if resp.status in RETRY_STATUSES:
                resp.close()
                replica.outstanding -= 1
                last_error = f"replica {replica.id} answered {resp.status}"
                continue
            call.replica = replica
            return resp, content
        log.warning("no replica of %r can take a request: %s", call.model, last_error)
        self.metrics.refused.labels("no_replica").inc()
        why = f"{len(tried)} failed" if tried else "no replica is ready (starting or restarting)"
        raise GatewayError(503, f"no replica of {call.model!r} can take the request ({why}); retry shortly",
                           "no_replica", {"Retry-After": "2"})  # (never the engines' addresses: the log has them)

    async def _unary(self, call: Call, body: dict[str, Any], raw: bytes, receive: Receive) -> Response | None:
        """A non-streamed answer. A client that leaves before it is complete stops the engine at once
        and is billed what was generated (status 499)."""
        gone = asyncio.ensure_future(_disconnected(receive))
        work = asyncio.ensure_future(self._exchange(call, body, raw))
        try:
            await asyncio.wait((gone, work), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not work.done():
            call.client_gone = True
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            release(call, call.tap)
            await self.accounting.settle(call, 499)
            return None
        return work.result()

    async def _exchange(self, call: Call, body: dict[str, Any], raw: bytes) -> Response:
        """Ask the engine and settle: the answer."""
        settle = self.accounting.settle
        assembled = call.endpoint in ("chat", "completions") and assemblable(body)
        try:
            resp, content = await self._send(call, body, streamed_body(body) if assembled else raw,
                                             stream=assembled)
        except GatewayError as exc:
            await settle(call, exc.status)
            return exc.response()
        content_type = resp.headers.get("content-type", "application/json")
        if assembled and resp.status == 200:
            call.tap, assembler = StreamTap(True, True), Assembler(call.endpoint == "chat")
            try:
                while data := await resp.next():
                    for event in call.tap.feed(data):
                        assembler.add(event)
                    if call.tap.done:
                        break
                else:
                    raise UpstreamError("the stream ended without [DONE]")
            except (UpstreamError, EventTooLarge) as exc:
                resp.close()
                release(call, call.tap)
                if call.replica:
                    call.replica.healthy = False
                log.warning("replica %s failed mid-answer: %s", call.replica.id if call.replica else "?", exc)
                await settle(call, 502)
                return error_response(502, "the engine replica failed before the answer was complete; retry",
                                      "upstream_failed")
            except BaseException:
                resp.abort()
                raise
            release(call, call.tap)
            await settle(call, 200)
            asyncio.get_running_loop().create_task(resp.finish(END_WAIT_S))
            return Response(json.dumps(assembler.answer(), ensure_ascii=False).encode(), media_type="application/json")
        resp.close()
        release(call)
        if resp.status == 401:
            await settle(call, 502)
            return _engine_refused()
        if resp.status == 200:
            call.prompt_tokens, call.completion_tokens = usage_of(content)
        await settle(call, resp.status)
        return Response(content, status_code=resp.status, media_type=content_type)

    async def _open_stream(self, call: Call, body: dict[str, Any], raw: bytes) -> tuple[Any, Response | None]:
        """The engine's streamed answer, or (None, what the client gets) when it did not open: the error is
        settled and the replica released (an engine refusing its internal key is the gateway's fault, 502)."""
        try:
            resp, content = await self._send(call, body, raw, stream=True)
        except GatewayError as exc:
            await self.accounting.settle(call, exc.status)
            return None, exc.response()
        if resp.status == 200:
            return resp, None
        resp.close()
        release(call)
        await self.accounting.settle(call, 502 if resp.status == 401 else resp.status)
        return None, _engine_refused() if resp.status == 401 else Response(
            content, status_code=resp.status, media_type=resp.headers.get("content-type", "application/json"))

    async def _stream(self, call: Call, body: dict[str, Any], receive: Receive, send: Send,
                      extra: list[tuple[bytes, bytes]]) -> Response | None:
        sent, wants_usage, wants_continuous = upstream_body(body)
        resp, refused = await self._open_stream(call, body, json.dumps(sent).encode())
        if refused is not None:
            return refused
        call.streamed = True
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + extra})
        watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, call, resp))
        try:
            await self._relay(call, resp, StreamTap(wants_usage, wants_continuous), send)
        finally:
            watcher.cancel()
        return None

    async def _passthrough(self, call: Call, body: dict[str, Any], raw: bytes, receive: Receive, send: Send,
                           extra: list[tuple[bytes, bytes]]) -> Response | None:
        """A stream of another engine route (e.g. /v1/responses) relayed byte for byte; its usage is read
        from the last events (the Responses API's `response.completed`)."""
        resp, refused = await self._open_stream(call, body, raw)
        if refused is not None:
            return refused
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", resp.headers.get("content-type", "text/event-stream").encode()), *extra]})
        watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, call, resp))
        tail, status = b"", 499
        try:
            while data := await resp.next():
                tail = (tail + data)[-65536:]
                await send({"type": "http.response.body", "body": data, "more_body": True})
            status = 200
        except UpstreamError as exc:
            if not call.client_gone:
                status = 502
                log.warning("replica %s failed mid-stream: %s", call.replica.id if call.replica else "?", exc)
        finally:
            watcher.cancel()
            resp.close()
            call.prompt_tokens, call.completion_tokens = stream_usage(tail)
            release(call)
            if status != 200:
                self.accounting.settle_later(call, status)
        await self.accounting.settle(call, 200)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return None

    async def _relay(self, call: Call, resp: UpstreamResponse, tap: StreamTap, send: Send) -> None:
        """Pass the engine's events on as they come (all that arrived since the last send in one piece)
        and end the response. Usage is written before the client gets [DONE]."""
        status = 499  # until the stream ends: the client went away
        end: bytes | None = b""  # what the response's last write carries (None: sent)
        try:
            while data := await resp.next():
                events = tap.feed(data)
                if tap.done:  # the rest goes with [DONE], in the response's last write
                    release(call, tap)
                    await self.accounting.settle(call, 200)
                    status = 200
                    end = b"".join(e for e in events if not e.startswith(DONE)) + DONE + b"\n\n"
                    await send({"type": "http.response.body", "body": end, "more_body": False})
                    end = None
                    await resp.finish(END_WAIT_S)
                    return
                if events:
                    await send({"type": "http.response.body", "more_body": True,
                                "body": b"".join(events) if len(events) > 1 else events[0]})
            end = b"".join(tap.flush())
            raise UpstreamError("the stream ended without [DONE]")
        except (UpstreamError, EventTooLarge) as exc:
            if not call.client_gone:  # the engine died mid-stream: tell the client, do not hang
                status = 502
                if call.replica:
                    call.replica.healthy = False
                log.warning("replica %s failed mid-stream: %s", call.replica.id if call.replica else "?", exc)
                end = (end or b"") + b"data: " + json.dumps({"error": {
                    "message": "the engine replica failed mid-stream; the answer is incomplete",
                    "type": "upstream_error", "param": None, "code": "upstream_failed"}}).encode() + b"\n\n"
        finally:
            if not call.settled:
                release(call, tap)
                self.accounting.settle_later(call, status)
            resp.close()
            if end is not None:
                await send({"type": "http.response.body", "body": end, "more_body": False})


def _engine_refused() -> Response:
    return error_response(502, "the engine refused the gateway's internal key; redeploy or check the"
                               " deployment's key", "engine_auth")


async def _disconnected(receive: Receive) -> None:
    """Returns when the client has gone (or the answer is complete)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _watch_disconnect(receive: Receive, call: Call, resp: UpstreamResponse) -> None:
    """When the client leaves mid-stream, even while the engine is silent: close the engine's request
    (the engine stops generating); the relay then ends and records the usage so far."""
    while (await receive())["type"] != "http.disconnect":
        pass
    if not call.settled:  # (once the answer is complete, the server reports a disconnect too)
        call.client_gone = True
        resp.abort()
