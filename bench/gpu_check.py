"""The phases of bench/gpu_check.sh (one device call): each writes its part of one JSON.

    python bench/gpu_check.py PHASE JSON [ARGS]     phases: env build tests data stages render note

Stages run in this process through the stage runner at the `paper` preset with a fixed number
of steps (STEPS), validation only at the end and no intermediate checkpoints. Their step rate
comes from the progress bars' timestamps: `steady_steps_per_s` over the last 80% of a bar's
steps (after warm-up; CUDA synchronised at the bar's end), `steps_per_s` over all of them.
"""
from __future__ import annotations

import fcntl
import importlib.metadata
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from common import ROOT, machine

# GPU_CHECK_DEVICE / GPU_CHECK_PRESET / GPU_CHECK_SCALE (steps x scale) let the script itself be
# tried on a CPU machine at the tiny preset; the device call uses the defaults.
DEVICE = os.environ.get("GPU_CHECK_DEVICE", "cuda")
PRESET = os.environ.get("GPU_CHECK_PRESET", "paper")
SCALE = float(os.environ.get("GPU_CHECK_SCALE", "1"))
STEPS = {  # steps per stage: enough to pass warm-up (and one densification in train-deform)
    "init-static": {"head_iterations": 600, "torso_iterations": 200},
    "train-deform": {"iterations": 600},
    "train-torso": {"iterations": 300},
    "train-a2l": {"iterations": 300},
}
ONCE = 10 ** 9  # "never" for the periodic validation / checkpoint settings


def update(path: Path, key: str, value) -> None:
    """Set one key of the results JSON (phases may run side by side: under a lock)."""
    with open("/tmp/gpu_check_json.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.exists() else {}
        data[key] = value
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def _run(cmd: list[str], timeout: float = 60) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return (out.stdout or out.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"


def env() -> dict:
    import torch

    info = {"machine": machine(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(),
            "nvidia_smi": _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                "--format=csv,noheader"]),
            "nvcc": _run(["nvcc", "--version"]).splitlines()[-1:]}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, capability=f"{p.major}.{p.minor}", gpu_memory_gib=round(p.total_memory / 2**30, 1),
                    multiprocessors=p.multi_processor_count)
    for pkg in ("gsplat", "numpy", "h5py", "opencv-python-headless", "imageio-ffmpeg", "tinycudann"):
        try:
            info[f"version_{pkg}"] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            info[f"version_{pkg}"] = None
    try:
        from talkctl.media.ffmpeg import ffmpeg_exe

        info["ffmpeg"] = _run([ffmpeg_exe(), "-version"]).splitlines()[0]
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        info["ffmpeg"] = f"missing: {exc}"
    return info


def build() -> dict:
    """gsplat's JIT build (first import of its extension), then one render against the torch backend."""
    out = {"max_jobs": os.environ.get("MAX_JOBS"), "arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST")}
    t0 = time.perf_counter()
    try:
        from gsplat.cuda._backend import _C

        out["ok"] = _C is not None
    except Exception as exc:  # noqa: BLE001
        out.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:2000])
    out["seconds"] = round(time.perf_counter() - t0, 1)
    if out["ok"]:
        import torch

        from scenes import head_scene
        from talkctl.kernels.raster import rasterize

        sc = dict(head_scene(20000, 512, sh_degree=3, seed=0, device="cuda"), width=512, height=512)
        a, b = rasterize(**sc, backend="gsplat"), rasterize(**sc, backend="torch")
        out["gsplat_vs_torch_rgb_max_abs"] = float((a.rgb - b.rgb).abs().max())
        out["gsplat_vs_torch_rgb_mean_abs"] = float((a.rgb - b.rgb).abs().mean())
        torch.cuda.synchronize()
    return out


def tests() -> dict:
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("*/test_*.py")
                   if "mark.cuda" in p.read_text() or "cuda_training" in p.name)
    xml = Path("/tmp/gpu_check_junit.xml")
    res = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "-p", "no:cacheprovider", "-q",
                          f"--junitxml={xml}", *files], capture_output=True, text=True, cwd=ROOT)
    out = {"files": files, "exit_code": res.returncode, "tail": res.stdout[-3000:]}
    if xml.exists():
        import xml.etree.ElementTree as ET

        suite = ET.parse(xml).getroot().find("testsuite")
        out.update({k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")})
    return out


class Timing:
    """A progress factory that records when each step of each bar ended."""

    def __init__(self):
        self.bars: dict[str, list[float]] = {}

    @contextmanager
    def __call__(self, total, description):
        import torch

        marks = self.bars.setdefault(description, [time.perf_counter()])
        timing = self

        class Task:
            def advance(self, n: int = 1, **fields):
                marks.extend([time.perf_counter()] * n)

            def update(self, **fields):
                pass

        yield Task()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if len(marks) > 1:
            marks[-1] = time.perf_counter()  # the last step ends when the GPU has finished it
        timing.bars[description] = marks

    def rates(self) -> dict:
        out = {}
        for name, t in self.bars.items():
            n = len(t) - 1
            if n < 5:
                continue
            w = max(1, n // 5)  # warm-up: the first fifth
            out[name] = {"steps": n, "seconds": round(t[-1] - t[0], 2),
                         "steps_per_s": round(n / (t[-1] - t[0]), 2),
                         "steady_steps_per_s": round((n - w) / (t[-1] - t[w]), 2)}
        return out


def stages(run, rasterizer: str) -> dict:
    import torch

    from talkctl.pipeline import run_stage

    out = {}
    cuda = torch.cuda.is_available()
    for name, full in STEPS.items():
        steps = {k: max(2, int(v * SCALE)) for k, v in full.items()}
        timing = Timing()
        overrides = dict(steps, rasterizer=rasterizer, val_every=ONCE, checkpoint_every=ONCE)
        if name == "train-a2l":
            overrides = dict(steps, eval_every=steps["iterations"], checkpoint_every=ONCE)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        try:
            summary = run_stage(name, run, preset=PRESET, device=DEVICE, overrides=overrides, force=True,
                                progress=timing)
            row = {"wall_seconds": round(time.perf_counter() - t0, 1), "bars": timing.rates(),
                   "backends": summary.get("backends"),
                   **{k: summary[k] for k in ("n_gaussians", "n_head", "n_torso", "psnr_head", "psnr_full")
                      if k in summary}}
        except Exception as exc:  # noqa: BLE001 - later stages still report
            row = {"error": f"{type(exc).__name__}: {exc}"[:2000], "bars": timing.rates()}
        if cuda:
            row["gpu_peak_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
            row["gpu_peak_reserved_mib"] = round(torch.cuda.max_memory_reserved() / 2**20)
        out[name] = row
        print(name, json.dumps(row), flush=True)
    return out


def render(run, audio: Path, rasterizer: str) -> dict:
    from talkctl.pipeline import run_stage

    rows = []
    for i in range(2):  # the first pays the start-up (kernel caches, encoder)
        s = run_stage("render", run, device=DEVICE, overrides={"audio": str(audio), "rasterizer": rasterizer,
                                                              "output": f"/tmp/gpu_check_render{i}.mp4"})
        rows.append({k: s.get(k) for k in ("frames", "render_size", "model_fps", "end_to_end_fps", "batch")})
    return {"first": rows[0], "second": rows[1]}


def main() -> None:
    from talkctl.rundir import RunDir

    phase, path = sys.argv[1], Path(sys.argv[2])
    args = sys.argv[3:]
    data = json.loads(path.read_text()) if path.exists() else {}
    rasterizer = "gsplat" if data.get("build", {}).get("ok") else "torch"
    if phase == "note":
        update(path, args[0], args[1])
    elif phase == "env":
        update(path, "env", env())
    elif phase == "build":
        update(path, "build", build())
    elif phase == "tests":
        update(path, "tests", tests())
    elif phase == "data":
        from gpu_check_data import fill

        update(path, "data", fill(Path(args[0]), Path(args[1])))
    elif phase == "stages":
        update(path, "stages", {"rasterizer": rasterizer, **stages(RunDir(args[0], create=False), rasterizer)})
    elif phase == "render":
        update(path, "render", render(RunDir(args[0], create=False), Path(args[1]), rasterizer))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
