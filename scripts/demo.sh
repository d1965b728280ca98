#!/usr/bin/env bash
# driftloop's main job on the local default stack: the data → model loop.
# Sets everything up on a fresh machine first (scripts/bootstrap.sh), brings the real
# stack up (Kafka, Redis, chDB), runs the ingest service, publishes labelled sample
# events as an app would, waits until ingest has validated and sealed them into a dataset
# version, then trains on Ray, gates and registers a model, and lists the registry.
# The stack keeps running afterwards; stop it with: scripts/driftloop stack down
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$(bash "$here/bootstrap.sh")"
export VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH"
cd "$here/.."

driftloop stack up "$@"
home="$(python -c 'from services.common.settings import load_settings; print(load_settings().home)')"
echo "ingest: python -m services.ingest (log: $home/ingest.log)"
DRIFTLOOP_INGEST_SEAL_MAX_AGE_MS=5000 python -m services.ingest >>"$home/ingest.log" 2>&1 &
ingest=$!  # the python process itself, so the trap below stops it
trap 'kill "$ingest" 2>/dev/null; wait "$ingest" 2>/dev/null || true' EXIT

driftloop datasets publish-sample credit --events 20000 --wait
driftloop datasets list credit
status=0
driftloop train credit-default --reason "demo" || status=$?
[ "$status" -eq 0 ] || [ "$status" -eq 3 ] || exit "$status"  # 3: registered, gate failed
driftloop models list
echo
echo "The stack keeps running. Next: scripts/driftloop models show 1 | stack status | stack down"
