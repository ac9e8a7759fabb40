"""The gateway's ASGI app: checks the user's key, applies its limits, routes by `model` to a replica
with the engine's internal key, relays the answer, and records usage from the engine's own `usage`."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import keys as keystore
from . import usage as usagestore
from .assemble import Assembler, assemblable, streamed_body
from .db import Database
from .errors import GatewayError, error_response
from .http_limits import HttpLimits
from .keys import Key
from .limiter import Admission, Limiter, Rejection
from .metrics import Metrics
from .router import Replica, Router, prompt_prefix
from .stream import DONE, StreamTap, upstream_body
from .upstream_client import UpstreamClient, UpstreamError, UpstreamResponse
from .upstreams import Provider

log = logging.getLogger("llmnest.gateway")

MAX_BODY = HttpLimits.max_body_bytes
DEFAULT_RESERVE = 4096  # tokens a request without max_tokens reserves when the model's context is not known
BYTES_PER_TOKEN = 3  # the prompt's reservation: its body's bytes / 3 (English is ~4 bytes a token, CJK ~3)
KEY_CACHE_S = 2.0
KEY_CACHE_MAX = 10_000
RETRY_STATUSES = {502, 503, 504}
HEALTH_TIMEOUT_S = 3.0
END_WAIT_S = 1.0  # how long the end of an engine's answer after [DONE] is awaited (to reuse its connection)
HEALTH_FAILURES = 2  # failed checks in a row (other than a refused connection) that take a replica out
ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completions",
             # the engine's other routes that name a `model`: same keys and limits, relayed as they are
             "/v1/responses": "responses", "/v1/embeddings": "embeddings", "/tokenize": "tokenize",
             "/detokenize": "detokenize", "/v1/score": "score", "/v1/rerank": "rerank", "/rerank": "rerank",
             "/v2/rerank": "rerank", "/pooling": "pooling", "/classify": "classify"}
SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


@dataclass
class Call:
    """One proxied request: who, what, where, and what it used."""

    key: Key
    model: str
    endpoint: str
    path: str
    admission: Admission | None = None
    started: float = field(default_factory=time.monotonic)
    replica: Replica | None = None
    status: int = 200
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None
    released: bool = False  # the replica no longer counts it
    settled: bool = False  # usage written (or being written)
    client_gone: bool = False  # the client disconnected before the end
    tap: StreamTap | None = None  # the engine's stream, when it was asked for one
    streamed: bool = False  # the client asked for a stream (its TTFT is recorded)


class Gateway:
    def __init__(self, db: Database, provider: Provider, *, limiter: Limiter | None = None,
                 router: Router | None = None, health_interval: float = 5.0, max_body: int | None = None,
                 admin_key: str | None = None, upstream_timeout: float = 600.0,
                 limits: HttpLimits | None = None, metrics_from: tuple[str, ...] = ()) -> None:
        self.db = db
        self.provider = provider
        self.limiter = limiter or Limiter("memory://")
        self.limiter.tokens_used = self.limiter.tokens_used or self._tokens_used
        self.router = router or Router()
        self.metrics = Metrics()
        self.health_interval = health_interval
        self.limits = limits or HttpLimits()
        self.max_body = max_body or self.limits.max_body_bytes
        self.admin_key = admin_key
        self.metrics_from = tuple(ipaddress.ip_network(n, strict=False) for n in metrics_from)  # beyond loopback
        self.upstream = UpstreamClient(upstream_timeout)  # completions: the hot path
        self.usage = usagestore.Writer(db)
        self.client: httpx.AsyncClient | None = None  # health checks
        self._keys: dict[str, tuple[float, Key | None]] = {}
        self._read_started = 0.0
        self._reading = asyncio.Lock()
        self._lookups: dict[str, asyncio.Future] = {}
        self._pending: set[asyncio.Task] = set()
        self._starlette = Starlette(
            routes=[
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/health", self.health, methods=["GET"]),
                Route("/metrics", self.metrics_endpoint, methods=["GET"]),
            ],
            exception_handlers={HTTPException: self._http_error, Exception: self._crash},
            lifespan=self._lifespan,
        )

    async def app(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        """The ASGI app: the engine's routes on a plain ASGI path (a streamed chunk costs one `send`), the
        rest through Starlette. Every answer carries an `x-request-id`."""
        endpoint = ENDPOINTS.get(scope["path"]) if scope["type"] == "http" else None
        extra = [(b"x-request-id", os.urandom(12).hex().encode())]
        if endpoint is None:
            await self._starlette(scope, receive, _with_headers(send, extra) if scope["type"] == "http" else send)
            return
        if scope["method"] != "POST":
            self.metrics.refused.labels("method_not_allowed").inc()
            response: Response | None = error_response(405, "Method Not Allowed", headers={"Allow": "POST"})
        else:
            try:
                response = await self.completions(endpoint, scope, receive, send, extra)
            except RecursionError:  # JSON that parsed just below Python's limit and not deeper in the stack
                self.metrics.refused.labels("invalid_json").inc()
                response = error_response(400, "the body's JSON is nested too deeply", "invalid_json")
            except Exception as exc:
                log.error("gateway error on %s", scope["path"], exc_info=exc)
                response = error_response(500, "internal gateway error; see the gateway's log", "internal_error")
        if response is not None:
            response.raw_headers.extend(extra)
            await response(scope, receive, send)

    # ---- lifecycle -------------------------------------------------------------------------------

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.client = httpx.AsyncClient(timeout=HEALTH_TIMEOUT_S)
        await self.refresh()
        loops = [asyncio.create_task(self._health_loop()), asyncio.create_task(self._key_loop())]
        try:
            yield
        finally:
            for task in loops:
                task.cancel()
            if self._pending:  # usage being written when asked to stop
                await asyncio.gather(*self._pending, return_exceptions=True)
            await self.client.aclose()
            self.upstream.close()

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval)
            try:
                await self.refresh()
            except Exception:  # a broken provider must not stop health checks for good
                log.warning("refreshing upstreams failed", exc_info=True)

    async def _key_loop(self) -> None:
        """Re-read the cached keys twice per KEY_CACHE_S, so requests with a key in use never wait for
        the database, while a revoked or changed key still takes effect within KEY_CACHE_S."""
        while True:
            await asyncio.sleep(KEY_CACHE_S / 2)
            digests = [d for d, (_, key) in self._keys.items() if key is not None]
            if not digests:
                continue
            read_at = time.monotonic()
            try:
                fresh = await asyncio.to_thread(keystore.by_digests, self.db, digests)
            except Exception:  # the database is away: the cache runs out and requests look keys up themselves
                log.warning("re-reading API keys failed", exc_info=True)
                continue
            for digest in digests:
                self._keys[digest] = (read_at, fresh.get(digest))

    async def refresh(self) -> None:
        """Read the upstreams again and check every ready replica's /health."""
        await self._read_upstreams()
        replicas = [r for reps in self.router.replicas.values() for r in reps if r.upstream.ready]
        await asyncio.gather(*(self._check(r) for r in replicas))

    async def _read_upstreams(self) -> None:
        self._read_started = time.monotonic()
        self.router.update(await asyncio.to_thread(self.provider.upstreams))

    async def _catch_up(self, since: float) -> None:
        """Read the upstreams again unless a read began after `since` (when the request came): a replica
        that became ready, or a model deployed, since the last health round is used at once. Requests
        that wait together share one read."""
        async with self._reading:
            if self._read_started < since:
                await self._read_upstreams()

    async def _check(self, replica: Replica) -> None:
        """A refused connection takes the replica out at once; a slow or failing answer only twice in a row."""
        assert self.client is not None
        try:
            resp = await self.client.get(f"{replica.upstream.root_url}/health", timeout=HEALTH_TIMEOUT_S,
                                         headers=_auth(replica.upstream.internal_key))
            ok, refused = resp.status_code == 200, False
        except httpx.HTTPError as exc:
            ok, refused = False, isinstance(exc, httpx.ConnectError)
        if ok and replica.max_model_len is None:
            replica.max_model_len = await self._context_length(replica)
        replica.failed_checks = 0 if ok else replica.failed_checks + 1
        # one slow answer does not take a healthy replica out, nor bring back one that was out
        replica.healthy = ok or (replica.healthy and not refused and replica.failed_checks < HEALTH_FAILURES)
        self.metrics.replica_up.labels(replica.upstream.model, replica.id).set(1 if replica.healthy else 0)

    async def _context_length(self, replica: Replica) -> int:
        """The model's context length from the engine's /v1/models (`max_model_len`, vLLM and SGLang);
        0 when it does not say (then requests without max_tokens reserve DEFAULT_RESERVE)."""
        assert self.client is not None
        try:
            resp = await self.client.get(f"{replica.upstream.base_url}/models", timeout=HEALTH_TIMEOUT_S,
                                         headers=_auth(replica.upstream.internal_key))
            for item in resp.json().get("data") or []:
                if isinstance(item.get("max_model_len"), int):
                    return item["max_model_len"]
        except (httpx.HTTPError, ValueError, AttributeError):
            pass
        return 0

    # ---- endpoints -------------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def models(self, request: Request) -> Response:
        try:
            key = await self._authenticate(_bearer(request.headers.get("authorization", "")))
        except GatewayError as exc:
            return exc.response()
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "llmnest"}
                for m in self.router.models() if key.allows(m)]
        return JSONResponse({"object": "list", "data": data})

    async def metrics_endpoint(self, request: Request) -> Response:
        if not _is_trusted(request.client.host if request.client else "", self.metrics_from) and not (
                self.admin_key and hmac.compare_digest(_bearer(request.headers.get("authorization", "")).encode(),
                                                   self.admin_key.encode())):
            return error_response(403, "/metrics is readable from loopback (and the --metrics-from networks), or with "
                                  "the admin key as Bearer token")
        for model, reps in self.router.replicas.items():
            for r in reps:
                self.metrics.replica_outstanding.labels(model, r.id).set(r.outstanding)
                self.metrics.replica_up.labels(model, r.id).set(1 if r.healthy else 0)
                self.metrics.replica_ready.labels(model, r.id).set(1 if r.upstream.ready else 0)
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def completions(self, endpoint: str, scope: dict[str, Any], receive: Receive, send: Send,
                          extra: list[tuple[bytes, bytes]]) -> Response | None:
        """A request for an engine route: the answer to send, or None when it was sent here (streamed,
        or the client left). `extra` are headers every answer carries."""
        arrived = time.monotonic()
        secret, declared = "", None
        for name, value in scope["headers"]:
            if name == b"authorization":
                secret = _bearer(value.decode("latin-1"))
            elif name == b"content-length":
                declared = value
        try:
            key = await self._authenticate(secret)
            raw, body = await self._read_json(declared, receive)
            model = body.get("model")
            if isinstance(model, (int, float)) and not isinstance(model, bool):  # `"model": 7` names "7"
                model = body["model"] = str(model)
                raw = json.dumps(body).encode()
            if not isinstance(model, str) or not model:
                raise GatewayError(400, "the request names no `model` (a string: GET /v1/models lists them)",
                                   "missing_model")
            if not key.allows(model):
                raise GatewayError(403, f"this key may not use model {model!r}", "model_not_allowed")
            if model not in self.router.replicas:
                await self._catch_up(arrived)
            if model not in self.router.replicas:
                raise GatewayError(404, f"model {model!r} is not deployed here; GET /v1/models lists the models",
                                   "model_not_found")
            admission = await self.limiter.admit(key, self._reservation(endpoint, model, body, raw))
            if admission.headers:
                extra += [(k.encode(), v.encode()) for k, v in admission.headers.items()]
            if isinstance(admission, Rejection):
                self.metrics.rejected.labels(key.name, admission.limit).inc()
                self.metrics.requests.labels(key.name, model, "429").inc()
                raise GatewayError(429, f"{admission.message}; retry after {admission.retry_after} s",
                                   admission.limit, {"Retry-After": str(admission.retry_after)})
        except GatewayError as exc:
            self.metrics.refused.labels(exc.code or str(exc.status)).inc()
            return exc.response()
        call = Call(key, model, endpoint, scope["path"], admission)
        self.metrics.in_flight.labels(model).inc()
        try:
            if body.get("stream") is True:
                if endpoint in ("chat", "completions"):
                    return await self._stream(call, body, receive, send, extra)
                return await self._passthrough(call, body, raw, receive, send, extra)
            return await self._unary(call, body, raw, receive)
        except BaseException:  # the request broke off (or a bug): still free its replica and slot, write its row
            self._release(call, call.tap)
            self._settle_later(call, 500)
            raise

    def _reservation(self, endpoint: str, model: str, body: dict[str, Any], raw: bytes) -> int:
        """The tokens a request may use, reserved against its key's tokens/min and budget until it ends:
        its prompt (estimated from the body's size) and its output limit, or the model's context."""
        prompt = len(raw) // BYTES_PER_TOKEN + 1
        if endpoint in ("tokenize", "detokenize"):
            return 1
        if endpoint not in ("chat", "completions", "responses"):
            return prompt
        limit = self.router.max_model_len(model)
        out = next((v for f in ("max_completion_tokens", "max_tokens", "max_output_tokens")
                    if isinstance(v := body.get(f), int) and not isinstance(v, bool) and v > 0), None)
        if out is None:
            return limit or DEFAULT_RESERVE
        return min(prompt + out, limit) if limit else prompt + out

    # ---- proxying --------------------------------------------------------------------------------

    def _upstream_url(self, replica: Replica, path: str) -> str:
        """The engine's URL of a route: /v1/... under its OpenAI base, the others (/tokenize, ...) at its root."""
        if path.startswith("/v1/"):
            return replica.upstream.base_url + path[3:]
        return replica.upstream.root_url + path

    async def _send(self, call: Call, body: dict[str, Any], raw: bytes,
                    stream: bool) -> tuple[UpstreamResponse, bytes]:
        """Send to a replica, trying the next one when a replica fails before the answer's head (and,
        unless streaming, before the whole answer): the response, and its body unless streaming."""
        tried: set[str] = set()
        prefix = prompt_prefix(body, self.router.affinity_chars)
        last_error = "no replica is ready (starting or restarting)"
        if self.router.pick(call.model, prefix) is None:
            await self._catch_up(call.started)
        while (replica := self.router.pick(call.model, prefix, frozenset(tried))) is not None:
            tried.add(replica.id)
            replica.outstanding += 1
            resp = None
            try:
                resp = await self.upstream.post(self._upstream_url(replica, call.path), raw, {
                    "Content-Type": "application/json", **_auth(replica.upstream.internal_key)})
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
            self._release(call, call.tap)
            await self._settle(call, 499)
            return None
        return work.result()

    async def _exchange(self, call: Call, body: dict[str, Any], raw: bytes) -> Response:
        """Ask the engine and settle: the answer."""
        assembled = call.endpoint in ("chat", "completions") and assemblable(body)
        try:
            resp, content = await self._send(call, body, streamed_body(body) if assembled else raw,
                                             stream=assembled)
        except GatewayError as exc:
            await self._settle(call, exc.status)
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
            except UpstreamError as exc:
                resp.close()
                self._release(call, call.tap)
                if call.replica:
                    call.replica.healthy = False
                log.warning("replica %s failed mid-answer: %s", call.replica.id if call.replica else "?", exc)
                await self._settle(call, 502)
                return error_response(502, "the engine replica failed before the answer was complete; retry",
                                      "upstream_failed")
            except BaseException:
                resp.abort()
                raise
            self._release(call, call.tap)
            await self._settle(call, 200)
            asyncio.get_running_loop().create_task(resp.finish(END_WAIT_S))
            return Response(json.dumps(assembler.answer(), ensure_ascii=False).encode(), media_type="application/json")
        resp.close()
        self._release(call)
        if resp.status == 401:
            await self._settle(call, 502)
            return _engine_refused()
        if resp.status == 200:
            call.prompt_tokens, call.completion_tokens = _usage_of(content)
        await self._settle(call, resp.status)
        return Response(content, status_code=resp.status, media_type=content_type)

    async def _open_stream(self, call: Call, body: dict[str, Any], raw: bytes) -> tuple[Any, Response | None]:
        """The engine's streamed answer, or (None, what the client gets) when it did not open: the error is
        settled and the replica released (an engine refusing its internal key is the gateway's fault, 502)."""
        try:
            resp, content = await self._send(call, body, raw, stream=True)
        except GatewayError as exc:
            await self._settle(call, exc.status)
            return None, exc.response()
        if resp.status == 200:
            return resp, None
        resp.close()
        self._release(call)
        await self._settle(call, 502 if resp.status == 401 else resp.status)
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
            call.prompt_tokens, call.completion_tokens = _stream_usage(tail)
            self._release(call)
            if status != 200:
                self._settle_later(call, status)
        await self._settle(call, 200)
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
                    self._release(call, tap)
                    await self._settle(call, 200)
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
        except UpstreamError as exc:
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
                self._release(call, tap)
                self._settle_later(call, status)
            resp.close()
            if end is not None:
                await send({"type": "http.response.body", "body": end, "more_body": False})

    def _release(self, call: Call, tap: StreamTap | None = None) -> None:
        """The replica is done with the call: count what it used."""
        if tap is not None:
            call.prompt_tokens, call.completion_tokens = tap.prompt_tokens, tap.completion_tokens
            if tap.first_token_at is not None and call.streamed:
                call.ttft_s = tap.first_token_at - call.started
        if call.replica is not None and not call.released:
            call.replica.outstanding -= 1
            call.released = True

    # ---- accounting ------------------------------------------------------------------------------

    def _account(self, call: Call, status: int) -> usagestore.Usage:
        call.settled, call.status = True, status
        m, latency = self.metrics, time.monotonic() - call.started
        m.in_flight.labels(call.model).dec()
        m.requests.labels(call.key.name, call.model, str(status)).inc()
        m.prompt_tokens.labels(call.key.name, call.model).inc(call.prompt_tokens)
        m.completion_tokens.labels(call.key.name, call.model).inc(call.completion_tokens)
        m.latency.labels(call.model).observe(latency)
        if call.ttft_s is not None:
            m.ttft.labels(call.model).observe(call.ttft_s)
        return usagestore.Usage(call.key.name, call.model, call.replica.id if call.replica else None,
                                call.endpoint, status, call.prompt_tokens, call.completion_tokens,
                                round(latency, 6), round(call.ttft_s, 6) if call.ttft_s is not None else None)

    async def _settle(self, call: Call, status: int) -> None:
        """Write the usage row and give back the key's slot before the client sees the end."""
        if call.settled:
            return
        row = self._account(call, status)
        await self._finish(call, row)

    def _settle_later(self, call: Call, status: int) -> None:
        """The same from a cancelled stream, where nothing can be awaited: a task does the writing."""
        if call.settled:
            return
        task = asyncio.get_running_loop().create_task(self._finish(call, self._account(call, status)))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _finish(self, call: Call, row: usagestore.Usage) -> None:
        """Store the row, then put the request's usage in place of its reservation (in this order, a
        budget is never read short of a finished request's tokens)."""
        try:
            await self.usage.write(row)
        finally:
            if call.admission is not None:
                await self.limiter.end(call.admission, row.prompt_tokens + row.completion_tokens)

    async def _tokens_used(self, key: Key, since: float) -> int:
        return await asyncio.to_thread(usagestore.tokens_since, self.db, key.name, since)

    # ---- request checks --------------------------------------------------------------------------

    async def _authenticate(self, secret: str) -> Key:
        if not secret:
            raise GatewayError(401, "no API key; send `Authorization: Bearer sk-...`", "missing_api_key")
        digest = keystore.hash_secret(secret)
        cached = self._keys.get(digest)
        if cached is None or time.monotonic() - cached[0] > KEY_CACHE_S:
            lookup = self._lookups.get(digest)
            if lookup is None:  # one database lookup shared by every request that waits for this key
                lookup = asyncio.ensure_future(asyncio.to_thread(keystore.authenticate, self.db, secret))
                self._lookups[digest] = lookup
                lookup.add_done_callback(lambda _: self._lookups.pop(digest, None))
            key = await asyncio.shield(lookup)
            if len(self._keys) >= KEY_CACHE_MAX:  # random keys must not grow the cache without end
                self._keys.clear()
            cached = (time.monotonic(), key)
            self._keys[digest] = cached
        key = cached[1]
        if key is None:
            raise GatewayError(401, "invalid API key", "invalid_api_key")
        if problem := key.problem():
            raise GatewayError(401, f"this API key is {problem}", f"{problem}_api_key")
        return key

    async def _read_json(self, declared: bytes | None, receive: Receive) -> tuple[bytes, dict[str, Any]]:
        """The request body (at most max_body bytes) and the JSON object in it."""
        if declared and declared.isdigit() and int(declared) > self.max_body:
            raise GatewayError(413, f"the request body is over {self.max_body} bytes", "body_too_large")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise GatewayError(400, "the client left before sending the whole body", "client_disconnected")
            chunk, more = message.get("body", b""), message.get("more_body", False)
            size += len(chunk)
            if size > self.max_body:
                raise GatewayError(413, f"the request body is over {self.max_body} bytes", "body_too_large")
            chunks.append(chunk)
        raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise GatewayError(400, f"the body is not valid JSON ({exc})", "invalid_json") from None
        except RecursionError:
            raise GatewayError(400, "the body's JSON is nested too deeply", "invalid_json") from None
        if not isinstance(body, dict):
            raise GatewayError(400, "the body must be a JSON object", "invalid_json")
        return raw, body

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_response(exc.status_code, str(exc.detail))

    async def _crash(self, request: Request, exc: Exception) -> Response:
        log.error("gateway error on %s", request.url.path, exc_info=exc)
        return error_response(500, "internal gateway error; see the gateway's log", "internal_error")


def _engine_refused() -> Response:
    return error_response(502, "the engine refused the gateway's internal key; redeploy or check the"
                               " deployment's key", "engine_auth")


def _with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), *extra]
        await send(message)
    return sending


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


def _usage_of(content: bytes) -> tuple[int, int]:
    """Prompt and output tokens of an answer's `usage` (chat, completions, embeddings, responses)."""
    try:
        return _usage_in(json.loads(content))
    except (ValueError, RecursionError):
        return 0, 0


def _usage_in(answer: Any) -> tuple[int, int]:
    """Prompt and output tokens of a parsed answer's `usage`; (0, 0) where it has none that reads as counts."""
    try:
        used = answer.get("usage") or {}
        return (int(used.get("prompt_tokens") or used.get("input_tokens") or 0),
                int(used.get("completion_tokens") or used.get("output_tokens") or 0))
    except (ValueError, AttributeError, TypeError):
        return 0, 0


def _stream_usage(tail: bytes) -> tuple[int, int]:
    """The usage in the last event of a stream's tail that carries one."""
    for line in reversed(tail.split(b"\n")):
        if line.startswith(b"data:") and b'"usage"' in line:
            try:
                obj = json.loads(line[5:])
            except (ValueError, RecursionError):
                continue
            if isinstance(obj, dict) and isinstance(obj.get("response"), dict):
                obj = obj["response"]
            return _usage_in(obj)
    return 0, 0


def _bearer(value: str) -> str:
    """The token of an `Authorization: Bearer ...` header value."""
    return value[7:].strip() if value[:7].lower() == "bearer " else ""


def _auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _is_trusted(host: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    """A client address on loopback or in one of `networks`."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or any(address in n for n in networks)
