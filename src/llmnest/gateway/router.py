"""Choosing a replica: least outstanding requests, with prefix affinity so that requests sharing a
prompt prefix land where that prefix is already cached, unless that replica is clearly busier."""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from typing import Any

from .upstreams import Upstream

AFFINITY_CHARS = 256  # the prompt prefix that decides affinity


@dataclass
class Replica:
    upstream: Upstream
    outstanding: int = 0
    healthy: bool = True
    failed_checks: int = 0  # health checks failed in a row
    max_model_len: int | None = None  # the model's context, from the engine (0: it does not say)

    @property
    def id(self) -> str:
        return self.upstream.replica_id


class Router:
    def __init__(self, affinity_chars: int = AFFINITY_CHARS, slack: int = 2) -> None:
        self.affinity_chars = affinity_chars
        self.slack = slack  # how many more in flight the preferred replica may have than the least loaded
        self.replicas: dict[str, list[Replica]] = {}

    def update(self, upstreams: list[Upstream]) -> None:
        """Take a new list of upstreams, keeping the state of replicas that stay."""
        old = {r.upstream: r for reps in self.replicas.values() for r in reps}
        fresh: dict[str, list[Replica]] = {}
        for up in upstreams:
            fresh.setdefault(up.model, []).append(old.get(up) or Replica(up))
        self.replicas = fresh

    def max_model_len(self, model: str) -> int:
        """The model's context length as its replicas report it (0: not known)."""
        return max((r.max_model_len or 0 for r in self.replicas.get(model, [])), default=0)

    def models(self) -> list[str]:
        return sorted(self.replicas)

    def pick(self, model: str, prefix: str = "", exclude: frozenset[str] = frozenset()) -> Replica | None:
        """A ready replica of `model` not in `exclude`, or None when there is none. Healthy ones first; when
        none is healthy, the others are tried too (a slow health check must not stop a whole model)."""
        candidates = [r for r in self.replicas.get(model, []) if r.id not in exclude and r.upstream.ready]
        live = [r for r in candidates if r.healthy] or candidates
        if not live:
            return None
        least = min(r.outstanding for r in live)
        if prefix:
            head = prefix[: self.affinity_chars].encode()
            preferred = max(live, key=lambda r: zlib.crc32(head + r.id.encode()))  # rendezvous hashing
            if preferred.outstanding <= least + max(self.slack, least // 2):
                return preferred
        return random.choice([r for r in live if r.outstanding == least])


def prompt_prefix(body: dict[str, Any], chars: int = AFFINITY_CHARS) -> str:
    """The first characters of the prompt: the messages' text for chat, the prompt for completions."""
    out: list[str] = []
    size = 0
    messages = body.get("messages")
    parts: list[Any] = messages if isinstance(messages, list) else [body.get("prompt")]
    for part in parts:
        content = part.get("content") if isinstance(part, dict) else part
        if isinstance(content, list):
            content = "".join(str(c.get("text", "")) if isinstance(c, dict) else str(c) for c in content)
        if content is None:
            continue
        text = str(content)
        out.append(text)
        size += len(text)
        if size >= chars:
            break
    return "".join(out)[:chars]
