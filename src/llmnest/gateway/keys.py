"""API keys: created with limits, shown once, stored as a SHA-256 hash, revoked by name.

A key is `sk-` plus 32 random bytes (256 bits). With that much entropy a plain SHA-256 is as strong as a
slow password hash (nobody can enumerate 2^256 candidates) and costs microseconds per request, so every
request can be checked against the database. The hash is looked up by its index and then compared
with `hmac.compare_digest`, so the comparison takes the same time wherever the digests differ.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import BadInput, Conflict, NotFound
from .db import Database

PERIODS = ("day", "month")
MODEL_RE = re.compile(r"[^\s\x00-\x1f\x7f,]{1,256}")  # a served model name: no spaces, commas or controls
LIMIT_FIELDS = ("rpm", "tpm", "max_concurrency", "token_budget")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")  # matched whole (fullmatch: no trailing newline)


@dataclass
class Key:
    """A stored key: its name, what it may use and its limits (None = no limit); never the secret."""

    name: str
    prefix: str
    models: list[str] | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    token_budget: int | None = None
    budget_period: str | None = None
    expires_at: float | None = None
    created_at: float = field(default_factory=time.time)
    revoked_at: float | None = None

    @property
    def id(self) -> str:
        """The key's identity: a new key that reuses a revoked key's name is another key."""
        return f"{self.name}@{self.created_at:.6f}"

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models

    def problem(self, now: float | None = None) -> str | None:
        """Why the key cannot be used now (revoked, expired), or None."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and (now or time.time()) >= self.expires_at:
            return "expired"
        return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return "sk-" + secrets.token_urlsafe(32)


def parse_expiry(text: str | None) -> float | None:
    """`YYYY-MM-DD` (the key stops working at the start of that day, UTC) or an ISO date-time."""
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(f"--expires {text!r} is not a date; use YYYY-MM-DD or an ISO date-time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    if when.timestamp() <= time.time():
        raise BadInput(f"--expires {text} is in the past; give a future date")
    return when.timestamp()


def _validate(name: str | None, limits: dict[str, Any]) -> None:
    if name is not None and not NAME_RE.fullmatch(name):
        raise BadInput(f"key name {name!r} is invalid; use letters, digits, '.', '_', '@', '-' (at most 64)")
    for f in LIMIT_FIELDS:
        value = limits.get(f)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise BadInput(f"--{f.replace('_', '-')} must be a positive whole number, not {value!r}")
    period = limits.get("budget_period")
    if period is not None and period not in PERIODS:
        raise BadInput(f"--budget-period must be day or month, not {period!r}")
    models = limits.get("models")
    if models is not None:
        if not models:
            raise BadInput("--models is empty; name at least one model, or leave it out for all models")
        for m in models:
            if not m or not MODEL_RE.fullmatch(m):
                raise BadInput(f"--models has {'an empty entry' if not m else f'an invalid name {m!r}'}; give"
                               " model names separated by commas (no spaces or control characters)")


def _check_budget(key: Key) -> None:
    if (key.token_budget is None) != (key.budget_period is None):
        raise BadInput("--token-budget and --budget-period go together (e.g. --token-budget 1000000 --budget-period month)")


def _row(row: dict[str, Any]) -> Key:
    return Key(
        name=row["name"], prefix=row["prefix"], models=json.loads(row["models"]) if row["models"] else None,
        rpm=row["rpm"], tpm=row["tpm"], max_concurrency=row["max_concurrency"],
        token_budget=row["token_budget"], budget_period=row["budget_period"],
        expires_at=row["expires_at"], created_at=row["created_at"], revoked_at=row["revoked_at"],
    )


def create(db: Database, name: str, *, models: list[str] | None = None, rpm: int | None = None,
           tpm: int | None = None, max_concurrency: int | None = None, token_budget: int | None = None,
           budget_period: str | None = None, expires_at: float | None = None,
           secret: str | None = None) -> tuple[Key, str]:
    """Store a new key; returns it and its secret (shown once). A revoked key's name may be reused."""
    limits = dict(models=models, rpm=rpm, tpm=tpm, max_concurrency=max_concurrency,
                  token_budget=token_budget, budget_period=budget_period)
    _validate(name, limits)
    if secret is not None and (holder := authenticate(db, secret)) is not None:
        raise Conflict(f"that secret is the key {holder.name!r} already; a secret opens one key only")
    secret = secret or new_secret()
    key = Key(name=name, prefix=secret[:7], expires_at=expires_at, **limits)  # type: ignore[arg-type]
    _check_budget(key)
    with db.transaction() as cur:
        cur.execute(db._sql("SELECT revoked_at FROM api_keys WHERE name = ?"), (name,))
        old = cur.fetchone()
        if old is not None and old[0] is None:
            raise Conflict(f"a key named {name!r} exists; pick another name, or `llmnest keys revoke {name}` first")
        if old is not None:
            cur.execute(db._sql("DELETE FROM api_keys WHERE name = ?"), (name,))
        cur.execute(db._sql(
            "INSERT INTO api_keys (name, key_hash, prefix, models, rpm, tpm, max_concurrency, token_budget,"
            " budget_period, expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
            (name, hash_secret(secret), key.prefix, json.dumps(models) if models else None, rpm, tpm,
             max_concurrency, token_budget, budget_period, expires_at, key.created_at))
    return key, secret


def get(db: Database, name: str) -> Key:
    rows = db.query("SELECT * FROM api_keys WHERE name = ?", (name,))
    if not rows:
        raise NotFound(f"no key named {name!r}; `llmnest keys ls` lists them")
    return _row(rows[0])


def list_keys(db: Database) -> list[Key]:
    return [_row(r) for r in db.query("SELECT * FROM api_keys ORDER BY created_at")]


def update(db: Database, name: str, *, clear: tuple[str, ...] = (), **changes: Any) -> Key:
    """Change limits of a key (`changes`: fields to set; `clear`: fields to remove, e.g. 'rpm')."""
    changes = {k: v for k, v in changes.items() if v is not None}
    unknown = set(clear) - {*LIMIT_FIELDS, "models", "expires_at", "budget_period"}
    if unknown:
        raise BadInput(f"cannot clear {', '.join(sorted(unknown))}; clearable: {', '.join(LIMIT_FIELDS)}, models, expires")
    _validate(None, changes)
    key = get(db, name)
    if key.revoked_at is not None:
        raise Conflict(f"key {name!r} is revoked; create a new one with `llmnest keys create {name}`")
    for f in clear:
        setattr(key, f, None)
    if "token_budget" in clear:
        key.budget_period = None
    for f, v in changes.items():
        setattr(key, f, v)
    _check_budget(key)
    db.execute(
        "UPDATE api_keys SET models = ?, rpm = ?, tpm = ?, max_concurrency = ?, token_budget = ?,"
        " budget_period = ?, expires_at = ? WHERE name = ?",
        (json.dumps(key.models) if key.models else None, key.rpm, key.tpm, key.max_concurrency,
         key.token_budget, key.budget_period, key.expires_at, name))
    return key


def revoke(db: Database, name: str) -> Key:
    key = get(db, name)
    if key.revoked_at is None:
        key.revoked_at = time.time()
        db.execute("UPDATE api_keys SET revoked_at = ? WHERE name = ?", (key.revoked_at, name))
    return key


def authenticate(db: Database, secret: str) -> Key | None:
    """The key whose secret this is (revoked or expired ones included: the caller says why), or None."""
    digest = hash_secret(secret)
    rows = db.query("SELECT * FROM api_keys WHERE key_hash = ?", (digest,))
    if not rows or not hmac.compare_digest(rows[0]["key_hash"], digest):
        return None
    return _row(rows[0])


def by_digests(db: Database, digests: list[str]) -> dict[str, Key]:
    """The stored keys with these secret hashes (revoked and expired ones included), by hash."""
    out: dict[str, Key] = {}
    for i in range(0, len(digests), 500):
        part = digests[i:i + 500]
        rows = db.query(f"SELECT * FROM api_keys WHERE key_hash IN ({', '.join('?' * len(part))})", part)
        out.update({row["key_hash"]: _row(row) for row in rows})
    return out
