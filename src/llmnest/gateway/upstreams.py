"""Where the engines are: `Upstream`s from a provider. The gateway never starts or watches processes,
so engines may run anywhere its HTTP reaches (this machine, containers, other hosts)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Upstream:
    """One engine replica serving `model` at `base_url` (the OpenAI base, ending in /v1)."""

    model: str
    replica_id: str
    base_url: str
    internal_key: str | None = None

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


class StateProvider:
    """The deployments in llmnest's state store, wherever they run: each one's served model, the
    endpoint its target says is reachable from here, and its engine key."""

    def __init__(self, active_only: bool = True, load: Callable[[], list] | None = None) -> None:
        self._active_only = active_only
        self._load = load

    def upstreams(self) -> list[Upstream]:
        from .. import lifecycle, state

        out: list[Upstream] = []
        for dep in (self._load or state.all_deployments)():
            if self._active_only and dep.status not in state.ACTIVE:
                continue
            key = state.api_key(dep.name)
            endpoints = lifecycle.endpoints(dep, key)
            if endpoints:
                out.append(Upstream(dep.spec.served_model_name, dep.name, endpoints[0].base_url.rstrip("/"), key))
        return out
