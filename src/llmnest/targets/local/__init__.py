"""This machine: engine processes or containers under a supervisor, the gateway in front of them.

`target` (the verbs, thin), `preflight` (checks before a start), `units` (the replicas: started, waited for,
stopped), `rollout` (restart, redeploy, rollback), `surge` (room for one more engine, the gateway's word on its
rotation, drain), `show` (the commands `show --as` prints), `gateway` (the gateway's own unit and keys)."""
