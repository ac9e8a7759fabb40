"""Availability and autoscaling of the engine: a PodDisruptionBudget and a queue-length autoscaler.

Scaling is on the engine's own queue (requests waiting for a batch slot), never on CPU or GPU use:
- `hpa`: autoscaling/v2 with a Pods metric served through the custom metrics API (ACK's
  ack-alibaba-cloud-metrics-adapter bridging Managed Prometheus, per ACK's "Configure auto scaling for
  standalone or distributed LLM inference services");
- `keda`: a KEDA ScaledObject with a prometheus trigger on the same series, as vLLM production-stack's
  helm/templates/scaledobject-vllm.yaml does (threshold per pod).
The PDB keeps all but one engine pod through voluntary disruptions (production-stack's pdb-vllm-multi).
"""

from __future__ import annotations

from ...spec import DeploymentSpec
from .names import meta, name_of, selector
from .placement import KubernetesPlacement

QUEUE_METRIC = {"vllm": "vllm:num_requests_waiting", "sglang": "sglang:num_queue_reqs"}


def _target(spec: DeploymentSpec, place: KubernetesPlacement) -> dict:
    if place.nodes == 1:
        return {"apiVersion": "apps/v1", "kind": "Deployment", "name": name_of(spec.name, "engine")}
    return {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "name": name_of(spec.name, "engine")}


def pdb(spec: DeploymentSpec, place: KubernetesPlacement) -> dict | None:
    if max(place.replicas, place.autoscale_max or 1) < 2:
        return None
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta(spec.name, "engine", place.namespace),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(spec.name, "engine")}}}


def autoscaler(spec: DeploymentSpec, place: KubernetesPlacement) -> dict | None:
    if place.autoscale_max is None or place.autoscale_max == place.replicas:
        return None
    metric = QUEUE_METRIC[spec.engine]
    if place.autoscaler != "keda":  # none chosen yet (no cluster read): the HPA
        ref = _target(spec, place)
        return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": meta(spec.name, "engine", place.namespace),
                "spec": {"scaleTargetRef": ref, "minReplicas": place.replicas, "maxReplicas": place.autoscale_max,
                         "metrics": [{"type": "Pods", "pods": {
                             "metric": {"name": metric},
                             "target": {"type": "AverageValue", "averageValue": str(place.queue_target)}}}],
                         # a new GPU pod takes minutes to load: scale down slowly, never on a short lull
                         "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0,
                                                  "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]},
                                      "scaleDown": {"stabilizationWindowSeconds": 600,
                                                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}]}}}}
    query = f'sum({metric}{{namespace="{place.namespace}",pod=~"{name_of(spec.name, "engine")}-.*"}})'
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": meta(spec.name, "engine", place.namespace),
            "spec": {"scaleTargetRef": _target(spec, place), "minReplicaCount": place.replicas,
                     "maxReplicaCount": place.autoscale_max, "pollingInterval": 15, "cooldownPeriod": 600,
                     "triggers": [{"type": "prometheus", "metadata": {
                         "serverAddress": place.prometheus_url, "query": query,
                         "threshold": str(place.queue_target)}}]}}
