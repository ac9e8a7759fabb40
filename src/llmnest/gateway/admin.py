"""The gateway's keys and usage as `llmnest keys`/`usage` and the console's Keys and Usage pages see them:
the rows they show (never the secret), and `GatewayAdmin`, one interface whether the gateway is this
machine's or one next to a remote deployment."""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from typing import Any

from ..errors import NotFound
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


LIMITS = ("models", "rpm", "tpm", "max_concurrency", "token_budget", "budget_period")


class GatewayAdmin(ABC):
    """Keys and usage of one gateway, wherever it runs: this machine's database (`LocalAdmin`), or a gateway
    next to a remote deployment reached through its target's channel (`remote_admin.RemoteAdmin`).

    `limits` holds any of LIMITS; `expires` is the text `--expires` takes (YYYY-MM-DD or ISO date-time)."""

    local: bool  # the gateway is this machine's (the console's own key lives there)

    @abstractmethod
    def create_key(self, name: str, limits: dict[str, Any], expires: str | None = None,
                   secret: str | None = None) -> tuple[str, str]:
        """Store a new key (from `secret`, else a new one); returns its prefix and secret."""

    @abstractmethod
    def key_rows(self) -> list[dict[str, Any]]:
        """What `keys ls --json` prints."""

    def key_row(self, name: str) -> dict[str, Any]:
        """One key's row; NotFound when no key has that name."""
        for row in self.key_rows():
            if row["name"] == name:
                return row
        raise NotFound(f"no key named {name!r}; `llmnest keys ls` lists them")

    @abstractmethod
    def update_key(self, name: str, limits: dict[str, Any], expires: str | None = None,
                   clear: tuple[str, ...] = ()) -> dict[str, Any]:
        """Set the given limits, remove those in `clear` (LIMITS or `expires`); returns the key's settings."""

    @abstractmethod
    def revoke_key(self, name: str) -> dict[str, Any]:
        """Revoke a key (again is fine); returns its settings, `revoked_at` set."""

    @abstractmethod
    def usage(self, by: str, since: str) -> list[dict[str, Any]]:
        """What `usage --by BY --since SINCE --json` prints."""


class LocalAdmin(GatewayAdmin):
    """The gateway database on this machine (`--db URL`, else $LLMNEST_GATEWAY_DB or $LLMNEST_HOME/gateway.db)."""

    local = True

    def __init__(self, url: str | None = None) -> None:
        self.url = url

    def _db(self) -> Database:
        return Database(self.url)

    def create_key(self, name: str, limits: dict[str, Any], expires: str | None = None,
                   secret: str | None = None) -> tuple[str, str]:
        key, secret = keys.create(self._db(), name, expires_at=keys.parse_expiry(expires), secret=secret, **limits)
        return key.prefix, secret

    def key_rows(self) -> list[dict[str, Any]]:
        return key_rows(self._db())

    def update_key(self, name: str, limits: dict[str, Any], expires: str | None = None,
                   clear: tuple[str, ...] = ()) -> dict[str, Any]:
        clear = tuple("expires_at" if c == "expires" else c for c in clear)
        return keys.update(self._db(), name, clear=clear, expires_at=keys.parse_expiry(expires), **limits).to_dict()

    def revoke_key(self, name: str) -> dict[str, Any]:
        return keys.revoke(self._db(), name).to_dict()

    def usage(self, by: str, since: str) -> list[dict[str, Any]]:
        return usage.summarize(self._db(), by, usage.parse_since(since))
