#!/usr/bin/env bash
# Installs and starts what freshen's tests and demo need on Debian: a Docker
# engine, Debian's registry binary, a static busybox, and git with git-daemon.
#   scripts/engine.sh start   install what is missing; start dockerd when no engine answers
#   scripts/engine.sh stop    stop the dockerd this script started (by PID), nothing else
set -euo pipefail
PIDFILE=${FRESHEN_DOCKERD_PIDFILE:-/tmp/freshen-dockerd.pid}

need_pkgs() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
  command -v curl >/dev/null || missing+=(curl)
  command -v systemd-analyze >/dev/null || missing+=(systemd)
  # The git source tests serve repositories with git-daemon (Debian's git ships it).
  [ -x "$(git --exec-path 2>/dev/null)/git-daemon" ] || missing+=(git)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "engine.sh: installing ${missing[*]}" >&2
    if [ "$(id -u)" != 0 ]; then echo "engine.sh: need root to apt-get install ${missing[*]}" >&2; exit 1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2 \
      || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2; }
  fi
}

case "${1:-start}" in
  start)
    need_pkgs
    if docker info >/dev/null 2>&1; then exit 0; fi
    echo "engine.sh: starting dockerd" >&2
    nohup dockerd >/tmp/freshen-dockerd.log 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && exit 0; sleep 1; done
    echo "engine.sh: dockerd did not answer within 60 s; see /tmp/freshen-dockerd.log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$PIDFILE" ]; then
      pid=$(cat "$PIDFILE")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
      rm -f "$PIDFILE"
    fi
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
