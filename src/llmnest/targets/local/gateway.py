"""The gateway `up` runs in front of this machine's deployments: one per port, shared by every
deployment given that port, supervised like an engine, and its `default` key (the key `up` prints).

The gateway itself only reads the state store for where the engines are (gateway.upstreams), so
nothing here assumes an engine is a child process of this machine.
"""

from __future__ import annotations

import socket
import time

from ... import state
from ...endpoints import reach_url
from ...errors import Conflict, LlmnestError
from ...gateway import keys
from ...gateway.db import Database
from ...home import gateway_default_key_path, gateway_log_path, write_secret
from ...host import port_is_free
from ...probe import chat_once
from ...runtimes import process
from . import supervised, units_store
from ..base import Context

DEFAULT_KEY = "default"


def user_key(requested: str | None, name: str | None = None, model: str | None = None) -> str:
    """The key `up` prints behind the gateway: the `default` key (made on first use, kept 0600 so every
    `up` prints it again), or the key the user passed with --api-key, which opens the deployment `name`
    (serving `model`): a key of the gateway already that may use the model, or a new key named after the
    deployment that may use that model only."""
    db = Database(None)
    try:
        if requested:
            return _deployment_key(db, requested, name, model)
        path = gateway_default_key_path()
        if path.exists() and (found := keys.authenticate(db, path.read_text())) and found.problem() is None:
            return path.read_text()
        if _live_default(db) is not None:  # made with `keys create default`: its secret is not ours to print
            raise Conflict("a key named `default` exists but `up` did not make it; pass --api-key with a key of "
                           "the gateway, or `llmnest keys revoke default` so that `up` makes a new one")
        return _make_default(db)
    finally:
        db.close()


def joining_key(current: str | None, name: str, model: str) -> str:
    """The key of a deployment that moves behind the gateway: its own, as `up --api-key` takes it (a key
    named after the deployment), when the gateway can take it; else the gateway's `default` (redeploy
    prints it)."""
    if current:
        try:
            return user_key(current, name, model)
        except Conflict:
            pass
    return user_key(None)


def _deployment_key(db: Database, secret: str, name: str | None, model: str | None) -> str:
    found = keys.authenticate(db, secret)
    if found is not None:
        if problem := found.problem():
            raise Conflict(f"--api-key is the gateway's key {found.name!r}, which is {problem}; pass another key")
        if model is not None and not found.allows(model):
            raise Conflict(f"--api-key is the gateway's key {found.name!r}, which may not use {model}: "
                           f"`llmnest keys update {found.name} --models ...`, or pass another key")
        return secret
    if name is None or model is None:
        raise Conflict("--api-key is not a key of the gateway; `llmnest keys create NAME` makes one")
    if any(k.name == name and k.revoked_at is None for k in keys.list_keys(db)):
        raise Conflict(f"the gateway has a key named {name!r} with another secret: pass that key with --api-key,"
                       f" or `llmnest keys revoke {name}` so that this one takes the name")
    keys.create(db, name, models=[model], secret=secret)
    return secret


def _gateway_key(secret: str) -> keys.Key | None:
    """The gateway's key with this secret (revoked or expired ones too), or None."""
    db = Database(None)
    try:
        return keys.authenticate(db, secret)
    finally:
        db.close()


def key_usable(secret: str) -> bool:
    """The gateway takes this key now (not revoked, not expired)."""
    found = _gateway_key(secret)
    return found is not None and found.problem() is None


def key_label(secret: str | None) -> str | None:
    """How `up` names the key it prints: `default`, or `NAME, for MODEL only`."""
    found = _gateway_key(secret) if secret else None
    if found is None:
        return None
    return found.name if found.models is None else f"{found.name}, for {', '.join(found.models)} only"


def _live_default(db: Database) -> keys.Key | None:
    found = [k for k in keys.list_keys(db) if k.name == DEFAULT_KEY]
    return found[0] if found and found[0].revoked_at is None else None


def _make_default(db: Database) -> str:
    _, secret = keys.create(db, DEFAULT_KEY)
    path = gateway_default_key_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_secret(path, secret)
    return secret


def running(port: int) -> units_store.Unit | None:
    """The gateway `up` runs on `port`, when its supervisor is alive."""
    unit = units_store.find(units_store.gateway_id(port))
    return unit if unit is not None and process.pid_alive(unit.supervisor_pid) else None


def describe(unit: units_store.Unit) -> dict:
    """A gateway unit as `status` and `gateway ls` show it."""
    return {"port": unit.port, "host": unit.host,
            "status": unit.status if process.pid_alive(unit.supervisor_pid) else "dead", "pid": unit.pid,
            "restarts": unit.restarts, "last_error": unit.last_error, "log": str(gateway_log_path(unit.port))}


def overview() -> list[dict]:
    """Every gateway `up` runs on this machine: where it listens, whether it runs, what is behind it."""
    return [{**describe(unit), "base_url": reach_url(unit.host, unit.port), "deployments": sharing(unit.port, None)}
            for unit in units_store.gateways()]


def check_port(host: str, port: int) -> None:
    """The port is free, or it is our gateway's, listening on the same address."""
    unit = running(port)
    if unit is not None:
        if unit.host != host:
            raise Conflict(f"the gateway on port {port} listens on {unit.host}; pass --host {unit.host} to share it, "
                           "or another --port")
        return
    if not port_is_free(host, port):
        raise Conflict(f"port {port} on {host} is already in use; pass --port or stop what uses it")


def free_port() -> int:
    """A loopback port nobody listens on now (for an engine replica behind the gateway)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure(host: str, port: int) -> units_store.Unit:
    """Start the gateway on host:port unless it runs already."""
    unit = running(port)
    if unit is not None:
        return unit
    unit = units_store.put(units_store.Unit(units_store.gateway_id(port), "gateway", None, 0, host, port))
    log = gateway_log_path(port).with_suffix(".supervisor.log")
    units_store.update(unit.id, supervisor_pid=supervised.start_supervisor(unit.id, log))
    return units_store.get(unit.id)


def wait_answers(dep: state.Deployment, api_key: str, ctx: Context) -> None:
    """Until a chat through the gateway with the user's key gets an answer (the gateway reads new
    deployments within its health interval)."""
    port = dep.spec.port
    deadline = time.monotonic() + max(ctx.timeout, 60)
    url = reach_url(dep.spec.host, port)
    while True:
        unit = units_store.find(units_store.gateway_id(port))
        if unit is not None and unit.status == "failed":
            raise LlmnestError(f"the gateway on port {port} did not start: {unit.last_error} "
                               f"(log: {gateway_log_path(port)})")
        result = chat_once(url, dep.spec.served_model_name, api_key, timeout=30)
        if result.ok:
            return
        if time.monotonic() > deadline:
            raise LlmnestError(f"the engines answer but the gateway on port {port} does not ({result.stage}: "
                               f"{result.detail}); see {gateway_log_path(port)}")
        ctx.on_phase("starting gateway", f"gateway: {result.stage}")
        time.sleep(0.5)


def sharing(port: int, name: str | None) -> list[str]:
    """The deployments behind the gateway on `port` but `name`."""
    return [d.name for d in state.all_deployments() if d.spec.gateway and d.spec.port == port and d.name != name]


def release(port: int, grace: float = 10, leaving: str | None = None) -> bool:
    """Stop the gateway on `port` when no deployment is behind it any more (but `leaving`, which is being
    removed or moved away from it); True when it was stopped."""
    if sharing(port, leaving):
        return False
    unit = units_store.find(units_store.gateway_id(port))
    if unit is None:
        return False
    supervised.stop(unit, grace)
    units_store.delete(unit.id)
    return True
