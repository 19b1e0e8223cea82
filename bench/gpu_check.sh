#!/usr/bin/env bash
# The device check: everything a session lent an H200 (device tool, kind nvidia-h200) needs,
# in ONE call of at most 8 minutes. Prepare on the CPU machine first (minutes, no GPU):
#
#   bench/gpu_check_prepare.sh            # -> .gpucheck/: wheels + a slim 512^2 run of german_20s
#
# then, from the device tool:  run(command="bash bench/gpu_check.sh", carry=[".gpucheck"],
# timeout_s=540). One JSON comes back: $OUT/gpu_check.json (also printed at the end).
#
# Phases, each time-boxed against one 470 s deadline (later phases get what is left, and
# every phase writes its part of the JSON as it finishes, so a timeout still reports):
#   env     GPU, driver, torch/CUDA, nvcc, ffmpeg, installed wheel versions
#   build   gsplat's CUDA extension, JIT-compiled on first use, timed (MAX_JOBS=16, sm_90 only),
#           then one 512^2 render compared with the torch backend
#   data    (beside the build) frames.h5 / parse.h5 images rebuilt from the carried clip
#   stages  init-static, train-deform, train-torso, train-a2l at the `paper` preset, a fixed
#           number of steps each: steps/s (steady state and overall), GPU memory peak
#   render  the clip's 20 s of audio at 512^2, twice: model fps and end-to-end fps (H.264)
#   tests   the `cuda`-marked tests (gsplat vs torch backend, training on CUDA, ...), last
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
DEADLINE=$((START + ${GPU_CHECK_SECONDS:-470}))
DATA=${GPU_CHECK_DATA:-.gpucheck}
OUT=${OUT:-bench/results/gpu_check}
mkdir -p "$OUT"
JSON="$OUT/gpu_check.json"
RUN=/tmp/gpu_check_run
rm -f "$JSON"
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE MAX_JOBS=${MAX_JOBS:-16}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}   # H100/H200 only: a third of the build
PY=${PY:-python3}

left() { echo $((DEADLINE - $(date +%s))); }
phase() {  # phase NAME CAP_SECONDS CMD...: run with timeout min(CAP, time left), log its status
  local name=$1 cap=$2; shift 2
  local t=$(left); [ "$t" -gt "$cap" ] && t=$cap
  if [ "$t" -lt 10 ]; then
    echo "== $name: skipped (deadline)"; $PY bench/gpu_check.py note "$JSON" "$name" skipped_deadline; return
  fi
  echo "== $name (at most ${t}s, $(( $(date +%s) - START ))s elapsed)"
  timeout --kill-after=5 "$t" "$@"
  local rc=$?
  [ $rc -ne 0 ] && $PY bench/gpu_check.py note "$JSON" "$name" "exit_$rc"
  return 0
}

if [ -d "$DATA/whl" ] && ls "$DATA"/whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/gpu_check_site "$DATA"/whl/*.whl || echo "wheel install failed"
  export PYTHONPATH=/tmp/gpu_check_site:$PWD
else
  export PYTHONPATH=$PWD
fi

phase env 30 $PY bench/gpu_check.py env "$JSON"
# the clip's frames are rebuilt (one CPU core) while gsplat compiles (the other fifteen)
$PY bench/gpu_check.py data "$JSON" "$DATA" "$RUN" > "$OUT/data.log" 2>&1 &
DATA_PID=$!
phase build 330 $PY bench/gpu_check.py build "$JSON"
wait $DATA_PID || $PY bench/gpu_check.py note "$JSON" data "failed: $(tail -c 1500 "$OUT/data.log")"
phase stages 200 $PY bench/gpu_check.py stages "$JSON" "$RUN"
phase render 60 $PY bench/gpu_check.py render "$JSON" "$RUN" "$DATA/clip.mp4"
phase tests 120 $PY bench/gpu_check.py tests "$JSON"
$PY bench/gpu_check.py note "$JSON" total_seconds $(( $(date +%s) - START ))
cat "$JSON"
