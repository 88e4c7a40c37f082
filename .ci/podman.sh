#!/usr/bin/env bash
# Brings up rootful podman's Docker-compatible API service, the second engine
# kindlab drives (KIND_EXPERIMENTAL_PROVIDER=podman): kind's nodes go through
# the podman CLI, kindlab's own Engine API calls through this socket.
# Idempotent: exits 0 at once when the socket already answers.
#
# Why a containers.conf: podman asks runc for RLIMIT_NOFILE/RLIMIT_NPROC of
# 1048576 in every container, above this VM's hard limits (nofile 20000), and
# raising a hard limit needs CAP_SYS_RESOURCE, which the VM's bounding set
# lacks: `runc create failed: … error setting rlimit type 7: operation not
# permitted`. default_ulimits at the host's own hard limits avoids it. podman
# reads the file named by CONTAINERS_CONF; the service gets it here, and the
# podman CLI that kind runs must get it too (make e2e exports it). Prints
# nothing else on stdout but its progress.
set -euo pipefail

SOCK=${KINDLAB_PODMAN_SOCKET:-/run/podman/podman.sock}
CONF=${KINDLAB_PODMAN_CONF:-/etc/kindlab/podman/containers.conf}
LOG=/var/log/kindlab-podman.log
TIMEOUT=${KINDLAB_PODMAN_TIMEOUT:-60}

if [ "$(id -u)" != 0 ]; then
  echo "podman.sh: must run as root (kindlab's podman tests use rootful podman)" >&2
  exit 1
fi

if ! command -v podman >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q podman
fi

# The hard limits podman's own processes get (runc inherits them and cannot
# go above): not simply this shell's, since podman changes its own at start
# (podman 4.3.1 here: nofile 20000 as the shell, nproc 32768 where the shell
# has 96365). Read from a short-lived podman process.
probe=$(mktemp -u /tmp/kindlab-podman-probe.XXXXXX.sock)
podman system service --time=0 "unix://$probe" </dev/null >/dev/null 2>&1 &
ppid=$!
for _ in $(seq 50); do [ -S "$probe" ] && break; sleep 0.1; done
nofile=$(awk '/^Max open files/ {print $5}' "/proc/$ppid/limits" 2>/dev/null || true)
nproc=$(awk '/^Max processes/ {print $4}' "/proc/$ppid/limits" 2>/dev/null || true)
# The probe died early: this shell's limits are the best guess left.
nofile=${nofile:-$(ulimit -Hn)}
nproc=${nproc:-$(ulimit -Hu)}
kill "$ppid" 2>/dev/null || true
wait "$ppid" 2>/dev/null || true
rm -f "$probe"
# podman's own default is 1048576; lower only where podman's hard limit is.
for v in nofile nproc; do
  if [ "${!v}" = unlimited ] || [ "${!v}" -gt 1048576 ]; then printf -v "$v" 1048576; fi
done
mkdir -p "$(dirname "$CONF")"
want="[containers]
default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]"
if [ "$(cat "$CONF" 2>/dev/null)" != "$want" ]; then
  printf '%s\n' "$want" >"$CONF.tmp" && mv "$CONF.tmp" "$CONF"
fi
echo "podman.sh: CONTAINERS_CONF=$CONF (default_ulimits nofile=$nofile nproc=$nproc)"

ping() { CONTAINERS_CONF=$CONF podman --url "unix://$SOCK" version >/dev/null 2>&1; }

# A service that answers but whose working directory is gone (started from
# a checkout since deleted, as a second CI run on one machine does) cannot
# start containers: conmon inherits the directory, fails "Failed to get
# working directory", and every create is "write child: broken pipe". Such
# a service is replaced.
stale_service() {
  local pid
  for pid in $(pgrep -f "podman system service --time=0 unix://$SOCK" || true); do
    case $(readlink "/proc/$pid/cwd" 2>/dev/null) in
      *" (deleted)") echo "$pid" ;;
    esac
  done
}

if ping; then
  stale=$(stale_service)
  if [ -z "$stale" ]; then
    echo "podman.sh: podman API service already answers on unix://$SOCK"
    exit 0
  fi
  echo "podman.sh: the service on unix://$SOCK (pid $stale) runs in a deleted directory and cannot start containers: restarting it"
  kill $stale
  for _ in $(seq 50); do ping || break; sleep 0.1; done
fi

echo "podman.sh: starting podman system service on unix://$SOCK (log: $LOG)"
mkdir -p "$(dirname "$SOCK")"
# From /: the service must not hold on to the directory make ran in.
(cd / && CONTAINERS_CONF=$CONF exec setsid nohup podman system service --time=0 "unix://$SOCK") </dev/null >>"$LOG" 2>&1 &

deadline=$((SECONDS + TIMEOUT))
until ping; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "podman.sh: the podman service did not answer within ${TIMEOUT}s; last log lines:" >&2
    tail -n 30 "$LOG" >&2 || true
    exit 1
  fi
  sleep 1
done
echo "podman.sh: podman $(podman --url "unix://$SOCK" version --format '{{.Server.Version}}') answers on unix://$SOCK"
