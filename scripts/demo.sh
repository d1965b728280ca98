#!/usr/bin/env bash
# driftloop's main job on the local default stack. Sets everything up on a fresh machine
# first (scripts/bootstrap.sh), then brings the real stack up and prints its status.
# Stop it with: scripts/driftloop stack down
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/venv" driftloop stack up "$@"
echo
echo "The stack keeps running. Next: scripts/driftloop stack status | logs | down"
