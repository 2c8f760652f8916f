#!/usr/bin/env bash
# Build the harness node image, only when its inputs changed.
#   BASE_IMAGE   unset: build sfcluster-base:bookworm locally (debootstrap + docker import) and
#                copy pyenv's CPython 3.10 in; set (e.g. python:3.10-slim-bookworm): use it as is.
#   NODE_IMAGE   tag of the result (default sfcluster-node:latest)
# The image carries the label sfcluster.inputs=<sha256 of every input>; a matching image is reused.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="$root/build/harness"
NODE_IMAGE="${NODE_IMAGE:-sfcluster-node:latest}"
LOCAL_BASE="sfcluster-base:bookworm"
PY_VERSION="${SFCLUSTER_NODE_PYTHON:-3.10.13}"
mkdir -p "$build"

log() { echo "build-image: $*" >&2; }

if [ -z "${BASE_IMAGE:-}" ]; then
  base="$LOCAL_BASE"
  if ! docker image inspect "$base" >/dev/null 2>&1; then
    log "making $base with debootstrap (about a minute)"
    rm -rf "$build/rootfs"
    debootstrap --variant=minbase bookworm "$build/rootfs" http://deb.debian.org/debian >"$build/debootstrap.log" 2>&1 \
      || { tail -20 "$build/debootstrap.log" >&2; exit 1; }
    rm -rf "$build/rootfs/var/cache/apt/archives/"*.deb
    tar -C "$build/rootfs" -c . | docker import -c 'CMD ["/bin/bash"]' - "$base" >/dev/null
    rm -rf "$build/rootfs"
  fi
  pyroot="${PYTHON310_PREFIX:-$(pyenv root 2>/dev/null || echo /root/.pyenv)/versions/$PY_VERSION}"
  [ -x "$pyroot/bin/python3.10" ] || { log "no CPython 3.10 at $pyroot (set PYTHON310_PREFIX, or BASE_IMAGE=python:3.10-slim-bookworm)"; exit 1; }
else
  base="$BASE_IMAGE"
  pyroot=""
fi

ctx="$build/context"
rm -rf "$ctx"; mkdir -p "$ctx/python3.10"
cp "$here/node/Dockerfile" "$here/node/entrypoint.sh" "$ctx/"
cp /etc/ssl/certs/ca-certificates.crt "$ctx/host-ca.crt"
if [ -n "$pyroot" ]; then
  # Only the interpreter and its standard library: no site-packages of the build host (.pth
  # files there are host-specific), no test suite. rpath $ORIGIN/../lib makes it relocatable.
  tar -C "$pyroot" --exclude='./lib/python3.10/site-packages/*' --exclude='./lib/python3.10/test' \
      --exclude='__pycache__' -c . | tar -C "$ctx/python3.10" -x
  patchelf --set-rpath '$ORIGIN/../lib' "$ctx/python3.10/bin/python3.10"
  chmod -R a+rX "$ctx/python3.10"
fi

base_id="$(docker image inspect -f '{{.Id}}' "$base" 2>/dev/null || echo "$base")"
digest="$( { cat "$ctx/Dockerfile" "$ctx/entrypoint.sh"; echo "$base_id $PY_VERSION ${pyroot:+local-python}";
             sha256sum "$ctx/host-ca.crt"; } | sha256sum | cut -c1-16)"
have="$(docker image inspect -f '{{index .Config.Labels "sfcluster.inputs"}}' "$NODE_IMAGE" 2>/dev/null || true)"
if [ "$have" = "$digest" ]; then
  log "$NODE_IMAGE is up to date (inputs $digest)"
  exit 0
fi
log "building $NODE_IMAGE from $base (inputs $digest); a cold build takes a few minutes"
DOCKER_BUILDKIT=0 docker build --build-arg BASE_IMAGE="$base" --label "sfcluster.inputs=$digest" \
  -t "$NODE_IMAGE" "$ctx" >"$build/docker-build.log" 2>&1 || { tail -40 "$build/docker-build.log" >&2; exit 1; }
log "built $NODE_IMAGE"
