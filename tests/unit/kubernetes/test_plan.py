"""`llmnest plan MODEL --target kubernetes`: the GPU pools judged over ClusterFacts built here (pure), then the
real CLI and the console's Plan against the in-process API stand-in (api_standin.py: nodes, pods, CRDs and
classes put by the test; no scheduler, so "free" is allocatable minus what the test's pods request)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from llmnest.spec_builder import UpRequest
from llmnest.targets.kubernetes import cluster_plan
from llmnest.targets.kubernetes.preflight import KEDA_CRD, LWS_CRD, OSS_DRIVER, ClusterFacts, Node
from llmnest.targets.kubernetes.sizing import sized, with_place
from llmnest.targets.kubernetes.target import KubernetesTarget
from tests.conftest import cli_env, run_cli
from tests.unit.kubernetes.api_standin import ApiStandIn
from tests.unit.kubernetes.test_cli import one_line_error
from tests.unit.kubernetes.test_target import NS, ack_cluster, api, gpu_pod, node  # noqa: F401 - api: fixture

LABEL = "aliyun.accelerator/nvidia_name"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
NAS = {"nas": {"provisioner": "nasplugin.csi.alibabacloud.com", "default": True}}


def gpu_node(name: str, card: str | None, gpus: int, used: int = 0, *extra_taints: dict) -> Node:
    labels = {LABEL: card} if card else {}
    return Node(name, labels, [GPU_TAINT, *extra_taints], gpus, used)


def facts(*nodes: Node, crds: set[str] | None = None, drivers: set[str] | None = None,
          classes: dict | None = None, metrics: bool = True) -> ClusterFacts:
    return ClusterFacts(list(nodes), crds if crds is not None else {LWS_CRD}, drivers if drivers is not None else
                        {OSS_DRIVER}, classes if classes is not None else NAS, metrics, {"llmnest-gateway-db"})


def resolved(model: str = "Qwen/QwQ-32B", **options):
    return KubernetesTarget().resolve(UpRequest(model=model, target="kubernetes", options={"namespace": NS, **options}))


def plan(cluster: ClusterFacts, model: str = "Qwen/QwQ-32B", **options) -> dict:
    r = resolved(model, **options)
    return cluster_plan.plan(cluster, r.spec, r.model)


def pool(result: dict, card: str) -> dict:
    return next(p for p in result["pools"] if p["card"] == card)


def test_each_pool_is_sized_as_up_sizes_it_and_up_picks_the_most_free():
    result = plan(facts(gpu_node("a10-0", "NVIDIA-A10", 4), gpu_node("a10-1", "NVIDIA-A10", 4, used=2),
                        gpu_node("h20-0", "NVIDIA-H20", 8, used=8), gpu_node("t-0", None, 8)))
    a10, h20 = pool(result, "NVIDIA-A10"), pool(result, "NVIDIA-H20")
    r = resolved()
    up_a10 = sized(with_place(r.spec, gpu_type="NVIDIA-A10"), r.model)
    assert (a10["gpus_per_pod"], a10["tensor_parallel_size"]) == (up_a10.gpu_count, up_a10.tensor_parallel_size) == (4, 4)
    assert (a10["nodes"], a10["allocatable"], a10["free"], a10["replicas_now"]) == (2, 8, 6, 1)
    assert a10["kv_cache_tokens"] > 0 and a10["max_concurrent_requests"] >= 1 and a10["ok"] and a10["verdict"] == "fits"
    assert h20["gpus_per_pod"] == 1 and h20["replicas_now"] == 0 and h20["verdict"] == "busy: no node has 1 free"
    unlabelled = pool(result, "(unlabelled)")
    assert unlabelled["gpus_per_pod"] is None and unlabelled["verdict"] == f"no {LABEL} label"
    assert result["picked"] == "NVIDIA-A10" and a10["picked"] and not unlabelled["picked"]  # 8 free, but no label
    assert result["refusals"] == [] and result["fits"] is True
    assert "* up would use NVIDIA-A10 (the labelled pool with the most free GPUs the model fits)" in result["notes"]
    assert [len(row) for row in result["rows"]] == [len(result["columns"])] * 3
    assert result["rows"][[p["card"] for p in result["pools"]].index("NVIDIA-A10")][0] == "NVIDIA-A10 *"


def test_a_pool_whose_card_the_model_does_not_fit_and_the_pool_to_pass_instead():
    result = plan(facts(gpu_node("a10-0", "NVIDIA-A10", 8), gpu_node("a10-1", "NVIDIA-A10", 8),
                        gpu_node("h20-0", "NVIDIA-H20", 8)), "deepseek-ai/DeepSeek-R1")
    a10 = pool(result, "NVIDIA-A10")
    assert a10["gpus_per_pod"] is None and a10["verdict"] == "does not fit 8 GPUs" and not a10["ok"]
    assert a10["reason"].startswith("deepseek-ai/DeepSeek-R1 does not fit 8 x NVIDIA A10")
    assert result["picked"] == "NVIDIA-H20"  # the A10 pool has more free GPUs, but the model fits the H20s only
    assert result["refusals"] == [] and result["fits"] is True
    assert pool(result, "NVIDIA-H20")["ok"]
    only_a10 = plan(facts(gpu_node("a10-0", "NVIDIA-A10", 8)), "deepseek-ai/DeepSeek-R1")
    assert only_a10["picked"] == "NVIDIA-A10" and only_a10["refusals"] == [pool(only_a10, "NVIDIA-A10")["reason"]]


def test_a_taint_the_engine_does_not_tolerate_blocks_the_pool_and_a_soft_one_does_not():
    team = {"key": "team", "value": "research", "effect": "NoSchedule"}
    soft = {"key": "spot", "effect": "PreferNoSchedule"}
    result = plan(facts(gpu_node("l20-0", "NVIDIA-L20", 8, 0, team), gpu_node("a10-0", "NVIDIA-A10", 4, 0, soft)))
    l20, a10 = pool(result, "NVIDIA-L20"), pool(result, "NVIDIA-A10")
    assert l20["verdict"] == "taint team not tolerated" and l20["replicas_now"] == 0 and not l20["ok"]
    assert l20["taints"] == ["nvidia.com/gpu:NoSchedule", "team:NoSchedule"]
    assert a10["ok"] and a10["replicas_now"] == 1
    assert result["picked"] == "NVIDIA-A10"  # the L20s have more free GPUs, but their taint keeps the engine off
    assert result["refusals"] == []
    blocked = plan(facts(gpu_node("l20-0", "NVIDIA-L20", 8, 0, team)))
    assert any("no node with aliyun.accelerator/nvidia_name=NVIDIA-L20" in line for line in blocked["refusals"])


def test_no_gpu_free_is_said_per_pool_and_refused_as_up_would():
    result = plan(facts(gpu_node("a10-0", "NVIDIA-A10", 4, used=4), gpu_node("a10-1", "NVIDIA-A10", 4, used=1)))
    a10 = pool(result, "NVIDIA-A10")
    assert (a10["free"], a10["replicas_now"], a10["verdict"]) == (3, 0, "busy: no node has 4 free")
    assert len(result["refusals"]) == 1 and "only 0 fit now" in result["refusals"][0]
    assert f"refused: {result['refusals'][0]}" in result["notes"] and result["fits"] is False


def test_a_card_the_planner_does_not_know_is_listed_and_refused_with_ups_line():
    result = plan(facts(gpu_node("b200-0", "NVIDIA-B200", 8), gpu_node("a10-0", "NVIDIA-A10", 4)))
    b200 = pool(result, "NVIDIA-B200")
    assert b200["verdict"] == "a card the planner does not know" and b200["gpus_per_pod"] is None
    assert result["picked"] == "NVIDIA-A10" and result["refusals"] == []
    alone = plan(facts(gpu_node("b200-0", "NVIDIA-B200", 8)))
    assert alone["picked"] == "NVIDIA-B200" and "'NVIDIA-B200' is no GPU llmnest knows" in alone["refusals"][0]


def test_nodes_too_small_for_the_pod():
    result = plan(facts(gpu_node("a10-0", "NVIDIA-A10", 2), gpu_node("a10-1", "NVIDIA-A10", 2)))
    assert pool(result, "NVIDIA-A10")["verdict"] == "a pod needs 4 GPUs on one node, its nodes have 2"


def test_two_nodes_need_the_lws_crd_and_count_replicas_in_pairs():
    h20s = [gpu_node("h20-0", "NVIDIA-H20", 8), gpu_node("h20-1", "NVIDIA-H20", 8)]
    without = plan(facts(*h20s, crds=set()), "deepseek-ai/DeepSeek-R1", nodes=2)
    lws = next(c for c in without["checks"] if c["check"] == "LeaderWorkerSet CRD")
    assert lws["ok"] is False and lws["needed"] is True
    assert any("no LeaderWorkerSet CRD" in line for line in without["refusals"])
    h20 = pool(without, "NVIDIA-H20")
    assert (h20["gpus_per_pod"], h20["tensor_parallel_size"], h20["pipeline_parallel_size"]) == (4, 4, 2)
    assert h20["replicas_now"] == 2  # 4 pods of 4 GPUs on two free nodes: 2 pairs
    with_lws = plan(facts(*h20s), "deepseek-ai/DeepSeek-R1", nodes=2)
    assert with_lws["refusals"] == [] and next(c for c in with_lws["checks"] if c["check"] == "LeaderWorkerSet CRD")["ok"]
    one_node = plan(facts(*h20s, crds=set()))
    assert next(c for c in one_node["checks"] if c["check"] == "LeaderWorkerSet CRD")["ok"] is None  # not needed


@pytest.mark.parametrize(("options", "cluster", "check", "refusal"), [
    ({}, {"classes": {"gp": {"provisioner": "diskplugin.csi.alibabacloud.com", "default": True}}},
     "ReadWriteMany class", "is not known to give ReadWriteMany volumes"),
    ({"weights": "oss://bucket/qwq", "oss_endpoint": "oss-cn-hangzhou-internal.aliyuncs.com"}, {"drivers": set()},
     "OSS CSI driver", "oss:// weights need the OSS CSI driver"),
    ({"autoscale_max": 2}, {"metrics": False}, "metrics API / KEDA", "needs the custom metrics API"),
    ({"autoscale_max": 2, "autoscaler": "keda"}, {}, "metrics API / KEDA", "needs KEDA's ScaledObject CRD"),
])
def test_cluster_checks_fail_only_what_this_deployment_needs(options: dict, cluster: dict, check: str, refusal: str):
    a10 = gpu_node("a10-0", "NVIDIA-A10", 8)
    result = plan(facts(a10, **cluster), **options)
    assert next(c for c in result["checks"] if c["check"] == check)["ok"] is False
    assert any(refusal in line for line in result["refusals"]), result["refusals"]
    unneeded = plan(facts(a10, **cluster), weights="pvc:weights")  # a filled claim, no autoscaling
    assert next(c for c in unneeded["checks"] if c["check"] == check)["ok"] is not False
    assert unneeded["refusals"] == []
    keda = plan(facts(a10, crds={LWS_CRD, KEDA_CRD}, metrics=False), autoscale_max=2)
    assert "KEDA there" in next(c for c in keda["checks"] if c["check"] == "metrics API / KEDA")["detail"]


def test_gpu_type_fixes_the_card_and_the_other_pools_are_not_sized():
    result = plan(facts(gpu_node("a10-0", "NVIDIA-A10", 4), gpu_node("h20-0", "NVIDIA-H20", 8)), gpu_type="NVIDIA-A10")
    assert result["picked"] == "NVIDIA-A10" and pool(result, "NVIDIA-A10")["ok"]
    assert pool(result, "NVIDIA-H20")["verdict"] == "not asked (--gpu-type)"
    absent = plan(facts(gpu_node("h20-0", "NVIDIA-H20", 8)), gpu_type="NVIDIA-A10")
    assert pool(absent, "NVIDIA-A10")["verdict"] == f"no node carries {LABEL}=NVIDIA-A10"
    assert absent["fits"] is False and "no node with" in absent["refusals"][0]


def test_without_a_cluster_the_card_alone():
    r = resolved(gpu_type="NVIDIA-A10")
    result = cluster_plan.offline(r.spec, r.model, "no kubeconfig")
    assert result["cluster_read"] is False and result["fits"] is None and result["checks"] == []
    [only] = result["pools"]
    assert (only["card"], only["gpus_per_pod"], only["nodes"], only["verdict"]) == ("NVIDIA-A10", 4, None, "fits the card")
    assert "the cluster was not read (no kubeconfig)" in result["notes"][0]


# ---- the CLI and the console against the stand-in ------------------------------------------------------

PLAN = ("plan", "Qwen/QwQ-32B", "--target", "kubernetes", "--namespace", NS)


def test_plan_reads_the_cluster_prints_the_pools_and_applies_nothing(api: ApiStandIn, tmp_path: Path):
    ack_cluster(api)
    api.put("nodes", node("h20-0", 8, "NVIDIA-H20"))
    api.put("pods", gpu_pod("train-0", "research", "h20-0", 8))
    env = {**cli_env(tmp_path / "home"), "COLUMNS": "250"}
    done = run_cli(env, *PLAN, timeout=120)
    assert done.returncode == 0, done.stderr
    assert re.search(r"NVIDIA-A10 \*\s.*\b4 x 1\b.*\bfits\b", done.stdout)
    assert re.search(r"NVIDIA-H20\s.*\b1 x 8\b.*\b0 of 8\b.*busy: no node has 1 free", done.stdout), done.stdout
    assert "* up would use NVIDIA-A10 (the labelled pool with the most free GPUs the model fits)" in done.stdout
    assert "[ok  ] LeaderWorkerSet CRD" in done.stdout and "up would pass the cluster's preflight" in done.stdout
    assert all(r[0] == "GET" for r in api.requests)  # read only

    result = json.loads(run_cli(env, *PLAN, "--nodes", "2", "--replicas", "3", "--json", timeout=120).stdout)
    assert {"kind", "title", "columns", "rows", "checks", "notes", "pools", "picked", "refusals", "fits",
            "cluster_read"} <= set(result)
    assert result["kind"] == "table" and result["cluster_read"] is True and result["picked"] == "NVIDIA-A10"
    assert set(result["pools"][0]) == {"card", "nodes", "gpus_per_node", "allocatable", "free", "taints", "gpus_per_pod",
                                       "tensor_parallel_size", "pipeline_parallel_size", "kv_cache_tokens",
                                       "max_concurrent_requests", "replicas_now", "ok", "verdict", "reason", "picked"}
    assert result["fits"] is False and "6 engine pod(s) need 2 free nvidia.com/gpu each on one node, only 4 fit now" in result["refusals"][0]


def test_plan_errors_are_one_line(api: ApiStandIn, tmp_path: Path):
    env = cli_env(tmp_path / "home")
    assert "--gpu plans without a target" in one_line_error(run_cli(env, *PLAN, "--gpu", "A10", timeout=120), 2)
    assert "--gpu-type is for --target kubernetes: add --target kubernetes" in one_line_error(
        run_cli(env, "plan", "Qwen/QwQ-32B", "--gpu-type", "NVIDIA-A10", timeout=120), 2)
    assert "unknown --context 'prod'" in one_line_error(run_cli(env, *PLAN, "--context", "prod", timeout=120), 2)
    assert "unknown --target 'moon'" in one_line_error(run_cli(env, "plan", "qwq-32b", "--target", "moon", timeout=120), 2)
    assert "does not fit 8 x NVIDIA A10" in one_line_error(
        run_cli(env, "plan", "deepseek-ai/DeepSeek-R1", "--target", "kubernetes", "--gpu-type", "NVIDIA-A10",
                timeout=120), 2)
    offline = {**env, "KUBECONFIG": str(tmp_path / "absent")}
    assert "without a cluster to read, pass --gpu-type" in one_line_error(run_cli(offline, *PLAN, timeout=120), 2)
    done = run_cli(offline, *PLAN, "--gpu-type", "NVIDIA-A10", "--json", timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["cluster_read"] is False and [p["card"] for p in result["pools"]] == ["NVIDIA-A10"]


def test_plan_on_the_other_targets_prints_their_kind(tmp_path: Path):
    env = cli_env(tmp_path / "home")
    here = run_cli(env, "plan", "smollm2-135m", "--target", "local", "--max-model-len", "2048", timeout=120)
    assert here.returncode == 0, here.stderr
    assert "KV capacity" in here.stdout and "2,048 requested" in here.stdout
    cloud = run_cli({**env, "COLUMNS": "250"}, "plan", "qwq-32b", "--target", "aliyun", "--region", "cn-hangzhou",
                    timeout=120)
    assert cloud.returncode == 0, cloud.stderr
    assert re.search(r"ecs\.gn7i-4x\.8xlarge\s.*4 x A10\s.*CNY/h", cloud.stdout), cloud.stdout
    assert "preflight:" in cloud.stdout and "[ok  ] template" in cloud.stdout


def test_the_console_plan_shows_the_table(api: ApiStandIn, monkeypatch):
    from llmnest.console import auth
    from llmnest.console.app import create_app

    monkeypatch.delenv("LLMNEST_GATEWAY_DB", raising=False)
    ack_cluster(api)
    token = auth.load_or_create_token()
    client = TestClient(create_app(token), follow_redirects=False)
    client.get(f"/keys?token={token}")
    csrf = re.search(r'name="csrf" content="([0-9a-f]+)"', client.get("/deploy").text)[1]
    resp = client.post("/deploy/plan", data={"model": "Qwen/QwQ-32B", "target": "kubernetes", "namespace": NS},
                       headers={"x-csrf-token": csrf})
    assert resp.status_code == 200, resp.text
    assert "<th>GPUs/pod</th>" in resp.text and "<td>NVIDIA-A10 *</td>" in resp.text
    assert "[ok] LeaderWorkerSet CRD" in resp.text and "up would use NVIDIA-A10" in resp.text
    assert "<h3>Spec</h3>" not in resp.text  # not the default kind's rendering
