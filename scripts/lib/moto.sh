# shellcheck shell=bash
# Sourced by scripts/test: makes `moto_server` (PyPI `moto[server]`, an AWS
# protocol server) available to the AWS tests (crates/kest/tests/aws.rs),
# which start their own server on a free loopback port and fail when it is
# missing. Installed once into a venv in the cache.
#
#   source scripts/lib/moto.sh
#   ensure_moto    # installs it with pip if needed, exports KEST_MOTO_SERVER

moto_version="5.2.5"

ensure_moto() {
  local venv="${KEST_MOTO_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/kest-rs/venv-moto}"
  if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('moto') != '$moto_version')" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv" || { echo "ensure_moto: could not create a venv (install python3-venv)" >&2; return 1; }
    "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$moto_version" \
      || { echo "ensure_moto: could not install moto[server]==$moto_version from PyPI" >&2; return 1; }
  fi
  [ -x "$venv/bin/moto_server" ] || { echo "ensure_moto: $venv/bin/moto_server is missing" >&2; return 1; }
  "$venv/bin/python" -c "import moto.server" || { echo "ensure_moto: moto.server does not import" >&2; return 1; }
  export KEST_MOTO_SERVER="$venv/bin/moto_server"
}
