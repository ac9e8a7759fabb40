"""The deployment store: a small SQLite database under $LLMNEST_HOME (mode 0600).

One row per deployment (its spec, its target's state); a target that keeps more (the local target: one row
per supervised process) adds a table of its own with `extend`, joined into each deployment read here."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from .errors import Conflict, NotFound
from .home import deployment_dir, home, write_secret
from .spec import DeploymentSpec
from .suggest import did_you_mean
from .targets import registry

SCHEMA = ["""
CREATE TABLE IF NOT EXISTS deployments (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    pid INTEGER,
    supervisor_pid INTEGER,
    created_at REAL NOT NULL,
    started_at REAL,
    ready_at REAL,
    restarts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    info TEXT NOT NULL DEFAULT '{}'
)
"""]

# Statuses: starting -> loading -> ready; restarting after a crash or a hang; draining before a replica
# is replaced; failed; stopped.
Status = Literal["starting", "loading", "ready", "restarting", "draining", "failed", "stopped", "dead", "unreachable"]
ACTIVE = {"starting", "loading", "ready", "restarting", "draining"}


@dataclass
class Deployment:
    """A stored deployment: its spec and what the runtime last reported."""

    spec: DeploymentSpec
    status: str
    created_at: float
    pid: int | None = None
    supervisor_pid: int | None = None
    started_at: float | None = None
    ready_at: float | None = None
    restarts: int = 0
    last_error: str | None = None
    # the target's typed state: the `state` model its declaration names
    info: BaseModel = field(default_factory=lambda: registry.declaration(registry.DEFAULT).state())
    replicas: list[Any] = field(default_factory=list)  # what its target keeps per replica, joined in by an Extension

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def ready_replicas(self) -> int:
        return sum(u.status == "ready" for u in self.replicas)


def _target_state(spec: DeploymentSpec, raw: str) -> BaseModel:
    """The target's typed state (its declared `state` model) from the stored JSON."""
    data = json.loads(raw)
    data.setdefault("kind", spec.target)  # records written before the state was typed
    return registry.declaration(spec.target).state.model_validate(data)


@dataclass(frozen=True)
class Extension:
    """A table a target keeps in the store beside the deployments: created with the store, joined into each
    deployment read (`join` returns it completed), forgotten with a deleted deployment (`forget`)."""

    schema: str
    join: Callable[[sqlite3.Connection, Deployment], Deployment]
    forget: Callable[[sqlite3.Connection, str], None]


_EXTENSIONS: list[Extension] = []


def extend(extension: Extension) -> None:
    """Add a target's table to the store (once; the target's `store` module does it when imported, and the
    store imports the registered targets' before it opens)."""
    if extension not in _EXTENSIONS:
        _EXTENSIONS.append(extension)


def connection() -> AbstractContextManager[sqlite3.Connection]:
    """The store's database, for a target's own table."""
    return _db()


@contextmanager
def _db() -> Iterator[sqlite3.Connection]:
    registry.load_stores()
    path = home() / "state.db"
    fresh = not path.exists()
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        if fresh:
            os.chmod(path, 0o600)
        conn.execute("PRAGMA journal_mode=WAL")
        for table in [*SCHEMA, *(e.schema for e in _EXTENSIONS)]:
            conn.execute(table)
        conn.row_factory = sqlite3.Row
        yield conn
    finally:
        conn.close()


def _row(conn: sqlite3.Connection, row: sqlite3.Row) -> Deployment:
    spec = DeploymentSpec.from_json(row["spec"])
    dep = Deployment(
        spec=spec,
        status=row["status"],
        created_at=row["created_at"],
        pid=row["pid"],
        supervisor_pid=row["supervisor_pid"],
        started_at=row["started_at"],
        ready_at=row["ready_at"],
        restarts=row["restarts"],
        last_error=row["last_error"],
        info=_target_state(spec, row["info"]),
    )
    for extension in _EXTENSIONS:
        dep = extension.join(conn, dep)
    return dep


def create(spec: DeploymentSpec, api_key: str | None) -> Deployment:
    """Record a new deployment (status 'starting'); a taken name is a Conflict."""
    with _db() as conn:
        try:
            conn.execute(
                "INSERT INTO deployments (name, spec, status, created_at, info) VALUES (?, ?, 'starting', ?, ?)",
                (spec.name, spec.to_json(), time.time(), json.dumps({"kind": spec.target})),
            )
        except sqlite3.IntegrityError:
            raise Conflict(
                f"a deployment named {spec.name!r} exists; pick another --name, "
                f"or `llmnest down {spec.name}` first"
            ) from None
    if api_key:
        write_secret(key_path(spec.name), api_key)
    return get(spec.name)


def get(name: str) -> Deployment:
    with _db() as conn:
        row = conn.execute("SELECT * FROM deployments WHERE name = ?", (name,)).fetchone()
        if row is not None:
            return _row(conn, row)
    raise NotFound(f"no deployment named {name!r}.{did_you_mean(name, names())} Run `llmnest ls` to list them.")


def all_deployments() -> list[Deployment]:
    with _db() as conn:
        return [_row(conn, r) for r in conn.execute("SELECT * FROM deployments ORDER BY created_at").fetchall()]


def names() -> list[str]:
    with _db() as conn:
        return [r[0] for r in conn.execute("SELECT name FROM deployments ORDER BY created_at")]


def resolve_name(name: str | None) -> str:
    """NAME, or the only deployment when NAME is left out."""
    if name:
        return name
    existing = names()
    if len(existing) == 1:
        return existing[0]
    if not existing:
        raise NotFound("there are no deployments; start one with `llmnest up`")
    raise NotFound(f"several deployments exist ({', '.join(existing)}); name one")


def update(name: str, **fields: Any) -> None:
    """Set columns of a deployment; `spec` takes a DeploymentSpec, `info` a dict of target-state fields
    merged into the stored ones and validated against the target's state type."""
    if "spec" in fields:
        fields["spec"] = fields["spec"].to_json()
    with _db() as conn:
        if "info" in fields:
            row = conn.execute("SELECT spec, info FROM deployments WHERE name = ?", (name,)).fetchone()
            if row is None:
                return
            old = _target_state(DeploymentSpec.from_json(row[0]), row[1])
            unknown = set(fields["info"]) - set(type(old).model_fields)
            if unknown:
                raise ValueError(f"{type(old).__name__} has no field {', '.join(sorted(unknown))}")
            fields["info"] = old.model_validate({**old.model_dump(), **fields["info"]}).model_dump_json()
        cols = ", ".join(f"{k} = ?" for k in fields)
        conn.execute(f"UPDATE deployments SET {cols} WHERE name = ?", (*fields.values(), name))


def delete(name: str) -> None:
    with _db() as conn:
        conn.execute("DELETE FROM deployments WHERE name = ?", (name,))
        for extension in _EXTENSIONS:
            extension.forget(conn, name)
    key_path(name).unlink(missing_ok=True)


def key_path(name: str) -> Path:
    """The deployment's API key file (mode 0600)."""
    return deployment_dir(name) / "api_key"


def api_key(name: str) -> str | None:
    path = key_path(name)
    return path.read_text() if path.exists() else None

