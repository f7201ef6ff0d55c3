#!/usr/bin/env bash
# Clockwork developer commands (no Docker needed):
#   scripts/dev.sh setup   create .venv and install the pinned dependencies (idempotent)
#   scripts/dev.sh test    setup, then run the test suite
#   scripts/dev.sh lint    setup, then ruff and mypy over services/ and shared/
#   scripts/dev.sh local   setup, then run the whole system as local processes with an embedded Redis
#   scripts/dev.sh reset   a clean slate: delete the runtime state under volumes/ (everything but the committed raw
#                          data) and pin deployment.model_version back to v1 (stop the system first)
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
  # The project itself, editable: `import services`, `import shared` work from any folder.
  if ! .venv/bin/python -c "import shared, services" 2>/dev/null \
      || [ "$(.venv/bin/python -c 'import shared, pathlib; print(pathlib.Path(shared.__file__).resolve().parent.parent)')" != "$(pwd -P)" ]; then
    .venv/bin/python -m pip install --quiet --no-deps -e .
  fi
}

cmd=${1:-}
shift || true
case "$cmd" in
  setup) setup ;;
  test) setup; exec .venv/bin/python -m pytest "$@" ;;
  reset)
    setup
    # Runtime state is what git ignores under volumes/ (the raw data is committed and stays).
    git clean -fdX -q -- volumes/
    .venv/bin/python - <<'PY'
from pathlib import Path
from shared.atomic import atomic_write_text
from shared.pin import edit_pin_text
cfg = Path("config.yaml")
atomic_write_text(cfg, edit_pin_text(cfg.read_text(), "v1"))
PY
    echo "reset: volumes/ holds only the raw data; config.yaml pins v1 (docker: also 'docker compose down -v')" ;;
  lint) setup; .venv/bin/ruff check services shared bench && exec .venv/bin/mypy ;;
  local) setup; exec .venv/bin/python scripts/run_local.py "$@" ;;
  *) echo "usage: scripts/dev.sh setup|test|lint|local|reset [args]" >&2; exit 2 ;;
esac
