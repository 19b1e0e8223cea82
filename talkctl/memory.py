"""Peak memory of the current stage: host RSS (Linux VmHWM, reset per stage) and CUDA allocations."""
from __future__ import annotations

import re
import resource
import sys


def _cuda():
    torch = sys.modules.get("torch")  # never import torch just to ask
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda
    return None


def reset_peak() -> bool:
    """Start a new peak window. False where the kernel cannot reset it (then the peak is the process's)."""
    if (cuda := _cuda()) is not None:
        cuda.reset_peak_memory_stats()
    try:
        with open("/proc/self/clear_refs", "w") as f:  # "5" resets VmHWM (Linux >= 4.0)
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory since reset_peak(), in MiB (the process's lifetime peak off Linux)."""
    try:
        with open("/proc/self/status") as f:
            m = re.search(r"VmHWM:\s+(\d+)\s+kB", f.read())
        if m:
            return round(int(m.group(1)) / 1024, 1)
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (2 ** 20 if sys.platform == "darwin" else 1024), 1)


def peak_attrs() -> dict:
    """What a stage records in its artifacts: peak_rss_mb, and peak_gpu_memory_mb on CUDA."""
    out = {"peak_rss_mb": peak_rss_mb()}
    if (cuda := _cuda()) is not None:
        out["peak_gpu_memory_mb"] = round(cuda.max_memory_allocated() / 2 ** 20, 1)
    return out


def _libc():
    import ctypes
    import ctypes.util

    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def limit_malloc_arenas(arenas: int = 2) -> None:
    """At most `arenas` glibc malloc arenas (mallopt M_ARENA_MAX; a no-op elsewhere). glibc gives
    each thread that allocates its own arena (up to 8 per core), each keeping its freed pages: the
    renderer's and the encoder's threads held ~7 MB more of a render's peak. Call it before
    threads start; a MALLOC_ARENA_MAX the user set wins."""
    import os

    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    try:
        _libc().mallopt(-8, int(arenas))  # -8: M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def release_free_memory() -> None:
    """Give the heap's free pages back to the OS (glibc malloc_trim; a no-op elsewhere). After a
    burst of large temporaries (long audio's features) glibc keeps ~100 MB of freed heap per 10
    minutes of audio resident, which would otherwise sit under every frame of a render."""
    try:
        _libc().malloc_trim(0)
    except (OSError, AttributeError):
        pass
