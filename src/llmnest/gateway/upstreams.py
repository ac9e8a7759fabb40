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


class StateProvider:
    """The deployments in llmnest's state store, wherever they run: the engines that are up, as their
    targets say a gateway on this machine reaches them. With `port`, only the deployments that `up` put
    behind the gateway on that port (the gateway `up` supervises); without, every deployment."""

    def __init__(self, port: int | None = None, load: Callable[[], list] | None = None) -> None:
        self._port = port
        self._load = load

    def upstreams(self) -> list[Upstream]:
        from .. import state, targets

        out: list[Upstream] = []
        for dep in (self._load or state.all_deployments)():
            if self._port is not None and not (dep.spec.gateway and dep.spec.port == self._port):
                continue
            out += targets.get(dep.spec.target).upstreams(dep)
        return out
