"""The engine workload: a Deployment (one node per replica) or a LeaderWorkerSet (two nodes per replica).

The container runs the argv `engines/` renders for the docker runtime (`python3 -m MODULE ARGS`, the
weights at /root/llm-model/<id>), listening on 0.0.0.0:8000. The internal key reaches vLLM as
`VLLM_API_KEY` and SGLang as `--api-key $(LLMNEST_ENGINE_KEY)`, both from the Secret through
`secretKeyRef` (Kubernetes expands `$(VAR)` in args), so no key value is in any manifest.

Sources: vLLM production-stack's Helm chart (helm/templates/deployment-vllm-multi.yaml: nvidia.com/gpu
requests = limits, a Memory emptyDir on /dev/shm, startup/liveness/readiness probes on /health);
kubernetes-sigs/lws docs/examples/vllm/GPU/lws.yaml (leader starts the Ray head, workers join at
$(LWS_LEADER_ADDRESS), RecreateGroupOnPodRestart) and docs/examples/sglang/lws.yaml (--nnodes
$(LWS_GROUP_SIZE) --node-rank $(LWS_WORKER_INDEX) --dist-init-addr $(LWS_LEADER_ADDRESS):20000);
KubeAI (surge one pod at a time, only when a GPU is free).
"""

from __future__ import annotations

import math
import shlex

from ...engines import render_launch
from ...engines.vllm import API_KEY_ENV
from ...runtimes.docker import image_of
from ...spec import DeploymentSpec
from . import weights
from .names import ENGINE_PORT, ROLE_LABEL, labels, meta, name_of, selector
from .placement import KubernetesPlacement

KEY_ENV = "LLMNEST_ENGINE_KEY"
KEY_SENTINEL = "@LLMNEST_ENGINE_KEY@"  # stands for the key while rendering; never left in a manifest
SECRET_KEY = "key"
RAY_PORT = 6379
SGLANG_DIST_PORT = 20000
PROBE_PERIOD_S = 10
SHM_LIMIT = "16Gi"  # the docker runtime's --shm-size 16g


def gpus_per_pod(spec: DeploymentSpec, place: KubernetesPlacement) -> int:
    per_replica = spec.tensor_parallel_size * spec.pipeline_parallel_size
    if per_replica % place.nodes:
        raise ValueError(f"tensor x pipeline parallel size {per_replica} does not split over {place.nodes} nodes")
    return per_replica // place.nodes if spec.device == "cuda" else 0


def key_env(secret: str) -> dict:
    return {"name": KEY_ENV, "valueFrom": {"secretKeyRef": {"name": secret, "key": SECRET_KEY}}}


def engine_argv(spec: DeploymentSpec, extra_args: dict[str, str] | None = None) -> tuple[list[str], list[dict]]:
    """The engine's `python3 -m MODULE ARGS` and its env entries (the key by reference to the Secret)."""
    on_pod = spec.model_copy(update={"host": "0.0.0.0", "port": ENGINE_PORT,
                                     "engine_args": {**spec.engine_args, **(extra_args or {})}})
    launch = render_launch(on_pod, weights.model_dir(spec), KEY_SENTINEL if spec.api_key_enabled else None)
    secret = name_of(spec.name, "engine-key")
    env: list[dict] = [key_env(secret)] if KEY_SENTINEL in launch.args else []
    args = [f"$({KEY_ENV})" if a == KEY_SENTINEL else a for a in launch.args]
    for key, value in launch.env.items():
        env.append({**key_env(secret), "name": key} if value == KEY_SENTINEL else {"name": key, "value": value})
    return ["python3", "-m", launch.module, *args], env


def _probes(place: KubernetesPlacement) -> dict:
    """Startup budget = the load time; only then liveness may restart (a loading model is never killed)."""
    http = {"path": "/health", "port": "http"}
    return {
        "startupProbe": {"httpGet": http, "periodSeconds": PROBE_PERIOD_S, "timeoutSeconds": 5,
                         "failureThreshold": math.ceil(place.load_timeout_s / PROBE_PERIOD_S)},
        "readinessProbe": {"httpGet": http, "periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"httpGet": http, "periodSeconds": PROBE_PERIOD_S, "timeoutSeconds": 10,
                          "failureThreshold": 3},
    }


def _resources(spec: DeploymentSpec, place: KubernetesPlacement) -> dict:
    gpus = gpus_per_pod(spec, place)
    if not gpus:
        return {"requests": {"cpu": "2", "memory": "8Gi"}}
    return {"requests": {"nvidia.com/gpu": str(gpus)}, "limits": {"nvidia.com/gpu": str(gpus)}}


def _container(spec: DeploymentSpec, place: KubernetesPlacement, name: str, command: list[str],
               env: list[dict], serving: bool) -> dict:
    container: dict = {"name": name, "image": image_of(spec), "command": command[:1], "args": command[1:],
                       "env": env, "resources": _resources(spec, place),
                       "volumeMounts": [weights.pod_mount(spec, place), {"name": "shm", "mountPath": "/dev/shm"}]}
    if serving:
        container["ports"] = [{"name": "http", "containerPort": ENGINE_PORT, "protocol": "TCP"}]
        container.update(_probes(place))
    return container


def _pod_spec(spec: DeploymentSpec, place: KubernetesPlacement, containers: list[dict]) -> dict:
    pod: dict = {"containers": containers,
                 "volumes": [weights.pod_volume(spec, place),
                             {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_LIMIT}}],
                 "terminationGracePeriodSeconds": 60}
    wait = weights.wait_container(spec, place, image_of(spec))  # the image the node pulls anyway
    if wait:
        pod["initContainers"] = [wait]
    if spec.device == "cuda":
        if place.gpu_type:
            pod["nodeSelector"] = {place.gpu_label: place.gpu_type}
        if place.gpu_taint:
            pod["tolerations"] = [{"key": place.gpu_taint, "operator": "Exists", "effect": "NoSchedule"}]
    return pod


def rollout(place: KubernetesPlacement) -> tuple[int, int]:
    """(maxSurge, maxUnavailable): surge one pod only with GPU headroom; else replace one in place."""
    return (1, 0) if place.gpu_headroom else (0, 1)


def workload(spec: DeploymentSpec, place: KubernetesPlacement) -> dict:
    """The engine Deployment, or with two nodes its LeaderWorkerSet."""
    return _deployment(spec, place) if place.nodes == 1 else _leader_worker_set(spec, place)


def _deployment(spec: DeploymentSpec, place: KubernetesPlacement) -> dict:
    command, env = engine_argv(spec)
    pod = _pod_spec(spec, place, [_container(spec, place, "engine", command, env, serving=True)])
    surge, unavailable = rollout(place)
    if place.replicas == 1 and not place.gpu_headroom:
        strategy: dict = {"type": "Recreate"}  # one replica, no spare GPU: the new pod needs the old one's GPUs
    else:
        strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(spec.name, "engine", place.namespace),
            "spec": {"replicas": place.replicas, "selector": {"matchLabels": selector(spec.name, "engine")},
                     "strategy": strategy, "progressDeadlineSeconds": place.load_timeout_s + 600,
                     "template": {"metadata": {"labels": labels(spec.name, "engine")}, "spec": pod}}}


def _leader_worker_set(spec: DeploymentSpec, place: KubernetesPlacement) -> dict:
    if spec.engine == "vllm":
        leader, leader_env = engine_argv(spec, {"distributed-executor-backend": "ray"})
        # `$$(` is Kubernetes' escape for a literal `$(`: the shell, not the kubelet, runs `ray status`
        wait_ray = ("ray start --head --port={port} && until [ \"$$(ray status 2>/dev/null | grep -c ' node_')\" "
                    "-ge \"$LWS_GROUP_SIZE\" ]; do echo waiting for the Ray workers; sleep 5; done && exec {engine}")
        leader = ["bash", "-c", wait_ray.format(port=RAY_PORT, engine=shlex.join(leader))]  # key: env only
        worker = ["ray", "start", f"--address=$(LWS_LEADER_ADDRESS):{RAY_PORT}", "--block"]
        worker_env = [e for e in leader_env if e["name"] != API_KEY_ENV]
    else:
        dist = {"nnodes": "$(LWS_GROUP_SIZE)", "node-rank": "$(LWS_WORKER_INDEX)",
                "dist-init-addr": f"$(LWS_LEADER_ADDRESS):{SGLANG_DIST_PORT}"}
        leader, leader_env = engine_argv(spec, dist)
        worker, worker_env = leader, leader_env
    role_labels = {"leader": {**labels(spec.name, "engine"), ROLE_LABEL: "leader"},
                   "worker": {**labels(spec.name, "engine"), ROLE_LABEL: "worker"}}
    leader_pod = _pod_spec(spec, place, [_container(spec, place, "engine", leader, leader_env, serving=True)])
    worker_pod = _pod_spec(spec, place, [_container(spec, place, "engine", worker, worker_env, serving=False)])
    surge, unavailable = rollout(place)
    return {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet",
            "metadata": meta(spec.name, "engine", place.namespace),
            "spec": {"replicas": place.replicas, "startupPolicy": "LeaderCreated",
                     "rolloutStrategy": {"type": "RollingUpdate", "rollingUpdateConfiguration":
                                         {"maxSurge": surge, "maxUnavailable": unavailable}},
                     "leaderWorkerTemplate": {
                         "size": place.nodes, "restartPolicy": "RecreateGroupOnPodRestart",
                         "leaderTemplate": {"metadata": {"labels": role_labels["leader"]}, "spec": leader_pod},
                         "workerTemplate": {"metadata": {"labels": role_labels["worker"]}, "spec": worker_pod}}}}


def service(spec: DeploymentSpec, place: KubernetesPlacement) -> dict:
    """ClusterIP Service on the engine pods that serve HTTP (the leaders of a LeaderWorkerSet)."""
    chosen = selector(spec.name, "engine") | ({ROLE_LABEL: "leader"} if place.nodes > 1 else {})
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(spec.name, "engine", place.namespace),
            "spec": {"type": "ClusterIP", "selector": chosen,
                     "ports": [{"name": "http", "port": ENGINE_PORT, "targetPort": "http", "protocol": "TCP"}]}}


def key_secret(spec: DeploymentSpec, place: KubernetesPlacement, engine_key: str) -> dict:
    """The internal key engine and gateway share (never a user's key: those live in the gateway's database)."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": meta(spec.name, "engine", place.namespace, suffix="engine-key"),
            "stringData": {SECRET_KEY: engine_key}}
