"""Per-key limits on top of the `limits` library: requests/min, tokens/min, concurrency, token budgets.

Storage `memory://` serves one gateway; `redis://HOST:PORT` lets several gateways share the counters.
A request's tokens are known only when it ends, so admission *reserves* what it may use (its prompt,
estimated, plus `max_tokens`, or the model's context when absent) against tokens/min and the budget,
and the end puts the engine's real usage in its place. The reservation is taken and checked in one
atomic step (a counter increment), so parallel requests cannot all pass on the same free room: a key
ends at most one request's reservation over its limit (the last one admitted while room was left).
Budgets are the usage table (shared by every gateway on one database) plus the reservations in flight.
Counters are per key *identity* (name and creation time): a new key that reuses a revoked key's name
starts from zero.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from limits import RateLimitItemPerMinute
from limits.errors import ConfigurationError
from limits.storage import storage_from_string
from limits.aio.strategies import FixedWindowRateLimiter

from ..errors import BadInput
from .keys import Key
from .usage import period_end, period_start

CONCURRENCY_TTL = 3600  # seconds a held slot or reservation survives a gateway that died holding it
BUDGET_CACHE_S = 2.0
BUDGET_FRESH_BELOW = 0.8  # above this share of the budget, the usage table is read for every admission


@dataclass
class Rejection:
    """Which limit a request hit, a message naming it, and when to retry (seconds)."""

    limit: str
    message: str
    retry_after: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Admission:
    """What an admitted request holds until it ends: a slot, a reservation, the tokens/min window."""

    key: Key
    reserved: int
    tpm_window_ends: float = 0.0  # the tokens/min window the reservation went into (epoch s)
    ended: bool = False
    headers: dict[str, str] = field(default_factory=dict)  # OpenAI's x-ratelimit-* for requests/min, tokens/min


class Limiter:
    def __init__(self, storage_url: str = "memory://",
                 tokens_used: Callable[[Key, float], Awaitable[int]] | None = None) -> None:
        uri = storage_url if storage_url.startswith("async+") else f"async+{storage_url}"
        options = {"implementation": "redispy"} if "redis" in uri else {}
        try:
            self.storage = storage_from_string(uri, **options)
        except ConfigurationError as exc:
            raise BadInput(f"limit storage {storage_url!r}: {exc}; use memory:// or redis://HOST:PORT"
                           " (Redis needs `pip install 'llmnest[shared]'`)") from None
        self.window = FixedWindowRateLimiter(self.storage)
        self.tokens_used = tokens_used  # (key, since) -> tokens; the gateway reads its usage table
        self._budget: dict[str, tuple[float, float, int]] = {}  # key id -> (fetched at, period start, used)

    async def admit(self, key: Key, reserve: int = 0) -> Admission | Rejection:
        """Check every limit of the key and take what the request holds: a concurrency slot, one request
        of the minute (only once every other limit let it in) and `reserve` tokens."""
        reserve = max(reserve, 1)
        if key.max_concurrency is not None:
            held = await self.storage.incr(_slot(key), CONCURRENCY_TTL, amount=1)
            if held > key.max_concurrency:
                await self.storage.incr(_slot(key), CONCURRENCY_TTL, amount=-1)
                return Rejection("max_concurrency", f"max concurrency of {key.max_concurrency} requests in flight"
                                 " reached", 1)
        admission = Admission(key, 0)
        rejection = await self._reserve(admission, reserve)
        if rejection is None and key.rpm is not None:
            item = RateLimitItemPerMinute(key.rpm)
            window = item.key_for("rpm", key.id)
            count = await self.storage.incr(window, item.get_expiry(), amount=1)  # (taken and checked in one step)
            ends = await self.storage.get_expiry(window)
            if count > key.rpm:
                await self.storage.incr(window, item.get_expiry(), amount=-1)
                rejection = Rejection("rpm", f"requests per minute limit of {key.rpm} reached", _until(ends))
            _headers(admission.headers, "requests", key.rpm, key.rpm - count, ends)
        if rejection is not None:
            await self.end(admission, None)
            rejection.headers = admission.headers
            return rejection
        return admission

    async def _reserve(self, admission: Admission, reserve: int) -> Rejection | None:
        key = admission.key
        if key.token_budget is not None and key.budget_period is not None:
            after = await self.storage.incr(_reserved(key), CONCURRENCY_TTL, amount=reserve)
            used = await self.budget_used(key, after)
            if used + after - reserve >= key.token_budget:
                await self.storage.incr(_reserved(key), CONCURRENCY_TTL, amount=-reserve)
                return Rejection("token_budget", f"token budget of {key.token_budget} tokens per {key.budget_period}"
                                 f" is used up ({used} used, {after - reserve} reserved by requests in flight)",
                                 _until(period_end(key.budget_period)))
            admission.reserved = reserve
        if key.tpm is not None:
            item = RateLimitItemPerMinute(key.tpm)
            window = item.key_for("tpm", key.id)
            after = await self.storage.incr(window, item.get_expiry(), amount=reserve)
            ends = await self.storage.get_expiry(window)
            if after - reserve >= key.tpm:
                await self.storage.incr(window, item.get_expiry(), amount=-reserve)
                _headers(admission.headers, "tokens", key.tpm, key.tpm - after + reserve, ends)
                return Rejection("tpm", f"tokens per minute limit of {key.tpm} reached", _until(ends))
            admission.reserved, admission.tpm_window_ends = reserve, ends
            _headers(admission.headers, "tokens", key.tpm, key.tpm - after, ends)
        return None

    async def end(self, admission: Admission, tokens: int | None) -> None:
        """The request ended having used `tokens` (None: it never ran): give back its slot and put its
        real usage in place of its reservation. Call it once its usage row is stored."""
        if admission.ended:
            return
        admission.ended = True
        key, reserved, used = admission.key, admission.reserved, tokens or 0
        if key.max_concurrency is not None:
            await self.storage.incr(_slot(key), CONCURRENCY_TTL, amount=-1)
        if key.tpm is not None and admission.tpm_window_ends and (used != reserved):
            item = RateLimitItemPerMinute(key.tpm)
            if time.time() < admission.tpm_window_ends:  # (a new window owes nothing to the old one)
                await self.storage.incr(item.key_for("tpm", key.id), item.get_expiry(), amount=used - reserved)
            elif used:
                await self.window.hit(item, "tpm", key.id, cost=used)
        if key.token_budget is not None and reserved:
            await self.storage.incr(_reserved(key), CONCURRENCY_TTL, amount=-reserved)
        if used and key.id in self._budget:
            fetched, start, before = self._budget[key.id]
            self._budget[key.id] = (fetched, start, before + used)

    async def budget_used(self, key: Key, reserved: int = 0) -> int:
        """Tokens the key used in its current budget period (from the usage table; cached briefly while
        far from the budget, read afresh near it)."""
        assert key.budget_period is not None and key.token_budget is not None
        start = max(period_start(key.budget_period), key.created_at)
        cached = self._budget.get(key.id)
        if (cached and cached[1] == start and time.monotonic() - cached[0] < BUDGET_CACHE_S
                and cached[2] + reserved < BUDGET_FRESH_BELOW * key.token_budget):
            return cached[2]
        used = await self.tokens_used(key, start) if self.tokens_used else 0
        self._budget[key.id] = (time.monotonic(), start, used)
        return used



def _headers(out: dict[str, str], kind: str, limit: int, remaining: int, ends: float) -> None:
    out[f"x-ratelimit-limit-{kind}"] = str(limit)
    out[f"x-ratelimit-remaining-{kind}"] = str(max(0, remaining))
    out[f"x-ratelimit-reset-{kind}"] = f"{max(0, math.ceil(ends - time.time()))}s"


def _slot(key: Key) -> str:
    return f"llmnest/concurrency/{key.id}"


def _reserved(key: Key) -> str:
    return f"llmnest/reserved/{key.id}"


def _until(when: float) -> int:
    return max(1, math.ceil(when - time.time()))
