#!/usr/bin/env bash
# The demo: a local 3-node cluster (docker-compose harness), preflight, bring-up, SecretFlow LR
# training on it, tear-down. Needs sfcluster on PATH (the Makefile puts the venv there).
set -euo pipefail
cd "$(dirname "$0")/.."
inv="$(python -m tests.harness.harness up)"
echo "== inventory: $inv"
trap 'sfcluster down -i "$inv" || true; python -m tests.harness.harness down' EXIT
sfcluster check -i "$inv"
sfcluster up -i "$inv"
sfcluster run -i "$inv" templates/train_lr.py
sfcluster down -i "$inv"
