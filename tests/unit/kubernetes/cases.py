"""The seed's models as Kubernetes deployments: one and two nodes, vLLM and SGLang, sized like the cloud."""

from __future__ import annotations

from llmnest.targets.aliyun.sizing import resolve
from llmnest.spec import DeploymentSpec
from llmnest.targets.kubernetes.placement import KubernetesPlacement
from tests.fakes.cloud_specs import cloud_spec, seed_models, two_node_models

ENGINE_KEY = "sk-internal-0123456789abcdef0123456789abcdef"


def gpu_spec(model: str, nodes: int, engine: str) -> DeploymentSpec:
    """The spec `up --target aliyun` resolves (GPU count, tensor/pipeline parallel, image) for `model`."""
    return resolve(cloud_spec(model, nodes=nodes, engine=engine))


def seed_cases() -> list[tuple[str, int, str]]:
    one = [(m, 1, e) for m in seed_models() for e in ("vllm", "sglang")]
    two = [(m, 2, e) for m in two_node_models() for e in ("vllm", "sglang")]
    return one + two


PLACEMENTS = {
    "hub-hpa": dict(replicas=2, autoscale_max=4, gpu_type="NVIDIA-A10", create_namespace=True, namespace="llm",
                    storage_class="alibabacloud-cnfs-nas", expose="internet"),
    "oss-keda": dict(weights="oss://team-models/qwen", oss_endpoint="oss-cn-hangzhou-internal.aliyuncs.com",
                     oss_secret="oss-ak", autoscale_max=3, autoscaler="keda", gpu_headroom=True, expose="intranet",
                     gateway_replicas=2, gateway_redis_secret="llmnest-gateway-redis", slb_spec="slb.s1.small"),
    "claim-single": dict(weights="pvc:models", expose="cluster", gpu_taint=None),
}


def placement(kind: str, nodes: int) -> KubernetesPlacement:
    return KubernetesPlacement(nodes=nodes, **PLACEMENTS[kind])
