#!/usr/bin/env bash
# Brings up a Docker engine that can run privileged containers (kind nodes) on
# this CI VM. Idempotent: exits 0 at once when `docker info` already answers.
#
# Why a runtime wrapper: dockerd 20.10 asks runc for every capability it knows
# for --privileged, but this VM's capability bounding set lacks
# CAP_SYS_RESOURCE, so runc fails with "unable to apply caps: operation not
# permitted". The wrapper drops every capability the host's bounding set does
# not hold from the OCI spec before handing over to the real runc.
set -euo pipefail

LOG=/var/log/kindlab-dockerd.log
WRAPPER_DIR=/usr/local/lib/kindlab
WRAPPER=$WRAPPER_DIR/runc-nocap
RUNTIME_NAME=kindlab
TIMEOUT=${KINDLAB_DOCKERD_TIMEOUT:-60}

# kind's known issue "too many open files": every node runs systemd and a
# kubelet, each taking inotify instances; the kernel's default of 128 per
# user runs out with a few clusters at once (the e2e tests run several, and a
# node that cannot start fails kind's create with "cat /kind/version"). kind's
# docs raise both limits; so do we on a CI machine (root), never lowering
# them. `kindlab doctor` names the same fix for users.
if [ "$(id -u)" = 0 ]; then
  for kv in fs.inotify.max_user_instances=512 fs.inotify.max_user_watches=524288; do
    k=${kv%%=*}; v=${kv#*=}
    if [ "$(sysctl -n "$k" 2>/dev/null || echo 0)" -lt "$v" ]; then
      sysctl -q -w "$kv" || echo "docker.sh: could not set $kv" >&2
    fi
  done
fi

if docker info >/dev/null 2>&1; then
  echo "docker.sh: docker engine already answers"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "docker.sh: must run as root to start dockerd" >&2
  exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends docker.io
fi

REAL_RUNC=$(command -v runc || true)
if [ -z "$REAL_RUNC" ]; then
  echo "docker.sh: runc not found after installing docker.io" >&2
  exit 1
fi
REAL_RUNC=$(readlink -f "$REAL_RUNC")
# The system python, not a pyenv shim: runc is called with a minimal env.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)

# shellcheck source=runc-nocap.sh
. "$(dirname "${BASH_SOURCE[0]}")/runc-nocap.sh"
write_runc_nocap "$WRAPPER" "$REAL_RUNC" "$PY"

if pgrep -x dockerd >/dev/null 2>&1; then
  echo "docker.sh: dockerd is running but 'docker info' fails; waiting for it"
else
  echo "docker.sh: starting dockerd (log: $LOG)"
  setsid nohup dockerd \
    --add-runtime "$RUNTIME_NAME=$WRAPPER" \
    --default-runtime "$RUNTIME_NAME" \
    </dev/null >>"$LOG" 2>&1 &
fi

deadline=$((SECONDS + TIMEOUT))
until docker info >/dev/null 2>&1; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "docker.sh: dockerd did not answer within ${TIMEOUT}s; last log lines:" >&2
    tail -n 30 "$LOG" >&2 || true
    exit 1
  fi
  sleep 1
done
echo "docker.sh: docker engine ready ($(docker version --format '{{.Server.Version}}'), default runtime $(docker info --format '{{.DefaultRuntime}}'))"
