"""`llmnest gateway serve`: the gateway in the foreground (the lifecycle supervises it)."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from pathlib import Path

import typer

from ..errors import BadInput, Conflict
from .keys_cmd import DB_HELP
from .output import console, handle_errors, print_json, say

gateway_app = typer.Typer(help="The OpenAI-compatible gateway with keys, usage, limits and metrics.",
                          context_settings={"help_option_names": ["-h", "--help"]}, no_args_is_help=True)


@handle_errors
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8080, "--port", help="Port to listen on."),
    db: str = typer.Option(None, "--db", help=DB_HELP),
    redis: str = typer.Option(None, "--redis", help="redis://HOST:PORT to share limits between gateways; default "
                              "$LLMNEST_GATEWAY_REDIS, else in memory."),
    upstreams: Path = typer.Option(None, "--upstreams", help='JSON file [{"model", "base_url", "replica_id"?, "internal_key"?}] '
                                   "instead of this machine's deployments (engines elsewhere)."),
    health_interval: float = typer.Option(5.0, "--health-interval", help="Seconds between replica health checks."),
    on_port: bool = typer.Option(False, "--deployments-on-port", help="Route only to the deployments that `llmnest up` "
                                 "put behind the gateway on --port (how `up` runs it)."),
    max_header_bytes: int = typer.Option(None, "--max-header-bytes", help="Request line and headers, at most "
                                         "(431 beyond; default 32768, $LLMNEST_GATEWAY_MAX_HEADER_BYTES)."),
    max_headers: int = typer.Option(None, "--max-headers", help="Header fields per request, at most (431 beyond; "
                                    "default 100, $LLMNEST_GATEWAY_MAX_HEADERS)."),
    header_timeout: float = typer.Option(None, "--header-timeout", help="Seconds a request's headers may take to "
                                         "arrive (408 after; default 10, $LLMNEST_GATEWAY_HEADER_TIMEOUT_S)."),
    body_timeout: float = typer.Option(None, "--body-timeout", help="Seconds to wait for more of a body (408 after; "
                                       "default 30, $LLMNEST_GATEWAY_BODY_TIMEOUT_S)."),
    max_connections_per_client: int = typer.Option(
        None, "--max-connections-per-client", help="Open connections per client IP address (429 beyond; default "
        "512, $LLMNEST_GATEWAY_MAX_CONNECTIONS_PER_CLIENT; 0: no cap)."),
    metrics_from: str = typer.Option(None, "--metrics-from", help="Comma-separated networks (CIDR) that may read "
                                     "/metrics without the admin key, besides loopback (e.g. the VPC's)."),
    max_body_bytes: int = typer.Option(None, "--max-body-bytes", help="Request body, at most (413 beyond; default "
                                       "8 MiB, $LLMNEST_GATEWAY_MAX_BODY_BYTES)."),
) -> None:
    """Serve until interrupted. The admin key for /metrics beyond loopback comes from $LLMNEST_GATEWAY_ADMIN_KEY.
    The HTTP limits come from the options, else from $LLMNEST_GATEWAY_* (how the gateway `up` runs takes them)."""
    from ..gateway.app import Gateway
    from ..gateway.db import Database
    from ..gateway.http_limits import HttpLimits
    from ..gateway.limiter import Limiter
    from ..gateway.server import serve as run
    from ..gateway.upstreams import StaticProvider
    from ..targets.upstream_provider import DeploymentProvider

    if health_interval <= 0:
        raise BadInput("--health-interval must be positive")
    limits = HttpLimits.from_env(max_header_bytes=max_header_bytes, max_headers=max_headers,
                                 header_timeout_s=header_timeout, body_timeout_s=body_timeout,
                                 max_connections_per_client=max_connections_per_client, max_body_bytes=max_body_bytes)
    networks = tuple(n.strip() for n in (metrics_from or "").split(",") if n.strip())
    try:
        for network in networks:
            ipaddress.ip_network(network, strict=False)
    except ValueError as exc:
        raise BadInput(f"--metrics-from: {exc}; give networks such as 192.168.0.0/16,10.0.0.0/8") from None
    if upstreams is not None and on_port:
        raise BadInput("--upstreams and --deployments-on-port choose the upstreams both; pass one")
    if upstreams is not None:
        try:
            provider = StaticProvider.from_config(json.loads(upstreams.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BadInput(f"--upstreams {upstreams}: {exc}; give a JSON list of {{model, base_url}}") from None
    else:
        provider = DeploymentProvider(port=port if on_port else None)
    _check_port(host, port)
    database = Database(db)
    redis = redis or os.environ.get("LLMNEST_GATEWAY_REDIS") or None
    limiter = Limiter(redis) if redis else None
    gateway = Gateway(database, provider, limiter=limiter, health_interval=health_interval,
                      admin_key=os.environ.get("LLMNEST_GATEWAY_ADMIN_KEY") or None, limits=limits,
                      metrics_from=networks)
    say(f"gateway on http://{host}:{port}/v1 (database {database.kind})")
    run(gateway, host, port)


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise Conflict(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port") from None


@handle_errors
def ls(json_out: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """The gateways `llmnest up` runs on this machine: address, status, the deployments behind each."""
    from rich.table import Table

    from .. import targets

    rows = [row for name in targets.names() for row in targets.get(name).gateways()]
    if json_out:
        print_json(rows)
        return
    if not rows:
        console.print("no gateway runs; `llmnest up` starts one in front of local deployments")
        return
    table = Table("port", "endpoint", "status", "restarts", "deployments", "log")
    for r in rows:
        table.add_row(str(r["port"]), r["base_url"], r["status"], str(r["restarts"]), ", ".join(r["deployments"]),
                      r["log"])
    console.print(table)


gateway_app.command("serve")(serve)
gateway_app.command("ls")(ls)


def register(app: typer.Typer) -> None:
    app.add_typer(gateway_app, name="gateway")
