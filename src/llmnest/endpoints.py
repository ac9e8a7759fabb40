"""What a client needs to reach a deployment (`Endpoint`), and the URLs a deployment on this machine answers on."""

from __future__ import annotations

from dataclasses import dataclass

from .host import lan_address
from .spec import DeploymentSpec

WILDCARDS = {"0.0.0.0", "::", ""}


@dataclass(frozen=True)
class Endpoint:
    """What a client needs: the OpenAI base URL (ending in /v1), the key and the model name."""

    base_url: str
    api_key: str | None
    model: str
    label: str = "local"

    @property
    def api_host(self) -> str:
        return self.base_url.removesuffix("/v1")


def reach_url(host: str, port: int) -> str:
    """The base URL this machine reaches a server bound to host:port on (loopback for a wildcard bind)."""
    host = "127.0.0.1" if host in WILDCARDS else host
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"



def local_endpoints(spec: DeploymentSpec, api_key: str | None) -> list[Endpoint]:
    """Loopback, plus the LAN address when the server listens on every interface."""
    eps = [Endpoint(reach_url(spec.host, spec.port), api_key, spec.served_model_name, "local")]
    if spec.host in WILDCARDS and (lan := lan_address()):
        eps.append(Endpoint(f"http://{lan}:{spec.port}/v1", api_key, spec.served_model_name, "network"))
    return eps
