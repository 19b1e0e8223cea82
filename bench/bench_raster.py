"""Rasteriser benchmark: forward + backward time and peak memory on head-like scenes.

    python bench/bench_raster.py                 # CPU configs -> bench/results/raster_cpu.json
    python bench/bench_raster.py --threads 2     # torch intra-op threads (default 1)
    python bench/bench_raster.py --cuda          # on a GPU: 50k @ 512, torch and gsplat
                                                 #   -> bench/results/raster_cuda.json

Each configuration runs in a fresh interpreter so its peak RSS is its own. Times are
wall-clock medians (what the targets refer to) plus the median process CPU time, which
is more stable on a shared machine. Scenes: bench/scenes.py (a head of Gaussians
filling the image; "stress" uses footprints 1.5-12 px sigma at the rendered size).
"""
from __future__ import annotations

import argparse
import json

from common import load_avg, machine, print_table, reset_peak_rss, rss_mib, run_configs, time_it, write_json

CPU_CONFIGS = [
    dict(name="head 5k @128", n=5000, size=128, target_ms=150),
    dict(name="head 20k @256", n=20000, size=256, target_ms=2000),
    dict(name="stress 5k @128", n=5000, size=128, sigma_at="render"),
    dict(name="stress 20k @256", n=20000, size=256, sigma_at="render"),
]
CUDA_CONFIGS = [
    dict(name="head 50k @512 torch", n=50000, size=512, backend="torch"),
    dict(name="head 50k @512 gsplat", n=50000, size=512, backend="gsplat"),
]
MEM_TARGET_MIB = 2048


def child(cfg: dict, threads: int, repeats: int) -> dict:
    import torch

    from scenes import head_scene
    from talkctl.kernels.raster import rasterize

    torch.set_num_threads(threads)
    dev = cfg.get("device", "cpu")
    sc = head_scene(cfg["n"], cfg["size"], sh_degree=3, sigma_at=cfg.get("sigma_at", "head512"),
                    device=dev)
    leaves = {k: sc[k].clone().requires_grad_(True)
              for k in ("means", "quats", "scales", "opacities", "colors")}
    backend = cfg.get("backend", "torch")
    sync = torch.cuda.synchronize if dev == "cuda" else None
    out_box = {}

    def forward():
        with torch.no_grad():
            out_box["out"] = rasterize(**sc, width=cfg["size"], height=cfg["size"], backend=backend)

    def step():
        out = rasterize(**leaves, viewmats=sc["viewmats"], Ks=sc["Ks"], width=cfg["size"],
                        height=cfg["size"], backend=backend)
        out.means2d.retain_grad()
        loss = (out.rgb - 0.5).square().mean() + 0.1 * out.depth.mean() + out.alpha.mean()
        loss.backward()
        for v in leaves.values():
            v.grad = None

    base_rss, _ = rss_mib()
    forward()  # warm-up (also lazily loads the backend)
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    peak_reset = reset_peak_rss()
    fwd = time_it(forward, repeats, warmup=1, sync=sync)
    both = time_it(step, repeats, warmup=1, sync=sync)
    cur, peak = rss_mib()
    out = out_box["out"]
    res = dict(
        name=cfg["name"], n=cfg["n"], size=cfg["size"], backend=backend, device=dev,
        fwd_ms=fwd["median_ms"], fwd_bwd_ms=both["median_ms"], fwd_bwd_min_ms=both["min_ms"],
        fwd_bwd_cpu_ms=both["median_cpu_ms"], repeats=repeats,
        peak_rss_mib=round(peak, 1), rss_before_mib=round(base_rss, 1),
        peak_rss_growth_mib=round(peak - base_rss, 1), peak_reset=peak_reset,
        visible=int((out.radii > 0).sum()), mean_alpha=round(float(out.alpha.mean()), 3),
    )
    if dev == "cuda":
        res["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--cuda", action="store_true", help="run the CUDA configurations")
    ap.add_argument("--out", default=None, help="results file name under bench/results/")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(json.loads(a.child), a.threads, a.repeats)))
        return

    configs = [dict(c, device="cuda") for c in CUDA_CONFIGS] if a.cuda else CPU_CONFIGS
    info = machine(torch_threads=a.threads)
    rows = []
    for cfg, r in run_configs(__file__, configs, ["--threads", str(a.threads), "--repeats", str(a.repeats)]):
        if "target_ms" in cfg:
            r["target_ms"] = cfg["target_ms"]
            r["meets_target"] = r["fwd_bwd_ms"] <= cfg["target_ms"] and \
                r["peak_rss_mib"] <= MEM_TARGET_MIB
        rows.append(r)
    info["load_avg_after"] = load_avg()
    cols = [("name", "config"), ("visible", "visible"), ("mean_alpha", "alpha"),
            ("fwd_ms", "fwd ms"), ("fwd_bwd_ms", "fwd+bwd ms"), ("fwd_bwd_cpu_ms", "cpu ms"),
            ("target_ms", "target"), ("peak_rss_mib", "peak RSS MiB"),
            ("peak_rss_growth_mib", "growth MiB")]
    if a.cuda:
        cols.append(("cuda_peak_mib", "CUDA peak MiB"))
    print_table(rows, cols)
    name = a.out or ("raster_cuda.json" if a.cuda else "raster_cpu.json")
    write_json(name, {
        "benchmark": "rasterize forward+backward (loss on rgb, depth, alpha; SH degree 3)",
        "machine": info, "memory_target_mib": MEM_TARGET_MIB,
        "note": "medians of wall-clock ms; cpu ms = process CPU time. Shared machine: "
                "compare load_avg.",
        "results": rows,
    })


if __name__ == "__main__":
    main()
