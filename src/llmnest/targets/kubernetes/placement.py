"""Where a Kubernetes deployment lives and how its objects are shaped (the cluster-side choices).

A typed, validated value: `manifests.render` reads only this and the `DeploymentSpec`. Defaults follow
what the published deployers do (see docs/kubernetes.md for the sources): one GPU node per engine pod,
weights read-only from a shared volume, replace-in-place rollouts unless the cluster has GPUs to spare.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# ACK labels every GPU node with its card's model (NVIDIA-A10, Tesla-V100-SXM2-16GB, ...): ACK docs,
# "Specify an NVIDIA GPU model for scheduling" (aliyun.accelerator/nvidia_name).
ACK_GPU_LABEL = "aliyun.accelerator/nvidia_name"
OSS_URL = re.compile(r"^oss://(?P<bucket>[a-z0-9][a-z0-9-]{1,61}[a-z0-9])(?P<path>/[^\s]*)?$")
CLAIM_PREFIX = "pvc:"

Expose = Literal["internet", "intranet", "cluster"]
Autoscaler = Literal["hpa", "keda"]


class KubernetesPlacement(BaseModel):
    """The cluster, the GPUs, the weights volume, the exposure and the autoscaling of one deployment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    context: str | None = Field(default=None, description="kubeconfig context (default: the current one)")
    namespace: str = "default"
    create_namespace: bool = Field(default=False, description="render the Namespace object too")
    replicas: int = Field(default=1, ge=1, le=64, description="engine pods (or LWS groups with nodes=2)")
    nodes: Literal[1, 2] = Field(default=1, description="GPU nodes per engine replica (2: a LeaderWorkerSet)")
    gpu_type: str | None = Field(default=None, description="value of the GPU node label, e.g. NVIDIA-A10")
    gpu_label: str = Field(default=ACK_GPU_LABEL, description="the node label that names the card")
    gpu_taint: str | None = Field(default="nvidia.com/gpu", description="taint key GPU node pools carry (tolerated)")
    weights: str = Field(default="hub", description="hub | oss://BUCKET/PATH | pvc:CLAIM")
    oss_endpoint: str | None = Field(default=None, description="OSS endpoint, e.g. oss-cn-hangzhou-internal.aliyuncs.com")
    oss_secret: str | None = Field(default=None, description="Secret with akId/akSecret for the OSS CSI driver "
                                   "(none: the node's RAM role)")
    storage_class: str | None = Field(default=None, description="ReadWriteMany class for the hub weights volume "
                                      "(e.g. alibabacloud-cnfs-nas); none: the cluster default")
    weights_gib: int = Field(default=100, ge=1, description="size of the weights volume")
    load_timeout_s: int = Field(default=1800, ge=60, description="startup probe budget: how long loading may take")
    gpu_headroom: bool = Field(default=False, description="the cluster has a spare GPU node: surge one pod on rollout")
    expose: Expose = Field(default="intranet", description="gateway LoadBalancer: internet or intranet SLB, "
                           "or cluster (ClusterIP only)")
    slb_spec: str | None = Field(default=None, description="ACK SLB instance spec, e.g. slb.s1.small")
    autoscale_max: int | None = Field(default=None, ge=1, le=64, description="scale on the queue up to this")
    autoscaler: Autoscaler | None = Field(default=None, description="hpa (metrics adapter) or keda; none: "
                                          "whichever the cluster has, the metrics adapter first")
    queue_target: int = Field(default=5, ge=1, description="waiting requests per pod that trigger a scale-up")
    prometheus_url: str = Field(default="http://prometheus-operated.monitoring.svc:9090",
                                description="the Prometheus KEDA queries")
    gateway_image: str = Field(default="llmnest/llmnest:0.1.0", description="an image with llmnest installed")
    gateway_replicas: int = Field(default=1, ge=1, le=16)
    gateway_db_secret: str = Field(default="llmnest-gateway-db", description="Secret whose key `url` is the "
                                   "gateway's PostgreSQL URL")
    gateway_redis_secret: str | None = Field(default=None, description="Secret whose key `url` is the Redis URL "
                                             "shared by the gateway's replicas")

    @model_validator(mode="after")
    def _consistent(self) -> KubernetesPlacement:
        for field in ("namespace", "gateway_db_secret", "gateway_redis_secret", "oss_secret"):
            value = getattr(self, field)
            if value is not None and not DNS_LABEL.match(value):
                raise ValueError(f"{field} {value!r} is not a DNS-1123 label (lowercase letters, digits, dashes)")
        kind = self.weights_kind
        if kind == "oss" and not self.oss_endpoint:
            raise ValueError("oss:// weights need --oss-endpoint (e.g. oss-cn-hangzhou-internal.aliyuncs.com)")
        if kind == "claim" and not DNS_LABEL.match(self.weights.removeprefix(CLAIM_PREFIX)):
            raise ValueError(f"weights {self.weights!r}: pvc:CLAIM needs a claim name (lowercase, digits, dashes)")
        if self.autoscale_max is not None and self.autoscale_max < self.replicas:
            raise ValueError(f"autoscale_max {self.autoscale_max} is below replicas {self.replicas}")
        if self.gateway_replicas > 1 and self.gateway_redis_secret is None:
            raise ValueError("several gateway replicas share their limits through Redis: set gateway_redis_secret")
        return self

    @property
    def weights_kind(self) -> Literal["hub", "oss", "claim"]:
        if self.weights == "hub":
            return "hub"
        if self.weights.startswith(CLAIM_PREFIX):
            return "claim"
        if OSS_URL.match(self.weights):
            return "oss"
        raise ValueError(f"weights {self.weights!r}: use hub, oss://BUCKET/PATH or pvc:CLAIM")

    @property
    def oss_bucket_path(self) -> tuple[str, str]:
        found = OSS_URL.match(self.weights)
        assert found, "only for oss:// weights"
        return found["bucket"], found["path"] or "/"

    @property
    def claim(self) -> str:
        return self.weights.removeprefix(CLAIM_PREFIX)


def placement_of(spec: Any) -> KubernetesPlacement:
    """The placement of a kubernetes spec (it always has one)."""
    place = spec.placement
    assert isinstance(place, KubernetesPlacement), f"{spec.name} is not a Kubernetes deployment"
    return place
