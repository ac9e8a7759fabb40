"""`llmnest keys`: API keys of the gateway (create prints the secret once; nothing else ever does)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import BadInput
from .output import console, err, handle_errors, print_json

keys_app = typer.Typer(help="Create, list, change and revoke the gateway's API keys.",
                       context_settings={"help_option_names": ["-h", "--help"]}, no_args_is_help=True)

DB_HELP = "Database URL (sqlite:///PATH or postgresql://...); default $LLMNEST_GATEWAY_DB or $LLMNEST_HOME/gateway.db."


def _db(url: str | None):
    from ..gateway.db import Database

    return Database(url)


def _models(text: str | None) -> list[str] | None:
    return None if text is None else [m.strip() for m in text.split(",")]


def _warn_undeployed(models: list[str] | None) -> None:
    """Warn about allowed models no deployment on this machine serves (a typo, or one deployed later)."""
    from .. import state

    if not models:
        return
    served = {d.spec.served_model_name for d in state.all_deployments()}
    missing = [m for m in models if m not in served]
    if missing:
        err.print(f"warning: no deployment here serves {', '.join(missing)} (deployed: "
                  f"{', '.join(sorted(served)) or 'none'}); the key allows the name(s) as given", markup=False)


@handle_errors
def create(
    name: str = typer.Argument(..., help="A name for the person or app (letters, digits, . _ @ -)."),
    models: str = typer.Option(None, "--models", help="Comma-separated models the key may use (default: all)."),
    rpm: int = typer.Option(None, "--rpm", help="Requests per minute."),
    tpm: int = typer.Option(None, "--tpm", help="Tokens (prompt + completion) per minute."),
    max_concurrency: int = typer.Option(None, "--max-concurrency", help="Requests in flight at once."),
    token_budget: int = typer.Option(None, "--token-budget", help="Tokens per budget period."),
    budget_period: str = typer.Option(None, "--budget-period", help="day or month (UTC)."),
    expires: str = typer.Option(None, "--expires", help="YYYY-MM-DD (stops at the start of that day, UTC) or ISO date-time."),
    key_file: Path = typer.Option(None, "--key-file", help="Take the secret from this file (an existing key, e.g. one "
                                  "`up` printed) instead of generating one; it is not printed."),
    json_out: bool = typer.Option(False, "--json", help='Print {"name", "key"} ({"name", "prefix"} with --key-file).'),
    db: str = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Create a key and print it once; it is stored only as a hash."""
    from ..gateway import keys

    given = _secret_from(key_file) if key_file is not None else None
    key, secret = keys.create(_db(db), name, models=_models(models), rpm=rpm, tpm=tpm, max_concurrency=max_concurrency,
                              token_budget=token_budget, budget_period=budget_period,
                              expires_at=keys.parse_expiry(expires), secret=given)
    _warn_undeployed(_models(models))
    if given is not None:
        if json_out:
            print_json({"name": name, "prefix": key.prefix})
        else:
            console.print(f"key {name} ({key.prefix}...) created from {key_file}", markup=False)
        return
    if json_out:
        print_json({"name": name, "key": secret})
        return
    console.print(f"key {name}: {secret}", markup=False)
    err.print("[dim]This is the only time the key is shown; store it now.[/dim]")


def _secret_from(path: Path) -> str:
    """The secret in `path` (surrounding whitespace dropped): 8-512 printable characters without spaces."""
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"--key-file {path}: {getattr(exc, 'strerror', None) or exc}; give a readable file that "
                       "holds the key") from None
    if not re.fullmatch(r"[\x21-\x7e]{8,512}", text):
        raise BadInput(f"--key-file {path} does not hold one key (8-512 printable characters, no spaces)")
    return text


@handle_errors
def ls(
    json_out: bool = typer.Option(False, "--json", help="Print the keys as JSON."),
    db: str = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """List keys with their limits and usage so far (never the secret)."""
    from ..gateway.admin import key_rows

    rows = key_rows(_db(db))
    if json_out:
        print_json(rows)
        return
    table = Table("name", "status", "models", "rpm", "tpm", "conc.", "budget", "expires", "requests", "tokens in/out")
    for r in rows:
        budget = f"{r['budget_used']}/{r['token_budget']} per {r['budget_period']}" if r["token_budget"] else ""
        table.add_row(*map(escape, (r["name"], r["status"], ",".join(r["models"]) if r["models"] else "all")),
                      *(str(r[f] or "") for f in ("rpm", "tpm", "max_concurrency")), budget,
                      (r["expires"] or "")[:10], str(r["requests"]), f"{r['prompt_tokens']}/{r['completion_tokens']}")
    console.print(table)


@handle_errors
def update(
    name: str = typer.Argument(..., help="The key's name."),
    models: str = typer.Option(None, "--models", help="Comma-separated models the key may use."),
    rpm: int = typer.Option(None, "--rpm", help="Requests per minute."),
    tpm: int = typer.Option(None, "--tpm", help="Tokens per minute."),
    max_concurrency: int = typer.Option(None, "--max-concurrency", help="Requests in flight at once."),
    token_budget: int = typer.Option(None, "--token-budget", help="Tokens per budget period."),
    budget_period: str = typer.Option(None, "--budget-period", help="day or month (UTC)."),
    expires: str = typer.Option(None, "--expires", help="YYYY-MM-DD or ISO date-time."),
    clear: list[str] = typer.Option([], "--clear", help="Remove a limit: rpm, tpm, max_concurrency, token_budget, models, expires (repeatable)."),
    json_out: bool = typer.Option(False, "--json", help="Print the key's new settings as JSON."),
    db: str = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Change a key's models or limits (the secret stays the same)."""
    from ..gateway import keys

    key = keys.update(_db(db), name, clear=tuple("expires_at" if c == "expires" else c for c in clear),
                      models=_models(models), rpm=rpm, tpm=tpm, max_concurrency=max_concurrency,
                      token_budget=token_budget, budget_period=budget_period, expires_at=keys.parse_expiry(expires))
    _warn_undeployed(_models(models))
    if json_out:
        print_json(key.to_dict())
    else:
        console.print(f"key {name} updated", markup=False)


@handle_errors
def revoke(
    name: str = typer.Argument(..., help="The key's name."),
    db: str = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Revoke a key: requests with it get 401 within seconds; its usage stays."""
    from ..gateway import keys

    from ..gateway.admin import when

    key = keys.revoke(_db(db), name)
    console.print(f"key {name} revoked at {when(key.revoked_at)}", markup=False)


keys_app.command("create")(create)
keys_app.command("ls")(ls)
keys_app.command("update")(update)
keys_app.command("revoke")(revoke)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
