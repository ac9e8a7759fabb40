"""The bootstrap script: shellcheck-clean, the same engine command as a local docker deployment,
and executed here with `docker`, `nvidia-smi` and `modelscope` replaced by recording shims (no GPU
host or hub exists on the test machine), against a local HTTP server standing in for the ROS
wait condition URL."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import textwrap
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from llmnest.catalog import get_model
from llmnest.targets.aliyun import bootstrap
from llmnest.targets.aliyun.sizing import disks_gib, gpu_type, needs_fabric_manager, resolve
from llmnest.targets.aliyun.template import command_content
from llmnest.errors import LlmnestError
from llmnest.runtimes.docker import run_argv
from llmnest.shell import render
from tests.conftest import free_port
from tests.fakes import shims
from tests.fakes.cloud_specs import cloud_spec

SHELLCHECK = shutil.which("shellcheck") or str(Path(os.sys.executable).with_name("shellcheck"))
KEY = "sk-bootstrap-test-key-0123"
EDITIONS = {
    "single-vllm": {"model": "Qwen/QwQ-32B"},
    "single-sglang": {"model": "Qwen/QwQ-32B", "engine": "sglang"},
    "ray-vllm": {"model": "deepseek-ai/DeepSeek-R1", "nodes": 2},
    "two-node-sglang": {"model": "deepseek-ai/DeepSeek-V3", "nodes": 2, "engine": "sglang"},
}


def _spec(edition: str):
    return resolve(cloud_spec(**EDITIONS[edition]))


def shellcheck(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "script.sh"
    path.write_text(text)
    return subprocess.run([SHELLCHECK, "--shell=bash", "--severity=style", str(path)], capture_output=True, text=True,
                          check=False)


@pytest.mark.parametrize("edition", EDITIONS)
def test_script_is_shellcheck_clean(edition: str, tmp_path: Path) -> None:
    done = shellcheck(bootstrap.render_bootstrap(_spec(edition)), tmp_path)
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize("edition", EDITIONS)
def test_every_role_as_the_stack_runs_it_is_shellcheck_clean(edition: str, tmp_path: Path) -> None:
    """The RunCommand text: preamble (with stack values) + body, for each role of the edition."""
    spec = _spec(edition)
    for role in bootstrap.roles(spec):
        parts = command_content(spec, role)["Fn::Join"][1]
        text = "".join(p if isinstance(p, str) else "stackvalue" for p in parts)
        done = shellcheck(shims.unpacked(text), tmp_path)
        assert done.returncode == 0, (role, done.stdout)


@pytest.mark.parametrize("edition", EDITIONS)
def test_every_command_fits_runcommand_with_the_longest_stack_values(edition: str) -> None:
    spec = _spec(edition)
    for role in bootstrap.roles(spec):
        text = bootstrap.run_command_script(spec, role, "k", "h", "c")
        size = bootstrap.command_bytes(text, 3)
        assert size <= bootstrap.COMMAND_LIMIT, (role, size)
        plain = "#!/bin/bash\n" + bootstrap.preamble(role, "k", "h", "c") + bootstrap.compact(
            bootstrap.bootstrap_body(spec, role))
        assert shims.unpacked(text) == plain  # packed or not, bash runs the same text
        packed = text != plain
        assert packed == (bootstrap.command_bytes(plain, 3) > bootstrap.COMMAND_LIMIT), role


def test_a_script_too_large_even_gzipped_is_refused_at_render_time(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec("single-vllm")
    monkeypatch.setattr(bootstrap, "COMMAND_LIMIT", 4000)
    with pytest.raises(LlmnestError, match=r"the single bootstrap of .* over the 4,000 bytes ECS accepts"):
        bootstrap.run_command_script(spec, "single", "k", "h", "c")


def test_compacting_drops_comments_and_blank_lines_and_nothing_else() -> None:
    script = ("#!/bin/bash\n# a comment\n\n# shellcheck disable=SC2016  # why\nf() {  # what f does\n"
              "  echo \"a  # not a comment\"  # but this is\n  echo 'it''s  # quoted'\n"
              "  echo \"open  # quote\n  still open\"\n}\n")
    assert bootstrap.compact(script) == (
        "#!/bin/bash\n# shellcheck disable=SC2016\nf() {\n  echo \"a  # not a comment\"\n"
        "  echo 'it''s  # quoted'\n  echo \"open  # quote\n  still open\"\n}\n")


@pytest.mark.parametrize("edition", EDITIONS)
def test_the_compacted_script_keeps_every_command_line(edition: str) -> None:
    full = bootstrap.render_bootstrap(_spec(edition))
    kept = [line for line in full.splitlines()
            if line.strip() and not re.match(r"\s*#(?!!| shellcheck)", line)]
    assert bootstrap.compact(full).splitlines() == [re.sub(r"(\S)  # .*$", r"\1", line) for line in kept]
    assert len(bootstrap.compact(full)) < len(full) * 0.93


def test_shellcheck_can_fail(tmp_path: Path) -> None:
    assert shellcheck("#!/bin/bash\necho $1 | grep x\ncd /tmp\n", tmp_path).returncode != 0


def test_runs_exactly_the_local_docker_command() -> None:
    spec = _spec("single-vllm")
    engine = spec.listening_on("127.0.0.1", bootstrap.engine_port(spec))  # the gateway has the public port
    argv, env = run_argv(engine, bootstrap.host_model_dir(spec), bootstrap.KEY_PLACEHOLDER)
    script = bootstrap.render_bootstrap(spec)
    assert textwrap.indent(render(argv, secrets=bootstrap.PLACEHOLDERS), "  ") in script  # inside start_engine()
    assert list(env) == ["VLLM_API_KEY"] and "VLLM_API_KEY=$(engine_key)\n  export VLLM_API_KEY" in script
    assert bootstrap.engine_port(spec) != spec.port and "--host 127.0.0.1" in script
    assert "--volume /root/llm-model/Qwen/QwQ-32B:/root/llm-model/Qwen/QwQ-32B:ro" in script


@pytest.mark.parametrize("edition", ["single-sglang", "two-node-sglang"])
def test_sglang_reads_its_key_from_a_file_never_from_its_command_line(edition: str) -> None:
    script = bootstrap.render_bootstrap(_spec(edition))
    assert '--api-key "${LLMNEST_API_KEY}"' not in script and bootstrap.KEY_PLACEHOLDER not in script
    # the user's key goes to the gateway only: written to a 0600 file it imports, and sent by the probe
    uses = [line.strip() for line in script.splitlines() if re.search(r"LLMNEST_API_KEY\b", line)
            and not line.lstrip().startswith("#")]
    assert all("--api-key" not in u and "docker" not in u for u in uses), uses
    assert f'--volume "${{STATE_DIR}}/engine-key:{bootstrap.ENGINE_KEY_FILE}:ro"' in script
    command = bootstrap.engine_command(_spec(edition))
    assert command[:4] == ["-c", bootstrap.KEY_FILE_LAUNCHER, bootstrap.ENGINE_KEY_FILE, "sglang.launch_server"]


def test_the_key_file_launcher_hands_the_module_its_arguments_and_the_key(tmp_path: Path) -> None:
    """The launcher itself, run for real: the module sees the key as SGLang's flag, the process's
    command line never holds it."""
    (tmp_path / "show_argv.py").write_text(
        "import json, os, sys\n"
        "cmdline = open(f'/proc/{os.getpid()}/cmdline').read().split('\\0')\n"
        "print(json.dumps({'argv': sys.argv[1:], 'cmdline': cmdline}))\n")
    key_file = tmp_path / "api-key"
    key_file.write_text(KEY)
    done = subprocess.run([os.sys.executable, "-c", bootstrap.KEY_FILE_LAUNCHER, str(key_file), "show_argv",
                           "--port", "8080"], capture_output=True, text=True, check=True,
                          env={"PYTHONPATH": str(tmp_path)})
    seen = json.loads(done.stdout)
    assert seen["argv"] == ["--port", "8080", "--api-key", KEY]
    assert KEY not in " ".join(seen["cmdline"])
    key_file.write_text("")  # no key: no flag
    done = subprocess.run([os.sys.executable, "-c", bootstrap.KEY_FILE_LAUNCHER, str(key_file), "show_argv"],
                          capture_output=True, text=True, check=True, env={"PYTHONPATH": str(tmp_path)})
    assert json.loads(done.stdout)["argv"] == []


def test_ray_edition_starts_head_worker_then_serves_with_pipeline_parallel() -> None:
    spec = _spec("ray-vllm")
    script = bootstrap.render_bootstrap(spec)
    assert bootstrap.roles(spec) == ("prepare", "ray-head", "ray-worker", "serve")
    assert "--head \\\n    --port=6379" in script
    assert '--address "${LLMNEST_HEAD_IP}:6379"' in script
    assert f"--tensor-parallel-size {spec.gpu_count // 2}" in script and "--pipeline-parallel-size 2" in script
    assert "--distributed-executor-backend ray" in script


def test_sglang_two_node_edition_uses_node_rank_and_dist_init_addr() -> None:
    spec = _spec("two-node-sglang")
    script = bootstrap.render_bootstrap(spec)
    assert bootstrap.roles(spec) == ("prepare", "sglang-worker", "sglang-head")
    assert '--nnodes 2' in script and '--node-rank "${NODE_RANK}"' in script
    assert '--dist-init-addr "${LLMNEST_HEAD_IP}:20000"' in script


# ---- executed with shims


class SignalServer:
    """Stands in for the WaitConditionHandle URL: records every JSON signal POSTed to it."""

    def __init__(self) -> None:
        self.signals: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # the container toolkit's apt repository key
                body = b"-----BEGIN PGP PUBLIC KEY BLOCK-----\nstand-in\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.signals.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    @property
    def curl(self) -> str:
        return f"curl -sS -X POST -H 'Content-Type: application/json' http://127.0.0.1:{self.server.server_port}/signal"


@pytest.fixture
def signals():
    server = SignalServer()
    yield server
    server.server.shutdown()


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fake instance from a GPU image: shims first on PATH, weights under tmp instead of /root/llm-model."""
    monkeypatch.setattr(bootstrap, "CONTAINER_MODEL_ROOT", tmp_path / "llm-model")
    monkeypatch.setattr(bootstrap, "ENGINE_PORTS", (free_port(), free_port()))  # the engine behind the gateway
    shims.install(tmp_path / "bin", tmp_path / "state")
    yield tmp_path
    shims.stop_engine(tmp_path / "state")


@pytest.fixture
def bare_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fake instance from the default plain Ubuntu image: no driver, docker or toolkit until apt installs them."""
    monkeypatch.setattr(bootstrap, "CONTAINER_MODEL_ROOT", tmp_path / "llm-model")
    monkeypatch.setattr(bootstrap, "ENGINE_PORTS", (free_port(), free_port()))
    shims.install(tmp_path / "bin", tmp_path / "state", bare=True)
    yield tmp_path
    shims.stop_engine(tmp_path / "state")


def run_bootstrap(host: Path, signals: SignalServer, spec, *, mode: str = "ok", gpus: int = 1,
                  key: str = KEY, script: Path | None = None, role: str = "single",
                  toolkit: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a role's script as Cloud Assistant would (or `script`, a copy it left behind)."""
    if script is None:
        script = host / "bootstrap.sh"
        script.write_text(bootstrap.run_command_script(spec, role, key, "192.168.1.10", signals.curl))
    env = {
        "PATH": str(host / "bin"),  # shims and the basics they link: the machine's own docker is not seen
        "SHIM_STATE": str(host / "state"),
        "SHIM_GPUS": str(gpus),
        "FAKE_ENGINE_MODE": mode,
        "LLMNEST_POLL_SECONDS": "0.2",
        "LLMNEST_LOG_FILE": str(host / "bootstrap.log"),
        "HOME": str(host),
        # the first toolkit source is unreachable (a closed port), the second is the stand-in server
        "LLMNEST_TOOLKIT_SOURCES": toolkit or f"{CLOSED}/3bf863cc.pub|{CLOSED}/cuda {signals.url}/gpgkey|{signals.url}/toolkit",
        "LLMNEST_ROOT": str(host / "root"),
        "LLMNEST_STATE_DIR": str(host / "root/var/lib/llmnest"),
        "LLMNEST_GATEWAY_VENV": str(host / "root/opt/llmnest"),
    }
    return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=120, check=False)


CLOSED = f"http://127.0.0.1:{free_port()}"  # nothing listens there


def _local_spec(**kw):
    kw.setdefault("instance_type", "ecs.gn7e-c16g1.4xlarge")  # one A100 80 GB: the shim reports 1 GPU
    return resolve(cloud_spec("Qwen/QwQ-32B", port=free_port(), **kw))


def test_success_signals_once_the_engine_answers_a_chat(host: Path, signals: SignalServer) -> None:
    spec = _local_spec()
    done = run_bootstrap(host, signals, spec)
    assert done.returncode == 0, done.stderr
    assert [s["status"] for s in signals.signals] == ["SUCCESS"]
    assert spec.served_model_name in signals.signals[0]["data"]
    state = host / "state"
    assert [c["argv"][0] for c in shims.calls(state, "nvidia-smi")] == ["--query-gpu=index"]  # no NVSwitch here
    docker = [c["argv"][:2] for c in shims.calls(state, "docker")]
    # the image is pulled and CUDA probed in it before the weights' download, then the engine starts
    assert docker.index(["pull", "--quiet"]) < docker.index(["run", "--rm"]) < docker.index(["run", "--detach"])
    probe = next(c["argv"] for c in shims.calls(state, "docker") if c["argv"][:2] == ["run", "--rm"])
    assert probe[2:6] == ["--gpus", "all", "--entrypoint", "python3"] and probe[6] == spec.image
    download = shims.calls(state, "modelscope")[0]["argv"]
    assert download[:3] == ["download", "--model", "Qwen/QwQ-32B"]
    assert download[-1] == str(host / "llm-model" / "Qwen/QwQ-32B")
    run = next(c for c in shims.calls(state, "docker") if c["argv"][:2] == ["run", "--detach"])
    engine = spec.listening_on("127.0.0.1", bootstrap.engine_port(spec))  # behind the gateway, on loopback
    argv, _ = run_argv(engine, bootstrap.host_model_dir(spec), KEY)
    assert run["argv"] == argv[1:]  # exactly the local docker runtime's command
    assert run["key_in_env"] and KEY not in json.dumps(shims.calls(state))
    assert (host / "llm-model" / "Qwen/QwQ-32B" / ".llmnest-complete").exists()


def _chat(port: int, key: str, model: str) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", method="POST",
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
                                     data=json.dumps({"model": model, "messages": [{"role": "user", "content": "x"}],
                                                      "max_tokens": 1}).encode())
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_the_gateway_serves_the_port_and_the_engine_only_loopback_with_its_own_key(host: Path, signals: SignalServer,
                                                                                   engine: str) -> None:
    """The gateway part run for real (the systemctl shim runs the unit the script wrote): the user's key is the
    gateway's `default`, the engine listens on 127.0.0.1 with an internal key in a 0600 file, and neither key
    is on any command line (docker argv, the gateway's, the engine's)."""
    spec = _local_spec(engine=engine)
    done = run_bootstrap(host, signals, spec)
    assert done.returncode == 0, done.stderr
    assert [s["status"] for s in signals.signals] == ["SUCCESS"] and "through the gateway" in signals.signals[0]["data"]
    root, state = host / "root", host / "state"
    engine_key = (root / "var/lib/llmnest/engine-key").read_text()
    assert len(engine_key) >= 32 and engine_key != KEY
    for secret_file in ("engine-key", "gateway-upstreams.json", "gateway.env"):
        assert (root / "var/lib/llmnest" / secret_file).stat().st_mode & 0o777 == 0o600, secret_file
    assert not (root / "var/lib/llmnest/user-key").exists()  # imported, then removed
    run = next(c["argv"] for c in shims.calls(state, "docker") if c["argv"][:2] == ["run", "--detach"])
    assert run[run.index("--host") + 1] == "127.0.0.1" and run[run.index("--port") + 1] == str(bootstrap.engine_port(spec))
    everything = json.dumps(shims.calls(state))
    assert KEY not in everything and engine_key not in everything
    gateway_pid = int((state / "unit-llmnest-gateway.pid").read_text())
    for pid in (gateway_pid, int((state / "engine.pid").read_text())):
        cmdline = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
        assert KEY not in cmdline and engine_key not in cmdline
    assert "gateway serve --host 0.0.0.0 --port" in Path(f"/proc/{gateway_pid}/cmdline").read_text().replace("\0", " ")
    unit = (root / "etc/systemd/system/llmnest-gateway.service").read_text()
    assert "Restart=always" in unit and "WantedBy=multi-user.target" in unit
    assert ["enable", "llmnest-gateway"] in [c["argv"] for c in shims.calls(state, "systemctl")]
    assert _chat(spec.port, KEY, spec.served_model_name) == 200  # the user's key, through the gateway
    assert _chat(spec.port, engine_key, spec.served_model_name) == 401  # the internal key is no user's key
    assert _chat(bootstrap.engine_port(spec), KEY, spec.served_model_name) == 401  # the engine: not the user's key
    listed = subprocess.run([str(root / "usr/local/bin/llmnest"), "keys", "ls", "--json"], capture_output=True,
                            text=True, check=True, env={"PATH": os.environ["PATH"]})
    (default,) = json.loads(listed.stdout)
    assert (default["name"], default["models"], default["requests"]) == ("default", [spec.served_model_name], 2)


def test_sglang_gets_its_key_from_the_file_and_no_command_line_holds_it(host: Path, signals: SignalServer) -> None:
    """The SGLang container runs the key-file launcher for real (the shim maps the --volume): the engine
    answers only with its internal key, which is in no docker argv and not in the engine process's command line."""
    spec = _local_spec(engine="sglang")
    done = run_bootstrap(host, signals, spec)
    assert done.returncode == 0, done.stderr
    assert [s["status"] for s in signals.signals] == ["SUCCESS"]  # the probe's key was accepted
    state = host / "state"
    key_file = host / "root/var/lib/llmnest/engine-key"
    engine_key = key_file.read_text()
    assert oct(key_file.stat().st_mode & 0o777) == "0o600" and engine_key != KEY
    assert KEY not in json.dumps(shims.calls(state)) and engine_key not in json.dumps(shims.calls(state))
    pid = int((state / "engine.pid").read_text())
    assert engine_key not in Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    assert _chat(bootstrap.engine_port(spec), engine_key, spec.served_model_name) == 200
    request = urllib.request.Request(f"http://127.0.0.1:{bootstrap.engine_port(spec)}/v1/chat/completions", method="POST",
                                     data=json.dumps({"model": spec.served_model_name}).encode())
    with pytest.raises(urllib.error.HTTPError) as refused:  # the engine did get the key: it asks for it
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401


def test_failing_engine_signals_failure_with_its_log_tail_redacted(host: Path, signals: SignalServer) -> None:
    done = run_bootstrap(host, signals, _local_spec(), mode="crash")
    assert done.returncode == 1
    assert [s["status"] for s in signals.signals] == ["FAILURE"]
    failure = signals.signals[0]
    assert failure["reason"] == "the engine stopped before it answered"
    assert "CUDA out of memory" in failure["data"]
    assert KEY not in json.dumps(signals.signals) and "api_key=[engine key]" in failure["data"]


def test_missing_gpus_fail_fast_with_the_reason(host: Path, signals: SignalServer) -> None:
    spec = _local_spec(instance_type="ecs.gn7i-4x.8xlarge")
    done = run_bootstrap(host, signals, spec, gpus=2)
    assert done.returncode == 1
    assert signals.signals[-1]["status"] == "FAILURE"
    assert signals.signals[-1]["reason"] == "found 2 GPU(s), this deployment needs 4 per node"
    assert not shims.calls(host / "state", "modelscope")


def test_download_resumes_after_a_failure_and_is_skipped_when_complete(host: Path, signals: SignalServer) -> None:
    (host / "state" / "modelscope-failures").write_text("1")
    spec = _local_spec()
    assert run_bootstrap(host, signals, spec).returncode == 0
    assert len(shims.calls(host / "state", "modelscope")) == 2
    shims.stop_engine(host / "state")
    assert run_bootstrap(host, signals, spec).returncode == 0
    assert len(shims.calls(host / "state", "modelscope")) == 2  # weights complete: no new download
    assert [s["status"] for s in signals.signals] == ["SUCCESS", "SUCCESS"]


def test_wrong_key_is_reported_as_refused(host: Path, signals: SignalServer) -> None:
    """The engine gets the key through docker's env; a probe with another key gets 401."""
    spec = _local_spec()
    script_key = "sk-probe-uses-another-key"
    env_key = KEY
    (host / "bin" / "docker").write_text((host / "bin" / "docker").read_text().replace(
        'proc = subprocess.Popen(', f'env["VLLM_API_KEY"] = {env_key!r}\n    proc = subprocess.Popen('))
    done = run_bootstrap(host, signals, spec, key=script_key)
    assert done.returncode == 1
    assert signals.signals[-1]["reason"] == "the engine refused the API key (HTTP 401)"


def test_plain_ubuntu_image_gets_driver_docker_and_toolkit_then_serves(bare_host: Path, signals: SignalServer) -> None:
    spec = _local_spec()
    done = run_bootstrap(bare_host, signals, spec)
    assert done.returncode == 0, done.stderr
    assert [s["status"] for s in signals.signals] == ["SUCCESS"]
    steps = [(c["tool"], *c["argv"]) for c in shims.calls(bare_host / "state")
             if c["tool"] in shims.BARE_TOOLS + ("nvidia-ctk", "systemctl") and c["argv"][:1] != ["is-active"]]

    def what(step: tuple[str, ...]) -> str:
        if step[0] != "apt-get":
            return step[0]
        return "apt-get " + " ".join(w for w in step[step.index("install") + 1:] if not w.startswith("-")) \
            if "install" in step else "apt-get update"

    order = [what(s) for s in steps]
    assert order == ["ubuntu-drivers", "apt-get update", "apt-get nvidia-utils-570-server", "modprobe",
                     "apt-get docker.io", "systemctl", "gpg", "apt-get update", "apt-get nvidia-container-toolkit",
                     "nvidia-ctk", "systemctl", "systemctl", "systemctl", "systemctl"]  # then the gateway's unit
    assert ("ubuntu-drivers", "install", "--gpgpu", "nvidia:570-server") in steps
    assert ("nvidia-ctk", "runtime", "configure", "--runtime=docker") in steps
    sources = bare_host / "root/etc/apt/sources.list.d/nvidia-container-toolkit.list"
    assert sources.read_text() == (f"deb [signed-by={bare_host}/root/usr/share/keyrings/nvidia-container-toolkit.gpg]"
                                   f" {signals.url}/toolkit /\n")  # the reachable source, after the closed one
    host = signals.url.removeprefix("http://")  # only the toolkit from it: the driver and fabric manager stay Ubuntu's
    assert (bare_host / "root/etc/apt/preferences.d/nvidia-container-toolkit").read_text() == (
        "Package: nvidia-container-toolkit nvidia-container-toolkit-base libnvidia-container-tools libnvidia-container1\n"
        f'Pin: origin "{host}"\nPin-Priority: 500\n\nPackage: *\nPin: origin "{host}"\nPin-Priority: -1\n')
    assert oct(sources.stat().st_mode & 0o777) == "0o644"
    assert any(c["argv"][0] == "run" for c in shims.calls(bare_host / "state", "docker"))


def test_logs_show_the_bootstrap_until_the_engine_runs_then_the_engine(host: Path, signals: SignalServer) -> None:
    spec = _local_spec()
    env = {"PATH": str(host / "bin"), "SHIM_STATE": str(host / "state"),
           "LLMNEST_LOG_FILE": str(host / "bootstrap.log")}

    def logs() -> list[str]:
        done = subprocess.run(["bash", "-c", bootstrap.logs_command(spec, 5)], env=env, capture_output=True,
                              text=True, check=False, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    (host / "bootstrap.log").write_text("2026-11-25 10:00:00 downloading Qwen/QwQ-32B (attempt 1)\n")
    weights = Path(bootstrap.host_model_dir(spec))
    weights.mkdir(parents=True)
    (weights / "model-00001.safetensors").write_bytes(b"\0" * 300_000)
    before = logs()
    assert before[0].endswith("downloading Qwen/QwQ-32B (attempt 1)") and re.fullmatch(r"weights on disk: \d+K", before[1])
    assert run_bootstrap(host, signals, spec).returncode == 0
    assert logs()[0].startswith("INFO: starting engine for Qwen/QwQ-32B")  # the (shimmed) engine's own log


def test_a_gpu_image_installs_nothing(host: Path, signals: SignalServer) -> None:
    assert run_bootstrap(host, signals, _local_spec()).returncode == 0
    assert not [c for c in shims.calls(host / "state") if c["tool"] in shims.BARE_TOOLS]


def test_a_driver_that_loads_only_after_a_reboot_reboots_and_resumes(bare_host: Path, signals: SignalServer) -> None:
    (bare_host / "state" / "fail-modprobe").touch()
    spec = _local_spec()
    done = run_bootstrap(bare_host, signals, spec)
    assert done.returncode == 194, done.stderr  # Cloud Assistant reboots the instance on exit code 194
    assert signals.signals == [] and not shims.calls(bare_host / "state", "modelscope")
    copy = bare_host / "root/root/llmnest-bootstrap.sh"
    assert copy.read_text() == (bare_host / "bootstrap.sh").read_text() and oct(copy.stat().st_mode & 0o777) == "0o700"
    unit = (bare_host / "root/etc/systemd/system/llmnest-resume.service").read_text()
    assert "ExecStart=/bin/bash /root/llmnest-bootstrap.sh" in unit and "Type=oneshot" in unit
    assert "ExecStartPre=/bin/systemctl disable llmnest-resume.service" in unit  # runs once
    assert ["enable", "llmnest-resume.service"] in [c["argv"] for c in shims.calls(bare_host / "state", "systemctl")]
    # the instance is back and the driver loads: systemd runs the copy, which goes on from where it stopped
    (bare_host / "state" / "fail-modprobe").unlink()
    again = run_bootstrap(bare_host, signals, spec, script=copy)
    assert again.returncode == 0, again.stderr
    assert [s["status"] for s in signals.signals] == ["SUCCESS"]
    assert len(shims.calls(bare_host / "state", "ubuntu-drivers")) == 1  # the driver is not installed twice


def test_a_driver_that_does_not_load_after_the_reboot_fails_with_what_to_do(bare_host: Path, signals: SignalServer) -> None:
    (bare_host / "state" / "fail-modprobe").touch()
    (bare_host / "root/root").mkdir(parents=True)
    (bare_host / "root/root/llmnest-bootstrap.sh").write_text("# the first boot's copy: this is the resumed run\n")
    spec = _local_spec()
    done = run_bootstrap(bare_host, signals, spec)
    assert done.returncode == 1
    assert [s["status"] for s in signals.signals] == ["FAILURE"]
    assert signals.signals[0]["reason"] == (
        f"the NVIDIA driver is installed but does not load: reboot the instance(s), then run llmnest restart "
        f"{spec.name}; or pass --image-id with a GPU image")
    assert not shims.calls(bare_host / "state", "modelscope")


@pytest.mark.parametrize("edition", EDITIONS)
def test_each_roles_script_defines_every_function_it_calls(edition: str) -> None:
    """A RunCommand carries only its role's parts (the content is size-limited): none may be missing."""
    spec = _spec(edition)
    defined_anywhere = set(re.findall(r"^(\w+)\(\) \{", bootstrap.render_bootstrap(spec), re.MULTILINE))
    for role in bootstrap.roles(spec):
        text = bootstrap.bootstrap_body(spec, role)
        defined = set(re.findall(r"^(\w+)\(\) \{", text, re.MULTILINE))
        called = {f for f in defined_anywhere if re.search(rf"(^|[\s;(]){f}\b(?!\(\))", text, re.MULTILINE)}
        assert called <= defined, (role, called - defined)
        assert set(bootstrap.ROLE_STEPS[role][-1].split()[-1:]) <= defined


def test_the_shipped_script_file_is_shellcheck_clean(tmp_path: Path) -> None:
    done = shellcheck(bootstrap.script_template(), tmp_path)
    assert done.returncode == 0, done.stdout


def test_fill_keeps_the_asked_parts_and_fills_every_marker() -> None:
    template = "a\n#@part x\nx1\n#@end\n#@part y\ny1\n#@end\n#@here\nz\n"
    assert bootstrap.fill(template, {"x"}, {"here": "H\n"}) == "a\nx1\nH\nz\n"
    with pytest.raises(ValueError, match=r"no part\(s\) \['w'\]"):
        bootstrap.fill(template, {"w"}, {"here": ""})
    with pytest.raises(ValueError, match=r"nothing fills \['#@here'\]"):
        bootstrap.fill(template, {"x"}, {})
    with pytest.raises(ValueError, match="no #@there line"):
        bootstrap.fill(template, {"x"}, {"here": "", "there": ""})


def test_a_tag_the_registry_lacks_fails_before_the_download_naming_tag_and_registry(host: Path,
                                                                                     signals: SignalServer) -> None:
    (host / "state" / "fail-pull").touch()
    spec = _local_spec(sets={"image": "egs-registry.cn-hangzhou.cr.aliyuncs.com/egs/vllm:0.0.0-missing"})
    done = run_bootstrap(host, signals, spec)
    assert done.returncode == 1
    reason = signals.signals[-1]["reason"]
    assert reason.startswith("could not pull egs-registry.cn-hangzhou.cr.aliyuncs.com/egs/vllm tag 0.0.0-missing "
                             "from egs-registry.cn-hangzhou.cr.aliyuncs.com: ")
    assert "manifest unknown" in reason and reason.endswith("pass --set image=IMAGE with a tag the registry has")
    pulls = [c for c in shims.calls(host / "state", "docker") if c["argv"][0] == "pull"]
    assert len(pulls) == 1 and not shims.calls(host / "state", "modelscope")  # no retries, no download


def test_cuda_that_does_not_initialise_fails_before_the_download(host: Path, signals: SignalServer) -> None:
    (host / "state" / "fail-cuda").touch()
    spec = _local_spec()
    done = run_bootstrap(host, signals, spec)
    assert done.returncode == 1
    assert signals.signals[-1]["reason"] == (
        f"CUDA does not initialise in {spec.image}: RuntimeError: CUDA error: system not yet initialized")
    assert not shims.calls(host / "state", "modelscope")


def _two_node_h20() -> object:
    spec = resolve(cloud_spec("deepseek-ai/DeepSeek-R1", nodes=2, instance_type="ecs.ebmgn8v.48xlarge",
                              port=free_port()))
    assert needs_fabric_manager(gpu_type("ecs.ebmgn8v.48xlarge")) and disks_gib(get_model("deepseek-r1"))[1] > 0
    return spec


def test_prepare_mounts_the_data_disk_and_starts_the_fabric_manager(bare_host: Path, signals: SignalServer) -> None:
    state = bare_host / "state"
    (state / "disks.json").write_text(json.dumps({"/dev/vda": {"partitions": 3}, "/dev/vdb": {"partitions": 0}}))
    (bare_host / "root/etc").mkdir(parents=True)
    spec = _two_node_h20()
    done = run_bootstrap(bare_host, signals, spec, role="prepare", gpus=8)
    assert done.returncode == 0, done.stderr
    # the stack's Prepared wait condition counts one signal per node (the id names the host)
    assert [(s["status"], s["reason"], s["id"]) for s in signals.signals] == [("SUCCESS", "prepared", f"{socket.gethostname()}-prepare")]
    root = str(bare_host / "llm-model")
    assert [c["argv"] for c in shims.calls(state, "mkfs.ext4")] == [["-q", "-F", "-L", "llmnest-model", "/dev/vdb"]]
    assert [c["argv"] for c in shims.calls(state, "mount")] == [["/dev/vdb", root]]
    assert (bare_host / "root/etc/fstab").read_text() == f"LABEL=llmnest-model {root} ext4 defaults,nofail 0 2\n"
    assert shims.calls(state, "modelscope")[0]["argv"][-1].startswith(root + "/")  # the weights land on it
    apt = [c["argv"] for c in shims.calls(state, "apt-get") if "install" in c["argv"]]
    assert next(a for a in apt if "nvidia-fabricmanager-570" in a)[-1] == "nvidia-fabricmanager-570"
    assert ["enable", "--now", "nvidia-fabricmanager"] in [c["argv"] for c in shims.calls(state, "systemctl")]
    assert (bare_host / "root/var/lib/llmnest/prepared").exists()
    # a second run (after a reboot) finds the disk mounted and formats nothing
    shims.stop_engine(state)
    assert run_bootstrap(bare_host, signals, spec, role="prepare", gpus=8).returncode == 0
    assert len(shims.calls(state, "mkfs.ext4")) == 1


def test_prepare_without_a_data_disk_fails_saying_so(bare_host: Path, signals: SignalServer) -> None:
    (bare_host / "state" / "disks.json").write_text(json.dumps({"/dev/vda": {"partitions": 3}}))
    done = run_bootstrap(bare_host, signals, _two_node_h20(), role="prepare", gpus=8)
    assert done.returncode == 1
    assert signals.signals[-1]["reason"].startswith("no unpartitioned data disk found for the weights")


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_two_node_prepare_reboots_for_the_driver_resumes_and_only_then_says_prepared(
        bare_host: Path, signals: SignalServer, engine: str) -> None:
    """The two-node edition's reboot path: prepare (asynchronous in the stack) exits 194 with no signal,
    the copy resumes after the reboot and signals the Prepared wait condition; the roles the stack
    starts after it find the host prepared."""
    state = bare_host / "state"
    (state / "disks.json").write_text(json.dumps({"/dev/vda": {"partitions": 3}, "/dev/vdb": {"partitions": 0}}))
    (bare_host / "root/etc").mkdir(parents=True)
    (state / "fail-modprobe").touch()
    spec = resolve(cloud_spec("deepseek-ai/DeepSeek-R1", nodes=2, instance_type="ecs.ebmgn8v.48xlarge",
                              port=free_port(), engine=engine))
    done = run_bootstrap(bare_host, signals, spec, role="prepare", gpus=8)
    assert done.returncode == 194, done.stderr
    assert signals.signals == [] and not shims.calls(state, "modelscope")  # nothing said, nothing downloaded
    assert not (bare_host / "root/var/lib/llmnest/prepared").exists()
    # the instance is back: systemd runs the copy, which goes on from where it stopped
    (state / "fail-modprobe").unlink()
    again = run_bootstrap(bare_host, signals, spec, role="prepare", gpus=8,
                          script=bare_host / "root/root/llmnest-bootstrap.sh")
    assert again.returncode == 0, again.stderr
    assert [(s["status"], s["reason"]) for s in signals.signals] == [("SUCCESS", "prepared")]
    assert len(shims.calls(state, "ubuntu-drivers")) == 1 and len(shims.calls(state, "modelscope")) == 1
    if engine == "sglang":  # the worker's role, which the stack starts once both nodes said prepared
        worker = run_bootstrap(bare_host, signals, spec, role="sglang-worker", gpus=8)
        assert worker.returncode == 0, worker.stderr
        assert [c["argv"][:2] for c in shims.calls(state, "docker")][-1] == ["run", "--detach"]


def test_a_later_role_on_a_host_whose_prepare_failed_fails_with_prepares_reason(bare_host: Path,
                                                                                 signals: SignalServer) -> None:
    (bare_host / "root/var/lib/llmnest").mkdir(parents=True)
    (bare_host / "root/var/lib/llmnest/failed").write_text("could not download deepseek-ai/DeepSeek-R1\n")
    done = run_bootstrap(bare_host, signals, _two_node_h20(), role="ray-worker", gpus=8)
    assert done.returncode == 1
    assert signals.signals[-1]["reason"] == "preparing the host failed: could not download deepseek-ai/DeepSeek-R1"
    assert not shims.calls(bare_host / "state", "docker")  # nothing started


def test_mig_left_on_by_the_image_is_switched_off_before_the_engine(bare_host: Path, signals: SignalServer) -> None:
    """An 8-GPU ebmgn7e from the plain image: NVSwitch, so the fabric manager comes too."""
    (bare_host / "state" / "mig-mode").write_text("Enabled")
    spec = _local_spec(instance_type="ecs.ebmgn7e.32xlarge")
    done = run_bootstrap(bare_host, signals, spec, gpus=8)
    assert done.returncode == 0, done.stderr
    assert ["-mig", "0"] in [c["argv"] for c in shims.calls(bare_host / "state", "nvidia-smi")]
    assert (bare_host / "state" / "mig-mode").read_text() == "Disabled"
    assert [s["status"] for s in signals.signals] == ["SUCCESS"]


def test_mig_that_stays_on_reboots_once_to_apply_it(bare_host: Path, signals: SignalServer) -> None:
    (bare_host / "state" / "mig-mode").write_text("Enabled")
    (bare_host / "state" / "mig-sticks").touch()  # pending until the GPUs reset
    spec = _local_spec(instance_type="ecs.ebmgn7e.32xlarge")
    done = run_bootstrap(bare_host, signals, spec, gpus=8)
    assert done.returncode == 194, done.stderr
    assert signals.signals == [] and not shims.calls(bare_host / "state", "modelscope")
    # still on after that reboot: one clear failure, no reboot loop
    again = run_bootstrap(bare_host, signals, spec, gpus=8, script=bare_host / "root/root/llmnest-bootstrap.sh")
    assert again.returncode == 1
    assert signals.signals[-1]["reason"] == (
        f"MIG stays on after nvidia-smi -mig 0 (it applies at a GPU reset): reboot the instance(s), then run "
        f"llmnest restart {spec.name}")


def test_other_types_never_touch_mig(host: Path, signals: SignalServer) -> None:
    (host / "state" / "mig-mode").write_text("Enabled")
    assert run_bootstrap(host, signals, _local_spec()).returncode == 0
    assert not [c for c in shims.calls(host / "state", "nvidia-smi") if "mig" in " ".join(c["argv"])]


def test_no_reachable_toolkit_source_fails_naming_every_source(bare_host: Path, signals: SignalServer,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Under pipefail an unreachable source is tried and left, never a crash; none reachable: one clear failure."""
    spec = _local_spec()
    script = bare_host / "bootstrap.sh"
    script.write_text(bootstrap.run_command_script(spec, "single", KEY, "192.168.1.10", signals.curl)
                      .replace(f"{signals.url}/toolkit", f"{CLOSED}/toolkit"))
    env_sources = f"{CLOSED}/3bf863cc.pub|{CLOSED}/cuda {CLOSED}/gpgkey|{CLOSED}/toolkit"
    done = run_bootstrap(bare_host, signals, spec, script=script, toolkit=env_sources)
    assert done.returncode == 1
    assert signals.signals[-1]["reason"] == (f"could not install the NVIDIA container toolkit from any of: "
                                             f"{CLOSED}/cuda {CLOSED}/toolkit; pass --image-id with a GPU image")
    assert not (bare_host / "root/etc/apt/sources.list.d/nvidia-container-toolkit.list").exists()
    assert not (bare_host / "root/etc/apt/preferences.d/nvidia-container-toolkit").exists()


@pytest.mark.parametrize("region", ["cn-hangzhou", "ap-southeast-1"])
def test_toolkit_sources_reachable_in_mainland_china_come_first_there(region: str) -> None:
    sources = [repo for _, repo in bootstrap.toolkit_sources(region)]
    assert len(sources) == 4 and sources[-1 if region == "cn-hangzhou" else 1].startswith("https://nvidia.github.io/")
    if region == "cn-hangzhou":
        assert sources[0] == "https://developer.download.nvidia.cn/compute/cuda/repos/ubuntu2204/x86_64"
        assert sources[1].startswith("https://mirrors.aliyun.com/")
    script = bootstrap.render_bootstrap(resolve(cloud_spec("Qwen/QwQ-32B", region=region)))
    assert all(f"{repo}/" in script or repo in script for repo in sources)


def test_llmnest_comes_from_pypi_through_the_mirror_in_china_or_from_the_users_url() -> None:
    from llmnest import __version__

    spec = _spec("single-vllm")  # cn-hangzhou
    assert bootstrap.llmnest_package(spec) == f"llmnest=={__version__}"
    assert bootstrap.pip_indexes("cn-hangzhou") == [bootstrap.PYPI_ALIYUN_MIRROR, bootstrap.PYPI]
    assert bootstrap.pip_indexes("ap-southeast-1") == [bootstrap.PYPI]
    url = "https://bucket.oss-cn-hangzhou.aliyuncs.com/llmnest-0.1.0-py3-none-any.whl"
    given = spec.model_copy(update={"placement": spec.placement.model_copy(update={"llmnest_package": url})})
    assert f"LLMNEST_PACKAGE={url}" in bootstrap.render_bootstrap(given)
    from llmnest.targets.aliyun.placement import AliyunPlacement
    for bad in ("--index-url=http://evil", "two words", "a'quote"):
        with pytest.raises(ValueError):
            AliyunPlacement(region="cn-hangzhou", llmnest_package=bad)


def test_a_package_that_does_not_install_fails_before_the_download(host: Path, signals: SignalServer) -> None:
    (host / "state" / "fail-pip").touch()
    done = run_bootstrap(host, signals, _local_spec())
    assert done.returncode == 1
    assert signals.signals[-1]["reason"].startswith("could not install llmnest==")
    assert "--llmnest-package" in signals.signals[-1]["reason"]
    assert not shims.calls(host / "state", "modelscope")
