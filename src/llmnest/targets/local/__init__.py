"""This machine: engine processes or containers under a supervisor, the gateway in front of them.

`target` (the verbs, thin), `preflight` (checks before a start), `units` (the replicas: started, waited for,
stopped), `rollout` (restart, redeploy, rollback), `scale` (replicas added or removed), `surge` (room for more
engines, the gateway's word on its rotation, drain), `show` (the commands `show --as` prints), `gateway` (the
gateway's own unit and keys), `units_store` (its table in the store). What the rest of llmnest knows without
loading them is `DECLARATION`."""

from ..declaration import Declaration, Option
from .records import LocalState

DECLARATION = Declaration(
    name="local", place="this machine", summary="this machine", state=LocalState, store="units_store",
    gateway=True,
    options=(
        Option("replicas", "--replicas", "Engine replicas behind the gateway (default 1).", kind=int, min=1, max=16,
               label="Replicas", placeholder="1 (this machine: engines behind the gateway)"),
        Option("no_gateway", "--no-gateway", "Serve the engine directly on --port, without the gateway's keys, "
               "usage, limits and metrics (one replica).", kind=bool, default=False),
    ),
)
