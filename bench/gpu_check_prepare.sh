#!/usr/bin/env bash
# Prepare .gpucheck/ (git-ignored, ~46 MiB) for bench/gpu_check.sh, on the CPU machine (~2 min):
#   whl/   gsplat 1.5.3 (pure Python: it compiles its CUDA code on the device) and imageio-ffmpeg
#          (an ffmpeg for the render's encoding), as wheels for the device's Python 3.12
#   run/   extract-audio, track and parse of ../shared's german_20s.mp4 at 512^2 (paper preset),
#          without the frame images (gpu_check_data.py slim; the device rebuilds them)
#   clip.mp4
# Then, from the device tool: run(command="bash bench/gpu_check.sh", carry=[".gpucheck"], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CLIP=${CLIP:-../shared/data/video/german_20s.mp4}
D=.gpucheck
EXCLUDE=$(git rev-parse --git-path info/exclude)
grep -qx '/.gpucheck/' "$EXCLUDE" 2>/dev/null || echo '/.gpucheck/' >> "$EXCLUDE"
[ -f "$CLIP" ] || { echo "no clip at $CLIP (set CLIP=...)" >&2; exit 2; }
rm -rf "$D" /tmp/gpu_check_prep
mkdir -p "$D/whl"
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$D/whl" gsplat==1.5.3 imageio-ffmpeg==0.7.0
export PYTHONPATH=$PWD OMP_WAIT_POLICY=PASSIVE
$PY -m talkctl run /tmp/gpu_check_prep --video "$CLIP" --from extract-audio --to parse --preset paper -q
$PY bench/gpu_check_data.py slim /tmp/gpu_check_prep "$D"
du -sh "$D"
