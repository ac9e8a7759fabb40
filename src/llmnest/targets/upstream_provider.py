"""The gateway's provider of llmnest's own deployments: each target says where its engines are."""

from __future__ import annotations

from collections.abc import Callable

from .. import state
from ..gateway.upstreams import Upstream
from . import get


class DeploymentProvider:
    """The deployments in llmnest's state store, wherever they run: the engines that are up, as their
    targets say a gateway on this machine reaches them. With `port`, only the deployments that `up` put
    behind the gateway on that port (the gateway `up` supervises); without, every deployment."""

    def __init__(self, port: int | None = None, load: Callable[[], list] | None = None) -> None:
        self._port = port
        self._load = load

    def upstreams(self) -> list[Upstream]:
        out: list[Upstream] = []
        for dep in (self._load or state.all_deployments)():
            if self._port is not None and not (dep.spec.gateway and dep.spec.port == self._port):
                continue
            out += get(dep.spec.target).upstreams(dep)
        return out
