"""Per-key limits on top of the `limits` library: requests/min, tokens/min, concurrency, token budgets.

Storage `memory://` serves one gateway; `redis://HOST:PORT` lets several gateways share the counters.
Tokens are known only after a request, so tokens/min is charged afterwards and checked before the
next request; budgets are summed from the usage table (shared by every gateway on one database).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from limits import RateLimitItemPerMinute
from limits.errors import ConfigurationError
from limits.storage import storage_from_string
from limits.aio.strategies import FixedWindowRateLimiter

from ..errors import BadInput
from .keys import Key
from .usage import period_end, period_start

CONCURRENCY_TTL = 3600  # seconds a held slot survives a gateway that died holding it
BUDGET_CACHE_S = 2.0


@dataclass
class Rejection:
    """Which limit a request hit, a message naming it, and when to retry (seconds)."""

    limit: str
    message: str
    retry_after: int


class Limiter:
    def __init__(self, storage_url: str = "memory://",
                 tokens_used: Callable[[str, float], Awaitable[int]] | None = None) -> None:
        uri = storage_url if storage_url.startswith("async+") else f"async+{storage_url}"
        options = {"implementation": "redispy"} if "redis" in uri else {}
        try:
            self.storage = storage_from_string(uri, **options)
        except ConfigurationError as exc:
            raise BadInput(f"limit storage {storage_url!r}: {exc}; use memory:// or redis://HOST:PORT"
                           " (Redis needs `pip install 'llmnest[shared]'`)") from None
        self.window = FixedWindowRateLimiter(self.storage)
        self.tokens_used = tokens_used  # (key name, since) -> tokens; the gateway reads its usage table
        self._budget: dict[str, tuple[float, float, int]] = {}  # key -> (fetched at, period start, used)

    async def admit(self, key: Key) -> Rejection | None:
        """Check every limit of the key and take a request and a concurrency slot; None when admitted."""
        if key.token_budget is not None and key.budget_period is not None:
            used = await self.budget_used(key)
            if used >= key.token_budget:
                return Rejection("token_budget", f"token budget of {key.token_budget} tokens per {key.budget_period}"
                                 f" is used up ({used} used)", _until(period_end(key.budget_period)))
        if key.tpm is not None:
            item = RateLimitItemPerMinute(key.tpm)
            if not await self.window.test(item, "tpm", key.name):
                return Rejection("tpm", f"tokens per minute limit of {key.tpm} reached", await self._reset(item, "tpm", key))
        if key.rpm is not None:
            item = RateLimitItemPerMinute(key.rpm)
            if not await self.window.hit(item, "rpm", key.name):
                return Rejection("rpm", f"requests per minute limit of {key.rpm} reached", await self._reset(item, "rpm", key))
        if key.max_concurrency is not None:
            held = await self.storage.incr(_slot(key), CONCURRENCY_TTL, amount=1)
            if held > key.max_concurrency:
                await self.storage.incr(_slot(key), CONCURRENCY_TTL, amount=-1)
                return Rejection("max_concurrency", f"max concurrency of {key.max_concurrency} requests in flight"
                                 " reached", 1)
        return None

    async def release(self, key: Key) -> None:
        """Give back the concurrency slot `admit` took."""
        if key.max_concurrency is not None:
            await self.storage.incr(_slot(key), CONCURRENCY_TTL, amount=-1)

    async def charge(self, key: Key, tokens: int) -> None:
        """Count a finished request's tokens against tokens/min and the budget."""
        if tokens <= 0:
            return
        if key.tpm is not None:
            await self.window.hit(RateLimitItemPerMinute(key.tpm), "tpm", key.name, cost=tokens)
        if key.name in self._budget:
            fetched, start, used = self._budget[key.name]
            self._budget[key.name] = (fetched, start, used + tokens)

    async def budget_used(self, key: Key) -> int:
        """Tokens used in the key's current budget period (from the usage table, cached briefly)."""
        assert key.budget_period is not None
        start = period_start(key.budget_period)
        cached = self._budget.get(key.name)
        if cached and cached[1] == start and time.monotonic() - cached[0] < BUDGET_CACHE_S:
            return cached[2]
        used = await self.tokens_used(key.name, start) if self.tokens_used else 0
        self._budget[key.name] = (time.monotonic(), start, used)
        return used

    async def _reset(self, item: RateLimitItemPerMinute, kind: str, key: Key) -> int:
        stats = await self.window.get_window_stats(item, kind, key.name)
        return _until(stats.reset_time)


def _slot(key: Key) -> str:
    return f"llmnest/concurrency/{key.name}"


def _until(when: float) -> int:
    return max(1, math.ceil(when - time.time()))
