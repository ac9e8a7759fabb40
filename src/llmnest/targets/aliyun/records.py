"""What an Alibaba Cloud deployment records in the store beside its spec (`Deployment.info`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class CloudEndpoint(BaseModel):
    model_config = ConfigDict(frozen=True)

    label: str
    base_url: str


class AliyunState(BaseModel):
    """Where its stack is and what it reported."""

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
