"""Object names and labels every manifest of a deployment shares.

Labels follow Kubernetes' recommended `app.kubernetes.io/*` set plus `llmnest.io/deployment`, which
is what the client selects on (pods, events, deletion).
"""

from __future__ import annotations

DEPLOYMENT_LABEL = "llmnest.io/deployment"
COMPONENT_LABEL = "app.kubernetes.io/component"
ROLE_LABEL = "llmnest.io/role"  # leader | worker, on LeaderWorkerSet pods
FIELD_MANAGER = "llmnest"
ENGINE_PORT = 8000
GATEWAY_PORT = 8080
LONGEST_SUFFIX = "-gateway-upstreams"


def name_of(deployment: str, component: str) -> str:
    """NAME-engine, NAME-gateway, NAME-weights, ... (DNS-1123 labels: the caller keeps NAME short enough)."""
    return f"{deployment}-{component}"


def max_name_length() -> int:
    """The longest deployment name whose every object name stays a 63-character DNS label."""
    return 63 - len(LONGEST_SUFFIX)


def selector(deployment: str, component: str) -> dict[str, str]:
    """The labels a workload selects its pods by (a subset of `labels`)."""
    return {DEPLOYMENT_LABEL: deployment, COMPONENT_LABEL: component}


def labels(deployment: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "llmnest",
        "app.kubernetes.io/instance": deployment,
        "app.kubernetes.io/managed-by": FIELD_MANAGER,
        "app.kubernetes.io/part-of": "llmnest",
        **selector(deployment, component),
    }


def meta(deployment: str, component: str, namespace: str | None, suffix: str | None = None,
         annotations: dict[str, str] | None = None) -> dict:
    """metadata for an object of `component` (named NAME-SUFFIX, SUFFIX defaulting to the component)."""
    out: dict = {"name": name_of(deployment, suffix or component), "labels": labels(deployment, component)}
    if namespace is not None:
        out["namespace"] = namespace
    if annotations:
        out["annotations"] = annotations
    return out


def api_url(host: str, port: int) -> str:
    """The OpenAI API base URL on `host`:`port` (the port left out when it is HTTP's own, 80)."""
    return f"http://{host}{'' if port == 80 else f':{port}'}/v1"
