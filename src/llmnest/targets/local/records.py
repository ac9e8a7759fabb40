"""What a deployment on this machine records in the store beside its spec (`Deployment.info`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class LocalState(BaseModel):
    """The memory plan's KV cache against the one the engine logged."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["local"] = "local"
    kv_cache_tokens_planned: int | None = None
    kv_cache_tokens_actual: int | None = None
    plan_fits: bool | None = None
