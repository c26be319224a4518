#!/usr/bin/env bash
# The main job, offline: a local registry, a busybox base, two builds on it
# (app is built on lib, and tested), freshen --once, a new base pushed, freshen
# --once again: rebuild → test → push → notify.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/engine.sh start
cargo build --release --quiet
FRESHEN=$PWD/target/release/freshen
WORK=$(mktemp -d /tmp/freshen-demo.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REG=127.0.0.1:$PORT
cleanup() {
  # An image with child images cannot go before its children: repeat until none is left.
  for _ in 1 2 3 4 5; do
    ids=$(docker images -aq --filter "label=freshen.demo=$PORT" | sort -u)
    [ -n "$ids" ] || break
    echo "$ids" | xargs docker rmi -f >/dev/null 2>&1 || true
  done
  [ -n "${REGPID:-}" ] && kill "$REGPID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/registry.yml" <<YML
version: 0.1
log: {level: warn, accesslog: {disabled: false}}
storage: {filesystem: {rootdirectory: $WORK/registry-data}, delete: {enabled: true}}
http: {addr: $REG}
YML
docker-registry serve "$WORK/registry.yml" >>"$WORK/registry.log" 2>&1 &
REGPID=$!
for _ in $(seq 1 50); do curl -sf "http://$REG/v2/" >/dev/null && break; sleep 0.1; done

push_base() { # $1: version text baked into the base
  mkdir -p "$WORK/base" && cp /bin/busybox "$WORK/base/busybox"
  printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "sh", "-c", "/bin/busybox --install -s /bin && echo %s > /etc/base-version"]\n' "$1" >"$WORK/base/Dockerfile"
  docker build -q --label "freshen.demo=$PORT" -t "$REG/demo/base:1" "$WORK/base" >/dev/null
  docker push -q "$REG/demo/base:1" >/dev/null
  echo "== pushed $REG/demo/base:1 ($1): $(curl -sI -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "http://$REG/v2/demo/base/manifests/1" | tr -d '\r' | grep -i docker-content-digest)"
}

mkdir -p "$WORK/lib" "$WORK/app"
printf 'ARG BASE=%s/demo/base:1\nFROM $BASE\nRUN echo lib > /lib-layer\n' "$REG" >"$WORK/lib/Dockerfile"
printf 'FROM %s/demo/lib:latest\nRUN cat /etc/base-version > /app-built-on\n' "$REG" >"$WORK/app/Dockerfile"
cat >"$WORK/config.json" <<JSON
{
  "options": {
    "interval": "5m", "parallelism": 2, "state_file": "state.json", "push": true,
    "notify": [{"command": ["/bin/sh", "-c", "echo \"\$FRESHEN_EVENT \$(cat)\" >>$WORK/notify.log"], "events": ["pushed", "build_failed", "test_failed"]}]
  },
  "builds": {
    "lib": {"dockerfile": "lib", "tags": ["$REG/demo/lib:latest"], "labels": {"freshen.demo": "$PORT"}},
    "app": {"dockerfile": "app/Dockerfile", "tags": ["$REG/demo/app:latest"], "labels": {"freshen.demo": "$PORT"},
            "test": {"command": ["grep", "-q", "^v", "/app-built-on"], "timeout": "1m"}}
  }
}
JSON

push_base v1
echo "== freshen plan"
"$FRESHEN" -c "$WORK/config.json" plan
echo "== freshen --once (first run: images are missing, both are built)"
"$FRESHEN" -c "$WORK/config.json" --once
echo "== freshen --once (nothing changed: one HEAD, no build)"
: >"$WORK/registry.log"
"$FRESHEN" -c "$WORK/config.json" --once
echo "   registry requests: $(grep -c '"HEAD ' "$WORK/registry.log") HEAD, $(grep -c '"GET ' "$WORK/registry.log" || true) GET"
push_base v2
echo "== freshen --once (new base: lib, then app, rebuilt, app tested, both pushed)"
: >"$WORK/notify.log"
"$FRESHEN" -c "$WORK/config.json" --once
echo "== app now contains: $(docker run --rm "$REG/demo/app:latest" cat /app-built-on)"
echo "== the registry serves $REG/demo/app:latest at: $(curl -sI -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "http://$REG/v2/demo/app/manifests/latest" | tr -d '\r' | grep -i docker-content-digest | cut -d' ' -f2)"
echo "== notifications sent to the command:"
sed -E 's/^([a-z_]+) .*"build":"([^"]+)".*"digest":"([^"]+)".*/   \1 \2 \3/' "$WORK/notify.log"
docker ps -aq --filter "ancestor=$REG/demo/app:latest" | xargs -r docker rm -f >/dev/null
