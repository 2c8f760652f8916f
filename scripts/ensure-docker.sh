#!/usr/bin/env bash
# Make sure a Docker engine and docker-compose are usable on this machine.
# Debian/Ubuntu as root: installs docker.io + docker-compose with apt-get and starts dockerd
# when none runs. Elsewhere: prints what to install and fails.
set -euo pipefail

need_apt=()
command -v docker >/dev/null 2>&1 || need_apt+=(docker.io)
command -v dockerd >/dev/null 2>&1 || need_apt+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || need_apt+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
command -v patchelf >/dev/null 2>&1 || need_apt+=(patchelf)
command -v ssh-keygen >/dev/null 2>&1 || need_apt+=(openssh-client)

if ((${#need_apt[@]})); then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "ensure-docker: installing ${need_apt[*]} with apt-get" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "ensure-docker: missing ${need_apt[*]}; install Docker Engine, docker-compose," \
         "debootstrap and patchelf with your package manager, then re-run." >&2
    exit 1
  fi
fi

if ! docker info >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "ensure-docker: no Docker engine answers and we are not root: start dockerd" \
         "(e.g. 'sudo systemctl start docker') and re-run." >&2
    exit 1
  fi
  echo "ensure-docker: starting dockerd (log: /var/log/sfcluster-dockerd.log)" >&2
  nohup dockerd >/var/log/sfcluster-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { echo "ensure-docker: dockerd did not come up; see /var/log/sfcluster-dockerd.log" >&2; exit 1; }
fi
