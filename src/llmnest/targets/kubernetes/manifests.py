"""`DeploymentSpec` + `KubernetesPlacement` -> the manifests of one deployment. Pure: no cluster, no I/O.

Order is apply order: namespace, secrets, weights, engine workload and Service, PDB, autoscaler,
gateway. `to_yaml` gives the multi-document stream `kubectl apply -f -` takes (for GitOps users).
"""

from __future__ import annotations

import yaml

from ...spec import DeploymentSpec
from . import engine, gateway, scaling, weights
from .names import labels, max_name_length
from .placement import KubernetesPlacement

KEY_PLACEHOLDER = "REPLACE-WITH-AN-INTERNAL-KEY"  # what `show --as k8s` puts where the engine key goes
METRICS_PLACEHOLDER = "REPLACE-WITH-A-METRICS-TOKEN"  # and where the token that reads the gateway's /metrics goes


def render(spec: DeploymentSpec, place: KubernetesPlacement, engine_key: str | None,
           metrics_key: str = METRICS_PLACEHOLDER) -> list[dict]:
    """Every object of the deployment. `engine_key` is the internal key (None only without a key);
    `metrics_key` the bearer token for the gateway's /metrics."""
    if len(spec.name) > max_name_length():
        raise ValueError(f"deployment name {spec.name!r} is longer than {max_name_length()} characters, "
                         "too long for its Kubernetes object names; pick a shorter --name")
    if spec.api_key_enabled and not engine_key:
        raise ValueError("a keyed deployment needs its internal engine key")
    if spec.engine == "sglang" and spec.device != "cuda":
        raise ValueError("SGLang needs NVIDIA GPUs")
    key = engine_key or ""
    out: list[dict] = []
    if place.create_namespace:
        out.append({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": place.namespace, "labels": labels(spec.name, "namespace")}})
    if spec.api_key_enabled:
        out.append(engine.key_secret(spec, place, key))
    out += [gateway.upstreams_secret(spec, place, key), gateway.metrics_secret(spec, place, metrics_key)]
    out += weights.objects(spec, place, place.gateway_image)
    workload, scaler = engine.workload(spec, place), scaling.autoscaler(spec, place)
    if scaler:  # the autoscaler owns the replica count: a re-apply must not reset it (minReplicas is the floor)
        del workload["spec"]["replicas"]
    out += [workload, engine.service(spec, place)]
    out += [o for o in (scaling.pdb(spec, place), scaler) if o]
    out += [gateway.deployment(spec, place), gateway.service(spec, place)]
    return out


class _NoAliases(yaml.SafeDumper):
    """Shared sub-dicts (one probe's httpGet) written out in full: no &anchors in a manifest."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def to_yaml(objects: list[dict]) -> str:
    return yaml.dump_all(objects, Dumper=_NoAliases, sort_keys=False, default_flow_style=False)
