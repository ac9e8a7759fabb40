"""`llmnest console`: the web console, in the foreground; prints its URL with the login token."""

from __future__ import annotations

import typer

from ..spec_builder import LOOPBACK
from .gateway_cmd import _check_port
from .output import console, err, handle_errors


@handle_errors
def console_cmd(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface; "
                                                         "the login token stays required)."),
    port: int = typer.Option(8090, "--port", min=1, max=65535, help="Port to listen on."),
) -> None:
    """Deployments, deploy with a plan, logs, playground, keys and usage, benchmarks: in a browser.

    Prints a URL with a login token (kept 0600 in $LLMNEST_HOME/console_token); open it once, the browser then keeps a session cookie.
    """
    import uvicorn

    from ..console.app import create_app
    from ..console.auth import load_or_create_token, token_path

    _check_port(host, port)
    token = load_or_create_token()
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    console.print(f"llmnest console: http://{shown}:{port}/?token={token}", markup=False)
    err.print(f"[dim]token in {token_path()} (0600); Ctrl-C stops the console (deployments keep running)[/dim]")
    if host not in LOOPBACK:
        err.print(f"[yellow]listening on {host}: anyone with the token can operate every deployment; "
                  "the traffic is plain HTTP[/yellow]")
    uvicorn.run(create_app(token), host=host, port=port, log_level="warning", access_log=False)


def register(app: typer.Typer) -> None:
    app.command("console")(console_cmd)
