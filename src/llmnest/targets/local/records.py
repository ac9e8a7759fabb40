"""What a deployment on this machine records in the store beside its spec (`Deployment.target_state`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class LocalState(BaseModel):
    """The memory plan's KV cache against the one the engine logged; the replicas a `scale` in progress
    starts engines for (each new one takes its share of the cores, or its GPUs, of that many)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["local"] = "local"
    kv_cache_tokens_planned: int | None = None
    kv_cache_tokens_actual: int | None = None
    plan_fits: bool | None = None
    scaling_to: int | None = None
