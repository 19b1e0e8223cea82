"""Shared helpers for the benchmark scripts: timing, peak memory, machine description,
shared-data look-up and output.

Importing this module also puts the repository root on sys.path, so a script run as
`python bench/<name>.py` (which already has bench/ on its path) can import talkctl.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def shared_dir() -> Path | None:
    """The shared-data folder: $TALKCTL_SHARED, else ../shared beside the checkout; None if absent."""
    path = Path(os.environ.get("TALKCTL_SHARED") or ROOT.parent / "shared")
    return path if path.is_dir() else None


def shared_file(*parts: str) -> Path | None:
    """A path under the shared-data folder, or None when the folder or the path is absent."""
    base = shared_dir()
    if base is None:
        return None
    path = base.joinpath(*parts)
    return path if path.exists() else None


SHARED_HINT = "../shared beside the checkout, or set TALKCTL_SHARED"


def load_avg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (the cores are shared: record them with timings)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(**extra) -> dict:
    """Description of this machine for a results file; `extra` adds script-specific keys
    (library versions, ...). The load average is taken now: add `load_avg_after` at the end."""
    info = {
        "platform": platform.platform(), "python": platform.python_version(), "cpu": cpu_model(),
        "cpu_count": os.cpu_count(), "load_avg_1_5_15": load_avg(),
    }
    try:
        mem = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
        info["ram_gib"] = round(int(mem) / 2**20, 1)
    except (OSError, IndexError, ValueError):
        pass
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    info.update(extra)
    return info


def describe(info: dict) -> str:
    """One line for the end of a table: CPU, cores, load average at start -> end."""
    load = lambda key: (info.get(key) or [float("nan")])[0]  # noqa: E731
    return (f"machine: {info['cpu']}, {info['cpu_count']} cores, 1-min load avg {load('load_avg_1_5_15'):.2f} -> "
            f"{load('load_avg_after'):.2f} (other processes share the cores when the load exceeds ~1)")


def time_it(fn, repeats: int, warmup: int = 2, sync=None) -> dict:
    """Median/min wall and process-CPU milliseconds of fn() over `repeats` runs."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        if sync:
            sync()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        if sync:
            sync()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return {"median_ms": round(statistics.median(wall), 2), "min_ms": round(min(wall), 2),
            "median_cpu_ms": round(statistics.median(cpu), 2), "repeats": repeats}


def rss_mib() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB, from /proc/self/status."""
    cur = peak = float("nan")
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            cur = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return cur, peak


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs); False if not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run_child(script: str, args: list[str]) -> dict:
    """Run `script --child ...` in a fresh interpreter (clean peak-memory counter)."""
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, script, "--child", *args], capture_output=True, text=True,
                         env=env, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"child failed: {' '.join(args)}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_configs(script: str, configs: list[dict], args: list[str]) -> list[tuple[dict, dict]]:
    """(config, result) for each config run by run_child as `script --child <config json> *args`;
    a config whose child fails (e.g. an optional backend not installed) is reported and skipped."""
    done = []
    for cfg in configs:
        try:
            done.append((cfg, run_child(script, [json.dumps(cfg), *args])))
        except SystemExit as exc:
            print(f"skipped {cfg['name']}: {str(exc).splitlines()[-1]}", file=sys.stderr)
    return done


def print_table(rows: list[dict], cols: list[tuple[str, str]]) -> None:
    widths = [max(len(title), *(len(str(r.get(key, ""))) for r in rows)) for key, title in cols]
    print("  ".join(t.ljust(w) for (_, t), w in zip(cols, widths)))
    for r in rows:
        print("  ".join(str(r.get(k, "")).ljust(w) for (k, _), w in zip(cols, widths)))


def _plain(obj):
    """JSON fallback for numpy scalars/arrays and paths."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def write_json(name: str | Path, payload: dict) -> Path:
    """Write payload to bench/results/<name> (a bare file name) or to the given path; says where."""
    path = Path(name)
    if not path.is_absolute() and path.parent == Path("."):
        path = RESULTS / path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_plain) + "\n")
    print(f"wrote {path}")
    return path
