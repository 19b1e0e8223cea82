"""Level geometry of a 2D multi-resolution hash grid, following tiny-cuda-nn's "HashGrid".

Using tcnn's exact conventions makes the parameter tables interchangeable: a model
trained with the tinycudann backend on a GPU renders identically with the torch
backend on a CPU, and the other way round.

For level l (0-based) with per-level growth b = (max_res / base_res)^(1 / (L - 1)):
    scale_l      = base_res * b^l - 1
    resolution_l = ceil(scale_l) + 1             vertices per side
    size_l       = min(next_multiple_of_8(resolution_l²), 2^log2_hashmap_size)
A point u in [0, 1]² lands at pos = u * scale_l + 0.5; its cell is floor(pos) and the
bilinear weights are the fractional part. A vertex (i, j) has the table slot
    dense  (resolution_l² <= size_l):  (i + j * resolution_l) mod size_l
    hashed (otherwise):                (i * 1  XOR  j * 2654435761) mod 2^32 mod size_l
so coarse levels are stored densely (no collisions) and fine levels share slots.
Known tcnn quirk, kept for compatibility: near u = 1 a dense level's cell reaches vertex
i = resolution, which wraps to the start of the next row (the last half cell mixes in
an unrelated vertex). It is harmless for learning (the slot is just shared).
Scales are computed with tcnn's host formula (which sizes the tables); its CUDA kernels
recompute them with the device exp2f (documented to within 2 ulp), which a GPU check compares.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass

PRIME_Y = 2654435761  # tcnn's second coherent-hash prime (the first is 1)


@dataclass(frozen=True)
class Level:
    scale: float
    resolution: int
    size: int  # table slots
    offset: int  # first slot of this level in the plane's table
    dense: bool


def _f32(x: float) -> float:
    """Round a Python float to the nearest float32 (as a C float assignment does)."""
    return struct.unpack("f", struct.pack("f", x))[0]


def per_level_scale(n_levels: int, base_resolution: int, max_resolution: int) -> float:
    if n_levels <= 1:
        return 1.0
    return math.exp((math.log(max_resolution) - math.log(base_resolution)) / (n_levels - 1))


def make_levels(n_levels: int, base_resolution: int, max_resolution: int,
                log2_hashmap_size: int) -> tuple[Level, ...]:
    if n_levels < 1 or base_resolution < 2 or max_resolution < base_resolution:
        raise ValueError("need n_levels >= 1 and 2 <= base_resolution <= max_resolution")
    b = _f32(per_level_scale(n_levels, base_resolution, max_resolution))  # tcnn reads a float
    log2b = _f32(math.log2(b))
    T = 1 << log2_hashmap_size
    levels, offset = [], 0
    for lvl in range(n_levels):
        # tcnn's host formula in float32: exp2f(l * log2f(b)) * base - 1.0f. glibc's log2f and
        # exp2f evaluate in double and round once to float32, as done here; numpy's float32
        # SIMD versions drift 1-6 ulp and put e.g. (14, 16->512) at resolution 513, not 512.
        scale = _f32(_f32(_f32(2.0 ** _f32(lvl * log2b)) * base_resolution) - 1.0)
        res = math.ceil(scale) + 1
        dense_count = res * res
        size = min(-(-dense_count // 8) * 8, T)
        levels.append(Level(scale, res, size, offset, dense_count <= size))
        offset += size
    return tuple(levels)
