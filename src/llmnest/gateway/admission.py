"""Letting a request in: its API key (cached, re-read in the background), its body (a JSON object of
bounded size naming a deployed model the key may use), and its key's limits (tokens reserved)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import keys as keystore
from .accounting import Call
from .db import Database
from .errors import GatewayError
from .keys import Key
from .limiter import Limiter, Rejection
from .metrics import Metrics
from .routing import Routing

log = logging.getLogger("llmnest.gateway")

DEFAULT_RESERVE = 4096  # tokens a request without max_tokens reserves when the model's context is not known
BYTES_PER_TOKEN = 3  # the prompt's reservation: its body's bytes / 3 (English is ~4 bytes a token, CJK ~3)
KEY_CACHE_S = 2.0
KEY_CACHE_MAX = 10_000
Receive = Callable[[], Awaitable[dict[str, Any]]]


def bearer(value: str) -> str:
    """The token of an `Authorization: Bearer ...` header value."""
    return value[7:].strip() if value[:7].lower() == "bearer " else ""


class Gatekeeper:
    """Admits requests for the engine routes: key, body, model, limits."""

    def __init__(self, db: Database, limiter: Limiter, routing: Routing, metrics: Metrics, max_body: int) -> None:
        self.db = db
        self.limiter = limiter
        self.routing = routing
        self.metrics = metrics
        self.max_body = max_body
        self._keys: dict[str, tuple[float, Key | None]] = {}
        self._lookups: dict[str, asyncio.Future] = {}

    async def admit(self, endpoint: str, scope: dict[str, Any], receive: Receive,
                    extra: list[tuple[bytes, bytes]]) -> tuple[Call, dict[str, Any], bytes]:
        """The admitted call, its body and raw body; raises GatewayError. The limiter's headers are added
        to `extra` (headers every answer carries)."""
        arrived = time.monotonic()
        secret, declared = "", None
        for name, value in scope["headers"]:
            if name == b"authorization":
                secret = bearer(value.decode("latin-1"))
            elif name == b"content-length":
                declared = value
        key = await self.authenticate(secret)
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
        router = self.routing.router
        if model not in router.replicas:
            await self.routing.catch_up(arrived)
        if model not in router.replicas:
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
        return Call(key, model, endpoint, scope["path"], admission), body, raw

    def _reservation(self, endpoint: str, model: str, body: dict[str, Any], raw: bytes) -> int:
        """The tokens a request may use, reserved against its key's tokens/min and budget until it ends:
        its prompt (estimated from the body's size) and its output limit, or the model's context."""
        prompt = len(raw) // BYTES_PER_TOKEN + 1
        if endpoint in ("tokenize", "detokenize"):
            return 1
        if endpoint not in ("chat", "completions", "responses"):
            return prompt
        limit = self.routing.router.max_model_len(model)
        out = next((v for f in ("max_completion_tokens", "max_tokens", "max_output_tokens")
                    if isinstance(v := body.get(f), int) and not isinstance(v, bool) and v > 0), None)
        if out is None:
            return limit or DEFAULT_RESERVE
        return min(prompt + out, limit) if limit else prompt + out

    async def authenticate(self, secret: str) -> Key:
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

    async def key_loop(self) -> None:
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
