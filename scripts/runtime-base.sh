#!/usr/bin/env bash
# Makes a Debian bookworm minbase image for freshen's runtime stage without
# Docker Hub: debootstrap from Debian's mirror, then docker import. Cached: the
# rootfs tarball under /var/cache/freshen, and the image itself.
#   scripts/runtime-base.sh [IMAGE]   default IMAGE: freshen-ci/bookworm-minbase:latest
set -euo pipefail
IMAGE=${1:-freshen-ci/bookworm-minbase:latest}
CACHE=${FRESHEN_CACHE:-/var/cache/freshen}
if docker image inspect "$IMAGE" >/dev/null 2>&1; then echo "$IMAGE"; exit 0; fi
mkdir -p "$CACHE"
if [ ! -s "$CACHE/bookworm-minbase.tar" ]; then
  command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >&2
  MIRROR=$(grep -rhoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | grep -v security | head -n1 | tr -d ' ' || true)
  ROOT=$(mktemp -d /tmp/freshen-rootfs.XXXXXX)
  debootstrap --variant=minbase bookworm "$ROOT" "${MIRROR:-http://deb.debian.org/debian}" >&2
  tar -C "$ROOT" -cf "$CACHE/bookworm-minbase.tar.tmp" .
  mv "$CACHE/bookworm-minbase.tar.tmp" "$CACHE/bookworm-minbase.tar"
  rm -rf "$ROOT"
fi
docker import "$CACHE/bookworm-minbase.tar" "$IMAGE" >/dev/null
echo "$IMAGE"
