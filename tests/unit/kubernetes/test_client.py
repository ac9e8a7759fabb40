"""The lightkube edge against an in-process API stand-in (api_standin.py says what it does not do):
server-side apply, label selectors, rollout waits with the events that matter, logs, scale, delete."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator

import pytest
from lightkube import Client
from lightkube.config.kubeconfig import KubeConfig

from llmnest.errors import LlmnestError
from llmnest.targets.kubernetes import manifests
from llmnest.targets.kubernetes.client import Cluster
from llmnest.targets.kubernetes.placement import KubernetesPlacement
from tests.unit.kubernetes.api_standin import ApiStandIn
from tests.unit.kubernetes.cases import ENGINE_KEY, gpu_spec

NS = "llm"


@pytest.fixture
def api() -> Iterator[ApiStandIn]:
    with ApiStandIn() as stand_in:
        yield stand_in


def kubeconfig(url: str) -> dict:
    return {"apiVersion": "v1", "kind": "Config", "current-context": "stand-in",
            "clusters": [{"name": "stand-in", "cluster": {"server": url}}],
            "users": [{"name": "tester", "user": {"token": "not-checked"}}],
            "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "tester", "namespace": NS}}]}


def cluster(api: ApiStandIn) -> Cluster:
    config = KubeConfig.from_dict(kubeconfig(api.url)).get()
    return Cluster(Client(config=config, field_manager="llmnest", trust_env=False), NS)


def objects(nodes: int = 1, **place) -> list[dict]:
    spec = gpu_spec("deepseek-ai/DeepSeek-R1" if nodes == 2 else "Qwen/QwQ-32B", nodes, "vllm")
    return manifests.render(spec, KubernetesPlacement(namespace=NS, nodes=nodes, **place), ENGINE_KEY)


def pod(name: str, deployment: str, role: str | None = None, status: dict | None = None) -> dict:
    labels = {"llmnest.io/deployment": deployment, "app.kubernetes.io/component": "engine"}
    if role:
        labels["llmnest.io/role"] = role
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS, "labels": labels},
            "spec": {"containers": [{"name": "engine", "image": "x"}]}, "status": status or {}}


def event(name: str, involved: str, reason: str, message: str) -> dict:
    return {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": NS},
            "involvedObject": {"kind": "Pod", "name": involved, "namespace": NS}, "reason": reason,
            "message": message, "type": "Warning"}


def later(seconds: float, action) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(seconds), action()), daemon=True)
    thread.start()
    return thread


def test_apply_all_is_server_side_apply_under_one_field_manager(api: ApiStandIn):
    objs = objects(create_namespace=True, replicas=2)
    applied = cluster(api).apply_all(objs)
    assert applied == [f"{o['kind']}/{o['metadata']['name']}" for o in objs]
    patches = [r for r in api.requests if r[0] == "PATCH"]
    assert len(patches) == len(objs) and {r[2] for r in patches} == {"application/apply-patch+yaml"}
    assert api.get("namespaces", "", NS) and api.get("persistentvolumeclaims", NS, "qwq-32b-weights")
    engine = api.get("deployments", NS, "qwq-32b-engine")
    assert engine["metadata"]["managedFields"] == [{"manager": "llmnest", "operation": "Apply"}]
    uid, generation = engine["metadata"]["uid"], engine["metadata"]["generation"]
    cluster(api).apply_all(objs)  # the same again: an upsert that changes nothing
    assert api.get("deployments", NS, "qwq-32b-engine")["metadata"]["generation"] == generation
    changed = [o for o in objects(create_namespace=True, replicas=3)]
    cluster(api).apply_all(changed)
    engine = api.get("deployments", NS, "qwq-32b-engine")
    assert (engine["metadata"]["uid"], engine["metadata"]["generation"], engine["spec"]["replicas"]) == (
        uid, generation + 1, 3)


def test_a_re_apply_leaves_the_autoscalers_replica_count(api: ApiStandIn):
    objs = objects(replicas=1, autoscale_max=4)
    k8s = cluster(api)
    k8s.apply_all(objs)
    k8s.scale("Deployment", "qwq-32b", 3)
    assert api.get("deployments", NS, "qwq-32b-engine")["spec"]["replicas"] == 3
    k8s.apply_all(objs)
    assert api.get("deployments", NS, "qwq-32b-engine")["spec"]["replicas"] == 3


def test_leaderworkerset_applies_and_scales_through_its_subresource(api: ApiStandIn):
    k8s = cluster(api)
    k8s.apply_all(objects(nodes=2))
    assert api.get("leaderworkersets", NS, "deepseek-r1-engine")["spec"]["leaderWorkerTemplate"]["size"] == 2
    k8s.scale("LeaderWorkerSet", "deepseek-r1", 2)
    assert api.get("leaderworkersets", NS, "deepseek-r1-engine")["spec"]["replicas"] == 2
    scale_path = f"/apis/leaderworkerset.x-k8s.io/v1/namespaces/{NS}/leaderworkersets/deepseek-r1-engine/scale"
    assert [r[1] for r in api.requests if r[0] == "PATCH"][-1] == scale_path


def test_pods_by_label_leaders_first(api: ApiStandIn):
    api.put("pods", pod("deepseek-r1-engine-0-1", "deepseek-r1", "worker"))
    api.put("pods", pod("deepseek-r1-engine-0", "deepseek-r1", "leader"))
    api.put("pods", pod("other-engine-0", "other"))
    names = [p["metadata"]["name"] for p in cluster(api).pods("deepseek-r1")]
    assert names == ["deepseek-r1-engine-0", "deepseek-r1-engine-0-1"]


def test_wait_rollout_says_each_problem_once_as_it_happens(api: ApiStandIn):
    k8s = cluster(api)
    k8s.apply_all(objects())
    api.put("events", event("e1", "qwq-32b-engine-abc", "FailedScheduling",
                            "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."))
    api.put("events", event("e2", "someone-else-xyz", "FailedMount", "not ours"))
    api.put("events", event("e3", "qwq-32b-engine-abc", "Scheduled", "routine"))
    oom = {"containerStatuses": [{"name": "engine", "image": "x", "imageID": "", "ready": False, "restartCount": 1,
                                  "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}
    later(0.3, lambda: api.put("pods", pod("qwq-32b-engine-abc", "qwq-32b", status=oom)))
    later(0.6, lambda: api.put("events", event("e4", "qwq-32b-engine-abc", "Unhealthy",
                                               "Startup probe failed: connection refused")))
    done = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}
    later(1.2, lambda: api.set_status("deployments", NS, "qwq-32b-engine", done))
    said: list[str] = []
    k8s.wait_rollout("Deployment", "qwq-32b", timeout=20, say=said.append, poll=0.1)
    assert len(said) == 3 and len(set(said)) == 3
    assert "no node has enough free nvidia.com/gpu" in said[0]
    assert any("OOMKilled" in s for s in said) and any("Startup probe failed" in s for s in said)
    assert not any("not ours" in s or "routine" in s for s in said)


def test_wait_rollout_gives_up_with_the_last_problem(api: ApiStandIn):
    k8s = cluster(api)
    k8s.apply_all(objects())
    api.set_status("deployments", NS, "qwq-32b-engine", {"observedGeneration": 0, "replicas": 1})
    api.put("events", event("e1", "qwq-32b-engine-abc", "FailedMount", "MountVolume.SetUp failed for volume weights"))
    with pytest.raises(LlmnestError, match="did not roll out within 1 s; last: pod qwq-32b-engine-abc cannot mount"):
        k8s.wait_rollout("Deployment", "qwq-32b", timeout=1, say=lambda _l: None, poll=0.1)


def test_a_stale_generation_is_not_rolled_out(api: ApiStandIn):
    k8s = cluster(api)
    k8s.apply_all(objects())
    api.set_status("deployments", NS, "qwq-32b-engine",
                   {"observedGeneration": 0, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1})
    assert not k8s.rollout_done("Deployment", "qwq-32b-engine")
    api.set_status("deployments", NS, "qwq-32b-engine",
                   {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1})
    assert not k8s.rollout_done("Deployment", "qwq-32b-engine")  # an old pod is still there


def test_watch_events_streams_the_lines_that_matter(api: ApiStandIn):
    k8s = cluster(api)
    api.put("events", event("e0", "qwq-32b-engine-a", "Pulled", "routine"))
    later(0.3, lambda: api.put("events", event("e1", "qwq-32b-engine-a", "FailedScheduling",
                                               "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.")))
    later(0.5, lambda: api.put("events", event("e2", "qwq-32b-engine-a", "BackOff",
                                               "Back-off restarting failed container engine")))
    lines = list(itertools.islice(k8s.watch_events("qwq-32b"), 2))
    assert "nvidia.com/gpu" in lines[0] and "keeps crashing" in lines[1]


def test_logs_tail_and_follow(api: ApiStandIn):
    k8s = cluster(api)
    api.put("pods", pod("qwq-32b-engine-a", "qwq-32b"))
    api.log("qwq-32b-engine-a", "engine", *[f"line {i}" for i in range(10)])
    assert list(k8s.logs("qwq-32b-engine-a", tail=3, follow=False)) == ["line 7", "line 8", "line 9"]
    later(0.3, lambda: api.log("qwq-32b-engine-a", "engine", "line 10"))
    later(0.6, lambda: api.remove("pods", NS, "qwq-32b-engine-a"))
    assert list(k8s.logs("qwq-32b-engine-a", tail=1, follow=True)) == ["line 9", "line 10"]
    with pytest.raises(LlmnestError, match="cannot read the log of pod nobody"):
        list(k8s.logs("nobody", tail=1, follow=False))


def test_delete_stops_the_workload_first_and_waits_for_the_gpus(api: ApiStandIn):
    objs = objects(replicas=2, autoscale_max=3)
    k8s = cluster(api)
    k8s.apply_all(objs)
    api.put("pods", pod("qwq-32b-engine-a", "qwq-32b"))
    api.put("pods", pod("qwq-32b-engine-b", "qwq-32b"))
    start = len(api.requests)
    later(0.4, lambda: api.remove("pods", NS, "qwq-32b-engine-a"))  # what the controllers would do
    later(0.8, lambda: api.remove("pods", NS, "qwq-32b-engine-b"))
    said: list[str] = []
    gone = k8s.delete("qwq-32b", objs, timeout=10, say=said.append, poll=0.1)
    deletes = [r[1].rsplit("/", 2)[-2:] for r in api.requests[start:] if r[0] == "DELETE"]
    assert deletes[:2] == [["deployments", "qwq-32b-engine"], ["horizontalpodautoscalers", "qwq-32b-engine"]]
    assert said and all("free their GPUs" in s for s in said)
    assert api.get("persistentvolumeclaims", NS, "qwq-32b-weights")  # the weights stay
    assert "PersistentVolumeClaim/qwq-32b-weights" not in gone and "Secret/qwq-32b-engine-key" in gone
    assert not api.get("deployments", NS, "qwq-32b-gateway")
    again = k8s.delete("qwq-32b", objs, timeout=1, say=said.append, keep_weights=False)
    assert again == ["Job/qwq-32b-fetch", "PersistentVolumeClaim/qwq-32b-weights"]


def test_delete_refuses_to_go_on_while_pods_hold_gpus(api: ApiStandIn):
    objs = objects()
    k8s = cluster(api)
    k8s.apply_all(objs)
    api.put("pods", pod("qwq-32b-engine-a", "qwq-32b"))
    with pytest.raises(LlmnestError, match="1 engine pod.* still hold their GPUs"):
        k8s.delete("qwq-32b", objs, timeout=0.3, say=lambda _l: None, poll=0.1)
    assert api.get("secrets", NS, "qwq-32b-engine-key")  # nothing else went


def test_connect_reads_the_kubeconfig_context_as_kubectl_does(api: ApiStandIn, tmp_path, monkeypatch):
    from llmnest.errors import BadInput, Conflict
    from llmnest.targets.kubernetes.client import connect

    config = tmp_path / "config"
    config.write_text(json.dumps(kubeconfig(api.url)))
    monkeypatch.setenv("KUBECONFIG", str(config))
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    Cluster(connect("stand-in"), NS).apply_all(objects()[:1])
    assert api.get("secrets", NS, "qwq-32b-engine-key")
    with pytest.raises(BadInput, match="^unknown --context 'prod': your kubeconfig has stand-in .*get-contexts"):
        connect("prod")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    with pytest.raises(Conflict, match="cannot use context 'prod' of your kubeconfig .*kubectl config get-contexts"):
        connect("prod")


def test_exec_returns_the_commands_exit_code_and_streams_and_says_why_one_did_not_run(api: ApiStandIn):
    from llmnest.targets.kubernetes.client import ExecFailed

    api.put("pods", {**pod("gw-0", "d"), "spec": {"containers": [{"name": "gateway", "image": "x"}]}})
    seen: list[bytes] = []

    def answer(container: str, command: list[str], stdin) -> tuple[int, str, str]:
        seen.append(stdin() if command[0] == "cat" else b"")
        return 3, "out " + "|".join(command) + seen[-1].decode() + "x" * 100_000, "err\n"

    api.on_exec(NS, "gw-", answer)
    c = cluster(api)
    code, out, err = c.exec("gw-0", "gateway", ["llmnest", "a b", "--", "$(x)"])
    assert (code, out[:24], len(out), err) == (3, "out llmnest|a b|--|$(x)x", 23 + 100_000, "err\n")  # 32 KiB frames
    code, out, _ = c.exec("gw-0", "gateway", ["cat"], stdin="on stdin")
    assert out.startswith("out caton stdin") and api.exec_calls[-1] == ("gw-0", "gateway", ["cat"])
    api.on_exec(NS, "gw-", lambda *_: (0, "fine", ""))
    assert c.exec("gw-0", "gateway", ["true"]) == (0, "fine", "")
    for pod_name, container, status in (("gone-0", "gateway", 404), ("gw-0", "engine", 400)):
        with pytest.raises(ExecFailed) as exc:
            c.exec(pod_name, container, ["true"])
        assert exc.value.code == status
    api.forbid_exec = True
    with pytest.raises(ExecFailed) as exc:
        c.exec("gw-0", "gateway", ["true"])
    assert exc.value.code == 403
