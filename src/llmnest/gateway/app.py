"""The gateway's ASGI app: checks the user's key, applies its limits, routes by `model` to a replica
with the engine's internal key, relays the answer, and records usage from the engine's own `usage`."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
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
from .upstreams import Provider

log = logging.getLogger("llmnest.gateway")

MAX_BODY = 8 * 1024 * 1024
KEY_CACHE_S = 2.0
KEY_CACHE_MAX = 10_000
RETRY_STATUSES = {502, 503, 504}
HEALTH_TIMEOUT_S = 3.0
HEALTH_FAILURES = 2  # failed checks in a row (other than a refused connection) that take a replica out
ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}


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
        self.timeout = httpx.Timeout(upstream_timeout, connect=5.0)
        self.client: httpx.AsyncClient | None = None
        self._keys: dict[str, tuple[float, Key | None]] = {}
        self._lookups: dict[str, asyncio.Future] = {}
        self._pending: set[asyncio.Task] = set()
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.completions, methods=["POST"]),
                Route("/v1/completions", self.completions, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/health", self.health, methods=["GET"]),
                Route("/metrics", self.metrics_endpoint, methods=["GET"]),
            ],
            exception_handlers={HTTPException: self._http_error, Exception: self._crash},
            lifespan=self._lifespan,
        )

    # ---- lifecycle -------------------------------------------------------------------------------

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.client = httpx.AsyncClient(timeout=self.timeout, limits=httpx.Limits(
            max_connections=None, max_keepalive_connections=256, keepalive_expiry=30))
        await self.refresh()
        checker = asyncio.create_task(self._health_loop())
        try:
            yield
        finally:
            checker.cancel()
            if self._pending:  # usage being written when asked to stop
                await asyncio.gather(*self._pending, return_exceptions=True)
            await self.client.aclose()

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval)
            try:
                await self.refresh()
            except Exception:  # a broken provider must not stop health checks for good
                log.warning("refreshing upstreams failed", exc_info=True)

    async def refresh(self) -> None:
        """Read the upstreams again and check every replica's /health."""
        self.router.update(await asyncio.to_thread(self.provider.upstreams))
        replicas = [r for reps in self.router.replicas.values() for r in reps]
        await asyncio.gather(*(self._check(r) for r in replicas))

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
            key = await self._authenticate(request)
        except GatewayError as exc:
            return exc.response()
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "llmnest"}
                for m in self.router.models() if key.allows(m)]
        return JSONResponse({"object": "list", "data": data})

    async def metrics_endpoint(self, request: Request) -> Response:
        if not _is_loopback(request.client.host if request.client else "") and not (
                self.admin_key and hmac.compare_digest(_bearer(request).encode(), self.admin_key.encode())):
            return error_response(403, "/metrics is readable from loopback, or with the admin key as Bearer token")
        for model, reps in self.router.replicas.items():
            for r in reps:
                self.metrics.replica_outstanding.labels(model, r.id).set(r.outstanding)
                self.metrics.replica_up.labels(model, r.id).set(1 if r.healthy else 0)
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def completions(self, request: Request) -> Response:
        try:
            key = await self._authenticate(request)
            body = await self._read_json(request)
            model = body.get("model")
            if not isinstance(model, str) or not model:
                raise GatewayError(400, "the request names no `model`", "missing_model")
            if not key.allows(model):
                raise GatewayError(403, f"this key may not use model {model!r}", "model_not_allowed")
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
        call = Call(key, model, ENDPOINTS[request.url.path])
        self.metrics.in_flight.labels(model).inc()
        try:
            if body.get("stream"):
                return await self._stream(call, body)
            return await self._unary(call, body, await request.body())
        except BaseException:  # the request broke off (or a bug): still free its replica and slot, write its row
            self._release(call)
            self._settle_later(call, 500)
            raise

    # ---- proxying --------------------------------------------------------------------------------

    async def _send(self, call: Call, body: dict[str, Any], raw: bytes, stream: bool) -> httpx.Response:
        """Send to a replica, trying the next one when a replica fails before its first byte."""
        assert self.client is not None
        tried: set[str] = set()
        prefix = prompt_prefix(body, self.router.affinity_chars)
        last_error = "no healthy replica"
        while (replica := self.router.pick(call.model, prefix, frozenset(tried))) is not None:
            tried.add(replica.id)
            replica.outstanding += 1
            url = f"{replica.upstream.base_url}/{'chat/completions' if call.endpoint == 'chat' else 'completions'}"
            request = self.client.build_request("POST", url, content=raw, headers={
                "Content-Type": "application/json", **_auth(replica.upstream.internal_key)})
            try:
                resp = await self.client.send(request, stream=stream)
            except httpx.TransportError as exc:  # refused, reset, timed out before any byte: out at once
                replica.outstanding -= 1
                replica.healthy = False
                self.metrics.replica_up.labels(call.model, replica.id).set(0)
                last_error = f"replica {replica.id}: {type(exc).__name__}"
                continue
            except BaseException:
                replica.outstanding -= 1
                raise
            if resp.status_code in RETRY_STATUSES:
                await resp.aclose()
                replica.outstanding -= 1
                last_error = f"replica {replica.id} answered {resp.status_code}"
                continue
            call.replica = replica
            return resp
        raise GatewayError(503, f"no replica of {call.model!r} can take the request ({last_error});"
                                " retry shortly", "no_replica")

    async def _unary(self, call: Call, body: dict[str, Any], raw: bytes) -> Response:
        try:
            resp = await self._send(call, body, raw, stream=False)
        except GatewayError as exc:
            await self._settle(call, exc.status)
            return exc.response()
        try:
            content = resp.content
            if resp.status_code == 401:
                return await self._engine_refused(call)
            if resp.status_code == 200:
                used = _usage_of(content)
                call.prompt_tokens, call.completion_tokens = used
        finally:
            self._release(call)
        await self._settle(call, resp.status_code)
        return Response(content, status_code=resp.status_code,
                        media_type=resp.headers.get("content-type", "application/json"))

    async def _stream(self, call: Call, body: dict[str, Any]) -> Response:
        sent, wants_usage, wants_continuous = upstream_body(body)
        try:
            resp = await self._send(call, body, json.dumps(sent).encode(), stream=True)
        except GatewayError as exc:
            await self._settle(call, exc.status)
            return exc.response()
        if resp.status_code != 200:
            content = await resp.aread()
            await resp.aclose()
            self._release(call)
            if resp.status_code == 401:
                return await self._engine_refused(call)
            await self._settle(call, resp.status_code)
            return Response(content, status_code=resp.status_code,
                            media_type=resp.headers.get("content-type", "application/json"))
        tap = StreamTap(wants_usage, wants_continuous)
        return _ClientStream(self._relay(call, resp, tap), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})

    async def _relay(self, call: Call, resp: httpx.Response, tap: StreamTap) -> AsyncIterator[bytes]:
        """Pass the engine's events on; usage is written before the client gets [DONE]."""
        status = 499  # until the stream ends: the client went away
        try:
            async for data in resp.aiter_raw():
                events = tap.feed(data)
                if tap.done:
                    before = [e for e in events if not e.startswith(DONE)]
                    if before:
                        yield b"".join(before)
                    self._release(call, tap)
                    await self._settle(call, 200)
                    yield DONE + b"\n\n"
                    status = 200
                    continue
                if events:
                    yield b"".join(events) if len(events) > 1 else events[0]
            if not tap.done:
                if rest := tap.flush():
                    yield b"".join(rest)
                raise httpx.RemoteProtocolError("the stream ended without [DONE]")
        except httpx.HTTPError as exc:  # the engine died mid-stream: tell the client, do not hang
            status = 502
            if call.replica:
                call.replica.healthy = False
            yield b"data: " + json.dumps({"error": {
                "message": f"the engine replica failed mid-stream ({type(exc).__name__}); the answer is incomplete",
                "type": "upstream_error", "param": None, "code": "upstream_failed"}}).encode() + b"\n\n"
        finally:
            if not call.settled:
                self._release(call, tap)
                self._settle_later(call, status)
            await resp.aclose()

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
            await asyncio.to_thread(usagestore.record, self.db, row)

    async def _tokens_used(self, key_name: str, since: float) -> int:
        return await asyncio.to_thread(usagestore.tokens_since, self.db, key_name, since)

    # ---- request checks --------------------------------------------------------------------------

    async def _authenticate(self, request: Request) -> Key:
        secret = _bearer(request)
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

    async def _read_json(self, request: Request) -> dict[str, Any]:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body:
            raise GatewayError(413, f"the request body is over {self.max_body} bytes", "body_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise GatewayError(413, f"the request body is over {self.max_body} bytes", "body_too_large")
            chunks.append(chunk)
        raw = b"".join(chunks)
        request._body = raw  # type: ignore[attr-defined]  (request.body() returns it again)
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise GatewayError(400, f"the body is not valid JSON ({exc})", "invalid_json") from None
        if not isinstance(body, dict):
            raise GatewayError(400, "the body must be a JSON object", "invalid_json")
        return body

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_response(exc.status_code, str(exc.detail))

    async def _crash(self, request: Request, exc: Exception) -> Response:
        log.error("gateway error on %s", request.url.path, exc_info=exc)
        return error_response(500, "internal gateway error; see the gateway's log", "internal_error")


class _ClientStream(StreamingResponse):
    """A streaming response that notices a client leaving even while the engine is silent, and then
    closes the relay, which closes the engine's request (the engine stops generating)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            async with anyio.create_task_group() as group:
                async def stream() -> None:
                    try:
                        await self.stream_response(send)
                    except OSError:
                        pass  # the client is gone; the relay's finally does the accounting
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]


def _usage_of(content: bytes) -> tuple[int, int]:
    try:
        used = json.loads(content).get("usage") or {}
        return int(used.get("prompt_tokens") or 0), int(used.get("completion_tokens") or 0)
    except (ValueError, AttributeError, TypeError):
        return 0, 0


def _bearer(request: Request) -> str:
    value = request.headers.get("authorization", "")
    return value[7:].strip() if value[:7].lower() == "bearer " else ""


def _auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
