#!/usr/bin/env bash
# Sets up everything driftloop needs on a fresh machine, idempotently:
#   - uv (into a cache dir), then a virtualenv keyed by the lock file's hash, outside the repo
#   - the Apache Kafka broker jars from Maven Central (through `driftloop stack fetch`)
#   - redis-server, kcat and openssl through apt when they are missing
#   - grpcurl (a Go module, `go install`ed into $DRIFTLOOP_CACHE/go-bin) when Go is there
# Run it (`bash scripts/bootstrap.sh`): progress goes to stderr, and the last line on stdout
# is the virtualenv's path. scripts/venv runs any command inside that virtualenv.
set -euo pipefail
exec 3>&1 1>&2  # only the venv path goes to stdout

DRIFTLOOP_CACHE="${DRIFTLOOP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/driftloop}"
export DRIFTLOOP_CACHE
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '\033[1;34m[bootstrap]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[bootstrap] error:\033[0m %s\n' "$*" >&2; exit 1; }

command -v python3.11 >/dev/null 2>&1 || command -v python3 >/dev/null 2>&1 || die "Python 3.11 is required"
py="$(command -v python3.11 || command -v python3)"
"$py" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
  || die "Python 3.11 is required (found $("$py" --version 2>&1))"

# One bootstrap at a time per cache: two first runs at once would both build the same venv.
mkdir -p "$DRIFTLOOP_CACHE"
exec 9>"$DRIFTLOOP_CACHE/.bootstrap.lock"
flock 9

# 1. uv, pinned, installed from PyPI into the cache
uv_version="0.13.9"
uv_home="$DRIFTLOOP_CACHE/uv-$uv_version"
if [ ! -x "$uv_home/bin/uv" ]; then
  log "installing uv $uv_version into $uv_home"
  "$py" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$uv_home" "uv==$uv_version"
fi
export PATH="$uv_home/bin:$PATH"
export UV_CACHE_DIR="${UV_CACHE_DIR:-$DRIFTLOOP_CACHE/uv-cache}"

# 2. the virtualenv, keyed by the lock's hash: a second run on the same machine installs nothing
lock_hash="$(sha256sum "$repo/requirements.lock" | cut -c1-16)"
venv="$DRIFTLOOP_CACHE/venv-$lock_hash"
if [ ! -f "$venv/.complete" ]; then
  log "creating virtualenv $venv (first run on this machine: downloads torch, ray, chdb …)"
  rm -rf "$venv"
  uv venv --quiet --python "$py" "$venv"
  VIRTUAL_ENV="$venv" uv pip sync --quiet --require-hashes "$repo/requirements.lock"
  touch "$venv/.complete"
fi
# Bytecode for every installed module, once: with PYTHONDONTWRITEBYTECODE set (as on CI
# machines) Python would otherwise compile pandas, pyarrow, ray ... from source in every
# process, which doubled the start-up of each service and CLI call. (A few vendored
# Python 2 files do not compile; that is expected and harmless.)
if [ ! -f "$venv/.compiled" ]; then
  log "compiling the virtualenv's bytecode (once, ~1 min)"
  "$venv/bin/python" -m compileall -q -j 0 "$venv/lib" >/dev/null 2>&1 || true
  touch "$venv/.compiled"
fi
# the project itself, editable, so the venv always points at this checkout (< 1 s)
VIRTUAL_ENV="$venv" uv pip install --quiet --no-deps -e "$repo"
export VIRTUAL_ENV="$venv"
export PATH="$venv/bin:$PATH"

# 3. redis-server from the system package manager
if ! command -v redis-server >/dev/null 2>&1; then
  log "installing redis-server through apt"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq >/dev/null || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null \
    || die "apt-get install redis-server failed"
  # the package starts a system-wide instance on 6379; driftloop runs its own
  $sudo systemctl disable --now redis-server >/dev/null 2>&1 || $sudo service redis-server stop >/dev/null 2>&1 || true
fi

# 3b. kcat (librdkafka's CLI: the tests publish with a producer that is not Python),
#     openssl (the certificates of `driftloop stack up --secure`) and headless Chromium
#     (the dashboards' report test opens `driftloop report` in it)
for tool in kcat openssl chromium; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    log "installing $tool through apt"
    if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq >/dev/null || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$tool" >/dev/null \
      || die "apt-get install $tool failed"
  fi
done

# 4. the Kafka broker jars (Maven Central, into the cache)
driftloop stack fetch >/dev/null

# 5. grpcurl, the gRPC CLI users call the router with (the tests call it too): built from
#    its Go module into $DRIFTLOOP_CACHE/go-bin, which scripts/venv puts on PATH. Without
#    Go this is skipped (and the grpcurl test fails, saying so).
grpcurl_version="v1.9.3"
go_bin_dir="$DRIFTLOOP_CACHE/go-bin"
if [ ! -x "$go_bin_dir/grpcurl" ] || [ ! -f "$go_bin_dir/.grpcurl-$grpcurl_version" ]; then
  go="$(command -v go || true)"
  [ -z "$go" ] && [ -x /usr/local/go/bin/go ] && go=/usr/local/go/bin/go
  if [ -z "$go" ]; then
    log "Go is not installed: skipping grpcurl (install Go and re-run scripts/bootstrap.sh to get it)"
  else
    log "installing grpcurl $grpcurl_version with $("$go" version | cut -d' ' -f3) into $go_bin_dir (once, ~2 min)"
    if GOBIN="$go_bin_dir" GOPATH="$DRIFTLOOP_CACHE/go" GOMODCACHE="$DRIFTLOOP_CACHE/go/pkg/mod" \
      GOCACHE="$DRIFTLOOP_CACHE/go-build" GOTOOLCHAIN=local \
      "$go" install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$grpcurl_version"; then
      rm -f "$go_bin_dir"/.grpcurl-*
      touch "$go_bin_dir/.grpcurl-$grpcurl_version"
    else
      log "warning: go install grpcurl@$grpcurl_version failed: grpcurl is not available"
    fi
  fi
fi

# scripts/venv takes its fast path (no bootstrap at all) from now on for this lock
touch "$venv/.ready"
echo "$venv" >&3
