"""What a Kubernetes deployment records beside its spec (the placement is in the spec)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class KubernetesState(BaseModel):
    """Where the deployment's objects are and what the cluster last reported of its gateway."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["kubernetes"] = "kubernetes"
    context: str | None = None  # the kubeconfig context it was created in (None: the current one then)
    cluster: str | None = None  # the API server's URL, to say where it runs
    workload: Literal["Deployment", "LeaderWorkerSet"] = "Deployment"
    address: str | None = None  # the gateway LoadBalancer's IP or host name, once the cloud gave one
    gpus_per_pod: int = 0
    rollout: str | None = None  # how the last apply rolls pods out, as one line
    key_label: str | None = None  # the key `up` printed, as it names it (user_key.py)
    key_owned: bool = False  # that key is the deployment's own (made by `up`, named after it): `down` revokes it
