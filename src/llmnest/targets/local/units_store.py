"""What the local target keeps in the deployment store: one row per supervised process on this machine (an
engine replica of a deployment, or the gateway on a port), written by its supervisor, and joined into each
deployment read from the store (its `replicas`; its status, pids and restarts taken from them); and the key
the gateway sends to a deployment's engines."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from ... import state
from ...endpoints import reach_url
from ...errors import NotFound
from ...home import deployment_dir

SCHEMA = """
CREATE TABLE IF NOT EXISTS units (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    deployment TEXT,
    idx INTEGER NOT NULL DEFAULT 0,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'starting',
    pid INTEGER,
    supervisor_pid INTEGER,
    started_at REAL,
    ready_at REAL,
    restarts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    stage TEXT
)
"""


@dataclass
class Unit:
    """One supervised process on this machine: an engine replica of a deployment, or the gateway on a port."""

    id: str
    kind: Literal["engine", "gateway"]
    deployment: str | None
    index: int
    host: str
    port: int
    status: str = "starting"
    pid: int | None = None
    supervisor_pid: int | None = None
    started_at: float | None = None
    ready_at: float | None = None
    restarts: int = 0
    last_error: str | None = None
    stage: str | None = None  # the readiness probe's last answer while loading

    @property
    def base_url(self) -> str:
        """Where this machine reaches it (loopback for a wildcard bind)."""
        return reach_url(self.host, self.port)


def replica_id(name: str, index: int) -> str:
    return f"{name}/{index}"


def gateway_id(port: int) -> str:
    return f"gateway/{port}"


def _unit(row: sqlite3.Row) -> Unit:
    return Unit(**{f.name: row["idx" if f.name == "index" else f.name] for f in fields(Unit)})


def _status_of(units: list[Unit]) -> str:
    """A deployment's status from its replicas': ready when all are; a failed or restarting one shows."""
    statuses = {u.status for u in units}
    for status in ("failed", "restarting", "draining", "loading", "starting"):
        if status in statuses:
            return status
    return "ready" if statuses == {"ready"} else "stopped"


def _join(conn: sqlite3.Connection, dep: state.Deployment) -> state.Deployment:
    """The deployment with its engine replicas; the replicas' supervisors keep its status, shown together."""
    units = [_unit(u) for u in conn.execute(
        "SELECT * FROM units WHERE deployment = ? AND kind = 'engine' ORDER BY idx", (dep.name,))]
    if not units and dep.spec.target == "local" and dep.supervisor_pid:  # recorded before replicas were
        units = [Unit(replica_id(dep.name, 0), "engine", dep.name, 0, dep.spec.host, dep.spec.port, dep.status,
                      dep.pid, dep.supervisor_pid, dep.started_at, dep.ready_at, dep.restarts, dep.last_error)]
    if not units:
        return dep
    errors = [u.last_error for u in units if u.last_error]
    status = _status_of(units)
    return replace(dep, status=status, pid=units[0].pid, supervisor_pid=units[0].supervisor_pid,
                   started_at=units[0].started_at,
                   ready_at=max(u.ready_at or 0 for u in units) if status == "ready" else None,
                   restarts=sum(u.restarts for u in units), last_error=errors[0] if errors else None, replicas=units)


def _forget(conn: sqlite3.Connection, name: str) -> None:
    conn.execute("DELETE FROM units WHERE deployment = ?", (name,))
    engine_key_path(name).unlink(missing_ok=True)


state.extend(state.Extension(SCHEMA, _join, _forget))


def put(unit: Unit) -> Unit:
    """Record a unit (replacing one with the same id)."""
    values = {("idx" if f.name == "index" else f.name): getattr(unit, f.name) for f in fields(Unit)}
    with state.connection() as conn:
        conn.execute(f"INSERT OR REPLACE INTO units ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                     tuple(values.values()))
    return unit


def get(unit_id: str) -> Unit:
    with state.connection() as conn:
        row = conn.execute("SELECT * FROM units WHERE id = ?", (unit_id,)).fetchone()
    if row is None:
        raise NotFound(f"no supervised process {unit_id!r}")
    return _unit(row)


def find(unit_id: str) -> Unit | None:
    try:
        return get(unit_id)
    except NotFound:
        return None


def gateways() -> list[Unit]:
    with state.connection() as conn:
        return [_unit(r) for r in conn.execute("SELECT * FROM units WHERE kind = 'gateway' ORDER BY port")]


def update(unit_id: str, **values: Any) -> None:
    cols = ", ".join(f"{k} = ?" for k in values)
    with state.connection() as conn:
        conn.execute(f"UPDATE units SET {cols} WHERE id = ?", (*values.values(), unit_id))


def bump_restarts(unit_id: str, last_error: str) -> None:
    with state.connection() as conn:
        conn.execute("UPDATE units SET restarts = restarts + 1, last_error = ?, status = 'restarting' WHERE id = ?",
                     (last_error, unit_id))


def delete_replicas(deployment: str) -> None:
    with state.connection() as conn:
        conn.execute("DELETE FROM units WHERE deployment = ?", (deployment,))


def delete(unit_id: str) -> None:
    with state.connection() as conn:
        conn.execute("DELETE FROM units WHERE id = ?", (unit_id,))


def engine_key_path(name: str) -> Path:
    """The key the gateway sends to a deployment's engines (mode 0600); nobody's user key."""
    return deployment_dir(name) / "engine_key"


def engine_key(name: str) -> str | None:
    """The key the engines of `name` take: the internal one behind a gateway, else the deployment's key."""
    path = engine_key_path(name)
    return path.read_text() if path.exists() else state.api_key(name)
