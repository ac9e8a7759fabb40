"""What schemas do not catch: names, selectors that select their own pods, quantities, GPU requests.

Kubernetes' OpenAPI schemas type-check fields but leave names, label selectors, resource quantities
and cross-field rules to the API server's validation, which cannot run here; `problems` checks the
ones llmnest's manifests rely on, each as one readable line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# resource.Quantity's grammar (k8s.io/apimachinery/pkg/api/resource): a number and a suffix
QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?\d+)?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_NAMES = {"Service", "Namespace"}  # DNS-1035/1123 labels (63), not subdomains


def problems(objects: list[dict]) -> list[str]:
    return [p for obj in objects for p in _object(obj)] + list(_references(objects))


def _references(objects: list[dict]) -> Iterator[str]:
    """Services and PDBs select pods some workload makes; autoscalers scale a workload that exists."""
    pod_labels = [t.get("metadata", {}).get("labels", {}) for o in objects for _, t in _templates(o)]
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for obj in objects:
        where = f"{obj['kind']} {obj['metadata']['name']}"
        spec = obj.get("spec", {})
        wanted = spec.get("selector") if obj["kind"] == "Service" else None
        if obj["kind"] == "PodDisruptionBudget":
            wanted = spec["selector"].get("matchLabels")
        if wanted and not any(wanted.items() <= labels.items() for labels in pod_labels):
            yield f"{where}: selector {wanted} matches no pod template"
        ref = spec.get("scaleTargetRef")
        if ref and (ref.get("kind", "Deployment"), ref["name"]) not in names:
            yield f"{where}: scales {ref.get('kind')} {ref['name']}, which is not rendered"


def _object(obj: dict) -> Iterator[str]:
    kind, name = obj["kind"], obj["metadata"]["name"]
    where = f"{kind} {name}"
    pattern, limit = (DNS_LABEL, 63) if kind in LABEL_NAMES else (DNS_SUBDOMAIN, 253)
    if not pattern.match(name) or len(name) > limit:
        yield f"{where}: name is not a DNS-1123 {'label' if limit == 63 else 'subdomain'}"
    for key, value in obj["metadata"].get("labels", {}).items():
        if len(value) > 63 or not LABEL_VALUE.match(value):
            yield f"{where}: label {key}={value!r} is not a valid label value"
    for path, template in _templates(obj):
        pod_labels = template.get("metadata", {}).get("labels", {})
        selected = obj["spec"].get("selector", {}).get("matchLabels")
        if selected is not None and not selected.items() <= pod_labels.items():
            yield f"{where}: selector {selected} does not match the pod labels at {path}"
        yield from _pod(where, template.get("spec", {}))


def _templates(obj: dict) -> Iterator[tuple[str, dict]]:
    spec = obj.get("spec", {})
    if "template" in spec:
        yield "spec.template", spec["template"]
    lwt = spec.get("leaderWorkerTemplate", {})
    for part in ("leaderTemplate", "workerTemplate"):
        if part in lwt:
            yield f"spec.leaderWorkerTemplate.{part}", lwt[part]


def _pod(where: str, pod: dict) -> Iterator[str]:
    volumes = {v["name"] for v in pod.get("volumes", [])}
    for container in pod.get("initContainers", []) + pod.get("containers", []):
        for section in ("requests", "limits"):
            for resource, value in container.get("resources", {}).get(section, {}).items():
                if not QUANTITY.match(str(value)):
                    yield f"{where}: {container['name']} {section}.{resource}={value!r} is not a quantity"
        res = container.get("resources", {})
        gpu = [res.get(s, {}).get("nvidia.com/gpu") for s in ("requests", "limits")]
        if any(gpu) and gpu[0] != gpu[1]:
            yield f"{where}: {container['name']} nvidia.com/gpu requests {gpu[0]} != limits {gpu[1]}"
        for mount in container.get("volumeMounts", []):
            if mount["name"] not in volumes:
                yield f"{where}: {container['name']} mounts volume {mount['name']!r} the pod does not define"
        ports = {p.get("name") for p in container.get("ports", [])}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            port = container.get(probe, {}).get("httpGet", {}).get("port")
            if isinstance(port, str) and port not in ports:
                yield f"{where}: {container['name']} {probe} uses port {port!r} the container does not name"
