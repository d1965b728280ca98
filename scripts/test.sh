#!/usr/bin/env bash
# Sets everything up on a fresh machine (scripts/bootstrap.sh), then runs the whole test
# suite: lint, type check, the import contracts (pyproject.toml), unit tests, and integration tests against the real Kafka broker,
# Redis and ClickHouse engine, which the test session starts (and stops) with driftloop's
# launcher. Extra arguments go to pytest, e.g. `scripts/test.sh tests/unit -x`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$here/venv" bash -c '
  set -euo pipefail
  echo "[test] ruff check"; ruff check services tests bench
  echo "[test] mypy"; mypy services
  echo "[test] import contracts"; lint-imports --no-cache
  echo "[test] pytest"; python -m pytest -p no:cacheprovider -ra "$@"
' test.sh "$@"
