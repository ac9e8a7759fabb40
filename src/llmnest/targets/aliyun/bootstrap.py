"""The bootstrap script the stack runs on each instance (through Cloud Assistant). Pure.

The script is `bootstrap.sh` beside this module, a real shell file; this fills it in: the settings,
the engine's start functions and the role dispatch, keeping only the parts a role needs.
One readable bash script per deployment; the stack runs it once per role (a single node does
everything; the two-node edition prepares both nodes, starts the Ray head, joins the worker, then
serves). The engine container is started with exactly the `docker run` a local docker deployment
uses (`runtimes.docker.run_argv`), so cloud and local run the same engine command.

With an API key, llmnest's gateway serves the public port (a systemd unit, `llmnest gateway serve`
from the package `LLMNEST_PACKAGE` in a virtualenv) and the engine listens on 127.0.0.1:ENGINE_PORT
with an internal key made on the instance (0600 file); the user's key is the gateway's key `default`.

Inputs come from a preamble the stack prepends (`preamble`): the role, the API key, the head's
private IP and `llmnest_signal_curl`, which POSTs to the stack's wait condition. The key never
appears in the script, in any command line or in a signal.
"""

from __future__ import annotations

import base64
import gzip
import math
import re
import shlex
from importlib import resources

from ... import __version__
from ...engines.vllm import API_KEY_ENV
from ...errors import LlmnestError
from ...runtimes.docker import CONTAINER_MODEL_ROOT, image_of, run_argv
from ...shell import render
from ...spec import DeploymentSpec
from .budget import RAY_WAIT_S, load_s
from .images import in_mainland_china
from .network import vpc_ranges
from .sizing import catalog_model, disks_gib, gpu_type, needs_fabric_manager, resolve

KEY_PLACEHOLDER = "@LLMNEST_API_KEY@"
HEAD_ADDR_PLACEHOLDER = "@LLMNEST_HEAD_ADDR@"
RAY_ADDR_PLACEHOLDER = "@LLMNEST_RAY_ADDR@"
RANK_PLACEHOLDER = "@LLMNEST_NODE_RANK@"
RAY_PORT = 6379
SGLANG_DIST_PORT = 20000
BOOTSTRAP_LOG = "/var/log/llmnest-bootstrap.log"  # the bootstrap's own log on each instance
ENGINE_LOG = "/tmp/llmnest-engine.log"  # inside the head container, two-node vLLM only
ENGINE_PID = "/tmp/llmnest-engine.pid"  # likewise: the engine's pid (the image need not have pgrep)
STATE_DIR = "/var/lib/llmnest"  # markers a role leaves for the next one on the same host
SCRIPT_FILE = "bootstrap.sh"
COMMAND_LIMIT = 16 * 1024  # ECS RunCommand: CommandContent at most 16 KB once Base64-encoded
WORST_CURL = 2048  # the wait condition handle's CurlCli, whose length ROS decides: room kept for it
WORST_KEY = 128  # the longest API key the template's pattern accepts
WORST_IP = 15  # a private IPv4 address
KEY_VOLUME_PLACEHOLDER = "@LLMNEST_KEY_VOLUME@"
ENGINE_KEY_FILE = "/run/llmnest/api-key"  # inside the SGLang container, read-only, from STATE_DIR/engine-key
GATEWAY_UNIT = "llmnest-gateway"  # the systemd unit of the gateway on the instance
GATEWAY_VENV = "/opt/llmnest"  # llmnest's virtualenv on the instance
ENGINE_PORTS = (8000, 8001)  # the engine's loopback port behind the gateway: the first that is not the gateway's
PYPI = "https://pypi.org/simple"
PYPI_ALIYUN_MIRROR = "https://mirrors.aliyun.com/pypi/simple/"
# A plain Ubuntu image gets this NVIDIA server driver branch (CUDA 12.8+ engine images need >= 570)
# and the NVIDIA container toolkit from the first reachable of these apt repositories (key, repository).
# NVIDIA publishes the toolkit in its CUDA repository too, which has a mainland China CDN (.cn); Alibaba
# Cloud mirrors that repository; nvidia.github.io (the toolkit's own repository) is blocked in mainland
# China (NVIDIA/nvidia-docker#1722).
NVIDIA_DRIVER_BRANCH = "570"
CUDA_REPO = "compute/cuda/repos/ubuntu2204/x86_64"
CUDA_REPO_KEY = "3bf863cc.pub"  # the CUDA repositories' signing key since 2022
CUDA_CN = f"https://developer.download.nvidia.cn/{CUDA_REPO}"
CUDA_GLOBAL = f"https://developer.download.nvidia.com/{CUDA_REPO}"
CUDA_ALIYUN_MIRROR = "https://mirrors.aliyun.com/nvidia-cuda/ubuntu2204/x86_64"
TOOLKIT_GITHUB = ("https://nvidia.github.io/libnvidia-container/gpgkey",
                  "https://nvidia.github.io/libnvidia-container/stable/deb/amd64")
# What the toolkit's repository may install (the toolkit and its libraries); an apt pin keeps the rest out.
TOOLKIT_PACKAGES = ("nvidia-container-toolkit", "nvidia-container-toolkit-base", "libnvidia-container-tools",
                    "libnvidia-container1")
# MIG may be on when these types boot (Alibaba Cloud's GPU instance docs); the engines need whole GPUs.
MIG_FAMILIES = ("ebmgn7", "ebmgn7e")
ROLES_SINGLE = ("single",)
ROLES_RAY = ("prepare", "ray-head", "ray-worker", "serve")
ROLES_SGLANG = ("prepare", "sglang-worker", "sglang-head")

# Placeholder values in argv -> the shell expressions the script uses instead (shell.render secrets=)
PLACEHOLDERS = {
    KEY_PLACEHOLDER: '"${LLMNEST_API_KEY}"',
    HEAD_ADDR_PLACEHOLDER: f'"${{LLMNEST_HEAD_IP}}:{SGLANG_DIST_PORT}"',
    RAY_ADDR_PLACEHOLDER: f'"${{LLMNEST_HEAD_IP}}:{RAY_PORT}"',
    RANK_PLACEHOLDER: '"${NODE_RANK}"',
    KEY_VOLUME_PLACEHOLDER: f'"${{STATE_DIR}}/engine-key:{ENGINE_KEY_FILE}:ro"',
}
# SGLang takes its key only as a flag: this starts its server with the key read from a file, so the
# key is on no command line (ps, docker inspect). argv: KEY_FILE MODULE ARG...
KEY_FILE_LAUNCHER = (
    "import runpy, sys; key = open(sys.argv[1]).read().strip(); module = sys.argv[2]; "
    "sys.argv = [module, *sys.argv[3:], *(['--api-key', key] if key else [])]; "
    "runpy.run_module(module, run_name='__main__', alter_sys=True)"
)


def toolkit_sources(region: str) -> list[tuple[str, str]]:
    """(key URL, apt repository) to try in order: in mainland China the CUDA repository's China CDN
    and Alibaba Cloud's mirror first; elsewhere NVIDIA's global hosts first."""
    cuda = {url: (f"{url}/{CUDA_REPO_KEY}", url) for url in (CUDA_CN, CUDA_ALIYUN_MIRROR, CUDA_GLOBAL)}
    if in_mainland_china(region):
        return [cuda[CUDA_CN], cuda[CUDA_ALIYUN_MIRROR], cuda[CUDA_GLOBAL], TOOLKIT_GITHUB]
    return [cuda[CUDA_GLOBAL], TOOLKIT_GITHUB, cuda[CUDA_CN], cuda[CUDA_ALIYUN_MIRROR]]


def gateway_on(spec: DeploymentSpec) -> bool:
    """The gateway fronts every keyed deployment (keys are what it manages); --no-api-key serves the engine."""
    return spec.api_key_enabled


def engine_port(spec: DeploymentSpec) -> int:
    """Where the engine listens on the instance: behind the gateway a loopback port of its own."""
    return next(p for p in ENGINE_PORTS if p != spec.port) if gateway_on(spec) else spec.port


def llmnest_package(spec: DeploymentSpec) -> str:
    """What pip installs for the gateway: --llmnest-package (a wheel URL, a requirement), else this version."""
    place = spec.placement
    return (place.llmnest_package if place is not None and place.llmnest_package else None) or f"llmnest=={__version__}"


def pip_indexes(region: str) -> list[str]:
    """Package indexes to try in order: Alibaba Cloud's PyPI mirror first in mainland China, then PyPI."""
    return [PYPI_ALIYUN_MIRROR, PYPI] if in_mainland_china(region) else [PYPI]


def metrics_from(spec: DeploymentSpec) -> tuple[str, ...]:
    """Who reads the gateway's /metrics without the admin key: the VPC (as the security group lets it in)."""
    return vpc_ranges(spec)


def host_model_dir(spec: DeploymentSpec) -> str:
    """/root/llm-model/<ModelScope id>, where the seed's instances keep weights."""
    return str(CONTAINER_MODEL_ROOT / catalog_model(spec).modelscope_id)


def roles(spec: DeploymentSpec) -> tuple[str, ...]:
    spec = resolve(spec)
    assert spec.placement is not None
    if spec.placement.nodes == 1:
        return ROLES_SINGLE
    return ROLES_SGLANG if spec.engine == "sglang" else ROLES_RAY


def _key(spec: DeploymentSpec) -> str | None:
    return KEY_PLACEHOLDER if spec.api_key_enabled else None


def _engine_argv(spec: DeploymentSpec) -> list[str]:
    """The local docker runtime's `docker run` (behind the gateway: on loopback, its own port, the internal
    key); for SGLang with a key, started through the key-file launcher (the key file mounted read-only)
    instead of with `--api-key` on its command line."""
    if gateway_on(spec):
        spec = spec.listening_on("127.0.0.1", engine_port(spec))
    if spec.engine != "sglang" or not spec.api_key_enabled:
        argv, _ = run_argv(spec, host_model_dir(spec), _key(spec))
        return argv
    argv, _ = run_argv(spec, host_model_dir(spec), None)
    at = argv.index("--entrypoint")
    image = argv.index(image_of(spec), at)
    assert argv[image + 1] == "-m", argv
    return [*argv[:at], "--volume", KEY_VOLUME_PLACEHOLDER, *argv[at:image + 1],
            "-c", KEY_FILE_LAUNCHER, ENGINE_KEY_FILE, *argv[image + 2:]]


def _container_prefix(argv: list[str]) -> list[str]:
    """`docker run ... options` up to (not including) the entrypoint and image."""
    return argv[: argv.index("--entrypoint")]


def _env_flags(argv: list[str]) -> list[str]:
    flags: list[str] = []
    for i, word in enumerate(argv):
        if word == "--env":
            flags += ["--env", argv[i + 1]]
    return flags


def _ray_argv(spec: DeploymentSpec, head: bool) -> list[str]:
    join = ["--head", f"--port={RAY_PORT}"] if head else ["--address", RAY_ADDR_PLACEHOLDER]
    return [*_container_prefix(_engine_argv(spec)), "--entrypoint", "ray", image_of(spec), "start", *join, "--block"]


def _serve_exec_argv(spec: DeploymentSpec) -> list[str]:
    """The engine command of `run_argv`, started inside the running Ray head container."""
    on_ray = spec.model_copy(update={"engine_args": {"distributed-executor-backend": "ray", **spec.engine_args}})
    argv = _engine_argv(on_ray)
    engine = argv[argv.index(image_of(spec)) + 1 :]  # ["-m", module, *args]
    redirect = f'echo $$ >{ENGINE_PID}; exec "$0" "$@" >>{ENGINE_LOG} 2>&1'
    return ["docker", "exec", "--detach", *_env_flags(argv), spec.name, "bash", "-c", redirect, "python3", *engine]


def _sglang_node_spec(spec: DeploymentSpec) -> DeploymentSpec:
    args = {"nnodes": "2", "node-rank": RANK_PLACEHOLDER, "dist-init-addr": HEAD_ADDR_PLACEHOLDER}
    return spec.model_copy(update={"engine_args": {**spec.engine_args, **args}})


def engine_command(spec: DeploymentSpec) -> list[str]:
    """`-m MODULE ARG...`: the engine command the script starts in the container (with the
    placeholders the script fills from the stack: API key, node rank, head address)."""
    spec = resolve(spec)
    assert spec.placement is not None
    if spec.placement.nodes == 2 and spec.engine == "vllm":
        argv = _serve_exec_argv(spec)
        return argv[argv.index("python3") + 1 :]
    argv = _engine_argv(_sglang_node_spec(spec) if spec.placement.nodes == 2 else spec)
    return argv[argv.index(image_of(spec)) + 1 :]


def _key_file() -> str:
    """Shell lines making the internal key where the SGLang launcher reads it (0600)."""
    return "engine_key >/dev/null\n"


def _q(value: object) -> str:
    return shlex.quote(str(value))


def _function(name: str, body: str) -> str:
    indented = "\n".join(f"  {line}" if line else "" for line in body.splitlines())
    return f"{name}() {{\n{indented}\n}}\n"


def _key_export(spec: DeploymentSpec) -> str:
    """vLLM's internal key, exported for the docker CLI's `--env VLLM_API_KEY` (by name: no command line)."""
    if spec.api_key_enabled and spec.engine == "vllm":
        return f'{API_KEY_ENV}=$(engine_key)\nexport {API_KEY_ENV}\n'
    return ""


def _start_functions(spec: DeploymentSpec) -> str:
    """Shell functions that start the engine for this edition."""
    fresh = 'docker rm --force "$CONTAINER" >/dev/null 2>&1 || true\n'
    if spec.placement is not None and spec.placement.nodes == 2 and spec.engine == "vllm":
        head = render(_ray_argv(spec, head=True), secrets=PLACEHOLDERS)
        worker = render(_ray_argv(spec, head=False), secrets=PLACEHOLDERS)
        serve = render(_serve_exec_argv(spec), secrets=PLACEHOLDERS)
        return "\n".join([
            _function("start_ray_head", f'STEP="start the Ray head"\n{fresh}{_key_export(spec)}{head}\n'
                      "wait_ray_nodes 1"),
            _function("start_ray_worker", f'STEP="join the Ray cluster at ${{LLMNEST_HEAD_IP}}"\n{fresh}'
                      f"{_key_export(spec)}{worker}\nwait_ray_nodes 2"),
            _function("start_engine", 'STEP="start the engine on the Ray cluster"\nwait_ray_nodes 2\n'
                      f"{_key_export(spec)}# shellcheck disable=SC2016  # $0 and $@ expand in the container\n{serve}"),
        ])
    node_spec = _sglang_node_spec(spec) if spec.placement is not None and spec.placement.nodes == 2 else spec
    argv = _engine_argv(node_spec)
    key = _key_file() if KEY_VOLUME_PLACEHOLDER in argv else _key_export(spec)
    return _function("start_engine", f'STEP="start the engine container"\n{fresh}{key}'
                     f"{render(argv, secrets=PLACEHOLDERS)}")


def _settings(spec: DeploymentSpec) -> str:
    model = catalog_model(spec)
    assert spec.placement is not None and spec.placement.instance_type is not None
    t = gpu_type(spec.placement.instance_type)
    lines = {
        "MODEL_ID": model.modelscope_id,
        "MODEL_ROOT": str(CONTAINER_MODEL_ROOT),
        "MODEL_DIR": host_model_dir(spec),
        "CONTAINER": spec.name,
        "IMAGE": image_of(spec),
        "PORT": spec.port,
        "ENGINE_PORT": engine_port(spec),
        "SERVED_MODEL": spec.served_model_name,
        "GPUS_PER_NODE": t.gpus,
        "READY_TIMEOUT": load_s(spec),
        "RAY_WAIT": RAY_WAIT_S,
        "ENGINE_LOG": ENGINE_LOG,
        "ENGINE_PID": ENGINE_PID,
        "DRIVER_BRANCH": NVIDIA_DRIVER_BRANCH,
        "DATA_DISK": int(disks_gib(model)[1] > 0),
        "NVSWITCH": int(needs_fabric_manager(t)),
        "MIG_OFF": int(t.family in MIG_FAMILIES),
        "TOOLKIT_PACKAGES": " ".join(TOOLKIT_PACKAGES),
        "GATEWAY_UNIT": GATEWAY_UNIT if gateway_on(spec) else "",
        "LLMNEST_PACKAGE": llmnest_package(spec),
        "PIP_INDEXES": " ".join(pip_indexes(spec.placement.region)),
        "METRICS_FROM": ",".join(metrics_from(spec)),
    }
    words = [f"{k}={_q(v)}" for k, v in lines.items()]
    overridable = {  # a test points these at local stand-ins
        "POLL_SECONDS": ("LLMNEST_POLL_SECONDS", "10"),
        "LOG_FILE": ("LLMNEST_LOG_FILE", BOOTSTRAP_LOG),
        "TOOLKIT_SOURCES": ("LLMNEST_TOOLKIT_SOURCES",
                            " ".join(f"{key}|{repo}" for key, repo in toolkit_sources(spec.placement.region))),
        "STATE_DIR": ("LLMNEST_STATE_DIR", STATE_DIR),
        "GATEWAY_VENV": ("LLMNEST_GATEWAY_VENV", GATEWAY_VENV),
    }
    words += [f'{k}="${{{env}:-{default}}}"' for k, (env, default) in overridable.items()]
    return "# shellcheck disable=SC2034  # every role's script has the same settings\nreadonly \\\n" + \
        " \\\n".join(f"  {w}" for w in words) + "\n"


# What each role runs, and the parts of bootstrap.sh it needs (the start functions are "start").
ROLE_STEPS = {
    "single": ("prepare_host", "check_gpu", "mig_off", "check_docker", "pull_image", "check_cuda", "fetch_weights",
               "start_engine", "wait_ready", "succeed"),
    "prepare": ("prepare_host", "check_gpu", "mig_off", "check_docker", "pull_image", "check_cuda", "fetch_weights",
                "mark_prepared"),
    "ray-head": ("check_prepared", "start_ray_head"),
    "ray-worker": ("check_prepared", "start_ray_worker"),
    "serve": ("start_engine", "wait_ready", "succeed"),
    "sglang-worker": ("check_prepared", "NODE_RANK=1 start_engine"),
    "sglang-head": ("check_prepared", "NODE_RANK=0 start_engine", "wait_ready", "succeed"),
}
ROLE_PARTS = {
    "single": ("host", "start", "serve"),
    "prepare": ("host",),
    "ray-head": ("wait", "ray", "start"),
    "ray-worker": ("wait", "ray", "start"),
    "serve": ("ray", "start", "serve"),
    "sglang-worker": ("wait", "start"),
    "sglang-head": ("wait", "start", "serve"),
}
GATEWAY_STEPS = {"install": ("single", "prepare"), "serve": ("single", "serve", "sglang-head")}
PART = re.compile(r"^#@part (\w+)\n(.*?)^#@end\n", re.MULTILINE | re.DOTALL)


def script_template() -> str:
    """bootstrap.sh as the package ships it."""
    return resources.files(__package__).joinpath(SCRIPT_FILE).read_text()


def role_steps(spec: DeploymentSpec, role: str) -> tuple[str, ...]:
    """What `role` runs: behind the gateway, llmnest is installed before the weights' download, and the
    gateway starts once the engine answers; the stack's Ready signal waits for a chat through it."""
    steps = ROLE_STEPS[role]
    if not gateway_on(spec):
        return steps
    if role in GATEWAY_STEPS["install"]:
        at = steps.index("fetch_weights")
        steps = (*steps[:at], "install_gateway", *steps[at:])
    if role in GATEWAY_STEPS["serve"]:
        at = steps.index("succeed")
        steps = (*steps[:at], "start_gateway", "wait_gateway", *steps[at:])
    return steps


def _main(spec: DeploymentSpec, roles_here: tuple[str, ...], serving: bool) -> str:
    cases = "".join(f"  {role}) {'; '.join(role_steps(spec, role))} ;;\n" for role in roles_here)
    scratch = 'WORK=$(mktemp -d)\nreadonly AUTH_HEADER="${WORK}/auth" REPLY="${WORK}/reply"\n' if serving else ""
    return (
        f"{scratch}"
        'log "llmnest bootstrap, role ${LLMNEST_ROLE}${LLMNEST_HEAD_IP:+, head node ${LLMNEST_HEAD_IP}}"\n'
        f'case "$LLMNEST_ROLE" in\n{cases}  *) fail "unknown role ${{LLMNEST_ROLE}}" ;;\nesac\n'
        + ('rm -rf "$WORK"\n' if serving else "")
    )


def fill(template: str, needed: set[str], blocks: dict[str, str]) -> str:
    """The template with the parts in `needed` kept (markers dropped), the others removed, and each
    `#@NAME` line replaced by blocks[NAME]. Pure text; unknown parts or blocks are errors."""
    found = {m[0] for m in PART.findall(template)}
    if not needed <= found:
        raise ValueError(f"bootstrap.sh has no part(s) {sorted(needed - found)}")
    text = PART.sub(lambda m: m.group(2) if m.group(1) in needed else "", template)
    for name, block in blocks.items():
        marker = f"#@{name}\n"
        if marker not in text:
            raise ValueError(f"bootstrap.sh has no #@{name} line")
        text = text.replace(marker, block)
    if leftover := re.findall(r"^#@\w+", text, re.MULTILINE):
        raise ValueError(f"bootstrap.sh: nothing fills {leftover}")
    return text


def bootstrap_body(spec: DeploymentSpec, role: str | None = None) -> str:
    """The script without its shebang: what the stack appends to its preamble.

    With `role`, only what that role runs (a RunCommand's content is limited in size); without,
    every role of the edition (what `llmnest show --as script` prints).
    """
    spec = resolve(spec)
    assert spec.placement is not None
    roles_here = roles(spec) if role is None else (role,)
    needed = {part for r in roles_here for part in ROLE_PARTS[r]}
    if gateway_on(spec) and "serve" in needed:
        needed.add("gateway")
    blocks = {
        "settings": (f"# {spec.name}: {spec.served_model_name} with {spec.engine} on "
                     f"{spec.placement.nodes} x {spec.placement.instance_type}\n" + _settings(spec)),
        "start": _start_functions(spec) if "start" in needed else "",
        "main": _main(spec, roles_here, "serve" in needed),
    }
    needed.add("common")
    text = fill(script_template(), needed - {"start"}, blocks)
    header, body = text.split("set -euo pipefail\n", 1)
    inputs = header[header.index("# Inputs") : header.index("# Settings")]
    return f"# llmnest bootstrap, rendered from bootstrap.sh\n{inputs}set -euo pipefail\n{body}"


def preamble(role: str, api_key_expr: str, head_ip_expr: str, signal_curl: str) -> str:
    """The inputs block: shell text with the given expressions spliced in (the template passes
    ROS references through Fn::Join; a test passes plain values)."""
    return (
        f"LLMNEST_ROLE={role}\n"
        f"LLMNEST_API_KEY='{api_key_expr}'\n"
        f"LLMNEST_HEAD_IP='{head_ip_expr}'\n"
        f"llmnest_signal_curl() {{\n  {signal_curl} \"$@\"\n}}\n"
    )


def run_command_script(spec: DeploymentSpec, role: str, api_key_expr: str, head_ip_expr: str,
                       signal_curl: str) -> str:
    """What a RunCommand runs for `role`: the inputs, then that role's parts, compacted; gzipped
    (and unpacked by bash on the instance) when the plain text could exceed RunCommand's size
    limit once the stack splices in its values. Too large even so: an error, at render time."""
    inputs = "#!/bin/bash\n" + preamble(role, api_key_expr, head_ip_expr, signal_curl)
    spliced = len(api_key_expr) + len(head_ip_expr) + len(signal_curl)
    body = compact(bootstrap_body(spec, role))
    if command_bytes(inputs + body, spliced) <= COMMAND_LIMIT:
        return inputs + body
    packed = base64.b64encode(gzip.compress(body.encode(), mtime=0)).decode()
    text = inputs + f"eval \"$(printf '%s' '{packed}' | base64 -d | gunzip)\"\n"
    size = command_bytes(text, spliced)
    if size > COMMAND_LIMIT:
        raise LlmnestError(f"the {role} bootstrap of {spec.name} is {size:,} bytes as RunCommand content even "
                           f"gzipped, over the {COMMAND_LIMIT:,} bytes ECS accepts (a bug: please report it)")
    return text


def command_bytes(text: str, spliced: int) -> int:
    """Base64 size of a RunCommand's content once the stack's values (now `spliced` characters of
    stand-ins) are in, at their longest: the API key, the head's IP and the wait condition's CurlCli."""
    worst = len(text.encode()) - spliced + WORST_KEY + WORST_IP + WORST_CURL
    return 4 * math.ceil(worst / 3)


def compact(script: str) -> str:
    """The script without comments and blank lines, every command byte for byte: Cloud Assistant
    caps a command's size, and `show --as script` keeps the commented version. Shellcheck
    directives stay; a trailing comment goes only where the code before it closes its quotes."""
    out = []
    for i, line in enumerate(script.splitlines()):
        bare = line.strip()
        if not bare or (bare.startswith("#") and not (i == 0 or bare.startswith("# shellcheck"))):
            continue
        out.append(_without_trailing_comment(line))
    return "\n".join(out) + "\n"


def _without_trailing_comment(line: str) -> str:
    at = line.find("  # ", len(line) - len(line.lstrip()))
    while at > 0:
        code = line[:at]
        if code.count('"') % 2 == 0 and code.count("'") % 2 == 0:
            return code.rstrip()
        at = line.find("  # ", at + 1)
    return line


def render_bootstrap(spec: DeploymentSpec) -> str:
    """The script as `llmnest show NAME --as script` prints it: runnable once the inputs are set."""
    return ('#!/bin/bash\n: "${LLMNEST_ROLE:?set by the stack}" "${LLMNEST_HEAD_IP:=}" "${LLMNEST_API_KEY:=}"\n'
            + bootstrap_body(spec))


def logs_command(spec: DeploymentSpec, tail: int) -> str:
    """The command Cloud Assistant runs on node 0 to read the engine's log; before the engine's
    container exists, the bootstrap's own log and how much of the weights is on disk."""
    spec = resolve(spec)
    assert spec.placement is not None
    name, n = _q(spec.name), int(tail)
    if spec.placement.nodes == 2 and spec.engine == "vllm":
        engine = f"docker exec {name} tail -n {n} {ENGINE_LOG}"
    else:
        engine = f"docker logs --tail {n} {name} 2>&1"
    weights = _q(host_model_dir(spec))
    return (f"if docker inspect {name} >/dev/null 2>&1; then {engine}; "
            f'else tail -n {n} "${{LLMNEST_LOG_FILE:-{BOOTSTRAP_LOG}}}" 2>&1; '
            f"if [ -d {weights} ]; then echo \"weights on disk: $(du -sh {weights} | cut -f1)\"; fi; fi")


def gateway_logs_command(tail: int) -> str:
    """The command Cloud Assistant runs on node 0 to read the gateway's log (its systemd unit's journal)."""
    return f"journalctl -u {GATEWAY_UNIT} -n {int(tail)} --no-pager -o short-iso 2>&1"
