"""`llmnest usage`: tokens and requests per key, model, day or hour, from the gateway's records."""

from __future__ import annotations

import sys

import typer
from rich.table import Table

from ..errors import BadInput
from .keys_cmd import DB_HELP, DEPLOYMENT_HELP, admin
from .output import console, handle_errors, print_json


@handle_errors
def usage(
    by: str = typer.Option("key", "--by", help="Group by key, model, day or hour (UTC)."),
    since: str = typer.Option("7d", "--since", help="Window: 7d, 24h, 30m, or a date YYYY-MM-DD."),
    json_out: bool = typer.Option(False, "--json", help="Print rows as JSON."),
    csv_out: bool = typer.Option(False, "--csv", help="Print rows as CSV."),
    db: str = typer.Option(None, "--db", help=DB_HELP),
    deployment: str = typer.Option(None, "--deployment", help=DEPLOYMENT_HELP),
) -> None:
    """Requests, errors, prompt and completion tokens and mean latency/TTFT, as the engines counted them."""
    from ..gateway import usage as store

    if json_out and csv_out:
        raise BadInput("give --json or --csv, not both")
    rows = admin(db, deployment).usage(by, since)
    if json_out:
        print_json(rows)
    elif csv_out:
        sys.stdout.write(store.to_csv(rows))
    else:
        first = "period" if by in ("day", "hour") else None
        cols = [c for c in store.COLUMNS if c != "period" or first]
        table = Table(*cols)
        for r in rows:
            table.add_row(*("" if r[c] is None else str(r[c]) for c in cols))
        console.print(table)


def register(app: typer.Typer) -> None:
    app.command("usage")(usage)
