"""One database layer for SQLite (embedded default) and PostgreSQL (shared by several gateways).

SQL is written once with `?` placeholders; for PostgreSQL they become `%s`. The schema is a numbered
list of migrations; `schema_version` records the highest applied one.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import BadInput, LlmnestError
from ..home import home

# Each step runs once, in order, in one transaction with its version bump. Never edit a shipped step.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE api_keys (
            name TEXT PRIMARY KEY,
            key_hash TEXT NOT NULL UNIQUE,
            prefix TEXT NOT NULL,
            models TEXT,
            rpm INTEGER,
            tpm INTEGER,
            max_concurrency INTEGER,
            token_budget BIGINT,
            budget_period TEXT,
            expires_at DOUBLE PRECISION,
            created_at DOUBLE PRECISION NOT NULL,
            revoked_at DOUBLE PRECISION
        )""",
        """CREATE TABLE usage (
            id {serial},
            ts DOUBLE PRECISION NOT NULL,
            key_name TEXT NOT NULL,
            model TEXT NOT NULL,
            replica TEXT,
            endpoint TEXT NOT NULL,
            status INTEGER NOT NULL,
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            latency_s DOUBLE PRECISION,
            ttft_s DOUBLE PRECISION
        )""",
        "CREATE INDEX usage_key_ts ON usage (key_name, ts)",
        "CREATE INDEX usage_ts ON usage (ts)",
    ],
]


def default_url() -> str:
    """$LLMNEST_GATEWAY_DB, else SQLite at $LLMNEST_HOME/gateway.db."""
    return os.environ.get("LLMNEST_GATEWAY_DB") or f"sqlite:///{home() / 'gateway.db'}"


class Database:
    """A connection to SQLite or PostgreSQL, safe to share between threads (one lock per instance)."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        self._lock = threading.RLock()
        if self.url.startswith(("postgresql://", "postgres://")):
            self.kind = "postgresql"
            self._conn = _connect_postgres(self.url)
        elif self.url.startswith("sqlite:///"):
            self.kind = "sqlite"
            self._conn = _connect_sqlite(Path(self.url.removeprefix("sqlite:///")))
        else:
            raise BadInput(f"unsupported database URL {self.url!r}; use sqlite:///PATH or postgresql://...")
        self.migrate()

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.kind == "postgresql" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement in its own transaction; the number of rows it changed."""
        with self.transaction() as cur:
            cur.execute(self._sql(sql), tuple(params))
            return cur.rowcount

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self.transaction(write=False) as cur:
            cur.execute(self._sql(sql), tuple(params))
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, row)) for row in cur.fetchall()]

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[Any]:
        """A cursor inside one transaction: committed on success, rolled back on error."""
        with self._lock:
            if self.kind == "postgresql" and self._conn.closed:  # the server restarted: connect again
                self._conn = _connect_postgres(self.url)
            cur = self._conn.cursor()
            try:
                if self.kind == "sqlite":
                    cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield cur
                self._conn.commit()
            except BaseException:
                self._conn.rollback()
                raise
            finally:
                cur.close()

    def schema_version(self) -> int:
        return int(self.query("SELECT MAX(version) AS v FROM schema_version")[0]["v"] or 0)

    def migrate(self) -> None:
        """Apply every migration newer than the stored version (concurrent gateways: one wins)."""
        with self.transaction() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)")
        serial = "BIGSERIAL PRIMARY KEY" if self.kind == "postgresql" else "INTEGER PRIMARY KEY AUTOINCREMENT"
        for version, steps in enumerate(MIGRATIONS, start=1):
            if version <= self.schema_version():
                continue
            with self.transaction() as cur:
                if self.kind == "postgresql":  # serialise migrating gateways
                    cur.execute("LOCK TABLE schema_version IN EXCLUSIVE MODE")
                cur.execute(self._sql("SELECT 1 FROM schema_version WHERE version = ?"), (version,))
                if cur.fetchone():
                    continue
                for step in steps:
                    cur.execute(step.replace("{serial}", serial))
                cur.execute(self._sql("INSERT INTO schema_version (version) VALUES (?)"), (version,))

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _connect_sqlite(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # created 0600: it holds key hashes
    os.close(fd)
    conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _connect_postgres(url: str) -> Any:
    try:
        import psycopg
    except ImportError:
        raise BadInput("PostgreSQL needs psycopg; run `pip install 'psycopg[binary]'`") from None
    try:
        return psycopg.connect(url)
    except psycopg.OperationalError as exc:
        raise LlmnestError(f"cannot connect to {_redact(url)}: {str(exc).strip().splitlines()[0]}") from None


def _redact(url: str) -> str:
    """The URL without its password."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
