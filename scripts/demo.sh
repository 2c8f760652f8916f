#!/usr/bin/env bash
# The demo: a local 3-node cluster (docker-compose harness), each party's data to its own node,
# preflight, bring-up, PSI + SecretFlow LR training on it (metrics fetched home), tear-down. Needs sfcluster on PATH (the Makefile puts the venv there).
set -euo pipefail
cd "$(dirname "$0")/.."
inv="$(python -m tests.harness.harness up)"
echo "== inventory: $inv"
trap 'sfcluster down -i "$inv" || true; python -m tests.harness.harness down' EXIT
for party in alice bob carol; do   # each party's own CSV, to its own node only
  sfcluster data push -i "$inv" "$party" breast_cancer "data/breast_cancer/$party.csv"
done
sfcluster check -i "$inv"
sfcluster up -i "$inv"
sfcluster run -i "$inv" templates/train_lr.py
sfcluster down -i "$inv"
