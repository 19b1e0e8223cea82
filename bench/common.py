"""Shared helpers for the benchmark scripts: timing, peak memory, machine description, output."""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
        "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_avg_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        mem = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
        info["ram_gib"] = round(int(mem) / 2**20, 1)
    except (OSError, IndexError, ValueError):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


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
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, script, "--child", *args], capture_output=True, text=True,
                         env=env, cwd=root)
    if out.returncode != 0:
        raise SystemExit(f"child failed: {' '.join(args)}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_table(rows: list[dict], cols: list[tuple[str, str]]) -> None:
    widths = [max(len(title), *(len(str(r.get(key, ""))) for r in rows)) for key, title in cols]
    print("  ".join(t.ljust(w) for (_, t), w in zip(cols, widths)))
    for r in rows:
        print("  ".join(str(r.get(k, "")).ljust(w) for (k, _), w in zip(cols, widths)))


def write_json(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
