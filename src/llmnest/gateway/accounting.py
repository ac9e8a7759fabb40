"""What a request used: its replica slot given back, its usage row written and its metrics counted,
from the engine's own `usage` (in the answer, or in the last events of a stream)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from . import usage as usagestore
from .db import Database
from .keys import Key
from .limiter import Admission, Limiter
from .metrics import Metrics
from .router import Replica
from .stream import StreamTap


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


def release(call: Call, tap: StreamTap | None = None) -> None:
    """The replica is done with the call: count what it used."""
    if tap is not None:
        call.prompt_tokens, call.completion_tokens = tap.prompt_tokens, tap.completion_tokens
        if tap.first_token_at is not None and call.streamed:
            call.ttft_s = tap.first_token_at - call.started
    if call.replica is not None and not call.released:
        call.replica.outstanding -= 1
        call.released = True


class Accounting:
    """Settles calls: one usage row each, the key's reservation replaced by what was used, metrics."""

    def __init__(self, db: Database, limiter: Limiter, metrics: Metrics) -> None:
        self.db = db
        self.limiter = limiter
        self.metrics = metrics
        self.usage = usagestore.Writer(db)
        self._pending: set[asyncio.Task] = set()

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

    async def settle(self, call: Call, status: int) -> None:
        """Write the usage row and give back the key's slot before the client sees the end."""
        if call.settled:
            return
        row = self._account(call, status)
        await self._finish(call, row)

    def settle_later(self, call: Call, status: int) -> None:
        """The same from a cancelled stream, where nothing can be awaited: a task does the writing."""
        if call.settled:
            return
        task = asyncio.get_running_loop().create_task(self._finish(call, self._account(call, status)))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for the usage rows still being written (when asked to stop)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def _finish(self, call: Call, row: usagestore.Usage) -> None:
        """Store the row, then put the request's usage in place of its reservation (in this order, a
        budget is never read short of a finished request's tokens)."""
        try:
            await self.usage.write(row)
        finally:
            if call.admission is not None:
                await self.limiter.end(call.admission, row.prompt_tokens + row.completion_tokens)

    async def tokens_used(self, key: Key, since: float) -> int:
        """The key's tokens in the usage table since `since` (the limiter's budgets read it)."""
        return await asyncio.to_thread(usagestore.tokens_since, self.db, key.name, since)


def usage_of(content: bytes) -> tuple[int, int]:
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


def stream_usage(tail: bytes) -> tuple[int, int]:
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
