#!/usr/bin/env bash
# Build the provision tests' wheelhouse once: every wheel the pinned SecretFlow and Ray need,
# downloaded with the harness nodes' own interpreter (so the platform and Python tags match),
# wheels only: provision refuses a source distribution (its build code would run on the nodes).
#   WHEELHOUSE_PINS  the pins (default "secretflow-lite==1.10.0b1 ray==2.9.3")
#   NODE_IMAGE       image whose /opt/sf/bin/pip does the download (default sfcluster-node:latest)
# The result is build/wheelhouse-<digest of the pins and the image's interpreter>; an existing one
# (marked complete by its .complete file) is reused, so CI downloads SecretFlow once per machine.
# Prints the directory on stdout.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
PINS="${WHEELHOUSE_PINS:-secretflow-lite==1.10.0b1 ray==2.9.3}"
NODE_IMAGE="${NODE_IMAGE:-sfcluster-node:latest}"
log() { echo "build-wheelhouse: $*" >&2; }

# The interpreter's version and platform, not the image id: a rebuilt image with the same
# CPython must not throw a GB of wheels away.
tags="$(docker run --rm --entrypoint /opt/sf/bin/python "$NODE_IMAGE" -c \
  'import sys, sysconfig; print(sys.version.split()[0], sysconfig.get_platform())')"
digest="$(printf '%s\n' "$PINS" "$tags" wheels-only | sha256sum | cut -c1-16)"
dir="$root/build/wheelhouse-$digest"
if [ -f "$dir/.complete" ]; then
  log "reusing $dir"
  echo "$dir"
  exit 0
fi
log "downloading $PINS for $tags into $dir (once per machine; about a GB)"
rm -rf "$dir.part"; mkdir -p "$dir.part"
start=$(date +%s)
# shellcheck disable=SC2086
docker run --rm --entrypoint /opt/sf/bin/pip -v "$dir.part:/w" "$NODE_IMAGE" \
  download -q --no-cache-dir --only-binary=:all: -d /w $PINS >&2
chmod -R a+rX "$dir.part"
printf '%s\n' "$PINS" >"$dir.part/.pins"
echo "$(( $(date +%s) - start ))s $(du -sh "$dir.part" | cut -f1)" >"$dir.part/.complete"
rm -rf "$dir"; mv "$dir.part" "$dir"
log "done: $(cat "$dir/.complete")"
echo "$dir"
