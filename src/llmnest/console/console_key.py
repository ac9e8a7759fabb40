"""The console's own gateway key: what the Playground and Benchmarks send to a deployment behind the
gateway, so that no user's key is needed, revoking `default` breaks nothing here, and the console's
traffic is counted under a name of its own. Made on first use, kept 0600 under $LLMNEST_HOME, made
again when it was revoked (the Keys page does not offer to revoke it)."""

from __future__ import annotations

from pathlib import Path

from .. import state
from ..gateway import keys
from ..gateway.db import Database
from ..home import gateway_default_key_path, home, write_secret

NAME = "llmnest-console"


def key_path() -> Path:
    return home() / "console_api_key"


def console_key() -> str:
    """A usable secret of the key named NAME (made now when there is none, or it was revoked or expired)."""
    db = Database(None)
    try:
        path = key_path()
        if path.is_file() and (found := keys.authenticate(db, path.read_text().strip())) is not None \
                and found.name == NAME and found.problem() is None:
            return path.read_text().strip()
        existing = [k for k in keys.list_keys(db) if k.name == NAME and k.revoked_at is None]
        if existing:  # ours, but its secret is lost (or a person made one by that name): replace it
            keys.revoke(db, NAME)
        _, secret = keys.create(db, NAME)
        write_secret(path, secret)
        return secret
    finally:
        db.close()


def key_for(dep: state.Deployment) -> str | None:
    """The key the console sends to `dep`: its own behind the gateway, the deployment's key otherwise
    (an engine without the gateway knows one key only)."""
    return console_key() if dep.spec.gateway else state.api_key(dep.name)


def users_of_default() -> list[str]:
    """The deployments whose printed key is the gateway's `default` (what stops working once it is revoked)."""
    path = gateway_default_key_path()
    if not path.is_file():
        return []
    secret = path.read_text().strip()
    return [d.name for d in state.all_deployments() if d.spec.gateway and (state.api_key(d.name) or "").strip() == secret]
