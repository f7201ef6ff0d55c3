#!/usr/bin/env bash
# Clockwork developer commands (no Docker needed):
#   scripts/dev.sh setup   create .venv and install the pinned dependencies (idempotent)
#   scripts/dev.sh test    setup, then run the test suite
#   scripts/dev.sh local   setup, then run the whole system as local processes with an embedded Redis
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

setup() {
  if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
  fi
  # Re-install only when the pins changed since the last install.
  stamp=.venv/.clockwork-requirements
  want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -r requirements-dev.txt
    echo "$want" > "$stamp"
  fi
}

cmd=${1:-}
shift || true
case "$cmd" in
  setup) setup ;;
  test) setup; exec .venv/bin/python -m pytest "$@" ;;
  local) setup; exec .venv/bin/python scripts/run_local.py "$@" ;;
  *) echo "usage: scripts/dev.sh setup|test|local [args]" >&2; exit 2 ;;
esac
