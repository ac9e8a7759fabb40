"""Where requests can go: the engine routes the gateway serves, the replicas its provider names, and
which of them answer their health check (and with what context length)."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx

from .metrics import Metrics
from .router import Replica, Router
from .upstreams import Provider

log = logging.getLogger("llmnest.gateway")

HEALTH_TIMEOUT_S = 3.0
HEALTH_FAILURES = 2  # failed checks in a row (other than a refused connection) that take a replica out
ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completions",
             # the engine's other routes that name a `model`: same keys and limits, relayed as they are
             "/v1/responses": "responses", "/v1/embeddings": "embeddings", "/tokenize": "tokenize",
             "/detokenize": "detokenize", "/v1/score": "score", "/v1/rerank": "rerank", "/rerank": "rerank",
             "/v2/rerank": "rerank", "/pooling": "pooling", "/classify": "classify"}


def engine_url(replica: Replica, path: str) -> str:
    """The engine's URL of a route: /v1/... under its OpenAI base, the others (/tokenize, ...) at its root."""
    if path.startswith("/v1/"):
        return replica.upstream.base_url + path[3:]
    return replica.upstream.root_url + path


def auth(key: str | None) -> dict[str, str]:
    """The header that carries an engine's internal key."""
    return {"Authorization": f"Bearer {key}"} if key else {}


class Routing:
    """The replicas of every model, read from the provider and health-checked every `health_interval`."""

    def __init__(self, provider: Provider, router: Router, metrics: Metrics, health_interval: float) -> None:
        self.provider = provider
        self.router = router
        self.metrics = metrics
        self.health_interval = health_interval
        self.client: httpx.AsyncClient | None = None  # health checks
        self._read_started = 0.0
        self._reading = asyncio.Lock()

    async def start(self) -> None:
        self.client = httpx.AsyncClient(timeout=HEALTH_TIMEOUT_S)
        await self.refresh()

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    async def health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval)
            try:
                await self.refresh()
            except Exception:  # a broken provider must not stop health checks for good
                log.warning("refreshing upstreams failed", exc_info=True)

    async def refresh(self) -> None:
        """Read the upstreams again and check every ready replica's /health."""
        await self._read_upstreams()
        replicas = [r for reps in self.router.replicas.values() for r in reps if r.upstream.ready]
        await asyncio.gather(*(self.check(r) for r in replicas))

    async def _read_upstreams(self) -> None:
        self._read_started = time.monotonic()
        self.router.update(await asyncio.to_thread(self.provider.upstreams))

    async def catch_up(self, since: float) -> None:
        """Read the upstreams again unless a read began after `since` (when the request came): a replica
        that became ready, or a model deployed, since the last health round is used at once. Requests
        that wait together share one read."""
        async with self._reading:
            if self._read_started < since:
                await self._read_upstreams()

    async def check(self, replica: Replica) -> None:
        """A refused connection takes the replica out at once; a slow or failing answer only twice in a row."""
        assert self.client is not None
        try:
            resp = await self.client.get(f"{replica.upstream.root_url}/health", timeout=HEALTH_TIMEOUT_S,
                                         headers=auth(replica.upstream.internal_key))
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
        0 when it does not say (then requests without max_tokens reserve their default)."""
        assert self.client is not None
        try:
            resp = await self.client.get(f"{replica.upstream.base_url}/models", timeout=HEALTH_TIMEOUT_S,
                                         headers=auth(replica.upstream.internal_key))
            for item in resp.json().get("data") or []:
                if isinstance(item.get("max_model_len"), int):
                    return item["max_model_len"]
        except (httpx.HTTPError, ValueError, AttributeError):
            pass
        return 0
