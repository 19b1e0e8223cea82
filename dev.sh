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
    echo "setting up .venv: torch 2.13.0 (CPU build), mediapipe, h5py, scipy, typer, rich and the test tools" \
         "(a few minutes the first time; later calls reuse it)" >&2
    python3 -m venv .venv
    # torch pinned to the CPU build these machines carry; a bare "torch" would pull GBs of CUDA wheels.
    # pip's own lines, cut to what is being fetched and installed (not a silent minute and a half)
    .venv/bin/python -m pip install --disable-pip-version-check --progress-bar off "torch==2.13.0" -e ".[dev]" 2>&1 \
      | grep --line-buffered -E "^(Collecting|Installing|Successfully|ERROR|error)" | sed -u 's/^/  /' >&2 || true
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
