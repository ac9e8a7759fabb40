"""The gateway's ASGI app: checks the user's key, applies its limits, routes by `model` to a replica
with the engine's internal key, relays the answer, and records usage from the engine's own `usage`."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
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
from .db import Database
from .errors import GatewayError, error_response
from .keys import Key
from .limiter import Limiter
from .metrics import Metrics
from .router import Replica, Router, prompt_prefix
from .stream import DONE, StreamTap, upstream_body
from .upstream_client import UpstreamClient, UpstreamError, UpstreamResponse
from .upstreams import Provider

log = logging.getLogger("llmnest.gateway")

MAX_BODY = 8 * 1024 * 1024
KEY_CACHE_S = 2.0
KEY_CACHE_MAX = 10_000
RETRY_STATUSES = {502, 503, 504}
HEALTH_TIMEOUT_S = 3.0
END_WAIT_S = 1.0  # how long the end of an engine's answer after [DONE] is awaited (to reuse its connection)
HEALTH_FAILURES = 2  # failed checks in a row (other than a refused connection) that take a replica out
ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}
SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


@dataclass
class Call:
    """One proxied request: who, what, where, and what it used."""

    key: Key
    model: str
    endpoint: str
    started: float = field(default_factory=time.monotonic)
    replica: Replica | None = None
    status: int = 200
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None
    released: bool = False  # the replica no longer counts it
    settled: bool = False  # usage written (or being written)
    client_gone: bool = False  # the client disconnected mid-stream


class Gateway:
    def __init__(self, db: Database, provider: Provider, *, limiter: Limiter | None = None,
                 router: Router | None = None, health_interval: float = 5.0, max_body: int = MAX_BODY,
                 admin_key: str | None = None, upstream_timeout: float = 600.0) -> None:
        self.db = db
        self.provider = provider
        self.limiter = limiter or Limiter("memory://")
        self.limiter.tokens_used = self.limiter.tokens_used or self._tokens_used
        self.router = router or Router()
        self.metrics = Metrics()
        self.health_interval = health_interval
        self.max_body = max_body
        self.admin_key = admin_key
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
        """The ASGI app: completions on a plain ASGI path (a streamed chunk costs one `send`), the rest
        through Starlette."""
        endpoint = ENDPOINTS.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None:
            await self._starlette(scope, receive, send)
            return
        if scope["method"] != "POST":
            response: Response | None = error_response(405, "Method Not Allowed", headers={"Allow": "POST"})
        else:
            try:
                response = await self.completions(endpoint, scope, receive, send)
            except Exception as exc:
                log.error("gateway error on %s", scope["path"], exc_info=exc)
                response = error_response(500, "internal gateway error; see the gateway's log", "internal_error")
        if response is not None:
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
        replica.failed_checks = 0 if ok else replica.failed_checks + 1
        # one slow answer does not take a healthy replica out, nor bring back one that was out
        replica.healthy = ok or (replica.healthy and not refused and replica.failed_checks < HEALTH_FAILURES)
        self.metrics.replica_up.labels(replica.upstream.model, replica.id).set(1 if replica.healthy else 0)

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
        if not _is_loopback(request.client.host if request.client else "") and not (
                self.admin_key and hmac.compare_digest(_bearer(request.headers.get("authorization", "")).encode(),
                                                   self.admin_key.encode())):
            return error_response(403, "/metrics is readable from loopback, or with the admin key as Bearer token")
        for model, reps in self.router.replicas.items():
            for r in reps:
                self.metrics.replica_outstanding.labels(model, r.id).set(r.outstanding)
                self.metrics.replica_up.labels(model, r.id).set(1 if r.healthy else 0)
                self.metrics.replica_ready.labels(model, r.id).set(1 if r.upstream.ready else 0)
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def completions(self, endpoint: str, scope: dict[str, Any], receive: Receive,
                          send: Send) -> Response | None:
        """A chat or completions request: the answer to send, or None when it was streamed here."""
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
            if not isinstance(model, str) or not model:
                raise GatewayError(400, "the request names no `model`", "missing_model")
            if not key.allows(model):
                raise GatewayError(403, f"this key may not use model {model!r}", "model_not_allowed")
            if model not in self.router.replicas:
                await self._catch_up(arrived)
            if model not in self.router.replicas:
                raise GatewayError(404, f"model {model!r} is not deployed here; GET /v1/models lists the models",
                                   "model_not_found")
            rejection = await self.limiter.admit(key)
            if rejection:
                self.metrics.rejected.labels(key.name, rejection.limit).inc()
                self.metrics.requests.labels(key.name, model, "429").inc()
                raise GatewayError(429, f"{rejection.message}; retry after {rejection.retry_after} s",
                                   rejection.limit, {"Retry-After": str(rejection.retry_after)})
        except GatewayError as exc:
            return exc.response()
        call = Call(key, model, endpoint)
        self.metrics.in_flight.labels(model).inc()
        try:
            if body.get("stream"):
                return await self._stream(call, body, receive, send)
            return await self._unary(call, body, raw)
        except BaseException:  # the request broke off (or a bug): still free its replica and slot, write its row
            self._release(call)
            self._settle_later(call, 500)
            raise

    # ---- proxying --------------------------------------------------------------------------------

    async def _send(self, call: Call, body: dict[str, Any], raw: bytes,
                    stream: bool) -> tuple[UpstreamResponse, bytes]:
        """Send to a replica, trying the next one when a replica fails before the answer's head (and,
        unless streaming, before the whole answer): the response, and its body unless streaming."""
        tried: set[str] = set()
        prefix = prompt_prefix(body, self.router.affinity_chars)
        last_error = "no replica is ready (starting or restarting)"
        path = "chat/completions" if call.endpoint == "chat" else "completions"
        if self.router.pick(call.model, prefix) is None:
            await self._catch_up(call.started)
        while (replica := self.router.pick(call.model, prefix, frozenset(tried))) is not None:
            tried.add(replica.id)
            replica.outstanding += 1
            try:
                resp = await self.upstream.post(f"{replica.upstream.base_url}/{path}", raw, {
                    "Content-Type": "application/json", **_auth(replica.upstream.internal_key)})
                content = b"" if stream and resp.status == 200 else await resp.read()
            except UpstreamError as exc:  # refused, reset, timed out before the answer: out at once
                replica.outstanding -= 1
                replica.healthy = False
                self.metrics.replica_up.labels(call.model, replica.id).set(0)
                last_error = f"replica {replica.id}: {exc}"
                continue
            except BaseException:
                replica.outstanding -= 1
                raise
            if resp.status in RETRY_STATUSES:
                resp.close()
                replica.outstanding -= 1
                last_error = f"replica {replica.id} answered {resp.status}"
                continue
            call.replica = replica
            return resp, content
        raise GatewayError(503, f"no replica of {call.model!r} can take the request ({last_error});"
                                " retry shortly", "no_replica", {"Retry-After": "2"})

    async def _unary(self, call: Call, body: dict[str, Any], raw: bytes) -> Response:
        try:
            resp, content = await self._send(call, body, raw, stream=False)
        except GatewayError as exc:
            await self._settle(call, exc.status)
            return exc.response()
        resp.close()
        self._release(call)
        if resp.status == 401:
            return await self._engine_refused(call)
        if resp.status == 200:
            call.prompt_tokens, call.completion_tokens = _usage_of(content)
        await self._settle(call, resp.status)
        return Response(content, status_code=resp.status,
                        media_type=resp.headers.get("content-type", "application/json"))

    async def _stream(self, call: Call, body: dict[str, Any], receive: Receive, send: Send) -> Response | None:
        sent, wants_usage, wants_continuous = upstream_body(body)
        try:
            resp, content = await self._send(call, body, json.dumps(sent).encode(), stream=True)
        except GatewayError as exc:
            await self._settle(call, exc.status)
            return exc.response()
        if resp.status != 200:
            resp.close()
            self._release(call)
            if resp.status == 401:
                return await self._engine_refused(call)
            await self._settle(call, resp.status)
            return Response(content, status_code=resp.status,
                            media_type=resp.headers.get("content-type", "application/json"))
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, call, resp))
        try:
            await self._relay(call, resp, StreamTap(wants_usage, wants_continuous), send)
        finally:
            watcher.cancel()
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
                end = (end or b"") + b"data: " + json.dumps({"error": {
                    "message": f"the engine replica failed mid-stream ({exc}); the answer is incomplete",
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
            if tap.first_token_at is not None:
                call.ttft_s = tap.first_token_at - call.started
        if call.replica is not None and not call.released:
            call.replica.outstanding -= 1
            call.released = True

    async def _engine_refused(self, call: Call) -> Response:
        await self._settle(call, 502)
        return error_response(502, "the engine refused the gateway's internal key; redeploy or check the"
                                   " deployment's key", "engine_auth")

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
        try:
            await self.limiter.release(call.key)
            await self.limiter.charge(call.key, row.prompt_tokens + row.completion_tokens)
        finally:
            await self.usage.write(row)

    async def _tokens_used(self, key_name: str, since: float) -> int:
        return await asyncio.to_thread(usagestore.tokens_since, self.db, key_name, since)

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
        if not isinstance(body, dict):
            raise GatewayError(400, "the body must be a JSON object", "invalid_json")
        return raw, body

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_response(exc.status_code, str(exc.detail))

    async def _crash(self, request: Request, exc: Exception) -> Response:
        log.error("gateway error on %s", request.url.path, exc_info=exc)
        return error_response(500, "internal gateway error; see the gateway's log", "internal_error")


async def _watch_disconnect(receive: Receive, call: Call, resp: UpstreamResponse) -> None:
    """When the client leaves mid-stream, even while the engine is silent: close the engine's request
    (the engine stops generating); the relay then ends and records the usage so far."""
    while (await receive())["type"] != "http.disconnect":
        pass
    if not call.settled:  # (once the answer is complete, the server reports a disconnect too)
        call.client_gone = True
        resp.abort()


def _usage_of(content: bytes) -> tuple[int, int]:
    try:
        used = json.loads(content).get("usage") or {}
        return int(used.get("prompt_tokens") or 0), int(used.get("completion_tokens") or 0)
    except (ValueError, AttributeError, TypeError):
        return 0, 0


def _bearer(value: str) -> str:
    """The token of an `Authorization: Bearer ...` header value."""
    return value[7:].strip() if value[:7].lower() == "bearer " else ""


def _auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
