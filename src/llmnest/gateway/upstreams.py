"""Where the engines are: `Upstream`s from a provider. The gateway never starts or watches processes,
so engines may run anywhere its HTTP reaches (this machine, containers, other hosts); the provider of
llmnest's own deployments belongs to the targets (`targets.upstream_provider`), so the gateway imports none."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Upstream:
    """One engine replica serving `model` at `base_url` (the OpenAI base, ending in /v1)."""

    model: str
    replica_id: str
    base_url: str
    internal_key: str | None = None
    ready: bool = True  # False while it starts or restarts: the model is known, the replica takes nothing

    @property
    def root_url(self) -> str:
        """The server root, where /health and /metrics live."""
        return self.base_url.rstrip("/").removesuffix("/v1")


class Provider(Protocol):
    def upstreams(self) -> list[Upstream]: ...


class StaticProvider:
    """A fixed list (tests, or a config file for engines on other machines)."""

    def __init__(self, upstreams: list[Upstream]) -> None:
        self._upstreams = list(upstreams)

    def upstreams(self) -> list[Upstream]:
        return list(self._upstreams)

    @classmethod
    def from_config(cls, items: list[dict]) -> StaticProvider:
        """[{"model", "replica_id"?, "base_url", "internal_key"?}, ...]"""
        return cls([Upstream(i["model"], i.get("replica_id") or f"{i['model']}-{n}", i["base_url"].rstrip("/"),
                             i.get("internal_key")) for n, i in enumerate(items)])
