"""Cloud deployment specs built the way `llmnest up --target aliyun` builds them (build_spec)."""

from __future__ import annotations

from typing import Any

from llmnest.build import UpRequest, build_spec
from llmnest.catalog import get_model, load_catalog
from llmnest.host import HostFacts
from llmnest.spec import AliyunPlacement, DeploymentSpec

LAPTOP = HostFacts(gpus=(), has_docker_engine=False)  # where the CLI runs: no GPU, no docker


def two_node_models() -> list[str]:
    """The catalog models of the two-instance (Ray) edition: DeepSeek-R1 and DeepSeek-V3."""
    return [key for key, m in load_catalog().items() if "two-node" in m.tags]


def cloud_spec(model: str = "Qwen/QwQ-32B", *, name: str | None = None, engine: str | None = None,
               port: int | None = None, sets: dict[str, str] | None = None, **placement: Any) -> DeploymentSpec:
    placement.setdefault("region", "cn-hangzhou")
    req = UpRequest(model=model, name=name, engine=engine, port=port, sets=sets or {},
                    aliyun=AliyunPlacement(**placement))
    spec, _ = build_spec(req, get_model(model), LAPTOP)
    return spec


def seed_models() -> list[str]:
    return [key for key, m in load_catalog().items() if "seed" in m.tags]
