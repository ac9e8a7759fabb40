"""Where an Alibaba Cloud deployment lives: `spec.placement` of an aliyun spec (the seed's deploy form,
minus secrets)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class AliyunPlacement(BaseModel):
    """Region, zone, instance type and network of one deployment's stack."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    region: str
    zone: str | None = None
    instance_type: str | None = None
    nodes: Literal[1, 2] = 1
    public: bool = False
    bandwidth_mbps: int | None = Field(default=None, ge=0, le=200,
                                       description="public bandwidth cap; None picks one the weights download in")
    allow_cidr: str | None = None
    vpc_id: str | None = None
    vswitch_id: str | None = None
    pay: Literal["postpaid", "prepaid"] = "postpaid"
    period_months: int | None = Field(default=None, ge=1, le=9)
    key_pair: str | None = None
    image_id: str | None = Field(default=None, description="GPU image with the NVIDIA driver, docker and toolkit")
    llmnest_package: str | None = Field(default=None, pattern=r"^[^\s'\"\\-][^\s'\"\\]*$",
                                        description="pip requirement or wheel URL of llmnest for the instance's gateway")


def placement_of(spec: Any) -> AliyunPlacement:
    """The Alibaba Cloud placement of a spec (an aliyun spec always has one)."""
    place = spec.placement
    assert isinstance(place, AliyunPlacement), f"{spec.name} is not an Alibaba Cloud deployment"
    return place
