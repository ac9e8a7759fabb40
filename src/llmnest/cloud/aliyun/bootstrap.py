"""The bootstrap script the stack runs on each instance (through Cloud Assistant). Pure.

One readable bash script per deployment; the stack runs it once per role (a single node does
everything; the two-node edition prepares both nodes, starts the Ray head, joins the worker, then
serves). The engine container is started with exactly the `docker run` a local docker deployment
uses (`runtimes.docker.run_argv`), so cloud and local run the same engine command.

Inputs come from a preamble the stack prepends (`preamble`): the role, the API key, the head's
private IP and `llmnest_signal_curl`, which POSTs to the stack's wait condition. The key never
appears in the script, in any command line or in a signal.
"""

from __future__ import annotations

import shlex

from ...engines import default_image
from ...engines.vllm import API_KEY_ENV
from ...runtimes.docker import CONTAINER_MODEL_ROOT, run_argv
from ...shell import render
from ...spec import DeploymentSpec
from .sizing import catalog_model, ready_timeout_s, resolve

KEY_PLACEHOLDER = "@LLMNEST_API_KEY@"
HEAD_ADDR_PLACEHOLDER = "@LLMNEST_HEAD_ADDR@"
RAY_ADDR_PLACEHOLDER = "@LLMNEST_RAY_ADDR@"
RANK_PLACEHOLDER = "@LLMNEST_NODE_RANK@"
RAY_PORT = 6379
SGLANG_DIST_PORT = 20000
BOOTSTRAP_LOG = "/var/log/llmnest-bootstrap.log"  # the bootstrap's own log on each instance
ENGINE_LOG = "/tmp/llmnest-engine.log"  # inside the head container, two-node vLLM only
# A plain Ubuntu image gets this NVIDIA server driver branch (CUDA 12.8+ engine images need >= 570)
# and the container toolkit from NVIDIA's apt repository.
NVIDIA_DRIVER_BRANCH = "570"
TOOLKIT_REPO = "https://nvidia.github.io/libnvidia-container"
ROLES_SINGLE = ("single",)
ROLES_RAY = ("prepare", "ray-head", "ray-worker", "serve")
ROLES_SGLANG = ("prepare", "sglang-worker", "sglang-head")

# Placeholder values in argv -> the shell expressions the script uses instead (shell.render secrets=)
PLACEHOLDERS = {
    KEY_PLACEHOLDER: '"${LLMNEST_API_KEY}"',
    HEAD_ADDR_PLACEHOLDER: f'"${{LLMNEST_HEAD_IP}}:{SGLANG_DIST_PORT}"',
    RAY_ADDR_PLACEHOLDER: f'"${{LLMNEST_HEAD_IP}}:{RAY_PORT}"',
    RANK_PLACEHOLDER: '"${NODE_RANK}"',
}


def host_model_dir(spec: DeploymentSpec) -> str:
    """/root/llm-model/<ModelScope id>, where the seed's instances keep weights."""
    return str(CONTAINER_MODEL_ROOT / catalog_model(spec).modelscope_id)


def roles(spec: DeploymentSpec) -> tuple[str, ...]:
    spec = resolve(spec)
    assert spec.aliyun is not None
    if spec.aliyun.nodes == 1:
        return ROLES_SINGLE
    return ROLES_SGLANG if spec.engine == "sglang" else ROLES_RAY


def _key(spec: DeploymentSpec) -> str | None:
    return KEY_PLACEHOLDER if spec.api_key_enabled else None


def _engine_argv(spec: DeploymentSpec) -> list[str]:
    argv, _ = run_argv(spec, host_model_dir(spec), _key(spec))
    return argv


def _container_prefix(argv: list[str]) -> list[str]:
    """`docker run ... options` up to (not including) the entrypoint and image."""
    return argv[: argv.index("--entrypoint")]


def _image(spec: DeploymentSpec) -> str:
    return spec.image or default_image(spec.engine)


def _env_flags(argv: list[str]) -> list[str]:
    flags: list[str] = []
    for i, word in enumerate(argv):
        if word == "--env":
            flags += ["--env", argv[i + 1]]
    return flags


def _ray_argv(spec: DeploymentSpec, head: bool) -> list[str]:
    join = ["--head", f"--port={RAY_PORT}"] if head else ["--address", RAY_ADDR_PLACEHOLDER]
    return [*_container_prefix(_engine_argv(spec)), "--entrypoint", "ray", _image(spec), "start", *join, "--block"]


def _serve_exec_argv(spec: DeploymentSpec) -> list[str]:
    """The engine command of `run_argv`, started inside the running Ray head container."""
    on_ray = spec.model_copy(update={"engine_args": {"distributed-executor-backend": "ray", **spec.engine_args}})
    argv = _engine_argv(on_ray)
    engine = argv[argv.index(_image(spec)) + 1 :]  # ["-m", module, *args]
    redirect = f'exec "$0" "$@" >>{ENGINE_LOG} 2>&1'
    return ["docker", "exec", "--detach", *_env_flags(argv), spec.name, "bash", "-c", redirect, "python3", *engine]


def _sglang_node_spec(spec: DeploymentSpec) -> DeploymentSpec:
    args = {"nnodes": "2", "node-rank": RANK_PLACEHOLDER, "dist-init-addr": HEAD_ADDR_PLACEHOLDER}
    return spec.model_copy(update={"engine_args": {**spec.engine_args, **args}})


def _q(value: object) -> str:
    return shlex.quote(str(value))


def _function(name: str, body: str) -> str:
    indented = "\n".join(f"  {line}" if line else "" for line in body.splitlines())
    return f"{name}() {{\n{indented}\n}}\n"


def _key_export(spec: DeploymentSpec) -> str:
    if spec.api_key_enabled and spec.engine == "vllm":
        return f'export {API_KEY_ENV}="${{LLMNEST_API_KEY}}"\n'
    return ""


def _start_functions(spec: DeploymentSpec) -> str:
    """Shell functions that start the engine for this edition."""
    fresh = 'docker rm --force "$CONTAINER" >/dev/null 2>&1 || true\n'
    if spec.aliyun is not None and spec.aliyun.nodes == 2 and spec.engine == "vllm":
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
    node_spec = _sglang_node_spec(spec) if spec.aliyun is not None and spec.aliyun.nodes == 2 else spec
    argv, _ = run_argv(node_spec, host_model_dir(spec), _key(spec))
    return _function("start_engine", f'STEP="start the engine container"\n{fresh}{_key_export(spec)}'
                     f"{render(argv, secrets=PLACEHOLDERS)}")


def _settings(spec: DeploymentSpec) -> str:
    model = catalog_model(spec)
    assert spec.aliyun is not None
    per_node = spec.gpu_count // spec.aliyun.nodes
    lines = {
        "MODEL_ID": model.modelscope_id,
        "MODEL_DIR": host_model_dir(spec),
        "CONTAINER": spec.name,
        "IMAGE": _image(spec),
        "PORT": spec.port,
        "SERVED_MODEL": spec.served_model_name,
        "GPUS_PER_NODE": per_node,
        "READY_TIMEOUT": ready_timeout_s(spec),
        "ENGINE_LOG": ENGINE_LOG,
        "DRIVER_BRANCH": NVIDIA_DRIVER_BRANCH,
    }
    words = [f"{k}={_q(v)}" for k, v in lines.items()]
    overridable = {  # a test points these at local stand-ins
        "POLL_SECONDS": ("LLMNEST_POLL_SECONDS", "10"),
        "LOG_FILE": ("LLMNEST_LOG_FILE", BOOTSTRAP_LOG),
        "TOOLKIT_REPO": ("LLMNEST_TOOLKIT_REPO", TOOLKIT_REPO),
    }
    words += [f'{k}="${{{env}:-{default}}}"' for k, (env, default) in overridable.items()]
    return "# shellcheck disable=SC2034  # every role's script has the same settings\nreadonly \\\n" + \
        " \\\n".join(f"  {w}" for w in words) + "\n"


COMMON = r"""
STEP="start"
SIGNALED=""

log() {
  printf '%s %s\n' "$(date '+%F %T')" "$*" | tee -a "$LOG_FILE" >&2
}

json_escape() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\r'/}
  s=${s//$'\t'/ }
  printf '%s' "$s" | tr -d '\000-\010\013\014\016-\037'
}

redact() {
  local s=$1
  if [[ -n "${LLMNEST_API_KEY:-}" ]]; then
    s=${s//"$LLMNEST_API_KEY"/[api key]}
  fi
  printf '%s' "$s"
}

signal() {  # STATUS REASON DATA: tell the stack's wait condition
  local body
  body=$(printf '{"status": "%s", "reason": "%s", "data": "%s", "id": "%s"}' \
    "$1" "$(json_escape "$(redact "$2")")" "$(json_escape "$(redact "$3")")" "$(hostname)-${LLMNEST_ROLE}")
  SIGNALED=1
  llmnest_signal_curl --data-binary "$body" >/dev/null || log "could not reach the stack's wait condition"
}

engine_logs() {  # N: the engine's last N log lines
  if [[ "$LLMNEST_ROLE" == serve ]]; then
    docker exec "$CONTAINER" tail -n "$1" "$ENGINE_LOG" 2>&1 || true
  elif docker inspect "$CONTAINER" >/dev/null 2>&1; then
    docker logs --tail "$1" "$CONTAINER" 2>&1 || true
  else
    tail -n "$1" "$LOG_FILE" 2>/dev/null || true
  fi
}

fail() {  # REASON: signal FAILURE with the log tail, then stop
  log "FAILED: $1"
  signal FAILURE "$1" "$(engine_logs 30)"
  exit 1
}

on_exit() {
  local code=$?
  if [[ $code -ne 0 && -z "$SIGNALED" ]]; then
    fail "step '${STEP}' failed (exit ${code})"
  fi
}
trap on_exit EXIT
"""

HOST = r"""
APT_UPDATED=""

can_apt() {
  command -v apt-get >/dev/null
}

apt_install() {  # PACKAGE...: from the image's apt sources (Alibaba Cloud's internal mirror on its images)
  local wait=(-o DPkg::Lock::Timeout=900)  # a fresh instance's unattended upgrades hold the lock a while
  if [[ -z "$APT_UPDATED" ]]; then
    apt-get "${wait[@]}" update -q >>"$LOG_FILE" 2>&1
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get "${wait[@]}" install -y -q --no-install-recommends "$@" >>"$LOG_FILE" 2>&1
}

install_driver() {  # a plain Ubuntu image has no NVIDIA driver: install the server branch, load it
  STEP="install the NVIDIA ${DRIVER_BRANCH}-server driver"
  command -v nvidia-smi >/dev/null && return 0
  can_apt || fail "nvidia-smi not found and the image has no apt to install a driver: pass --image-id with a GPU image"
  log "no NVIDIA driver on the image: installing the ${DRIVER_BRANCH}-server branch (Ubuntu's signed modules)"
  command -v ubuntu-drivers >/dev/null || apt_install ubuntu-drivers-common
  ubuntu-drivers install --gpgpu "nvidia:${DRIVER_BRANCH}-server" >>"$LOG_FILE" 2>&1
  apt_install "nvidia-utils-${DRIVER_BRANCH}-server"
  modprobe nvidia && return 0
  resume_after_reboot || fail "the NVIDIA driver is installed but does not load: reboot the instance(s), then run llmnest restart ${CONTAINER}; or pass --image-id with a GPU image"
}

resume_after_reboot() {  # single node, first time only: reboot, and run this script again once the instance is back
  local copy="${LLMNEST_ROOT:-}/root/llmnest-bootstrap.sh" unit="${LLMNEST_ROOT:-}/etc/systemd/system/llmnest-resume.service"
  [[ "$LLMNEST_ROLE" == single && -r "${BASH_SOURCE[0]}" && ! -e "$copy" ]] || return 1
  install -D -m 0700 "${BASH_SOURCE[0]}" "$copy"
  mkdir -p "$(dirname "$unit")"
  printf '%s\n' "[Unit]" "Description=llmnest bootstrap, resumed after the driver's reboot" \
    "After=network-online.target docker.service" "Wants=network-online.target" "" \
    "[Service]" "Type=oneshot" "TimeoutStartSec=infinity" \
    "ExecStartPre=/bin/systemctl disable llmnest-resume.service" "ExecStart=/bin/bash /root/llmnest-bootstrap.sh" "" \
    "[Install]" "WantedBy=multi-user.target" > "$unit"
  systemctl daemon-reload >>"$LOG_FILE" 2>&1
  systemctl enable llmnest-resume.service >>"$LOG_FILE" 2>&1
  log "the NVIDIA driver loads after a reboot: rebooting now; the bootstrap resumes when the instance is back"
  SIGNALED="no: rebooting"
  exit 194  # Cloud Assistant reboots the instance on this exit code
}

install_docker() {
  STEP="install docker"
  command -v docker >/dev/null && return 0
  can_apt || fail "docker is not installed and the image has no apt: pass --image-id with a GPU image that has docker"
  log "installing docker"
  apt_install docker.io
  systemctl enable --now docker >>"$LOG_FILE" 2>&1
}

install_container_toolkit() {  # lets docker reach the GPUs (--gpus all)
  STEP="install the NVIDIA container toolkit"
  command -v nvidia-ctk >/dev/null && return 0
  command -v nvidia-container-cli >/dev/null && return 0
  can_apt || fail "the NVIDIA container toolkit is missing and the image has no apt: pass --image-id with a GPU image"
  log "installing the NVIDIA container toolkit from ${TOOLKIT_REPO}"
  local keyring="${LLMNEST_ROOT:-}/usr/share/keyrings/nvidia-container-toolkit.gpg"
  local sources="${LLMNEST_ROOT:-}/etc/apt/sources.list.d/nvidia-container-toolkit.list"
  mkdir -p "$(dirname "$keyring")" "$(dirname "$sources")"
  curl -fsSL --retry 3 "${TOOLKIT_REPO}/gpgkey" | gpg --batch --yes --dearmor -o "$keyring"
  # shellcheck disable=SC2016  # $(ARCH) is apt's variable, written literally
  printf 'deb [signed-by=%s] %s/stable/deb/$(ARCH) /\n' "$keyring" "$TOOLKIT_REPO" > "$sources"
  chmod 0644 "$keyring" "$sources"  # apt reads them as an unprivileged user
  APT_UPDATED=""
  apt_install nvidia-container-toolkit
  nvidia-ctk runtime configure --runtime=docker >>"$LOG_FILE" 2>&1
  systemctl restart docker >>"$LOG_FILE" 2>&1
}

prepare_host() {  # what a plain image lacks; a GPU image (--image-id) with all three skips this
  install_driver
  install_docker
  install_container_toolkit
}

check_gpu() {
  STEP="check the NVIDIA driver"
  command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: the image has no NVIDIA driver; use a GPU image"
  local count
  count=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)
  if (( count < GPUS_PER_NODE )); then
    fail "found ${count} GPU(s), this deployment needs ${GPUS_PER_NODE} per node"
  fi
  log "driver ok: ${count} GPU(s)"
}

check_docker() {
  STEP="check docker"
  command -v docker >/dev/null || fail "docker is not installed on the image"
  docker info >/dev/null 2>&1 || fail "the docker daemon is not running"
  if ! docker info --format '{{json .Runtimes}}' | grep -q nvidia && ! command -v nvidia-container-cli >/dev/null; then
    fail "the NVIDIA container toolkit is missing: docker cannot reach the GPUs"
  fi
  log "docker ok"
}

fetch_weights() {
  STEP="download ${MODEL_ID} from ModelScope"
  if [[ -f "${MODEL_DIR}/.llmnest-complete" ]]; then
    log "weights already in ${MODEL_DIR}"
    return 0
  fi
  mkdir -p "$MODEL_DIR"
  if ! command -v modelscope >/dev/null; then
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    python3 -m pip install --quiet modelscope
  fi
  local attempt
  for attempt in 1 2 3; do
    log "downloading ${MODEL_ID} into ${MODEL_DIR} (attempt ${attempt}, resumes partial files)"
    if modelscope download --model "$MODEL_ID" --local_dir "$MODEL_DIR"; then
      touch "${MODEL_DIR}/.llmnest-complete"
      return 0
    fi
    sleep "$POLL_SECONDS"
  done
  fail "could not download ${MODEL_ID} from ModelScope after 3 attempts; does the instance reach the internet?"
}

pull_image() {
  STEP="pull ${IMAGE}"
  local attempt
  for attempt in 1 2 3; do
    if docker pull --quiet "$IMAGE" >/dev/null; then
      log "image ${IMAGE} ready"
      return 0
    fi
    log "pull attempt ${attempt} failed"
    sleep "$POLL_SECONDS"
  done
  fail "could not pull ${IMAGE}"
}
"""

RAY = r"""
wait_ray_nodes() {  # N: until the Ray cluster has N nodes
  local deadline=$((SECONDS + 900)) nodes
  while (( SECONDS < deadline )); do
    nodes=$(docker exec "$CONTAINER" ray status 2>/dev/null | grep -c ' node_' || true)
    if (( nodes >= $1 )); then
      log "Ray cluster has ${nodes} node(s)"
      return 0
    fi
    sleep "$POLL_SECONDS"
  done
  fail "the Ray cluster did not reach $1 node(s) in 900 s"
}
"""

SERVE = r"""
engine_alive() {
  if [[ "$LLMNEST_ROLE" == serve ]]; then
    docker exec "$CONTAINER" pgrep -f "$SERVED_MODEL" >/dev/null 2>&1
    return
  fi
  local state
  state=$(docker inspect --format '{{.State.Running}} {{.RestartCount}}' "$CONTAINER" 2>/dev/null || echo "false 0")
  [[ "$state" == "true 0" ]]
}

chat_once() {  # prints the HTTP status of one real chat completion
  local auth=()
  if [[ -n "${LLMNEST_API_KEY:-}" ]]; then
    printf 'Authorization: Bearer %s\n' "$LLMNEST_API_KEY" > "$AUTH_HEADER"
    auth=(-H "@${AUTH_HEADER}")
  fi
  local body
  body=$(printf '{"model": "%s", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}' \
    "$(json_escape "$SERVED_MODEL")")
  curl -s -o "$REPLY" -w '%{http_code}' --max-time 60 "${auth[@]}" -H 'Content-Type: application/json' \
    -d "$body" "http://127.0.0.1:${PORT}/v1/chat/completions" || true
}

wait_ready() {
  STEP="wait for ${SERVED_MODEL} to answer"
  local deadline=$((SECONDS + READY_TIMEOUT)) code
  while (( SECONDS < deadline )); do
    engine_alive || fail "the engine stopped before it answered"
    code=$(chat_once)
    if [[ "$code" == 200 ]] && grep -q '"choices"' "$REPLY"; then
      log "${SERVED_MODEL} answered a chat request"
      return 0
    fi
    if [[ "$code" == 401 ]]; then
      fail "the engine refused the API key (HTTP 401)"
    fi
    sleep "$POLL_SECONDS"
  done
  fail "${SERVED_MODEL} did not answer within ${READY_TIMEOUT} s"
}

succeed() {
  signal SUCCESS "ready" "${SERVED_MODEL} answers on port ${PORT}"
  log "ready: ${SERVED_MODEL} answers on port ${PORT}"
}
"""

# What each role runs, and the parts of the script it needs (the start functions are "start").
ROLE_STEPS = {
    "single": ("prepare_host", "check_gpu", "check_docker", "fetch_weights", "pull_image", "start_engine",
               "wait_ready", "succeed"),
    "prepare": ("prepare_host", "check_gpu", "check_docker", "fetch_weights", "pull_image"),
    "ray-head": ("start_ray_head",),
    "ray-worker": ("start_ray_worker",),
    "serve": ("start_engine", "wait_ready", "succeed"),
    "sglang-worker": ("NODE_RANK=1 start_engine",),
    "sglang-head": ("NODE_RANK=0 start_engine", "wait_ready", "succeed"),
}
ROLE_PARTS = {
    "single": ("host", "start", "serve"),
    "prepare": ("host",),
    "ray-head": ("ray", "start"),
    "ray-worker": ("ray", "start"),
    "serve": ("ray", "start", "serve"),
    "sglang-worker": ("start",),
    "sglang-head": ("start", "serve"),
}


def _main(roles_here: tuple[str, ...], serving: bool) -> str:
    cases = "".join(f"  {role}) {'; '.join(ROLE_STEPS[role])} ;;\n" for role in roles_here)
    scratch = 'WORK=$(mktemp -d)\nreadonly AUTH_HEADER="${WORK}/auth" REPLY="${WORK}/reply"\n' if serving else ""
    return (
        f"\n{scratch}"
        'log "llmnest bootstrap, role ${LLMNEST_ROLE}${LLMNEST_HEAD_IP:+, head node ${LLMNEST_HEAD_IP}}"\n'
        f'case "$LLMNEST_ROLE" in\n{cases}  *) fail "unknown role ${{LLMNEST_ROLE}}" ;;\nesac\n'
        + ('rm -rf "$WORK"\n' if serving else "")
    )


def bootstrap_body(spec: DeploymentSpec, role: str | None = None) -> str:
    """The script without its shebang and inputs: what the stack appends to its preamble.

    With `role`, only what that role runs (a RunCommand's content is limited in size); without,
    every role of the edition (what `llmnest show --as script` prints).
    """
    spec = resolve(spec)
    assert spec.aliyun is not None
    roles_here = roles(spec) if role is None else (role,)
    needed = {part for r in roles_here for part in ROLE_PARTS[r]}
    parts = {"host": HOST, "ray": RAY, "start": _start_functions(spec), "serve": SERVE}
    head = (
        f"# llmnest bootstrap for {spec.name}: {spec.served_model_name} with {spec.engine} on "
        f"{spec.aliyun.nodes} x {spec.aliyun.instance_type}\n"
        "set -euo pipefail\numask 077\n\n"
    )
    chosen = "\n".join(parts[name] for name in ("host", "ray", "start", "serve") if name in needed)
    return head + _settings(spec) + COMMON + "\n" + chosen + _main(roles_here, "serve" in needed)


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
    """What a RunCommand runs for `role`: the inputs, then that role's parts, compacted."""
    return compact("#!/bin/bash\n" + preamble(role, api_key_expr, head_ip_expr, signal_curl)
                   + bootstrap_body(spec, role))


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
    spec = resolve(spec)
    inputs = (
        "#!/bin/bash\n"
        "# Inputs, set by the ROS stack before this script (see the RunCommand resources):\n"
        f"#   LLMNEST_ROLE     one of: {' '.join(roles(spec))}\n"
        "#   LLMNEST_API_KEY  the API key, '' for none (never printed or passed on a command line)\n"
        "#   LLMNEST_HEAD_IP  private IP of node 0 (two-node edition)\n"
        "#   llmnest_signal_curl  POSTs its arguments to the stack's wait condition (the handle's CurlCli)\n"
        ': "${LLMNEST_ROLE:?set by the stack}" "${LLMNEST_HEAD_IP:=}" "${LLMNEST_API_KEY:=}"\n'
    )
    return inputs + bootstrap_body(spec)


def logs_command(spec: DeploymentSpec, tail: int) -> str:
    """The command Cloud Assistant runs on node 0 to read the engine's log; before the engine's
    container exists, the bootstrap's own log and how much of the weights is on disk."""
    spec = resolve(spec)
    assert spec.aliyun is not None
    name, n = _q(spec.name), int(tail)
    if spec.aliyun.nodes == 2 and spec.engine == "vllm":
        engine = f"docker exec {name} tail -n {n} {ENGINE_LOG}"
    else:
        engine = f"docker logs --tail {n} {name} 2>&1"
    weights = _q(host_model_dir(spec))
    return (f"if docker inspect {name} >/dev/null 2>&1; then {engine}; "
            f'else tail -n {n} "${{LLMNEST_LOG_FILE:-{BOOTSTRAP_LOG}}}" 2>&1; '
            f"if [ -d {weights} ]; then echo \"weights on disk: $(du -sh {weights} | cut -f1)\"; fi; fi")
