#!/usr/bin/env bash
# Everything the bench needs besides the harness node image (tests/harness/build-image.sh):
#  1. rsync on the controller (`ray up` refuses to work without it);
#  2. the bench node image (bench/Dockerfile), rebuilt only when its inputs change;
#  3. build/bench/venv: ray==2.9.3 (the `ray up`/`ray down` CLI, same version as the nodes),
#     matplotlib (the plot) and py-spy (profiling). Never the project's .venv: these are bench
#     tools, not sfcluster dependencies.
# Idempotent; run by `make bench`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
build="$root/build/bench"
NODE_IMAGE="${SFCLUSTER_NODE_IMAGE:-sfcluster-node:latest}"
BENCH_IMAGE="${SFCLUSTER_BENCH_IMAGE:-sfcluster-bench:latest}"
PYTHON="${PYTHON:-python3}"
# filelock < 3.11 on the controller too: `ray up` runs the same launcher code (and the same
# cluster-state lock) here as the head's monitor does there.
VENV_REQS="ray==2.9.3 filelock<3.11 matplotlib>=3.7 py-spy"
mkdir -p "$build"
log() { echo "bench-setup: $*" >&2; }

if ! command -v rsync >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing rsync (ray up needs it on the controller)"
    apt-get update -qq && apt-get install -y -qq rsync >/dev/null
  else
    log "rsync is missing: install it (ray up needs it on the controller)"; exit 1
  fi
fi

node_id="$(docker image inspect -f '{{.Id}}' "$NODE_IMAGE")"
digest="$( { cat "$here/Dockerfile"; echo "$node_id"; } | sha256sum | cut -c1-16)"
have="$(docker image inspect -f '{{index .Config.Labels "sfcluster.bench.inputs"}}' "$BENCH_IMAGE" 2>/dev/null || true)"
if [ "$have" = "$digest" ]; then
  log "$BENCH_IMAGE is up to date (inputs $digest)"
else
  log "building $BENCH_IMAGE from $NODE_IMAGE (inputs $digest)"
  ctx="$build/context"; rm -rf "$ctx"; mkdir -p "$ctx"; cp "$here/Dockerfile" "$ctx/"
  DOCKER_BUILDKIT=0 docker build --build-arg NODE_IMAGE="$NODE_IMAGE" --label "sfcluster.bench.inputs=$digest" \
    -t "$BENCH_IMAGE" "$ctx" >"$build/docker-build.log" 2>&1 || { tail -40 "$build/docker-build.log" >&2; exit 1; }
  log "built $BENCH_IMAGE"
fi

venv="$build/venv"
if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$VENV_REQS" ]; then
  log "making $venv ($VENV_REQS)"
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/pip" install --disable-pip-version-check $VENV_REQS >"$build/pip.log" 2>&1 \
    || { tail -30 "$build/pip.log" >&2; exit 1; }
  echo "$VENV_REQS" >"$venv/.installed"
else
  log "$venv is up to date"
fi
