"""Engine argv renderers and the docker command: pure functions of the spec."""

from __future__ import annotations

import subprocess

from llmnest.spec_builder import UpRequest, build_spec
from llmnest.catalog import get_model, load_catalog
from llmnest.engines import render_launch
from llmnest.host import Gpu, HostFacts
from llmnest.runtimes.docker import run_argv
from llmnest.shell import render

CPU = HostFacts(gpus=(), has_docker_engine=False)
A10x4 = HostFacts(gpus=tuple(Gpu("NVIDIA A10", 23028) for _ in range(4)), has_docker_engine=True)


def spec(model: str, facts: HostFacts, **kw):
    return build_spec(UpRequest(model=model, **kw), get_model(model), facts)


def pairs(args) -> dict[str, str | None]:
    out, it = {}, list(args)
    for i, a in enumerate(it):
        if a.startswith("--"):
            out[a] = it[i + 1] if i + 1 < len(it) and not it[i + 1].startswith("--") else None
    return out


def test_vllm_gpu_covers_everything_the_seed_sets():
    s, key = spec("Qwen/QwQ-32B", A10x4)
    launch = render_launch(s, "/root/llm-model/Qwen/QwQ-32B", key)
    flags = pairs(launch.args)
    assert launch.module == "vllm.entrypoints.openai.api_server"
    assert flags["--model"] == "/root/llm-model/Qwen/QwQ-32B" and flags["--served-model-name"] == "Qwen/QwQ-32B"
    assert flags["--gpu-memory-utilization"] == "0.95" and flags["--max-model-len"] == "32768"
    assert flags["--tensor-parallel-size"] == "4" and flags["--port"] == "8080"
    assert "--enable-chunked-prefill" in flags
    assert "--trust-remote-code" not in flags  # the seed's script sets it; no catalog model needs it
    assert flags["--reasoning-parser"] == "deepseek_r1"
    assert key not in launch.args and launch.env["VLLM_API_KEY"] == key  # not visible in `ps`
    assert "VLLM_CPU_KVCACHE_SPACE" not in launch.env


def test_remote_code_runs_only_where_the_catalog_or_the_user_says_so():
    trusting = load_catalog()["Qwen/QwQ-32B"].model_copy(update={"trust_remote_code": True})
    s, key = build_spec(UpRequest(model="Qwen/QwQ-32B"), trusting, A10x4)
    assert "--trust-remote-code" in render_launch(s, "/m", key).args
    s, key = spec("Qwen/QwQ-32B", A10x4, sets={"trust_remote_code": "true"})
    assert "--trust-remote-code" in render_launch(s, "/m", key).args
    assert not any(m.trust_remote_code for m in load_catalog().values())


def test_vllm_cpu_build_gets_kv_space_and_no_gpu_flags():
    s, _ = spec("smollm2-135m", CPU, sets={"cpu_kv_cache_gib": "3"})
    launch = render_launch(s, "/models/smollm2", None)
    flags = pairs(launch.args)
    assert launch.env == {"VLLM_CPU_KVCACHE_SPACE": "3"}
    assert "--gpu-memory-utilization" not in flags and "--tensor-parallel-size" not in flags
    assert "--enforce-eager" in flags and "VLLM_API_KEY" not in launch.env


def test_sglang_uses_its_own_flag_names():
    s, key = spec("Qwen/Qwen3-32B", A10x4, engine="sglang", sets={"gpu_memory_utilization": "0.9"})
    launch = render_launch(s, "/root/llm-model/Qwen/Qwen3-32B", key)
    flags = pairs(launch.args)
    assert launch.module == "sglang.launch_server"
    assert flags["--model-path"] == "/root/llm-model/Qwen/Qwen3-32B" and flags["--tp"] == "4"
    assert "--mem-fraction-static" not in flags  # SGLang sizes it from the card and TP, not vLLM's utilization
    assert flags["--context-length"] == "32768"
    assert flags["--reasoning-parser"] == "qwen3" and flags["--api-key"] == key


def test_sglang_takes_a_memory_fraction_only_as_its_own_flag():
    s, _ = spec("Qwen/Qwen3-32B", A10x4, engine="sglang", sets={"mem-fraction-static": "0.83"})
    flags = pairs(render_launch(s, "/m", None).args)
    assert flags["--mem-fraction-static"] == "0.83"


def test_pass_through_flags():
    s, _ = spec("smollm2-135m", CPU, sets={"enable-prefix-caching": "true", "max-num-seqs": "8",
                                            "enable-log-requests": "false"})
    args = render_launch(s, "/m", None).args
    assert "--enable-prefix-caching" in args and "--no-enable-log-requests" in args
    assert args[args.index("--max-num-seqs") + 1] == "8"


def test_docker_command_runs_like_the_seed_and_keeps_the_key_out_of_argv():
    s, key = spec("Qwen/QwQ-32B", A10x4)
    argv, env = run_argv(s, "/data/models/Qwen/QwQ-32B", key)
    joined = " ".join(argv)
    assert argv[:3] == ["docker", "run", "--detach"]
    for part in ["--name qwq-32b", "--gpus all", "--net=host", "--ipc=host", "--restart unless-stopped",
                 "--volume /data/models/Qwen/QwQ-32B:/root/llm-model/Qwen/QwQ-32B:ro", "--env VLLM_API_KEY"]:
        assert part in joined
    assert key not in joined and env == {"VLLM_API_KEY": key}
    image_at = argv.index("--entrypoint") + 2
    assert argv[image_at].startswith("vllm/vllm-openai:")
    assert argv[image_at + 1:image_at + 3] == ["-m", "vllm.entrypoints.openai.api_server"]


def test_rendered_shell_is_valid_bash_that_parses_back_to_the_argv(tmp_path):
    s, key = spec("Qwen/QwQ-32B", A10x4, sets={"served_model_name": "my model's name"})
    argv, env = run_argv(s, "/data/m", key)
    text = render(argv, env, {key: '"$(cat /k)"'})
    assert key not in text
    # bash -n accepts it, and bash splits it back into exactly the same words
    script = tmp_path / "s.sh"
    script.write_text(text.replace("env VLLM_API_KEY=\"$(cat /k)\"", "printf '%s\\n'", 1))
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    words = subprocess.run(["bash", str(script)], capture_output=True, text=True).stdout.splitlines()
    assert words == argv
