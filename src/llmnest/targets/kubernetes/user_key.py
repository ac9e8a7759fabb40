"""The key `up --target kubernetes` prints, made in the cluster gateway's database through the gateway pod.

The local target's `up --api-key` semantics, in a database the team shares (so no `default` key there):
- without --api-key: a new key named after the deployment, that may use its served model only;
- `--api-key K`: K as it is when it already is a key of that database that is active and may use the model
  (someone's key: `down` leaves it); else K imported as a new key named after the deployment, for that model
  only (only its SHA-256 and prefix reach the cluster);
- refused: K is a key there that is revoked, expired or not allowed the model; a live key named after the
  deployment exists already (another secret: `up` cannot print it).
Only a key `up` made is the deployment's own: `down` revokes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...errors import Conflict
from ...gateway.remote_admin import RemoteAdmin

HOLDER = re.compile(r"that secret is the key '([^']+)' already")


@dataclass(frozen=True)
class UserKey:
    secret: str
    label: str  # how `up` names it: `NAME, for MODEL only`, or the existing key's name
    owned: bool  # made by this `up`: the deployment's own, revoked by `down`


def label(name: str, models: list[str] | None) -> str:
    return name if not models else f"{name}, for {', '.join(models)} only"


def make(admin: RemoteAdmin, deployment: str, model: str, requested: str | None) -> UserKey:
    """The key for deployment `deployment` serving `model`, as the module says."""
    try:
        _, secret = admin.create_key(deployment, {"models": [model]}, secret=requested)
    except Conflict as exc:
        holder = HOLDER.search(str(exc))
        if requested and holder:
            return _existing(admin, holder[1], requested, model)
        if holder is None and "exists" in str(exc):
            raise Conflict(f"the cluster gateway's database has a live key named {deployment!r} that this up did not "
                           f"make: pass that key with --api-key, revoke it (`llmnest keys revoke {deployment} "
                           "--db URL`), or pick another --name") from None
        raise
    return UserKey(secret, label(deployment, [model]), owned=True)


def _existing(admin: RemoteAdmin, name: str, secret: str, model: str) -> UserKey:
    row = admin.key_row(name)
    if row["status"] != "active":
        raise Conflict(f"--api-key is the cluster gateway's key {name!r}, which is {row['status']}; pass another key")
    if row["models"] and model not in row["models"]:
        raise Conflict(f"--api-key is the cluster gateway's key {name!r}, which may not use {model}: "
                       f"`llmnest keys update {name} --models ... --db URL`, or pass another key")
    return UserKey(secret, label(name, row["models"]), owned=False)
