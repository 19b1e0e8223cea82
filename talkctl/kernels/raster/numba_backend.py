"""Forward-only CPU rasteriser: the numba kernels (numba_kernels.py) behind the `rasterize` contract.

For inference (render, serve): no autograd, no saved state, and work proportional to the
splats' footprints. The images match the torch reference (same projection, visibility and
compositing rules; only float rounding differs). Inputs that require grad are refused: a
training loop must use a differentiable backend (torch, gsplat).

Work is spread over `threads` Python threads (the kernels release the GIL): projection
and binning one camera per task, then compositing a few bands per task, pulled from a
shared queue so that uneven bands balance out. Thread-safe: concurrent calls (several
sessions on one model) each get their own outputs and scratch arrays.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ...errors import UsageError
from .api_types import RasterOutput, finish_output
from .tiles import TILE

BAND_ROWS = TILE  # one tile row per band: the visibility grid and the work grid agree
BANDS_PER_TASK = 2
_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    with _pools_lock:
        if threads not in _pools:
            _pools[threads] = ThreadPoolExecutor(threads - 1, thread_name_prefix="talkctl-raster")
        return _pools[threads]


def run_tasks(fn, tasks: list, threads: int) -> list:
    """fn(task) for every task on `threads` threads (the caller's included); results in order."""
    results = [None] * len(tasks)
    todo = iter(range(len(tasks)))  # next() on a shared iterator is atomic under the GIL
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            results[i] = fn(tasks[i])

    n = min(threads, len(tasks))
    futures = [_pool(threads).submit(worker) for _ in range(n - 1)] if n > 1 else []
    worker()
    for f in futures:
        f.result()
    return results


def _np(t: torch.Tensor, lead: int | None = None) -> np.ndarray:
    """float32 C-contiguous numpy view/copy; `lead` dims: add a shared leading axis of 1."""
    a = t.detach().to(torch.float32).contiguous().numpy()
    return a[None] if lead is not None and a.ndim == lead else a


def default_threads() -> int:
    return max(1, torch.get_num_threads())


def rasterize_numba(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                    background, sh_degree, near, far, threads: int | None = None) -> RasterOutput:
    """Backend entry point; `rasterize()` has validated the inputs and resolved sh_degree."""
    from . import numba_kernels as nk

    if torch.is_grad_enabled() and any(t.requires_grad for t in (means, quats, scales, opacities, colors)):
        raise UsageError("the numba rasteriser is forward-only (no gradients): train with the torch or "
                         "gsplat rasteriser, or render under torch.no_grad()")
    if means.device.type != "cpu":
        raise UsageError(f"the numba rasteriser runs on the CPU; the tensors are on {means.device}")
    threads = max(1, int(threads or default_threads()))
    C, N = viewmats.shape[0], means.shape[-2]
    m, q, s = _np(means, 2), _np(quats, 2), _np(scales, 2)
    o = _np(opacities, 1)
    coeffs = _np(colors[:, None, :] if colors.dim() == 2 else colors)
    degree = -1 if sh_degree is None else int(sh_degree)
    view, K = _np(viewmats).astype(np.float64), _np(Ks).astype(np.float64)
    rgb = np.zeros((C, height, width, 3), np.float32)
    depth = np.zeros((C, height, width, 1), np.float32)
    alpha = np.zeros((C, height, width, 1), np.float32)
    means2d = np.zeros((C, N, 2), np.float32)
    radii = np.zeros((C, N), np.int32)
    rec = np.zeros((C, N, nk.N_REC))

    bins = run_tasks(lambda c: nk.project_and_bin(c, m, q, s, o, coeffs, degree, view, K, width, height,
                                                  float(near), float(far), BAND_ROWS, rec, radii, means2d),
                     list(range(C)), threads)
    rec32 = rec.astype(np.float32)
    n_bands = -(-height // BAND_ROWS)
    tasks = [(c, b, min(b + BANDS_PER_TASK, n_bands)) for c in range(C) for b in range(0, n_bands, BANDS_PER_TASK)]

    def composite(task):
        c, b0, b1 = task
        ids, offsets, boxes = bins[c]
        nk.composite_bands(rec32[c], ids, offsets, boxes, b0, b1, BAND_ROWS, rgb[c], depth[c], alpha[c])

    run_tasks(composite, tasks, threads)
    dt = means.dtype
    t = (lambda a: torch.from_numpy(a).to(dt))
    return finish_output(t(rgb), t(depth), t(alpha), background, t(means2d), torch.from_numpy(radii), "numba")
