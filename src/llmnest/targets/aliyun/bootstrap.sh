#!/bin/bash
# llmnest bootstrap: what each instance of a stack runs, through Cloud Assistant (RunCommand).
#
# This file is a template: `llmnest.targets.aliyun.bootstrap` renders one script per deployment by
# keeping the parts a role needs (the lines between `#@part NAME` and `#@end`) and filling the
# generated blocks (`#@settings`, `#@start`, `#@main`). It is checked by shellcheck as it is.
#
# Inputs (the stack's preamble sets them before this text):
#   LLMNEST_ROLE        single | prepare | ray-head | ray-worker | serve | sglang-worker | sglang-head
#   LLMNEST_API_KEY     the user's API key, '' for none: the gateway's key `default` (never printed,
#                       never on a command line, never given to the engine)
#   LLMNEST_HEAD_IP     private IP of the head node (two-node edition)
#   llmnest_signal_curl POSTs its arguments to the role's wait condition (the handle's CurlCli): Ready,
#                       or Prepared for the two-node prepare role
# Settings (the render step writes them): MODEL_ID MODEL_ROOT MODEL_DIR CONTAINER IMAGE PORT ENGINE_PORT
#   SERVED_MODEL GPUS_PER_NODE READY_TIMEOUT RAY_WAIT ENGINE_LOG ENGINE_PID DRIVER_BRANCH DATA_DISK
#   NVSWITCH MIG_OFF TOOLKIT_PACKAGES GATEWAY_UNIT LLMNEST_PACKAGE PIP_INDEXES METRICS_FROM POLL_SECONDS
#   LOG_FILE TOOLKIT_SOURCES STATE_DIR GATEWAY_VENV
set -euo pipefail
umask 077

#@settings

#@part common
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
  if [[ -s "${STATE_DIR}/engine-key" ]]; then
    local engine
    engine=$(cat "${STATE_DIR}/engine-key")
    s=${s//"$engine"/[engine key]}
  fi
  printf '%s' "$s"
}

engine_key() {  # the engine's internal key (nobody's user key): made once on this host, 0600, printed
  local file="${STATE_DIR}/engine-key"
  if [[ ! -s "$file" ]]; then
    mkdir -p "$STATE_DIR"
    head -c 32 /dev/urandom | base64 | tr -d '/+=\n' > "$file"
    chmod 0600 "$file"
  fi
  cat "$file"
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

fail() {  # REASON: signal FAILURE with the log tail, leave the reason for the other roles, stop
  log "FAILED: $1"
  mkdir -p "$STATE_DIR" && printf '%s\n' "$1" > "${STATE_DIR}/failed"
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
#@end

#@part host
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

mount_data_disk() {  # the weights' data disk: formatted once, mounted where the engine reads weights
  [[ "$DATA_DISK" == 1 ]] || return 0
  STEP="mount the data disk on ${MODEL_ROOT}"
  if mountpoint -q "$MODEL_ROOT"; then
    log "data disk already on ${MODEL_ROOT}"
    return 0
  fi
  local dev="" name type parts
  while read -r name type; do  # the one whole disk without partitions (the system disk has them)
    parts=$(lsblk -nlo NAME "$name" | wc -l)
    if [[ "$type" == disk && "$parts" == 1 ]] && ! findmnt -rn -S "$name" >/dev/null; then
      dev=$name
      break
    fi
  done < <(lsblk -dnpo NAME,TYPE)
  [[ -n "$dev" ]] || fail "no unpartitioned data disk found for the weights (lsblk): the stack attaches one; see ${LOG_FILE}"
  if [[ -z "$(blkid -o value -s TYPE "$dev" || true)" ]]; then
    log "formatting the data disk ${dev} (ext4)"
    mkfs.ext4 -q -F -L llmnest-model "$dev" >>"$LOG_FILE" 2>&1
  fi
  mkdir -p "$MODEL_ROOT"
  mount "$dev" "$MODEL_ROOT"
  printf 'LABEL=llmnest-model %s ext4 defaults,nofail 0 2\n' "$MODEL_ROOT" >> "${LLMNEST_ROOT:-}/etc/fstab"
  log "data disk ${dev} mounted on ${MODEL_ROOT}"
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

resume_after_reboot() {  # first time only: reboot, and run this script again once the instance is back
  local copy="${LLMNEST_ROOT:-}/root/llmnest-bootstrap.sh" unit="${LLMNEST_ROOT:-}/etc/systemd/system/llmnest-resume.service"
  [[ -r "${BASH_SOURCE[0]}" && ! -e "$copy" ]] || return 1
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
  local source tried=()
  for source in $TOOLKIT_SOURCES; do  # KEY_URL|REPO_URL, the first reachable one wins
    if toolkit_from "${source%%|*}" "${source#*|}"; then
      nvidia-ctk runtime configure --runtime=docker >>"$LOG_FILE" 2>&1
      systemctl restart docker >>"$LOG_FILE" 2>&1
      return 0
    fi
    tried+=("${source#*|}")
  done
  fail "could not install the NVIDIA container toolkit from any of: ${tried[*]}; pass --image-id with a GPU image"
}

toolkit_from() {  # KEY_URL REPO_URL: the toolkit from one apt repository; non-zero (and nothing left behind) when unreachable
  local keyring="${LLMNEST_ROOT:-}/usr/share/keyrings/nvidia-container-toolkit.gpg"
  local sources="${LLMNEST_ROOT:-}/etc/apt/sources.list.d/nvidia-container-toolkit.list"
  local pin="${LLMNEST_ROOT:-}/etc/apt/preferences.d/nvidia-container-toolkit"
  local key="${STATE_DIR}/toolkit-key" host=${2#*://}
  host=${host%%/*}
  log "installing the NVIDIA container toolkit from $2"
  mkdir -p "$(dirname "$keyring")" "$(dirname "$sources")" "$(dirname "$pin")" "$STATE_DIR"
  if curl -fsSL --retry 2 --connect-timeout 15 -o "$key" "$1" >>"$LOG_FILE" 2>&1 \
      && gpg --batch --yes --dearmor -o "$keyring" < "$key" >>"$LOG_FILE" 2>&1; then
    printf 'deb [signed-by=%s] %s /\n' "$keyring" "$2" > "$sources"
    # the CUDA repository also holds drivers and fabric managers: take only the toolkit from it, so the
    # driver and nvidia-fabricmanager stay Ubuntu's, of one version
    printf '%s\n' "Package: ${TOOLKIT_PACKAGES}" "Pin: origin \"${host}\"" "Pin-Priority: 500" "" \
      "Package: *" "Pin: origin \"${host}\"" "Pin-Priority: -1" > "$pin"
    chmod 0644 "$keyring" "$sources" "$pin"  # apt reads them as an unprivileged user
    APT_UPDATED=""
    apt_install nvidia-container-toolkit && return 0
  fi
  log "$2 is not reachable from here; trying the next source"
  rm -f "$sources" "$pin" "$key"
  APT_UPDATED=""
  return 1
}

start_fabric_manager() {  # NVSwitch types: CUDA finds no usable GPU until the fabric manager runs
  [[ "$NVSWITCH" == 1 ]] || return 0
  STEP="start the NVIDIA fabric manager"
  systemctl is-active --quiet nvidia-fabricmanager && return 0
  local version branch
  version=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n 1)
  branch=${version%%.*}
  can_apt || fail "this NVSwitch instance needs nvidia-fabricmanager ${version} and the image has no apt: use a GPU image that runs it"
  log "installing nvidia-fabricmanager-${branch} for driver ${version}"
  apt_install "nvidia-fabricmanager-${branch}"
  systemctl enable --now nvidia-fabricmanager >>"$LOG_FILE" 2>&1 \
    || fail "nvidia-fabricmanager does not start; its version must equal the driver's (${version}): see journalctl -u nvidia-fabricmanager"
}

prepare_host() {  # what a plain image lacks; a GPU image (--image-id) with all of it skips this
  rm -f "${STATE_DIR}/prepared" "${STATE_DIR}/failed"
  mount_data_disk
  install_driver
  install_docker
  install_container_toolkit
  start_fabric_manager
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

mig_off() {  # ebmgn7/ebmgn7e may boot with MIG on; the engines need whole GPUs
  [[ "$MIG_OFF" == 1 ]] || return 0
  STEP="switch MIG off"
  [[ "$(nvidia-smi --query-gpu=mig.mode.current --format=csv,noheader)" == *Enabled* ]] || return 0
  log "MIG is on: switching it off on every GPU"
  nvidia-smi -mig 0 >>"$LOG_FILE" 2>&1 || true
  if [[ "$(nvidia-smi --query-gpu=mig.mode.current --format=csv,noheader)" == *Enabled* ]]; then
    resume_after_reboot || fail "MIG stays on after nvidia-smi -mig 0 (it applies at a GPU reset): reboot the instance(s), then run llmnest restart ${CONTAINER}"
  fi
  log "MIG is off"
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

pull_image() {  # before the long download: a missing tag fails in minutes, not hours
  STEP="pull ${IMAGE}"
  local attempt out=""
  for attempt in 1 2 3; do
    if out=$(docker pull --quiet "$IMAGE" 2>&1); then
      log "image ${IMAGE} ready"
      return 0
    fi
    log "pull attempt ${attempt} failed: ${out}"
    if [[ "$out" == *"manifest unknown"* || "$out" == *"not found"* ]]; then
      break
    fi
    sleep "$POLL_SECONDS"
  done
  fail "could not pull ${IMAGE%:*} tag ${IMAGE##*:} from ${IMAGE%%/*}: ${out##*$'\n'}; pass --set image=IMAGE with a tag the registry has"
}

check_cuda() {  # CUDA itself, inside the engine image: nvidia-smi passes where CUDA cannot start
  STEP="initialise CUDA on every GPU"
  local probe out
  probe="import torch; n = torch.cuda.device_count(); [torch.ones(1, device=f'cuda:{i}') for i in range(n)]; print(n)"
  out=$(docker run --rm --gpus all --entrypoint python3 "$IMAGE" -c "$probe" 2>&1) \
    || fail "CUDA does not initialise in ${IMAGE}: ${out##*$'\n'}"
  out=${out##*$'\n'}
  [[ "$out" =~ ^[0-9]+$ ]] || fail "the CUDA probe in ${IMAGE} printed no GPU count: ${out}"
  if (( out < GPUS_PER_NODE )); then
    fail "CUDA sees ${out} GPU(s), this deployment needs ${GPUS_PER_NODE} per node"
  fi
  log "CUDA ok on ${out} GPU(s)"
}

install_gateway() {  # llmnest in its own virtualenv, for the gateway (before the long download: fails in minutes)
  STEP="install ${LLMNEST_PACKAGE} for the gateway"
  local index out=""
  if [[ ! -x "${GATEWAY_VENV}/bin/python" ]]; then
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then  # Ubuntu ships venv's pip apart
      apt_install python3-venv
    fi
    python3 -m venv "$GATEWAY_VENV" >>"$LOG_FILE" 2>&1
  fi
  for index in $PIP_INDEXES; do  # the region's mirror first in mainland China, then PyPI
    if out=$("${GATEWAY_VENV}/bin/python" -m pip install --quiet --disable-pip-version-check --index-url "$index" \
        "$LLMNEST_PACKAGE" 2>&1); then
      log "installed ${LLMNEST_PACKAGE} for the gateway (from ${index})"
      return 0
    fi
    log "could not install ${LLMNEST_PACKAGE} from ${index}: ${out##*$'\n'}"
  done
  fail "could not install ${LLMNEST_PACKAGE} for the gateway from ${PIP_INDEXES}: ${out##*$'\n'}; pass --llmnest-package with a wheel URL the instance reaches"
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

mark_prepared() {  # two nodes: the stack's Prepared wait condition counts one signal per node
  mkdir -p "$STATE_DIR"
  touch "${STATE_DIR}/prepared"
  log "host prepared"
  signal SUCCESS "prepared" "$(hostname): driver, docker, ${IMAGE} and the weights are in place"
}
#@end

#@part wait
check_prepared() {  # a later role: the stack starts it once every node signalled prepared; the marker says so here
  STEP="check that the host is prepared"
  [[ -e "${STATE_DIR}/prepared" ]] && return 0
  if [[ -e "${STATE_DIR}/failed" ]]; then
    fail "preparing the host failed: $(cat "${STATE_DIR}/failed")"
  fi
  fail "this host is not prepared (no ${STATE_DIR}/prepared); see ${LOG_FILE}"
}
#@end

#@part ray
wait_ray_nodes() {  # N: until the Ray cluster has N nodes
  local deadline=$((SECONDS + RAY_WAIT)) nodes
  while (( SECONDS < deadline )); do
    nodes=$(docker exec "$CONTAINER" ray status 2>/dev/null | grep -c ' node_' || true)
    if (( nodes >= $1 )); then
      log "Ray cluster has ${nodes} node(s)"
      return 0
    fi
    sleep "$POLL_SECONDS"
  done
  fail "the Ray cluster did not reach $1 node(s) in ${RAY_WAIT} s"
}
#@end

#@start

#@part gateway
gateway_cli() {  # ARG...: llmnest with the gateway's settings (the wrapper Cloud Assistant commands run too)
  "${LLMNEST_ROOT:-}/usr/local/bin/llmnest" "$@" >>"$LOG_FILE" 2>&1
}

gateway_alive() {
  systemctl is-active --quiet "$GATEWAY_UNIT" && engine_alive
}

start_gateway() {  # the public port is the gateway's: keys per person, usage, limits; the engine is behind it
  STEP="start the gateway on port ${PORT}"
  local env="${STATE_DIR}/gateway.env" upstreams="${STATE_DIR}/gateway-upstreams.json"
  local unit="${LLMNEST_ROOT:-}/etc/systemd/system/${GATEWAY_UNIT}.service" wrapper="${LLMNEST_ROOT:-}/usr/local/bin/llmnest"
  mkdir -p "$STATE_DIR" "$(dirname "$unit")" "$(dirname "$wrapper")"
  printf '%s\n' "LLMNEST_HOME=${STATE_DIR}/home" "LLMNEST_GATEWAY_DB=sqlite:///${STATE_DIR}/gateway.db" > "$env"
  printf '[{"model": "%s", "replica_id": "%s", "base_url": "http://127.0.0.1:%s/v1", "internal_key": "%s"}]\n' \
    "$(json_escape "$SERVED_MODEL")" "$CONTAINER" "$ENGINE_PORT" "$(engine_key)" > "$upstreams"
  chmod 0600 "$env" "$upstreams"
  printf '%s\n' '#!/bin/sh' "set -a; . ${env}; set +a" "exec ${GATEWAY_VENV}/bin/llmnest \"\$@\"" > "$wrapper"
  chmod 0700 "$wrapper"
  import_user_key
  printf '%s\n' "[Unit]" "Description=llmnest gateway in front of ${CONTAINER}" \
    "After=network-online.target docker.service" "Wants=network-online.target" "" \
    "[Service]" "EnvironmentFile=${env}" \
    "ExecStart=${GATEWAY_VENV}/bin/llmnest gateway serve --host 0.0.0.0 --port ${PORT} --upstreams ${upstreams} --metrics-from ${METRICS_FROM}" \
    "Restart=always" "RestartSec=2" "" "[Install]" "WantedBy=multi-user.target" > "$unit"
  chmod 0644 "$unit"
  {
    systemctl daemon-reload
    systemctl enable "$GATEWAY_UNIT"  # started again at boot
    systemctl restart "$GATEWAY_UNIT"
  } >>"$LOG_FILE" 2>&1
  log "gateway ${GATEWAY_UNIT} started on port ${PORT} in front of the engine on 127.0.0.1:${ENGINE_PORT}"
}

import_user_key() {  # the key `up` printed: the gateway's key `default`, for this deployment's model
  local file="${STATE_DIR}/user-key" marker="${STATE_DIR}/user-key-imported"
  if [[ -e "$marker" ]]; then  # a redeploy: the key stays as the user left it (revoked stays revoked)
    gateway_cli keys update default --models "$SERVED_MODEL" || log "the gateway's key default was not updated"
    return 0
  fi
  printf '%s' "$LLMNEST_API_KEY" > "$file"
  chmod 0600 "$file"
  gateway_cli keys create default --key-file "$file" --models "$SERVED_MODEL" \
    || fail "could not import the API key into the gateway: see ${LOG_FILE}"
  rm -f "$file"
  touch "$marker"
}

wait_gateway() {
  STEP="wait for ${SERVED_MODEL} to answer through the gateway"
  wait_chat "$PORT" "$LLMNEST_API_KEY" "the gateway" gateway_alive
}
#@end

#@part serve
engine_alive() {
  if [[ "$LLMNEST_ROLE" == serve ]]; then  # the engine runs inside the Ray head container: its pid file
    # shellcheck disable=SC2016  # expands inside the container
    docker exec "$CONTAINER" bash -c 'kill -0 "$(cat "$0")"' "$ENGINE_PID" >/dev/null 2>&1
    return
  fi
  local state
  state=$(docker inspect --format '{{.State.Running}} {{.RestartCount}}' "$CONTAINER" 2>/dev/null || echo "false 0")
  [[ "$state" == "true 0" ]]
}

chat_once() {  # PORT KEY: prints the HTTP status of one real chat completion (the key from a 0600 file)
  local auth=()
  if [[ -n "$2" ]]; then
    printf 'Authorization: Bearer %s\n' "$2" > "$AUTH_HEADER"
    auth=(-H "@${AUTH_HEADER}")
  fi
  local body
  body=$(printf '{"model": "%s", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}' \
    "$(json_escape "$SERVED_MODEL")")
  curl -s -o "$REPLY" -w '%{http_code}' --max-time 60 "${auth[@]}" -H 'Content-Type: application/json' \
    -d "$body" "http://127.0.0.1:$1/v1/chat/completions" || true
}

wait_chat() {  # PORT KEY WHAT ALIVE: until a chat on PORT with KEY answers, while ALIVE (a command) succeeds
  local deadline=$((SECONDS + READY_TIMEOUT)) code
  while (( SECONDS < deadline )); do
    $4 || fail "$3 stopped before it answered"
    code=$(chat_once "$1" "$2")
    if [[ "$code" == 200 ]] && grep -q '"choices"' "$REPLY"; then
      log "${SERVED_MODEL} answered a chat request through $3"
      return 0
    fi
    if [[ "$code" == 401 ]]; then
      fail "$3 refused the API key (HTTP 401)"
    fi
    sleep "$POLL_SECONDS"
  done
  fail "${SERVED_MODEL} did not answer through $3 within ${READY_TIMEOUT} s"
}

wait_ready() {
  STEP="wait for ${SERVED_MODEL} to answer"
  if [[ -n "${LLMNEST_API_KEY:-}" ]]; then
    wait_chat "$ENGINE_PORT" "$(engine_key)" "the engine" engine_alive
  else
    wait_chat "$ENGINE_PORT" "" "the engine" engine_alive
  fi
}

succeed() {
  signal SUCCESS "ready" "${SERVED_MODEL} answers on port ${PORT}${GATEWAY_UNIT:+ through the gateway}"
  log "ready: ${SERVED_MODEL} answers on port ${PORT}"
}
#@end

#@main
