"""Tri-plane hash-grid benchmark: encoder forward + backward (table and point gradients).

    python bench/bench_hashgrid.py               # CPU, 10k points -> bench/results/hashgrid_cpu.json
    python bench/bench_hashgrid.py --compile     # also time the torch.compile'd lookup
    python bench/bench_hashgrid.py --cuda        # on a GPU: 100k points, torch and tcnn
                                                 #   -> bench/results/hashgrid_cuda.json

Encoder settings are the defaults GSTalker-style models use here: 14 levels x 1 feature,
resolution 64..512, 2^16 slots per level. Points are uniform in the bounds and carry
gradients (the deformation network backpropagates into Gaussian positions).
"""
from __future__ import annotations

import argparse
import json

from common import load_avg, machine, print_table, reset_peak_rss, rss_mib, run_configs, time_it, write_json

CPU_CONFIGS = [
    dict(name="10k pts, 14x1", n=10_000, F=1, target_ms=100),
    dict(name="10k pts, 14x2", n=10_000, F=2),
    dict(name="100k pts, 14x1", n=100_000, F=1),
]
CUDA_CONFIGS = [
    dict(name="100k pts torch", n=100_000, F=1, backend="torch", device="cuda"),
    dict(name="100k pts tcnn", n=100_000, F=1, backend="tcnn", device="cuda"),
]


def child(cfg: dict, threads: int, repeats: int) -> dict:
    import torch

    from talkctl.kernels.hashgrid import TriplaneHashGrid

    torch.set_num_threads(threads)
    dev = cfg.get("device", "cpu")
    enc = TriplaneHashGrid(n_levels=14, features_per_level=cfg["F"], base_resolution=64,
                           max_resolution=512, log2_hashmap_size=16, backend=cfg.get("backend", "auto"),
                           compile=cfg.get("compile", False)).to(dev)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(cfg["n"], 3, generator=g) * 2 - 1).to(dev).requires_grad_(True)
    w = torch.randn(enc.out_dim, generator=g).to(dev)
    sync = torch.cuda.synchronize if dev == "cuda" else None

    def forward():
        with torch.no_grad():
            enc(x)

    def step():
        loss = (enc(x) @ w).square().mean()
        loss.backward()
        enc.table.grad = None
        x.grad = None

    base, _ = rss_mib()
    step()  # warm-up (and compile, when asked)
    reset_peak_rss()
    fwd = time_it(forward, repeats, warmup=1, sync=sync)
    both = time_it(step, repeats, warmup=1, sync=sync)
    _, peak = rss_mib()
    return dict(name=cfg["name"] + (" compiled" if cfg.get("compile") else ""), n=cfg["n"],
                F=cfg["F"], backend=enc.backend, device=dev, fwd_ms=fwd["median_ms"],
                fwd_bwd_ms=both["median_ms"], fwd_bwd_min_ms=both["min_ms"],
                fwd_bwd_cpu_ms=both["median_cpu_ms"], repeats=repeats,
                peak_rss_mib=round(peak, 1), peak_rss_growth_mib=round(peak - base, 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--compile", action="store_true", help="add a torch.compile run (slow to start)")
    ap.add_argument("--cuda", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(json.loads(a.child), a.threads, a.repeats)))
        return
    configs = list(CUDA_CONFIGS if a.cuda else CPU_CONFIGS)
    if a.compile and not a.cuda:
        configs.append(dict(CPU_CONFIGS[0], compile=True, target_ms=None))
    info = machine(torch_threads=a.threads)
    rows = []
    for cfg, r in run_configs(__file__, configs, ["--threads", str(a.threads), "--repeats", str(a.repeats)]):
        if cfg.get("target_ms"):
            r["target_ms"] = cfg["target_ms"]
            r["meets_target"] = r["fwd_bwd_ms"] <= cfg["target_ms"]
        rows.append(r)
    info["load_avg_after"] = load_avg()
    print_table(rows, [("name", "config"), ("backend", "backend"), ("fwd_ms", "fwd ms"),
                       ("fwd_bwd_ms", "fwd+bwd ms"), ("fwd_bwd_cpu_ms", "cpu ms"),
                       ("target_ms", "target"), ("peak_rss_growth_mib", "RSS growth MiB")])
    write_json(a.out or ("hashgrid_cuda.json" if a.cuda else "hashgrid_cpu.json"), {
        "benchmark": "TriplaneHashGrid forward+backward (grads to table and points)",
        "machine": info,
        "note": "medians of wall-clock ms; cpu ms = process CPU time. Shared machine: "
                "compare load_avg.",
        "results": rows,
    })


if __name__ == "__main__":
    main()
