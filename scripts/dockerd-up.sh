#!/usr/bin/env bash
# Make a Docker engine answer on this machine: install Debian's docker.io when missing, start dockerd
# detached when it does not answer, and wait for its socket. Idempotent; needs root. Used by `make test`.
set -euo pipefail

LOG=${DOCKERD_LOG:-/var/log/llmnest-dockerd.log}
WAIT_S=${DOCKERD_WAIT_S:-60}

if ! command -v dockerd >/dev/null; then
  echo "==> installing docker.io (Debian's Docker engine)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi

if docker info >/dev/null 2>&1; then
  exit 0
fi

echo "==> starting dockerd (log: $LOG)"
# Detached from this shell (own session), or it may end with the make that started it.
setsid nohup dockerd >>"$LOG" 2>&1 </dev/null &
for _ in $(seq "$WAIT_S"); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "error: dockerd did not answer within ${WAIT_S} s; see $LOG" >&2
exit 1
