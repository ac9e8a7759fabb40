"""`--target kubernetes` through the lifecycle, against the in-process API stand-in (api_standin.py).

No API server can run here: the stand-in answers lightkube's real requests (server-side apply, lists
with label selectors, watch, logs, scale, delete, the service proxy), and `Controllers` below plays
the part of the cluster's controllers the stand-in lacks (rollout status, pods on nodes, Events), as
each test scripts it. What a real cluster adds (scheduling, kubelet probes, admission) is not here;
the manifests' schemas are held against Kubernetes' OpenAPI in test_manifests_schema.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from llmnest import lifecycle, state
from llmnest.spec_builder import UpRequest
from llmnest.errors import BadInput, Conflict, LlmnestError
from llmnest.targets import Context, get
from llmnest.targets.kubernetes import manifests
from llmnest.targets.kubernetes import target as k8s_target
from llmnest.targets.kubernetes.placement import placement_of
from tests.unit.kubernetes.api_standin import ApiStandIn
from tests.unit.kubernetes.test_client import kubeconfig

NS = "llm"
GPU_LABEL = "aliyun.accelerator/nvidia_name"


def node(name: str, gpus: int, card: str | None = "NVIDIA-A10") -> dict:
    labels = {"kubernetes.io/hostname": name, **({GPU_LABEL: card} if card else {})}
    taints = [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}] if gpus else []
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
            "spec": {"taints": taints},
            "status": {"allocatable": {"cpu": "32", "memory": "128Gi", "nvidia.com/gpu": str(gpus)}}}


def gpu_pod(name: str, namespace: str, node_name: str, gpus: int, labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": {"nodeName": node_name, "containers": [{"name": "engine", "image": "x", "resources": {
                "limits": {"nvidia.com/gpu": str(gpus)}, "requests": {"nvidia.com/gpu": str(gpus)}}}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "engine", "image": "x", "imageID": "", "ready": True, "restartCount": 0}]}}


def event(name: str, involved: str, reason: str, message: str) -> dict:
    return {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": NS},
            "involvedObject": {"kind": "Pod", "name": involved, "namespace": NS}, "reason": reason,
            "message": message, "type": "Warning"}


def ack_cluster(api: ApiStandIn, gpu_nodes: int = 2, gpus: int = 4) -> None:
    """An ACK-like cluster: A10 nodes with the GPU taint, a CPU node, NAS class, OSS driver, LWS, metrics."""
    for i in range(gpu_nodes):
        api.put("nodes", node(f"gpu-{i}", gpus))
    api.put("nodes", node("cpu-0", 0, None))
    api.put("storageclasses", {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                               "metadata": {"name": "alibabacloud-cnfs-nas", "annotations": {
                                   "storageclass.kubernetes.io/is-default-class": "true"}},
                               "provisioner": "nasplugin.csi.alibabacloud.com"})
    api.put("csidrivers", {"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver",
                           "metadata": {"name": "ossplugin.csi.alibabacloud.com"}, "spec": {}})
    api.put("customresourcedefinitions", {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "leaderworkersets.leaderworkerset.x-k8s.io"},
        "spec": {"group": "leaderworkerset.x-k8s.io", "scope": "Namespaced", "versions": [],
                 "names": {"plural": "leaderworkersets", "kind": "LeaderWorkerSet"}}})
    api.put("apiservices", {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                            "metadata": {"name": "v1beta1.custom.metrics.k8s.io"},
                            "spec": {"group": "custom.metrics.k8s.io", "version": "v1beta1",
                                     "groupPriorityMinimum": 100, "versionPriority": 100},
                            "status": {"conditions": [{"type": "Available", "status": "True"}]}})
    api.put("secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "llmnest-gateway-db", "namespace": NS},
                        "stringData": {"url": "postgresql://gw@db/gw"}})


class Controllers:
    """The cluster's controllers as far as a test needs them: each engine workload whose pod template
    `healthy(template)` accepts gets ready pods on GPU nodes and a rolled-out status; the others get
    `failing(name)` Events and no progress. A deleted workload's pods go after `linger` seconds."""

    def __init__(self, api: ApiStandIn, healthy: Callable[[dict], bool] = lambda _t: True,
                 failing: Callable[[str], list[dict]] = lambda _n: [], linger: float = 0.3) -> None:
        self.api, self.healthy, self.failing, self.linger = api, healthy, failing, linger
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Controllers:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)

    def _run(self) -> None:
        gone_since: dict[str, float] = {}
        while not self.stop.is_set():
            with self.api.lock:
                objects = dict(self.api.objects)
            for (plural, ns, name), obj in objects.items():
                if plural == "deployments":
                    self._roll(ns, name, obj)
            engines = {o["metadata"]["labels"].get("llmnest.io/deployment") for (p, _, _), o in objects.items()
                       if p in {"deployments", "leaderworkersets"} and o["metadata"]["name"].endswith("-engine")}
            for (plural, ns, name), obj in objects.items():
                owner = obj["metadata"].get("labels", {}).get("llmnest.io/deployment")
                if plural == "pods" and owner and owner not in engines:
                    if time.monotonic() - gone_since.setdefault(name, time.monotonic()) > self.linger:
                        self.api.remove("pods", ns, name)
            time.sleep(0.05)

    def _roll(self, ns: str, name: str, obj: dict) -> None:
        spec, gen = obj["spec"], obj["metadata"]["generation"]
        want = spec.get("replicas", 1)
        template = spec["template"]
        if not self.healthy(template):
            for ev in self.failing(name):
                if not self.api.get("events", NS, ev["metadata"]["name"]):
                    self.api.put("events", ev)
            return
        done = {"observedGeneration": gen, "replicas": want, "updatedReplicas": want, "readyReplicas": want,
                "availableReplicas": want}
        if obj.get("status") != done:
            if name.endswith("-engine"):
                for i in range(want):
                    gpus = int(template["spec"]["containers"][0]["resources"].get("limits", {}).get("nvidia.com/gpu", 0))
                    pod = gpu_pod(f"{name}-{gen}-{i}", ns, f"gpu-{i % 2}", gpus, template["metadata"]["labels"])
                    if not self.api.get("pods", ns, pod["metadata"]["name"]):
                        self.api.put("pods", pod)
            if name.endswith("-gateway"):
                for i in range(want):
                    if not self.api.get("pods", ns, f"{name}-{gen}-{i}"):
                        self.api.put("pods", ready_pod(f"{name}-{gen}-{i}", ns, template))
            if name.endswith(("-engine", "-gateway")):
                for (plural, pns, pname) in list(self.api.objects):  # the old generation's pods go
                    if plural == "pods" and pname.startswith(f"{name}-") and not pname.startswith(f"{name}-{gen}-"):
                        self.api.remove("pods", pns, pname)
            self.api.set_status("deployments", ns, name, done)


def ready_pod(name: str, namespace: str, template: dict) -> dict:
    """A pod of `template` Running and Ready (no GPU: the gateway's)."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": template["metadata"]["labels"]},
            "spec": {"containers": [{"name": c["name"], "image": c["image"]} for c in template["spec"]["containers"]]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}


def scripted_gateway_pod(container: str, command: list[str], stdin: Callable[[], bytes]) -> tuple[int, str, str]:
    """What exec into a gateway pod answers, scripted as far as these tests need it (`keys create` and `keys revoke`
    succeed, the chat `up` checks is answered): test_channel.py runs the real CLI and a real gateway instead."""
    if command[:3] == ["llmnest", "keys", "create"]:
        return 0, json.dumps({"name": command[-1], "prefix": command[command.index("--key-prefix") + 1]}), ""
    if command[:3] == ["llmnest", "keys", "revoke"]:
        return 0, json.dumps({"name": command[-1], "revoked": "2026-01-01T00:00:00Z"}), ""
    if command[0] == "python3" and stdin().startswith(b"sk-"):
        return 0, '200\n{"choices": [{"message": {"role": "assistant", "content": "Hi"}}]}\n', ""
    return 2, "", f"error: not scripted: {command[:3]}\n"


def serving(api: ApiStandIn, deployment: str) -> None:
    """The engine and the gateway answering through their Services, as their pods would, and exec into the
    gateway's pods answered by `scripted_gateway_pod`."""
    api.serve(NS, f"{deployment}-engine", lambda path: (200, "") if path == "/health" else (401, "key"))
    api.serve(NS, f"{deployment}-gateway", lambda path: (200, '{"status":"ok"}') if path == "/health"
              else (401, '{"error":{"code":"invalid_api_key"}}'))
    api.on_exec(NS, f"{deployment}-gateway-", scripted_gateway_pod)


@pytest.fixture
def api(tmp_path, monkeypatch) -> Iterator[ApiStandIn]:
    monkeypatch.setenv("LLMNEST_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(k8s_target, "POLL_S", 0.05)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    with ApiStandIn() as stand_in:
        config = tmp_path / "kubeconfig"
        config.write_text(json.dumps(kubeconfig(stand_in.url)))
        monkeypatch.setenv("KUBECONFIG", str(config))
        yield stand_in


def request(model: str = "Qwen/QwQ-32B", **options) -> UpRequest:
    return UpRequest(model=model, target="kubernetes", options={"namespace": NS, "expose": "cluster", **options})


def ctx(said: list[str] | None = None, timeout: float = 10) -> Context:
    out = said if said is not None else []
    return Context(say=out.append, on_phase=lambda _p, _l: None, timeout=timeout)


def test_up_reads_the_cluster_applies_and_waits_for_both_services(api: ApiStandIn):
    ack_cluster(api)
    serving(api, "qwq-32b")
    with Controllers(api):
        created = lifecycle.up(request(replicas=2), ctx())
    spec = created.deployment.spec
    place = placement_of(spec)
    assert (spec.target, place.gpu_type, spec.tensor_parallel_size) == ("kubernetes", "NVIDIA-A10", 4)  # from the pool
    assert created.deployment.status == "ready" and created.api_key.startswith("sk-")
    assert state.api_key("qwq-32b") == created.api_key  # printed again by `redeploy`
    made, chat = [c for c in api.exec_calls if c[0].startswith("qwq-32b-gateway-")]
    assert made[1] == "gateway" and made[2][:3] == ["llmnest", "keys", "create"] and created.api_key not in made[2]
    assert made[2][-3:] == ["--json", "--", "qwq-32b"]
    assert made[2][made[2].index("--models") + 1] == spec.served_model_name
    assert chat[2][0] == "python3" and chat[2][-2:] == [f"http://qwq-32b-gateway.{NS}.svc.cluster.local:8080/v1",
                                                       spec.served_model_name]
    assert created.extra["key"].startswith(f"qwq-32b, for {spec.served_model_name} only")
    engine = api.get("deployments", NS, "qwq-32b-engine")
    assert engine["metadata"]["managedFields"] == [{"manager": "llmnest", "operation": "Apply"}]
    assert engine["spec"]["template"]["spec"]["nodeSelector"] == {GPU_LABEL: "NVIDIA-A10"}
    # 2 nodes x 4 A10, two pods of 4 take them all: no headroom, so rollouts replace in place
    assert engine["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert "replaced in place" in created.extra["rollout"]
    patches = {r[2] for r in api.requests if r[0] == "PATCH"}
    assert patches == {"application/apply-patch+yaml"}
    proxied = {r[1] for r in api.requests if "/proxy/" in r[1]}
    assert f"/api/v1/namespaces/{NS}/services/qwq-32b-gateway:http/proxy/v1/models" in proxied
    secret = api.get("secrets", NS, "qwq-32b-engine-key")
    assert secret["stringData"]["key"] == k8s_target._engine_key("qwq-32b")
    row = lifecycle.rows()[0]
    assert (row["where"], row["base_url"]) == (f"k8s/{NS}", f"http://qwq-32b-gateway.{NS}.svc.cluster.local:8080/v1")


def test_up_refuses_in_one_line_when_no_gpu_is_free(api: ApiStandIn):
    ack_cluster(api, gpu_nodes=1)
    api.put("pods", gpu_pod("training-0", "research", "gpu-0", 2))
    with pytest.raises(Conflict) as exc:
        lifecycle.up(request(gpu_type="NVIDIA-A10"), ctx())
    assert "need 4 free nvidia.com/gpu each on one node, only 0 fit now" in str(exc.value)
    assert "\n" not in str(exc.value) and "NVIDIA-A10: 1 node(s) x 4 GPU, 2 free" in str(exc.value)
    assert not [r for r in api.requests if r[0] == "PATCH"] and state.names() == []


@pytest.mark.parametrize(("options", "missing"), [
    ({"nodes": 2}, "no LeaderWorkerSet CRD"),
    ({"weights": "oss://models/qwq", "oss_endpoint": "oss-cn-hangzhou-internal.aliyuncs.com"}, "OSS CSI driver"),
    ({"storage_class": "alicloud-disk-essd"}, "storage class 'alicloud-disk-essd' does not exist"),
    ({"autoscale_max": 3}, "custom metrics API"),
    ({"gateway_redis_secret": "redis"}, "Secret 'redis' is not in namespace llm"),
])
def test_preflight_names_what_the_cluster_lacks(api: ApiStandIn, options: dict, missing: str):
    for i in range(2):
        api.put("nodes", node(f"gpu-{i}", 8, "NVIDIA-H20"))
    api.put("storageclasses", {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                               "metadata": {"name": "nas"}, "provisioner": "nasplugin.csi.alibabacloud.com"})
    api.put("secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "llmnest-gateway-db", "namespace": NS}})
    model = "deepseek-ai/DeepSeek-R1" if options.get("nodes") == 2 else "Qwen/QwQ-32B"
    base = {} if "storage_class" in options or "weights" in options else {"storage_class": "nas"}
    with pytest.raises(Conflict, match=missing):
        lifecycle.up(request(model, **base, **options), ctx())


def test_a_failed_mount_is_said_as_it_happens_and_up_cleans_up_keeping_the_weights(api: ApiStandIn):
    ack_cluster(api)
    mount = event("m1", "qwq-32b-engine-1-0", "FailedMount",
                  "MountVolume.SetUp failed for volume \"weights\" : rpc error: nas mount timed out")
    said: list[str] = []
    with Controllers(api, healthy=lambda t: "gateway" in t["metadata"]["labels"]["app.kubernetes.io/component"],
                     failing=lambda name: [mount] if name.endswith("-engine") else []):
        with pytest.raises(LlmnestError, match="did not roll out within 1 s; last: pod qwq-32b-engine-1-0 cannot mount"):
            lifecycle.up(request(), ctx(said, timeout=1))
    assert any("cannot mount its volume" in s and "nas mount timed out" in s for s in said)
    assert state.names() == []
    assert api.get("deployments", NS, "qwq-32b-engine") is None and api.get("secrets", NS, "qwq-32b-engine-key") is None
    assert api.get("persistentvolumeclaims", NS, "qwq-32b-weights")  # the download is not lost


def test_redeploy_that_fails_rolls_back_to_the_last_good_spec(api: ApiStandIn):
    ack_cluster(api, gpus=8)
    serving(api, "qwq-32b")

    def good(template: dict) -> bool:
        return "--max-model-len=4096" not in " ".join(template["spec"]["containers"][0].get("args", [])).replace(
            "--max-model-len 4096", "--max-model-len=4096")

    unschedulable = event("s1", "qwq-32b-engine-2-0", "FailedScheduling",
                          "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
    said: list[str] = []
    with Controllers(api, healthy=good, failing=lambda name: [unschedulable]):
        lifecycle.up(request(), ctx())
        before = api.get("deployments", NS, "qwq-32b-engine")["spec"]["template"]
        with pytest.raises(LlmnestError, match="the previous spec is back and answers"):
            lifecycle.redeploy("qwq-32b", {"max_model_len": "4096"}, ctx(said, timeout=1.5))
        after = api.get("deployments", NS, "qwq-32b-engine")
        assert after["spec"]["template"] == before and after["status"]["observedGeneration"] == after["metadata"]["generation"]
    assert any("no node has enough free nvidia.com/gpu" in s for s in said)
    assert any("rolling back to the last good spec" in s for s in said)
    assert state.get("qwq-32b").spec.max_model_len != 4096


def test_redeploy_surges_only_with_gpus_free_and_says_so(api: ApiStandIn):
    ack_cluster(api, gpus=8)
    serving(api, "qwq-32b")
    said: list[str] = []
    with Controllers(api):
        lifecycle.up(request(gpu_type="NVIDIA-A10"), ctx())
        created = lifecycle.redeploy("qwq-32b", {"enable-prefix-caching": "true"}, ctx(said))
    assert "one new pod starts beside the old ones" in created.extra["replaced"] and said[0] == created.extra["replaced"]
    engine = api.get("deployments", NS, "qwq-32b-engine")
    assert engine["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert "--enable-prefix-caching" in engine["spec"]["template"]["spec"]["containers"][0]["args"]


def test_scale_checks_the_gpus_then_uses_the_scale_subresource(api: ApiStandIn):
    ack_cluster(api)
    serving(api, "qwq-32b")
    with Controllers(api):
        lifecycle.up(request(), ctx())
        assert lifecycle.scale("qwq-32b", 2, ctx()) == "qwq-32b: 1 -> 2 replica(s)"
        with pytest.raises(Conflict, match="1 more replica.* only 0 fit now"):
            lifecycle.scale("qwq-32b", 3, ctx())
    assert [r[1] for r in api.requests if r[1].endswith("/scale")] == [
        f"/apis/apps/v1/namespaces/{NS}/deployments/qwq-32b-engine/scale"]
    assert placement_of(state.get("qwq-32b").spec).replicas == 2


def test_down_removes_the_workload_first_waits_for_the_gpus_and_keeps_the_weights(api: ApiStandIn):
    ack_cluster(api)
    serving(api, "qwq-32b")
    said: list[str] = []
    with Controllers(api, linger=0.5):
        lifecycle.up(request(), ctx())
        assert api.get("pods", NS, "qwq-32b-engine-1-0")
        line = lifecycle.down("qwq-32b", ctx(said))
    deletes = [r[1].rsplit("/", 2)[-2:] for r in api.requests if r[0] == "DELETE"]
    assert deletes[0] == ["deployments", "qwq-32b-engine"]
    assert any("free their GPUs" in s for s in said)
    assert api.get("persistentvolumeclaims", NS, "qwq-32b-weights") and "weights volume qwq-32b-weights stays" in line
    assert api.get("deployments", NS, "qwq-32b-gateway") is None and state.names() == []


def test_down_with_the_weights_removes_them_too(api: ApiStandIn):
    ack_cluster(api)
    serving(api, "qwq-32b")
    with Controllers(api):
        lifecycle.up(request(), ctx())
        dep = state.get("qwq-32b")
        lifecycle.down("qwq-32b", Context(delete_weights=True))
    assert api.get("persistentvolumeclaims", NS, "qwq-32b-weights") is None
    assert api.get("jobs", NS, "qwq-32b-fetch") is None


def test_logs_status_restart_and_show(api: ApiStandIn):
    ack_cluster(api)
    serving(api, "qwq-32b")
    with Controllers(api):
        lifecycle.up(request(replicas=2), ctx())
        api.log("qwq-32b-engine-1-1", "engine", "INFO loaded", "INFO serving")
        assert list(lifecycle.logs("qwq-32b", tail=1, follow=False, replica=1)) == ["INFO serving"]
        with pytest.raises(BadInput, match="has 2 engine pod.*--replica 0 to 1"):
            list(lifecycle.logs("qwq-32b", tail=1, follow=False, replica=2))
        status = lifecycle.status("qwq-32b")
        assert (status["status"], status["ready_replicas"], len(status["pods"])) == ("ready", 2, 2)
        lifecycle.restart("qwq-32b", ctx())
        template = api.get("deployments", NS, "qwq-32b-engine")["spec"]["template"]
        assert "llmnest.io/restarted-at" in template["metadata"]["annotations"]
        assert not api.get("deployments", NS, "qwq-32b-gateway")["spec"]["template"]["metadata"].get("annotations")
    text = lifecycle.show("qwq-32b", "k8s")
    assert k8s_target._engine_key("qwq-32b") not in text and "REPLACE-WITH-AN-INTERNAL-KEY" in text
    import yaml
    kinds = [d["kind"] for d in yaml.safe_load_all(text)]
    assert kinds[:2] == ["Secret", "Secret"] and "Deployment" in kinds and kinds.count("Service") == 2


def test_dry_run_without_a_cluster_renders_from_the_options(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMNEST_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    result = lifecycle.dry_run(request("deepseek-ai/DeepSeek-R1", nodes=2, gpu_type="NVIDIA-H20"),
                               Context(dry_run=True))
    assert result["preflight"][0]["ok"] is None and "not read" in result["preflight"][0]["detail"]
    assert [o["kind"] for o in result["manifests"]].count("LeaderWorkerSet") == 1
    with pytest.raises(BadInput, match="pass --gpu-type"):
        lifecycle.dry_run(request(), Context(dry_run=True))


def test_options_of_the_target_are_checked_and_keys_stay_out(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMNEST_HOME", str(tmp_path / "home"))
    with pytest.raises(BadInput, match="^autoscale_max 1 is below replicas 2$"):
        get("kubernetes").resolve(request(gpu_type="NVIDIA-A10", replicas=2, autoscale_max=1))
    with pytest.raises(BadInput, match="--gpu-type 'RTX-9090' is no GPU llmnest knows"):
        get("kubernetes").resolve(request(gpu_type="RTX-9090"))
    with pytest.raises(BadInput, match="always checks keys: drop --no-api-key"):
        get("kubernetes").resolve(UpRequest(model="Qwen/QwQ-32B", target="kubernetes", no_api_key=True))
    with pytest.raises(BadInput, match="--api-key must be 8 to 256 printable characters without spaces"):
        get("kubernetes").resolve(UpRequest(model="Qwen/QwQ-32B", target="kubernetes", api_key="sk-with space"))
    mine = get("kubernetes").resolve(UpRequest(model="Qwen/QwQ-32B", target="kubernetes", api_key="sk-mine-12345",
                                               options={"gpu_type": "NVIDIA-A10"}))
    assert mine.api_key == "sk-mine-12345" and "sk-mine-12345" not in manifests.to_yaml(
        manifests.render(mine.spec, placement_of(mine.spec), manifests.KEY_PLACEHOLDER))
    with pytest.raises(BadInput, match="--region is for --target aliyun"):
        lifecycle.up(UpRequest(model="Qwen/QwQ-32B", target="kubernetes", options={"region": "cn-hangzhou"}), ctx())


def test_an_unreachable_cluster_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMNEST_HOME", str(tmp_path / "home"))
    config = tmp_path / "kubeconfig"
    config.write_text(json.dumps(kubeconfig("http://127.0.0.1:9")))  # nothing listens on the discard port
    monkeypatch.setenv("KUBECONFIG", str(config))
    with pytest.raises(Conflict, match="cannot reach the cluster's API server at http://127.0.0.1:9"):
        lifecycle.up(request(gpu_type="NVIDIA-A10"), ctx())
    result = lifecycle.dry_run(request(gpu_type="NVIDIA-A10"), Context(dry_run=True))
    assert result["preflight"][0]["ok"] is None and "cannot reach" in result["preflight"][0]["detail"]


@pytest.mark.parametrize(("model", "nodes", "engine"), [
    ("Qwen/QwQ-32B", 1, "vllm"), ("Qwen/QwQ-32B", 1, "sglang"),
    ("deepseek-ai/DeepSeek-R1", 2, "vllm"), ("deepseek-ai/DeepSeek-R1", 2, "sglang")])
def test_dry_run_is_strictly_schema_valid_and_holds_no_key(tmp_path, monkeypatch, model: str, nodes: int, engine: str):
    from llmnest.targets.kubernetes import checks
    from tests.unit.kubernetes.test_manifests_schema import VERSIONS, validate

    monkeypatch.setenv("LLMNEST_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    req = UpRequest(model=model, engine=engine, target="kubernetes",
                    options={"namespace": NS, "nodes": nodes, "gpu_type": "NVIDIA-H20", "replicas": 2})
    result = lifecycle.dry_run(req, Context(dry_run=True))
    assert checks.problems(result["manifests"]) == []
    for version in VERSIONS:
        for obj in result["manifests"]:
            validate(obj, version)
    assert "sk-" not in result["yaml"]


def test_redeploy_set_replicas_changes_the_placement_and_the_workload(api: ApiStandIn):
    ack_cluster(api, gpus=8)
    serving(api, "qwq-32b")
    with Controllers(api):
        lifecycle.up(request(gpu_type="NVIDIA-A10"), ctx())
        lifecycle.redeploy("qwq-32b", {"replicas": "2"}, ctx())
        with pytest.raises(BadInput, match="at least 1 replica"):
            lifecycle.scale("qwq-32b", 0, ctx())
    spec = state.get("qwq-32b").spec
    assert (spec.replicas, placement_of(spec).replicas) == (2, 2)
    assert api.get("deployments", NS, "qwq-32b-engine")["spec"]["replicas"] == 2
    assert api.get("poddisruptionbudgets", NS, "qwq-32b-engine")  # several replicas: a PDB


def test_redeploy_sets_placement_fields_resizes_for_a_new_card_and_prunes_what_is_no_longer_rendered(api: ApiStandIn):
    ack_cluster(api, gpus=8)
    for i in range(2):  # a second pool, of bigger cards
        api.put("nodes", node(f"big-{i}", 8, "NVIDIA-A100-SXM4-80GB"))
    serving(api, "qwq-32b")
    said: list[str] = []
    with Controllers(api):
        lifecycle.up(request(gpu_type="NVIDIA-A10", replicas=2), ctx())
        assert api.get("poddisruptionbudgets", NS, "qwq-32b-engine")
        before = state.get("qwq-32b").spec.tensor_parallel_size
        lifecycle.redeploy("qwq-32b", {"gpu_type": "NVIDIA-A100-SXM4-80GB", "replicas": "1",
                                       "placement.load_timeout_s": "900"}, ctx(said))
    spec = state.get("qwq-32b").spec
    place = placement_of(spec)
    assert (place.gpu_type, place.replicas, spec.replicas, place.load_timeout_s) == ("NVIDIA-A100-SXM4-80GB", 1, 1, 900)
    assert before == 4 and spec.tensor_parallel_size == 1  # QwQ-32B: 4 x A10 (24 GB), 1 x A100-80G
    pod = api.get("deployments", NS, "qwq-32b-engine")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {GPU_LABEL: "NVIDIA-A100-SXM4-80GB"}
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert api.get("poddisruptionbudgets", NS, "qwq-32b-engine") is None  # one replica: the PDB went


@pytest.mark.parametrize("sets, field", [({"namespace": "other"}, "namespace"), ({"nodes": "2"}, "nodes"),
                                         ({"placement.weights": "pvc:mine"}, "weights"),
                                         ({"context": "prod"}, "context")])
def test_redeploy_refuses_placement_fields_that_name_other_objects(api: ApiStandIn, sets: dict, field: str):
    ack_cluster(api, gpus=8)
    serving(api, "qwq-32b")
    with Controllers(api):
        lifecycle.up(request(gpu_type="NVIDIA-A10"), ctx())
        applied = len(api.requests)
        with pytest.raises(BadInput, match=f"so {field} cannot change"):
            lifecycle.redeploy("qwq-32b", sets, ctx())
    assert not [r for r in api.requests[applied:] if r[0] in {"PATCH", "DELETE"}]
    assert placement_of(state.get("qwq-32b").spec).namespace == NS


def test_set_names_a_placement_field_or_is_refused_naming_them(api: ApiStandIn):
    ack_cluster(api, gpus=8)
    serving(api, "qwq-32b")
    with Controllers(api):
        lifecycle.up(request(gpu_type="NVIDIA-A10"), ctx())
        with pytest.raises(BadInput, match="placement has .*autoscale_max"):
            lifecycle.redeploy("qwq-32b", {"placement.gpu_kind": "x"}, ctx())
        with pytest.raises(BadInput, match="invalid placement: autoscale_max"):
            lifecycle.redeploy("qwq-32b", {"autoscale_max": "0"}, ctx())


@pytest.mark.parametrize("given, flag", [({"runtime": "process"}, "--runtime"), ({"host": "0.0.0.0"}, "--host")])
def test_flags_for_this_machine_are_refused_not_ignored(tmp_path, monkeypatch, given: dict, flag: str):
    monkeypatch.setenv("LLMNEST_HOME", str(tmp_path / "home"))
    req = UpRequest(model="Qwen/QwQ-32B", target="kubernetes", options={"gpu_type": "NVIDIA-A10"}, **given)
    with pytest.raises(BadInput, match=f"^{flag} is for this machine: in a cluster"):
        get("kubernetes").resolve(req)


def test_the_gateway_service_listens_on_the_deployment_port(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMNEST_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    for port, want in ((None, 8080), (9000, 9000)):
        req = UpRequest(model="Qwen/QwQ-32B", target="kubernetes", port=port,
                        options={"gpu_type": "NVIDIA-A10", "namespace": NS})
        objects = lifecycle.dry_run(req, Context(dry_run=True))["manifests"]
        service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "qwq-32b-gateway")
        assert service["spec"]["ports"] == [{"name": "http", "port": want, "targetPort": "http", "protocol": "TCP"}]


def test_without_gpu_type_up_picks_the_pool_the_model_fits_not_the_one_with_most_free(api: ApiStandIn):
    ack_cluster(api, gpu_nodes=2, gpus=8)  # 16 A10 free: the most, but 8 x 24 GB cannot hold Qwen3-235B-A22B
    api.put("nodes", node("big-0", 8, "NVIDIA-A100-SXM4-80GB"))
    result = lifecycle.dry_run(request("Qwen/Qwen3-235B-A22B"), Context(dry_run=True))
    assert result["spec"]["placement"]["gpu_type"] == "NVIDIA-A100-SXM4-80GB"
    assert result["preflight"][0]["ok"] is True, result["preflight"]


def test_up_without_rbac_to_exec_into_the_gateway_pod_is_refused_before_anything_is_applied(api: ApiStandIn):
    ack_cluster(api)
    serving(api, "qwq-32b")
    api.forbid_exec = True
    with pytest.raises(Conflict, match=f"^your kubeconfig user may not get or create pods/exec in namespace {NS}, "):
        lifecycle.up(request(gpu_type="NVIDIA-A10"), ctx())
    assert not [r for r in api.requests if r[0] == "PATCH"] and state.names() == []
    reviews = [r for r in api.requests if r[0] == "POST"]
    assert [r[1] for r in reviews] == ["/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"] * 2


def test_the_unpublished_default_gateway_image_is_said_with_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMNEST_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    said = lifecycle.dry_run(request(gpu_type="NVIDIA-A10"), Context(dry_run=True))["preflight"]
    assert [c for c in said if c["check"] == "image" and "make gateway-image" in c["detail"]]
    mine = lifecycle.dry_run(request(gpu_type="NVIDIA-A10", gateway_image="registry.example/team/llmnest:0.1.0"),
                             Context(dry_run=True))["preflight"]
    assert not [c for c in mine if c["check"] == "image"]


def test_the_autoscaler_is_whichever_the_cluster_has_unless_asked(api: ApiStandIn):
    ack_cluster(api)  # the custom metrics API, no KEDA
    keda_crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": "scaledobjects.keda.sh"},
                "spec": {"group": "keda.sh", "scope": "Namespaced", "versions": [],
                         "names": {"plural": "scaledobjects", "kind": "ScaledObject"}}}

    def dry(**options) -> dict:
        return lifecycle.dry_run(request(gpu_type="NVIDIA-A10", autoscale_max=2, **options), Context(dry_run=True))

    result = dry()
    assert result["spec"]["placement"]["autoscaler"] == "hpa"
    assert [o for o in result["manifests"] if o["kind"] == "HorizontalPodAutoscaler"]
    api.remove("apiservices", "", "v1beta1.custom.metrics.k8s.io")
    api.put("customresourcedefinitions", keda_crd)
    result = dry()
    assert result["spec"]["placement"]["autoscaler"] == "keda" and result["preflight"][0]["ok"] is True
    assert [o for o in result["manifests"] if o["kind"] == "ScaledObject"]
    asked = dry(autoscaler="hpa")  # asked for what the cluster lacks: refused, naming the other
    assert "does not serve (KEDA is there: --autoscaler keda)" in asked["preflight"][0]["detail"]
    api.remove("customresourcedefinitions", "", "scaledobjects.keda.sh")
    neither = dry()
    assert neither["preflight"][0]["ok"] is False and "the cluster has neither" in neither["preflight"][0]["detail"]
