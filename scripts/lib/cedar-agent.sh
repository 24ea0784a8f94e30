# shellcheck shell=bash
# Source this file, then call `ensure_cedar_agent`.
#
# ensure_cedar_agent: installs the Cedar Agent (crates.io package
# `cedar-agent`, permitio/cedar-agent) once into
# ${XDG_CACHE_HOME:-$HOME/.cache}/kest-rs/cedar-agent with
# `cargo install --locked` (a few minutes the first time) and exports
# KEST_CEDAR_AGENT, the path of the binary, which the remote-engine tests
# (crates/kest/tests/remote_engines.rs) start on a loopback port.
# Returns non-zero, with a message on stderr, when the install fails.
#
# Environment:
#   KEST_CEDAR_AGENT          an existing binary to use instead (kept when executable)
#   KEST_CEDAR_AGENT_VERSION  the version to install (default below)

KEST_CEDAR_AGENT_DEFAULT_VERSION="0.2.0"

ensure_cedar_agent() {
  if [[ -n "${KEST_CEDAR_AGENT:-}" && -x "${KEST_CEDAR_AGENT}" ]]; then
    export KEST_CEDAR_AGENT
    return 0
  fi
  local root="${XDG_CACHE_HOME:-$HOME/.cache}/kest-rs/cedar-agent"
  local bin="$root/bin/cedar-agent"
  local version="${KEST_CEDAR_AGENT_VERSION:-$KEST_CEDAR_AGENT_DEFAULT_VERSION}"
  if [[ ! -x "$bin" ]]; then
    command -v cargo >/dev/null || {
      printf 'ensure_cedar_agent: FAILED: cargo is not installed\n' >&2
      return 1
    }
    printf 'ensure_cedar_agent: installing cedar-agent %s into %s (a few minutes, once)\n' "$version" "$root" >&2
    # Its own target dir: never the workspace's CARGO_TARGET_DIR.
    if ! CARGO_TARGET_DIR="$root/build" cargo install cedar-agent --version "$version" --locked --root "$root" --quiet; then
      printf 'ensure_cedar_agent: FAILED: cargo install cedar-agent %s --locked did not succeed\n' "$version" >&2
      return 1
    fi
    rm -rf "$root/build"
    [[ -x "$bin" ]] || {
      printf 'ensure_cedar_agent: FAILED: %s is missing after the install\n' "$bin" >&2
      return 1
    }
  fi
  export KEST_CEDAR_AGENT="$bin"
}
