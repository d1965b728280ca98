#!/usr/bin/env bash
# driftloop's main job on the local default stack: the data → model loop.
# Sets everything up on a fresh machine first (scripts/bootstrap.sh), brings the real
# stack up (Kafka, Redis, chDB), runs the ingest service, publishes labelled sample
# events as an app would, waits until ingest has validated and sealed them into a dataset
# version, then trains on Ray, gates and registers a model, and lists the registry.
# Then the online path: serving (Ray Serve, one app per model alias) and the router
# (gRPC) start, a few thousand predictions are sent as an app would (a third by entity
# key only, filled from the online store), and latency percentiles and the variant split
# are printed. Every process it started is stopped at the end (ingest, serving + its Ray,
# router); the stack keeps running afterwards; stop it with: scripts/driftloop stack down
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
pids=("$ingest")
stop_all() {
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_all EXIT

driftloop datasets publish-sample credit --events 20000 --wait
driftloop datasets list credit
status=0
driftloop train credit-default --reason "demo" || status=$?
[ "$status" -eq 0 ] || [ "$status" -eq 3 ] || exit "$status"  # 3: registered, gate failed
driftloop models list

echo "serving: python -m services.serving (log: $home/serving.log)"
python -m services.serving >>"$home/serving.log" 2>&1 &
pids+=("$!")
python - "$home" <<'PY'
import sys, time
from pathlib import Path
from services.serving.state import read_state
deadline = time.monotonic() + 300
while time.monotonic() < deadline:
    state = read_state(Path(sys.argv[1]))
    if state and state.ready and state.apps:
        print("serving: ready,", ", ".join(f"{a} v{v.version}" for a, v in sorted(state.apps.items())))
        raise SystemExit(0)
    time.sleep(0.5)
raise SystemExit(f"serving did not become ready in 300 s; see {sys.argv[1]}/serving.log")
PY
port="$(python -c 'from services.stack.processes import free_port; print(free_port())')"
echo "router: python -m services.router on 127.0.0.1:$port (log: $home/router.log)"
DRIFTLOOP_ROUTER_PORT="$port" python -m services.router >>"$home/router.log" 2>&1 &
pids+=("$!")
python scripts/demo_predictions.py --target "127.0.0.1:$port" --requests "${DEMO_PREDICTIONS:-3000}"
echo
echo "Stopping router, serving and ingest. The stack keeps running."
echo "Next: scripts/driftloop models show 1 | stack status | stack down"
