"""The gateway's ASGI app, assembled from its parts: `routing` (which replicas answer), `admission`
(the user's key and limits), `relay` (to a replica with the engine's internal key, and back) and
`accounting` (usage from the engine's own `usage`). Here: the parts' wiring, their background loops,
and the routes that are the gateway's own (/v1/models, /health, /metrics)."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .accounting import Accounting
from .admission import Gatekeeper, bearer
from .db import Database
from .errors import GatewayError, error_response
from .http_limits import HttpLimits
from .limiter import Limiter
from .metrics import Metrics
from .relay import Relay
from .router import Router
from .routing import ENDPOINTS, Routing
from .upstreams import Provider

log = logging.getLogger("llmnest.gateway")

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class Gateway:
    def __init__(self, db: Database, provider: Provider, *, limiter: Limiter | None = None,
                 router: Router | None = None, health_interval: float = 5.0, max_body: int | None = None,
                 admin_key: str | None = None, upstream_timeout: float = 600.0,
                 limits: HttpLimits | None = None, metrics_from: tuple[str, ...] = ()) -> None:
        self.db = db
        self.provider = provider
        self.limiter = limiter or Limiter("memory://")
        self.router = router or Router()
        self.metrics = Metrics()
        self.limits = limits or HttpLimits()
        self.admin_key = admin_key
        self.metrics_from = tuple(ipaddress.ip_network(n, strict=False) for n in metrics_from)  # beyond loopback
        self.routing = Routing(provider, self.router, self.metrics, health_interval)
        self.accounting = Accounting(db, self.limiter, self.metrics)
        self.limiter.tokens_used = self.limiter.tokens_used or self.accounting.tokens_used
        self.gatekeeper = Gatekeeper(db, self.limiter, self.routing, self.metrics,
                                     max_body or self.limits.max_body_bytes)
        self.relay = Relay(self.routing, self.accounting, self.metrics, upstream_timeout)
        self.upstream = self.relay.upstream
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

    async def completions(self, endpoint: str, scope: dict[str, Any], receive: Receive, send: Send,
                          extra: list[tuple[bytes, bytes]]) -> Response | None:
        """A request for an engine route: the answer to send, or None when it was sent here (streamed,
        or the client left). `extra` are headers every answer carries."""
        try:
            call, body, raw = await self.gatekeeper.admit(endpoint, scope, receive, extra)
        except GatewayError as exc:
            self.metrics.refused.labels(exc.code or str(exc.status)).inc()
            return exc.response()
        self.metrics.in_flight.labels(call.model).inc()
        return await self.relay.handle(call, body, raw, receive, send, extra)

    # ---- lifecycle -------------------------------------------------------------------------------

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.routing.start()
        loops = [asyncio.create_task(self.routing.health_loop()), asyncio.create_task(self.gatekeeper.key_loop())]
        try:
            yield
        finally:
            for task in loops:
                task.cancel()
            await self.accounting.drain()  # usage being written when asked to stop
            await self.routing.stop()
            self.upstream.close()

    # ---- the gateway's own routes ----------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def models(self, request: Request) -> Response:
        try:
            key = await self.gatekeeper.authenticate(bearer(request.headers.get("authorization", "")))
        except GatewayError as exc:
            return exc.response()
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "llmnest"}
                for m in self.router.models() if key.allows(m)]
        return JSONResponse({"object": "list", "data": data})

    async def metrics_endpoint(self, request: Request) -> Response:
        if not _is_trusted(request.client.host if request.client else "", self.metrics_from) and not (
                self.admin_key and hmac.compare_digest(bearer(request.headers.get("authorization", "")).encode(),
                                                   self.admin_key.encode())):
            return error_response(403, "/metrics is readable from loopback (and the --metrics-from networks), or with "
                                  "the admin key as Bearer token")
        for model, reps in self.router.replicas.items():
            for r in reps:
                self.metrics.replica_outstanding.labels(model, r.id).set(r.outstanding)
                self.metrics.replica_up.labels(model, r.id).set(1 if r.healthy else 0)
                self.metrics.replica_ready.labels(model, r.id).set(1 if r.upstream.ready else 0)
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_response(exc.status_code, str(exc.detail))

    async def _crash(self, request: Request, exc: Exception) -> Response:
        log.error("gateway error on %s", request.url.path, exc_info=exc)
        return error_response(500, "internal gateway error; see the gateway's log", "internal_error")


def _with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), *extra]
        await send(message)
    return sending


def _is_trusted(host: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    """A client address on loopback or in one of `networks`."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or any(address in n for n in networks)
