"""The gateway in the cluster: `llmnest gateway serve` as its own Deployment behind a LoadBalancer.

It routes to the engine's ClusterIP Service through a static upstreams file (`--upstreams`), kept in a
Secret because it carries the internal engine key; its database (PostgreSQL) and shared limits (Redis)
come from the user's Secrets as $LLMNEST_GATEWAY_DB and $LLMNEST_GATEWAY_REDIS, which `gateway serve`
reads when --db/--redis are not given. The Service is a LoadBalancer with ACK's SLB annotations
(`service.beta.kubernetes.io/alibaba-cloud-loadbalancer-address-type: internet|intranet`, ACK docs
"Use annotations to configure CLB instances").
"""

from __future__ import annotations

import json

from ...spec import DeploymentSpec
from .names import ENGINE_PORT, GATEWAY_PORT, labels, meta, name_of, selector
from .placement import KubernetesPlacement

UPSTREAMS_DIR = "/etc/llmnest"
UPSTREAMS_FILE = "upstreams.json"
URL_KEY = "url"
METRICS_SECRET_KEY = "token"
SLB = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-"


def engine_url(spec: DeploymentSpec, place: KubernetesPlacement) -> str:
    return f"http://{name_of(spec.name, 'engine')}.{place.namespace}.svc.cluster.local:{ENGINE_PORT}/v1"


def upstreams(spec: DeploymentSpec, place: KubernetesPlacement, engine_key: str, url: str | None = None) -> list[dict]:
    """The gateway's one upstream: the engine Service (kube-proxy spreads requests over its ready pods)."""
    entry = {"model": spec.served_model_name, "replica_id": name_of(spec.name, "engine"),
             "base_url": url or engine_url(spec, place)}
    return [{**entry, "internal_key": engine_key}] if spec.api_key_enabled else [entry]


def upstreams_secret(spec: DeploymentSpec, place: KubernetesPlacement, engine_key: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": meta(spec.name, "gateway", place.namespace, suffix="gateway-upstreams"),
            "stringData": {UPSTREAMS_FILE: json.dumps(upstreams(spec, place, engine_key))}}


def command() -> list[str]:
    return ["llmnest", "gateway", "serve", "--host", "0.0.0.0", "--port", str(GATEWAY_PORT),
            "--upstreams", f"{UPSTREAMS_DIR}/{UPSTREAMS_FILE}"]


def metrics_secret(spec: DeploymentSpec, place: KubernetesPlacement, metrics_key: str) -> dict:
    """The bearer token that reads the gateway's /metrics from outside its pod (Prometheus), as
    $LLMNEST_GATEWAY_ADMIN_KEY: beyond loopback the gateway answers /metrics only with it."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": meta(spec.name, "gateway", place.namespace, suffix="gateway-metrics"),
            "stringData": {METRICS_SECRET_KEY: metrics_key}}


def env(spec: DeploymentSpec, place: KubernetesPlacement) -> list[dict]:
    out = [{"name": "LLMNEST_GATEWAY_DB",
            "valueFrom": {"secretKeyRef": {"name": place.gateway_db_secret, "key": URL_KEY}}},
           {"name": "LLMNEST_GATEWAY_ADMIN_KEY",
            "valueFrom": {"secretKeyRef": {"name": name_of(spec.name, "gateway-metrics"), "key": METRICS_SECRET_KEY}}}]
    if place.gateway_redis_secret:
        out.append({"name": "LLMNEST_GATEWAY_REDIS",
                    "valueFrom": {"secretKeyRef": {"name": place.gateway_redis_secret, "key": URL_KEY}}})
    return out


def deployment(spec: DeploymentSpec, place: KubernetesPlacement) -> dict:
    http = {"path": "/health", "port": "http"}
    container = {
        "name": "gateway", "image": place.gateway_image, "command": command()[:1], "args": command()[1:],
        "env": env(spec, place),
        "ports": [{"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": http, "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 3},
        "livenessProbe": {"httpGet": http, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
        "volumeMounts": [{"name": "upstreams", "mountPath": UPSTREAMS_DIR, "readOnly": True}],
    }
    pod = {"containers": [container],
           "volumes": [{"name": "upstreams", "secret": {"secretName": name_of(spec.name, "gateway-upstreams")}}]}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(spec.name, "gateway", place.namespace),
            "spec": {"replicas": place.gateway_replicas, "selector": {"matchLabels": selector(spec.name, "gateway")},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                     "template": {"metadata": {"labels": labels(spec.name, "gateway")}, "spec": pod}}}


def service(spec: DeploymentSpec, place: KubernetesPlacement) -> dict:
    """LoadBalancer on the deployment's port (8080 unless `--port`; an SLB, internet or intranet), or ClusterIP
    with expose=cluster."""
    annotations = None
    if place.expose != "cluster":
        annotations = {f"{SLB}address-type": place.expose}
        if place.slb_spec:
            annotations[f"{SLB}spec"] = place.slb_spec
    kind = "ClusterIP" if place.expose == "cluster" else "LoadBalancer"
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": meta(spec.name, "gateway", place.namespace, annotations=annotations),
            "spec": {"type": kind, "selector": selector(spec.name, "gateway"),
                     "ports": [{"name": "http", "port": spec.port, "targetPort": "http", "protocol": "TCP"}]}}
