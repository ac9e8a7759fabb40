"""What the gateway's keys and usage look like to a person: the rows `llmnest keys ls` prints and the
console's Keys page shows (the library both call; never the secret)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from . import keys, usage
from .db import Database


def when(ts: float | None) -> str | None:
    """A timestamp as UTC ISO (seconds), or None."""
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if ts else None


def key_rows(database: Database) -> list[dict[str, Any]]:
    """Every key with its limits and usage so far (never the secret)."""
    rows = []
    for k in keys.list_keys(database):  # usage since the key was made: a reused name starts from zero
        used = usage.totals_by_key(database, k.created_at).get(
            k.name, {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0})
        budget_used = (usage.tokens_since(database, k.name, max(k.created_at, usage.period_start(k.budget_period)))
                       if k.budget_period else None)
        rows.append({
            "name": k.name, "prefix": k.prefix, "status": k.problem() or "active", "models": k.models,
            "rpm": k.rpm, "tpm": k.tpm, "max_concurrency": k.max_concurrency, "token_budget": k.token_budget,
            "budget_period": k.budget_period, "budget_used": budget_used, "expires": when(k.expires_at),
            "created": when(k.created_at), **used,
        })
    return rows
