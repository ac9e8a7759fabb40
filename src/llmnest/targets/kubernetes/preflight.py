"""What the cluster has, read once before anything is applied, and what cannot work there. Pure.

`ClusterFacts` is what `client.Cluster.facts` reads (nodes, the GPUs running pods hold, CRDs, CSI
drivers, storage classes, the custom metrics API, the gateway's Secrets); `GpuPool` groups GPU nodes
by the card their label names. `refusals` gives one line per thing that cannot work, `headroom` says
whether a rollout may surge one more pod.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .placement import KubernetesPlacement

GPU = "nvidia.com/gpu"
LWS_CRD = "leaderworkersets.leaderworkerset.x-k8s.io"
KEDA_CRD = "scaledobjects.keda.sh"
CUSTOM_METRICS = "v1beta1.custom.metrics.k8s.io"
OSS_DRIVER = "ossplugin.csi.alibabacloud.com"
DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
# Provisioners whose volumes many nodes mount read-write (NAS/CNFS on ACK, NFS, EFS, Filestore, Azure Files, CephFS)
RWX_PROVISIONERS = ("nasplugin.csi.alibabacloud.com", "nfs", "efs.csi.aws.com", "filestore.csi.storage.gke.io",
                    "file.csi.azure.com", "cephfs")


@dataclass(frozen=True)
class Node:
    name: str
    labels: dict[str, str]
    taints: list[dict[str, Any]]
    gpus: int  # allocatable nvidia.com/gpu
    used: int  # requested by the pods running on it
    schedulable: bool = True

    @property
    def free(self) -> int:
        return max(self.gpus - self.used, 0) if self.schedulable else 0


@dataclass(frozen=True)
class GpuPool:
    card: str  # the label value
    nodes: list[Node]

    @property
    def free(self) -> int:
        return sum(n.free for n in self.nodes)

    @property
    def per_node(self) -> int:
        return max(n.gpus for n in self.nodes)

    def line(self) -> str:
        return f"{self.card}: {len(self.nodes)} node(s) x {self.per_node} GPU, {self.free} free"


@dataclass(frozen=True)
class ClusterFacts:
    nodes: list[Node]
    crds: set[str] = field(default_factory=set)
    csi_drivers: set[str] = field(default_factory=set)
    storage_classes: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> provisioner, default
    custom_metrics: bool = False
    secrets: set[str] = field(default_factory=set)  # the Secrets the placement names that exist


def node_of(obj: dict, used: int) -> Node:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    gpus = int(str((status.get("allocatable") or {}).get(GPU, "0")) or 0)
    return Node(meta["name"], meta.get("labels") or {}, spec.get("taints") or [], gpus, used,
                not spec.get("unschedulable", False))


def gpus_requested(pod: dict) -> int:
    containers = (pod.get("spec") or {}).get("containers") or []
    return sum(int(str(((c.get("resources") or {}).get("limits") or {}).get(GPU, "0"))) for c in containers)


def pools(facts: ClusterFacts, label: str) -> list[GpuPool]:
    """GPU nodes by the card their label names, most free GPUs first."""
    by_card: dict[str, list[Node]] = {}
    for node in facts.nodes:
        if node.gpus:
            by_card.setdefault(node.labels.get(label, "(unlabelled)"), []).append(node)
    return sorted((GpuPool(card, nodes) for card, nodes in by_card.items()), key=lambda p: -p.free)


def autoscaler_for(facts: ClusterFacts, place: KubernetesPlacement) -> str | None:
    """The autoscaler asked for, else whichever the cluster has (the custom metrics API first, then KEDA)."""
    if place.autoscaler:
        return place.autoscaler
    return "hpa" if facts.custom_metrics else "keda" if KEDA_CRD in facts.crds else None


def unlabelled_line(facts: ClusterFacts, label: str) -> str:
    """Why no card can be picked: no node carries the GPU label."""
    listed = "; ".join(p.line() for p in pools(facts, label)) or "none"
    return (f"no node carries the GPU label {label} (GPU pools: {listed}); pass --gpu-type with the label value, "
            "or set the label's name in the placement")


def pick_card(facts: ClusterFacts, label: str) -> str:
    """The card to use when --gpu-type is left out: the only labelled pool, else the one with most free GPUs."""
    found = [p for p in pools(facts, label) if p.card != "(unlabelled)"]
    if not found:
        return ""
    return found[0].card


def _tolerated(node: Node, place: KubernetesPlacement) -> bool:
    return all(t.get("effect") not in {"NoSchedule", "NoExecute"} or t.get("key") == place.gpu_taint
               for t in node.taints)


def fitting_nodes(facts: ClusterFacts, place: KubernetesPlacement, gpus_per_pod: int) -> list[Node]:
    """The nodes an engine pod may land on: the card's label, taints it tolerates, enough GPUs."""
    return [n for n in facts.nodes if n.gpus >= gpus_per_pod and _tolerated(n, place)
            and (place.gpu_type is None or n.labels.get(place.gpu_label) == place.gpu_type)]


def pods_fitting_now(facts: ClusterFacts, place: KubernetesPlacement, gpus_per_pod: int) -> int:
    return sum(n.free // gpus_per_pod for n in fitting_nodes(facts, place, gpus_per_pod)) if gpus_per_pod else 0


def refusals(facts: ClusterFacts, place: KubernetesPlacement, gpus_per_pod: int, running: int = 0) -> list[str]:
    """One line for each thing that cannot work on this cluster (`running`: engine pods of this deployment
    already up, whose GPUs a re-apply reuses)."""
    out: list[str] = []
    all_pools = pools(facts, place.gpu_label)
    listed = "; ".join(p.line() for p in all_pools) or "none"
    nodes = fitting_nodes(facts, place, gpus_per_pod)
    if gpus_per_pod and not nodes:
        card = f" with {place.gpu_label}={place.gpu_type}" if place.gpu_type else ""
        out.append(f"no node{card} has {gpus_per_pod} allocatable {GPU} a pod can tolerate; GPU pools: {listed}")
    elif gpus_per_pod:
        pods = place.replicas * place.nodes - running
        fit = pods_fitting_now(facts, place, gpus_per_pod)
        if fit < pods:
            out.append(f"{pods} engine pod(s) need {gpus_per_pod} free {GPU} each on one node, only {fit} fit now "
                       f"({listed}); free GPUs, grow the pool, or lower --replicas")
    if place.nodes > 1 and LWS_CRD not in facts.crds:
        out.append("--nodes 2 runs a LeaderWorkerSet, and the cluster has no LeaderWorkerSet CRD: install "
                   "kubernetes-sigs/lws (ACK: the ack-lws add-on)")
    kind = place.weights_kind
    if kind == "oss" and OSS_DRIVER not in facts.csi_drivers:
        out.append(f"oss:// weights need the OSS CSI driver ({OSS_DRIVER}), which the cluster lacks: install "
                   "csi-plugin (ACK: the storage add-ons)")
    if kind == "hub":
        out += _rwx_refusals(facts, place)
    if place.autoscale_max and place.autoscale_max > place.replicas:
        if autoscaler_for(facts, place) is None:
            out.append(f"autoscaling on the queue needs the custom metrics API ({CUSTOM_METRICS}) or KEDA, and the "
                       "cluster has neither: install ack-alibaba-cloud-metrics-adapter or KEDA, or drop --autoscale-max")
        elif place.autoscaler == "hpa" and not facts.custom_metrics:
            hint = " (KEDA is there: --autoscaler keda)" if KEDA_CRD in facts.crds else ""
            out.append(f"autoscaling on the queue needs the custom metrics API ({CUSTOM_METRICS}), which the cluster "
                       f"does not serve{hint}: install ack-alibaba-cloud-metrics-adapter or drop --autoscale-max")
        if place.autoscaler == "keda" and KEDA_CRD not in facts.crds:
            out.append("--autoscaler keda needs KEDA's ScaledObject CRD, which the cluster lacks: install KEDA")
    for secret in (place.gateway_db_secret, place.gateway_redis_secret, place.oss_secret):
        if secret and secret not in facts.secrets:
            out.append(f"Secret {secret!r} is not in namespace {place.namespace}: create it (`kubectl -n "
                       f"{place.namespace} create secret generic {secret} --from-literal=...`)")
    return out


def _rwx_refusals(facts: ClusterFacts, place: KubernetesPlacement) -> list[str]:
    name = place.storage_class or next((n for n, c in facts.storage_classes.items() if c.get("default")), None)
    if name is None:
        return ["hub weights go into a ReadWriteMany volume and the cluster has no default storage class: pass "
                "--storage-class (ACK: alibabacloud-cnfs-nas), or --weights-from oss://... or pvc:CLAIM"]
    found = facts.storage_classes.get(name)
    if found is None:
        return [f"storage class {name!r} does not exist; the cluster has: {', '.join(facts.storage_classes) or 'none'}"]
    if not any(p in found.get("provisioner", "") for p in RWX_PROVISIONERS):
        return [f"storage class {name!r} ({found.get('provisioner')}) is not known to give ReadWriteMany volumes, which "
                "every replica needs to read the weights: pass --storage-class of a NAS/NFS class"]
    return []


def headroom(facts: ClusterFacts, place: KubernetesPlacement, gpus_per_pod: int) -> bool:
    """One more engine pod (a group of `nodes` pods) fits in the GPUs free now: a rollout may surge."""
    return bool(gpus_per_pod) and pods_fitting_now(facts, place, gpus_per_pod) >= place.nodes


def rollout_line(surge: bool, place: KubernetesPlacement, gpus_per_pod: int) -> str:
    if surge:
        return f"rolling: one new pod starts beside the old ones ({gpus_per_pod} GPU(s) free for it)"
    if place.replicas == 1 and place.nodes == 1:
        return f"replaced in place: no node has {gpus_per_pod} more GPU(s) free, so the old pod stops first"
    return f"replaced in place, one pod at a time: no node has {gpus_per_pod} more GPU(s) free for a surge pod"
