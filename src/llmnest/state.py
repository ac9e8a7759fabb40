"""The deployment store: a small SQLite database under $LLMNEST_HOME (mode 0600)."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from .endpoints import reach_url
from .errors import Conflict, NotFound
from .home import deployment_dir, home, write_secret
from .spec import DeploymentSpec
from .suggest import did_you_mean

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
""", """
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
"""]

# Statuses: starting -> loading -> ready; restarting after a crash or a hang; draining before a replica
# is replaced; failed; stopped.
Status = Literal["starting", "loading", "ready", "restarting", "draining", "failed", "stopped", "dead", "unreachable"]
ACTIVE = {"starting", "loading", "ready", "restarting", "draining"}


class LocalState(BaseModel):
    """What a deployment on this machine records beside its spec."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["local"] = "local"
    kv_cache_tokens_planned: int | None = None
    kv_cache_tokens_actual: int | None = None
    plan_fits: bool | None = None


class CloudEndpoint(BaseModel):
    model_config = ConfigDict(frozen=True)

    label: str
    base_url: str


class AliyunState(BaseModel):
    """What an Alibaba Cloud deployment records: where its stack is and what it reported."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["aliyun"] = "aliyun"
    region: str | None = None
    zone: str | None = None
    client_token: str | None = None
    stack_id: str | None = None
    price: str | None = None
    price_per_hour: float | None = None
    endpoints: list[CloudEndpoint] = []
    instance_ids: list[str] = []
    private_ips: list[str] = []


# Each target's own state model beside it (imported here: the targets package imports this module back).
from .targets.kubernetes.state import KubernetesState  # noqa: E402

TargetState = Annotated[Union[LocalState, AliyunState, KubernetesState], Field(discriminator="kind")]
_TARGET_STATE: TypeAdapter[LocalState | AliyunState | KubernetesState] = TypeAdapter(TargetState)


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
    info: LocalState | AliyunState | KubernetesState = LocalState()
    replicas: list[Unit] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def ready_replicas(self) -> int:
        return sum(u.status == "ready" for u in self.replicas)


def _target_state(spec: DeploymentSpec, raw: str) -> LocalState | AliyunState | KubernetesState:
    data = json.loads(raw)
    data.setdefault("kind", spec.target)  # records written before the state was typed
    return _TARGET_STATE.validate_python(data)


@contextmanager
def _db() -> Iterator[sqlite3.Connection]:
    path = home() / "state.db"
    fresh = not path.exists()
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        if fresh:
            os.chmod(path, 0o600)
        conn.execute("PRAGMA journal_mode=WAL")
        for table in SCHEMA:
            conn.execute(table)
        conn.row_factory = sqlite3.Row
        yield conn
    finally:
        conn.close()


def _unit(row: sqlite3.Row) -> Unit:
    return Unit(**{f.name: row["idx" if f.name == "index" else f.name] for f in fields(Unit)})


def _status_of(units: list[Unit]) -> str:
    """A deployment's status from its replicas': ready when all are; a failed or restarting one shows."""
    statuses = {u.status for u in units}
    for status in ("failed", "restarting", "draining", "loading", "starting"):
        if status in statuses:
            return status
    return "ready" if statuses == {"ready"} else "stopped"


def _row(conn: sqlite3.Connection, row: sqlite3.Row) -> Deployment:
    spec = DeploymentSpec.from_json(row["spec"])
    units = [_unit(u) for u in conn.execute(
        "SELECT * FROM units WHERE deployment = ? AND kind = 'engine' ORDER BY idx", (spec.name,))]
    if not units and spec.target == "local" and row["supervisor_pid"]:  # recorded before replicas were
        units = [Unit(replica_id(spec.name, 0), "engine", spec.name, 0, spec.host, spec.port, row["status"],
                      row["pid"], row["supervisor_pid"], row["started_at"], row["ready_at"], row["restarts"],
                      row["last_error"])]
    if units:  # the replicas' supervisors keep these; the deployment shows them together
        errors = [u.last_error for u in units if u.last_error]
        status = _status_of(units)
        return Deployment(
            spec=spec, status=status, created_at=row["created_at"], pid=units[0].pid,
            supervisor_pid=units[0].supervisor_pid, started_at=units[0].started_at,
            ready_at=max(u.ready_at or 0 for u in units) if status == "ready" else None,
            restarts=sum(u.restarts for u in units), last_error=errors[0] if errors else None,
            info=_target_state(spec, row["info"]), replicas=units)
    return Deployment(
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
        conn.execute("DELETE FROM units WHERE deployment = ?", (name,))
    key_path(name).unlink(missing_ok=True)
    engine_key_path(name).unlink(missing_ok=True)


def key_path(name: str) -> Path:
    """The deployment's API key file (mode 0600)."""
    return deployment_dir(name) / "api_key"


def api_key(name: str) -> str | None:
    path = key_path(name)
    return path.read_text() if path.exists() else None


# ---- units: the supervised processes -------------------------------------------------------------

def put_unit(unit: Unit) -> Unit:
    """Record a unit (replacing one with the same id)."""
    values = {("idx" if f.name == "index" else f.name): getattr(unit, f.name) for f in fields(Unit)}
    with _db() as conn:
        conn.execute(f"INSERT OR REPLACE INTO units ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                     tuple(values.values()))
    return unit


def unit(unit_id: str) -> Unit:
    with _db() as conn:
        row = conn.execute("SELECT * FROM units WHERE id = ?", (unit_id,)).fetchone()
    if row is None:
        raise NotFound(f"no supervised process {unit_id!r}")
    return _unit(row)


def find_unit(unit_id: str) -> Unit | None:
    try:
        return unit(unit_id)
    except NotFound:
        return None


def gateways() -> list[Unit]:
    with _db() as conn:
        return [_unit(r) for r in conn.execute("SELECT * FROM units WHERE kind = 'gateway' ORDER BY port")]


def update_unit(unit_id: str, **values: Any) -> None:
    cols = ", ".join(f"{k} = ?" for k in values)
    with _db() as conn:
        conn.execute(f"UPDATE units SET {cols} WHERE id = ?", (*values.values(), unit_id))


def bump_unit_restarts(unit_id: str, last_error: str) -> None:
    with _db() as conn:
        conn.execute("UPDATE units SET restarts = restarts + 1, last_error = ?, status = 'restarting' WHERE id = ?",
                      (last_error, unit_id))


def delete_units(deployment: str) -> None:
    with _db() as conn:
        conn.execute("DELETE FROM units WHERE deployment = ?", (deployment,))


def delete_unit(unit_id: str) -> None:
    with _db() as conn:
        conn.execute("DELETE FROM units WHERE id = ?", (unit_id,))


def engine_key_path(name: str) -> Path:
    """The key the gateway sends to a deployment's engines (mode 0600); nobody's user key."""
    return deployment_dir(name) / "engine_key"


def engine_key(name: str) -> str | None:
    """The key the engines of `name` take: the internal one behind a gateway, else the deployment's key."""
    path = engine_key_path(name)
    return path.read_text() if path.exists() else api_key(name)
