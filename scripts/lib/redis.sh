# shellcheck shell=bash
# Sourced by scripts/test: makes a real `redis-server` available to the
# Redis cache tests (crates/kest/tests/redis.rs), which start their own
# server on a free loopback port and fail when the binary is missing.
#
#   source scripts/lib/redis.sh
#   ensure_redis_server    # installs it with apt-get if needed, exports KEST_REDIS_SERVER

ensure_redis_server() {
  local bin="${KEST_REDIS_SERVER:-}"
  if [ -n "$bin" ] && [ -x "$bin" ]; then
    export KEST_REDIS_SERVER="$bin"
    return 0
  fi
  bin="$(command -v redis-server || true)"
  if [ -z "$bin" ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
      echo "ensure_redis_server: redis-server is not installed and apt-get is not available" >&2
      return 1
    fi
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
      command -v sudo >/dev/null 2>&1 || {
        echo "ensure_redis_server: installing redis-server needs root (or sudo)" >&2
        return 1
      }
      sudo="sudo"
    fi
    echo "ensure_redis_server: installing redis-server with apt-get" >&2
    $sudo apt-get update -qq || { echo "ensure_redis_server: apt-get update failed" >&2; return 1; }
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null \
      || { echo "ensure_redis_server: apt-get install redis-server failed" >&2; return 1; }
    bin="$(command -v redis-server || true)"
    [ -n "$bin" ] || { echo "ensure_redis_server: redis-server still not on PATH after installing" >&2; return 1; }
  fi
  "$bin" --version >/dev/null 2>&1 || { echo "ensure_redis_server: $bin does not run" >&2; return 1; }
  export KEST_REDIS_SERVER="$bin"
}
