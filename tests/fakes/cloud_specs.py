"""Cloud deployment specs built the way `llmnest up --target aliyun` builds them (the aliyun target's resolve)."""

from __future__ import annotations

from typing import Any

from llmnest.spec_builder import UpRequest
from llmnest.catalog import load_catalog
from llmnest.spec import DeploymentSpec
from llmnest.targets import get


def two_node_models() -> list[str]:
    """The catalog models of the two-instance (Ray) edition: DeepSeek-R1 and DeepSeek-V3."""
    return [key for key, m in load_catalog().items() if "two-node" in m.tags]


def cloud_spec(model: str = "Qwen/QwQ-32B", *, name: str | None = None, engine: str | None = None,
               port: int | None = None, sets: dict[str, str] | None = None, **placement: Any) -> DeploymentSpec:
    placement.setdefault("region", "cn-hangzhou")
    req = UpRequest(model=model, name=name, engine=engine, port=port, sets=sets or {}, target="aliyun",
                    options=placement)
    return get("aliyun").resolve(req).spec


def seed_models() -> list[str]:
    return [key for key, m in load_catalog().items() if "seed" in m.tags]
