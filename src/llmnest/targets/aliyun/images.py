"""Which images a cloud deployment uses. Pure.

Instances in mainland China cannot reach Docker Hub, so there the engine container comes from
Alibaba Cloud's public EGS registry (the images the Compute Nest service itself runs); elsewhere
from the engines' own Docker Hub images. The OS image is the newest public Ubuntu 22.04 (an ECS
image family), which the bootstrap completes with the NVIDIA driver, docker and the container
toolkit; `--image-id` names a GPU image that already has them.
"""

from __future__ import annotations

from ...engines import default_image

OS_IMAGE_FAMILY = "acs:ubuntu_22_04_x64"
EGS_REGISTRY = "egs-registry.cn-hangzhou.cr.aliyuncs.com/egs"
MAINLAND_ENGINE_IMAGES = {
    "vllm": f"{EGS_REGISTRY}/vllm:0.11.0-pytorch2.8-cu128-20251015",
    "sglang": f"{EGS_REGISTRY}/sglang:0.4.6.post1-pytorch2.6-cu124-20250429",
}


def in_mainland_china(region: str) -> bool:
    return region.startswith("cn-") and region != "cn-hongkong"


def engine_image(engine: str, region: str) -> str:
    """The engine container image an instance in `region` can pull."""
    if in_mainland_china(region):
        return MAINLAND_ENGINE_IMAGES[engine]
    return default_image(engine)
