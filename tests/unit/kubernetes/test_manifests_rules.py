"""What the manifests say, beyond their schemas: names, selectors, quantities, the key, the choices."""

from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from llmnest.engines import render_launch
from llmnest.targets.kubernetes import checks, engine, manifests
from llmnest.targets.kubernetes.placement import KubernetesPlacement
from tests.unit.kubernetes.cases import ENGINE_KEY, PLACEMENTS, gpu_spec, placement, seed_cases

USER_KEY = "sk-llmnest-user-key-that-must-never-appear-0001"


def by(objs: list[dict], kind: str, name_part: str = "") -> dict:
    found = [o for o in objs if o["kind"] == kind and name_part in o["metadata"]["name"]]
    assert len(found) == 1, (kind, name_part, [o["metadata"]["name"] for o in objs])
    return found[0]


def engine_pod(objs: list[dict]) -> dict:
    workload = next(o for o in objs if o["kind"] in {"Deployment", "LeaderWorkerSet"} and o["metadata"]["name"].endswith("-engine"))
    spec = workload["spec"]
    return spec["template"]["spec"] if "template" in spec else spec["leaderWorkerTemplate"]["leaderTemplate"]["spec"]
METRICS_TOKEN = "sk-metrics-0123456789abcdef"


@pytest.mark.parametrize("kind", PLACEMENTS)
@pytest.mark.parametrize(("model", "nodes", "eng"), seed_cases())
def test_own_checks_pass_and_the_key_is_only_in_secrets(model: str, nodes: int, eng: str, kind: str):
    spec = gpu_spec(model, nodes, eng).model_copy(update={"env": {"HF_HUB_OFFLINE": "1"}})
    objs = manifests.render(spec, placement(kind, nodes), ENGINE_KEY, METRICS_TOKEN)
    assert checks.problems(objs) == []
    text = manifests.to_yaml(objs)
    assert USER_KEY not in text and "&id" not in text
    for obj in objs:
        metrics = obj["metadata"]["name"].endswith("-gateway-metrics")
        assert (ENGINE_KEY in manifests.to_yaml([obj])) == (obj["kind"] == "Secret" and not metrics), obj["metadata"]
        assert (METRICS_TOKEN in manifests.to_yaml([obj])) == (obj["kind"] == "Secret" and metrics), obj["metadata"]


def test_the_checks_catch_what_schemas_let_through():
    objs = manifests.render(gpu_spec("Qwen/QwQ-32B", 1, "vllm"), placement("hub-hpa", 1), ENGINE_KEY)
    broken = copy.deepcopy(objs)
    dep = by(broken, "Deployment", "-engine")
    dep["metadata"]["name"] = "QwQ_engine"
    dep["spec"]["selector"]["matchLabels"]["llmnest.io/deployment"] = "other"
    container = dep["spec"]["template"]["spec"]["containers"][0]
    container["resources"]["limits"]["nvidia.com/gpu"] = "one"
    container["startupProbe"]["httpGet"]["port"] = "metrics"
    by(broken, "Service", "-engine")["spec"]["selector"] = {"llmnest.io/deployment": "nobody"}
    by(broken, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] = "missing"
    found = "\n".join(checks.problems(broken))
    for part in ("not a DNS-1123", "does not match the pod labels", "'one' is not a quantity",
                 "requests 1 != limits one", "port 'metrics'", "matches no pod template", "missing, which is not"):
        assert part in found, part


def test_the_engine_runs_the_renderers_argv_with_the_key_by_reference():
    for eng in ("vllm", "sglang"):
        spec = gpu_spec("Qwen/QwQ-32B", 1, eng)
        container = engine_pod(manifests.render(spec, placement("hub-hpa", 1), ENGINE_KEY))["containers"][0]
        on_pod = spec.model_copy(update={"host": "0.0.0.0", "port": 8000})
        launch = render_launch(on_pod, "/root/llm-model/Qwen/QwQ-32B", "KEY")
        expected = ["-m", launch.module, *["$(LLMNEST_ENGINE_KEY)" if a == "KEY" else a for a in launch.args]]
        assert container["command"] == ["python3"] and container["args"] == expected
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
        key_var = "VLLM_API_KEY" if eng == "vllm" else "LLMNEST_ENGINE_KEY"
        assert refs == {key_var: {"name": "qwq-32b-engine-key", "key": "key"}}


def test_gpu_pods_request_their_gpus_shm_and_the_card():
    objs = manifests.render(gpu_spec("deepseek-ai/DeepSeek-R1", 2, "vllm"), placement("hub-hpa", 2), ENGINE_KEY)
    lws = by(objs, "LeaderWorkerSet")
    for part in ("leaderTemplate", "workerTemplate"):
        pod = lws["spec"]["leaderWorkerTemplate"][part]["spec"]
        res = pod["containers"][0]["resources"]
        assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"] == "8"
        assert pod["nodeSelector"] == {"aliyun.accelerator/nvidia_name": "NVIDIA-A10"}
        assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in pod["volumes"]
    leader = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]
    worker = lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]
    assert "ray start --head" in leader["args"][1] and "--distributed-executor-backend ray" in leader["args"][1]
    assert '"$$(ray status' in leader["args"][1]  # the kubelet turns $$( into $( and leaves it to the shell
    assert worker["command"] + worker["args"] == ["ray", "start", "--address=$(LWS_LEADER_ADDRESS):6379", "--block"]
    assert "startupProbe" in leader and "startupProbe" not in worker
    assert by(objs, "Service", "-engine")["spec"]["selector"]["llmnest.io/role"] == "leader"


def test_sglang_two_nodes_passes_rank_and_leader_from_lws():
    objs = manifests.render(gpu_spec("deepseek-ai/DeepSeek-R1", 2, "sglang"), placement("oss-keda", 2), ENGINE_KEY)
    lwt = by(objs, "LeaderWorkerSet")["spec"]["leaderWorkerTemplate"]
    for part in ("leaderTemplate", "workerTemplate"):
        args = lwt[part]["spec"]["containers"][0]["args"]
        assert args[args.index("--node-rank") + 1] == "$(LWS_WORKER_INDEX)"
        assert args[args.index("--dist-init-addr") + 1] == "$(LWS_LEADER_ADDRESS):20000"
    assert by(objs, "ScaledObject")["spec"]["scaleTargetRef"]["kind"] == "LeaderWorkerSet"


def test_the_startup_probe_budget_is_the_load_time():
    place = KubernetesPlacement(load_timeout_s=2400)
    container = engine_pod(manifests.render(gpu_spec("Qwen/QwQ-32B", 1, "vllm"), place, ENGINE_KEY))["containers"][0]
    probe = container["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 2400 and probe["httpGet"]["path"] == "/health"


@pytest.mark.parametrize(("replicas", "headroom", "expected"), [
    (1, False, {"type": "Recreate"}),
    (1, True, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}),
    (3, False, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}),
])
def test_surge_only_with_gpu_headroom(replicas: int, headroom: bool, expected: dict):
    place = KubernetesPlacement(replicas=replicas, gpu_headroom=headroom)
    objs = manifests.render(gpu_spec("Qwen/QwQ-32B", 1, "vllm"), place, ENGINE_KEY)
    assert by(objs, "Deployment", "-engine")["spec"]["strategy"] == expected
    assert any(o["kind"] == "PodDisruptionBudget" for o in objs) == (replicas > 1)


def test_autoscaling_on_the_queue_hpa_or_keda():
    spec = gpu_spec("Qwen/QwQ-32B", 1, "vllm")
    hpa = by(manifests.render(spec, KubernetesPlacement(autoscale_max=4), ENGINE_KEY), "HorizontalPodAutoscaler")
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "vllm:num_requests_waiting"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    keda = by(manifests.render(spec, KubernetesPlacement(autoscale_max=4, autoscaler="keda"), ENGINE_KEY),
              "ScaledObject")
    assert "vllm:num_requests_waiting" in keda["spec"]["triggers"][0]["metadata"]["query"]
    plain = manifests.render(spec, KubernetesPlacement(), ENGINE_KEY)
    assert not {"HorizontalPodAutoscaler", "ScaledObject", "PodDisruptionBudget"} & {o["kind"] for o in plain}


def test_weights_sources():
    spec = gpu_spec("Qwen/QwQ-32B", 1, "vllm")
    oss = manifests.render(spec, placement("oss-keda", 1), ENGINE_KEY)
    pv = by(oss, "PersistentVolume")
    assert pv["spec"]["csi"]["driver"] == "ossplugin.csi.alibabacloud.com" and pv["spec"]["accessModes"] == ["ReadOnlyMany"]
    assert pv["spec"]["csi"]["volumeAttributes"]["bucket"] == "team-models" and "namespace" not in pv["metadata"]
    assert by(oss, "PersistentVolumeClaim")["spec"]["volumeName"] == pv["metadata"]["name"]
    assert "initContainers" not in engine_pod(oss)
    hub = manifests.render(spec, placement("hub-hpa", 1), ENGINE_KEY)
    assert by(hub, "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteMany"]
    job = by(hub, "Job")["spec"]["template"]["spec"]["containers"][0]
    assert "modelscope download --model Qwen/QwQ-32B --local_dir /root/llm-model/Qwen/QwQ-32B" in job["command"][2]
    assert engine_pod(hub)["initContainers"][0]["name"] == "wait-weights"
    claim = manifests.render(spec, placement("claim-single", 1), ENGINE_KEY)
    assert not {"PersistentVolume", "PersistentVolumeClaim", "Job"} & {o["kind"] for o in claim}
    vol = engine_pod(claim)["volumes"][0]
    assert vol["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}


def test_gateway_exposure_and_its_secrets():
    spec = gpu_spec("Qwen/QwQ-32B", 1, "vllm")
    objs = manifests.render(spec, placement("hub-hpa", 1), ENGINE_KEY)
    svc = by(objs, "Service", "-gateway")
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["metadata"]["annotations"] == {"service.beta.kubernetes.io/alibaba-cloud-loadbalancer-address-type": "internet"}
    gw = by(objs, "Deployment", "-gateway")["spec"]["template"]["spec"]["containers"][0]
    assert gw["command"] + gw["args"] == ["llmnest", "gateway", "serve", "--host", "0.0.0.0", "--port", "8080",
                                          "--upstreams", "/etc/llmnest/upstreams.json"]
    assert gw["env"] == [{"name": "LLMNEST_GATEWAY_DB", "valueFrom": {"secretKeyRef": {"name": "llmnest-gateway-db",
                                                                                          "key": "url"}}},
                         {"name": "LLMNEST_GATEWAY_ADMIN_KEY",  # /metrics beyond loopback (Prometheus) with this token
                          "valueFrom": {"secretKeyRef": {"name": "qwq-32b-gateway-metrics", "key": "token"}}}]
    assert by(objs, "Secret", "gateway-metrics")["stringData"] == {"token": manifests.METRICS_PLACEHOLDER}
    upstream = by(objs, "Secret", "gateway-upstreams")["stringData"]["upstreams.json"]
    assert "http://qwq-32b-engine.llm.svc.cluster.local:8000/v1" in upstream
    cluster = manifests.render(spec, placement("claim-single", 1), ENGINE_KEY)
    assert by(cluster, "Service", "-gateway")["spec"]["type"] == "ClusterIP"


@pytest.mark.parametrize(("fields", "message"), [
    ({"weights": "s3://bucket"}, "use hub, oss://BUCKET/PATH or pvc:CLAIM"),
    ({"weights": "oss://bucket/x"}, "need --oss-endpoint"),
    ({"namespace": "Team_A"}, "not a DNS-1123 label"),
    ({"replicas": 3, "autoscale_max": 2}, "below replicas"),
    ({"gateway_replicas": 2}, "through Redis"),
])
def test_bad_placements_are_refused_with_one_line(fields: dict, message: str):
    with pytest.raises(ValidationError, match=message):
        KubernetesPlacement(**fields)


def test_render_refuses_what_cannot_work():
    spec = gpu_spec("Qwen/QwQ-32B", 1, "vllm")
    with pytest.raises(ValueError, match="too long"):
        manifests.render(spec.model_copy(update={"name": "x" * 50}), KubernetesPlacement(), ENGINE_KEY)
    with pytest.raises(ValueError, match="internal engine key"):
        manifests.render(spec, KubernetesPlacement(), None)
    odd = spec.model_copy(update={"tensor_parallel_size": 3, "pipeline_parallel_size": 1})
    with pytest.raises(ValueError, match="does not split over 2 nodes"):
        engine.gpus_per_pod(odd, KubernetesPlacement(nodes=2))
