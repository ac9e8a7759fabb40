"""`llmnest up/scale/down --target kubernetes` as a person types them: the real CLI in a subprocess, against
the in-process API stand-in (api_standin.py: no controllers, admission or scheduling; test_target.py's
`Controllers` play the rollouts) or with no cluster at all (the offline dry-run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from llmnest import lifecycle, state
from llmnest.spec import DeploymentSpec
from llmnest.targets import Context
from tests.conftest import cli_env, run_cli
from tests.unit.kubernetes.api_standin import ApiStandIn
from tests.unit.kubernetes.test_target import NS, Controllers, ack_cluster, api, serving  # noqa: F401 - api: fixture

UP = ("up", "Qwen/QwQ-32B", "--target", "kubernetes", "--namespace", NS, "--expose", "cluster")


def one_line_error(done, code: int) -> str:
    assert done.returncode == code and done.stdout == "", (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def test_help_lists_the_targets_flags_scale_and_delete_weights(tmp_path: Path):
    env = {**cli_env(tmp_path / "home"), "COLUMNS": "250"}
    up_help = run_cli(env, "up", "--help", timeout=120).stdout
    for flag in ("--context", "--namespace", "--gpu-type", "--weights-from", "--storage-class", "--expose",
                 "--autoscale-max", "--gateway-db-secret", "--replicas", "--nodes"):
        assert flag in up_help, flag
    assert "kubernetes: manifests, cluster preflight" in up_help
    assert "--delete-weights" in run_cli(env, "down", "--help", timeout=120).stdout
    scale_help = run_cli(env, "scale", "--help", timeout=120)
    assert scale_help.returncode == 0 and "Change the engine replicas in place" in scale_help.stdout


def test_dry_run_offline_prints_the_manifests_and_json(tmp_path: Path):
    env = {**cli_env(tmp_path / "home"), "KUBECONFIG": str(tmp_path / "absent")}
    done = run_cli(env, *UP, "--gpu-type", "NVIDIA-A10", "--replicas", "2", "--dry-run", timeout=120)
    assert done.returncode == 0, done.stderr
    manifests, _, rest = done.stdout.removeprefix("# Manifests\n").partition("\n# Preflight\n")
    kinds = [d["kind"] for d in yaml.safe_load_all(manifests)]
    assert "Deployment" in kinds and "PodDisruptionBudget" in kinds  # two replicas: a PDB
    assert "[skip] cluster" in rest and "Nothing was created" in rest and "sk-" not in done.stdout
    done = run_cli(env, *UP, "--gpu-type", "NVIDIA-A10", "--dry-run", "--json", timeout=120)
    result = json.loads(done.stdout)
    assert result["spec"]["target"] == "kubernetes" and result["spec"]["placement"]["gpu_type"] == "NVIDIA-A10"
    listed = run_cli(env, "ls", "--json", timeout=120)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []  # nothing recorded


def test_bad_input_is_one_line_exit_2(api: ApiStandIn, tmp_path: Path):
    env = cli_env(tmp_path / "home")  # the api fixture points KUBECONFIG at the stand-in (context `stand-in`)
    line = one_line_error(run_cli(env, *UP, "--context", "prod", "--gpu-type", "NVIDIA-A10", "--dry-run",
                                  timeout=120), 2)
    assert "unknown --context 'prod': your kubeconfig has stand-in" in line
    assert "--gpu-type 'RTX-9090' is no GPU llmnest knows" in one_line_error(
        run_cli(env, *UP, "--gpu-type", "RTX-9090", "--dry-run", timeout=120), 2)
    assert "invalid --expose" in one_line_error(
        run_cli(env, *UP, "--gpu-type", "NVIDIA-A10", "--expose", "everywhere", "--dry-run", timeout=120), 2)
    assert "--region is for --target aliyun" in one_line_error(
        run_cli(env, *UP, "--region", "cn-hangzhou", "--dry-run", timeout=120), 2)
    assert not api.requests or all(r[0] == "GET" for r in api.requests)  # nothing applied


def test_up_scale_and_down_through_the_cli(api: ApiStandIn, tmp_path: Path):
    env = cli_env(tmp_path / "home")
    ack_cluster(api)
    serving(api, "qwq-32b")
    with Controllers(api):
        done = run_cli(env, *UP, "--timeout", "60", timeout=180)
        assert done.returncode == 0, done.stderr
        assert f"namespace  {NS}\n" in done.stdout and "rollout    rolling: one new pod starts" in done.stdout  # extra
        key = state.api_key("qwq-32b")
        assert key.startswith("sk-") and f"  API key                {key}\n" in done.stdout  # printed like elsewhere
        assert "key        qwq-32b, for Qwen/QwQ-32B only" in done.stdout

        done = run_cli(env, "scale", "qwq-32b", "2", "--json", "--timeout", "60", timeout=180)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"name": "qwq-32b", "replicas": 2, "result": "qwq-32b: 1 -> 2 replica(s)"}
        assert state.get("qwq-32b").spec.replicas == 2

        assert "at least 1 replica, not -1" in one_line_error(run_cli(env, "scale", "qwq-32b", "-1", timeout=120), 2)
        assert "only 0 fit now" in one_line_error(run_cli(env, "scale", "qwq-32b", "3", timeout=120), 3)
        assert "no deployment" in one_line_error(run_cli(env, "scale", "nothing", "2", timeout=120), 4).lower()

        done = run_cli(env, "down", "qwq-32b", "--delete-weights", timeout=180)
    assert done.returncode == 0, done.stderr
    assert "its key qwq-32b is revoked" in done.stdout
    assert [c[2][:3] for c in api.exec_calls][-1] == ["llmnest", "keys", "revoke"]
    assert api.get("persistentvolumeclaims", NS, "qwq-32b-weights") is None and state.names() == []


def test_delete_weights_is_refused_where_a_target_does_not_offer_it(tmp_path, monkeypatch):
    # scale, offered on this machine too now, is refused on Alibaba Cloud: tests/unit/test_local_scale.py
    monkeypatch.setenv("LLMNEST_HOME", str(tmp_path / "home"))
    state.create(DeploymentSpec(name="demo", model="demo", served_model_name="demo"), None)
    with pytest.raises(Exception, match="^--delete-weights does not apply to demo"):
        lifecycle.down("demo", Context(delete_weights=True))
    assert state.names() == ["demo"]  # refused before anything happened
