"""The URLs a deployment answers on, and the examples that go with them."""

from __future__ import annotations

from .examples import Endpoint
from .host import lan_address
from .spec import DeploymentSpec

WILDCARDS = {"0.0.0.0", "::", ""}


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
