#!/usr/bin/env bash
# One entry point for set-up and the project's jobs (the README's two commands use it):
#   ./dev.sh demo    set up (first time), then run the built-in example end to end
#   ./dev.sh test    set up (first time), then run the test suite
#   ./dev.sh setup   only create/refresh the virtual environment in .venv
set -euo pipefail
cd "$(dirname "$0")"
export OMP_WAIT_POLICY=PASSIVE   # spin-waiting OpenMP threads make 2-core runs several times slower

setup() {
  # Reinstall when pyproject.toml is newer than the last install.
  if [ ! -x .venv/bin/python ] || [ pyproject.toml -nt .venv/.installed ]; then
    python3 -m venv .venv
    # torch pinned to the CPU build these machines carry; a bare "torch" would pull GBs of CUDA wheels.
    .venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0" -e ".[dev]" 2>&1 \
      | grep -v "^WARNING: Location" || true
    .venv/bin/python -c "import talkctl, torch, mediapipe, h5py" \
      || { echo "set-up failed: see the pip output above" >&2; exit 1; }
    touch .venv/.installed
  fi
}

case "${1:-}" in
  setup) setup ;;
  test)  setup; shift; exec .venv/bin/python -m pytest "$@" ;;
  demo)  setup; shift; exec .venv/bin/talkctl demo "$@" ;;
  *) echo "usage: ./dev.sh demo | test | setup" >&2; exit 2 ;;
esac
