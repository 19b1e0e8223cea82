"""tiny-cuda-nn adapter: the same tables, looked up by tcnn's fused CUDA kernels.

One tcnn "HashGrid" encoding (2 input dims) with our level settings; each plane's
slice of `TriplaneHashGrid.table` is passed to it as its parameters, so there is a
single parameter tensor whichever backend runs. Uses tinycudann's autograd function
(`tinycudann.modules._module_function`), the one its own `Module.forward` uses.
"""
from __future__ import annotations

import torch

from ...errors import MissingToolError


def load():
    import tinycudann  # noqa: F401  (fail here, inside load, if the import is broken)

    return TcnnPlanes


class TcnnPlanes:
    def __init__(self, grid):
        import tinycudann as tcnn

        if grid.features_per_level not in (1, 2, 4, 8):
            raise MissingToolError(
                f"tinycudann supports 1, 2, 4 or 8 features per level, not {grid.features_per_level}; "
                "use the torch hashgrid backend")
        config = {
            "otype": "HashGrid", "n_levels": grid.n_levels,
            "n_features_per_level": grid.features_per_level,
            "log2_hashmap_size": grid.log2_hashmap_size,
            "base_resolution": grid.base_resolution, "per_level_scale": grid.per_level_scale,
            "interpolation": "Linear",
        }
        self.enc = tcnn.Encoding(2, config, dtype=torch.float32)
        expected = grid.table.shape[1] * grid.features_per_level
        if self.enc.params.numel() != expected:
            raise MissingToolError(
                f"installed tinycudann lays out {self.enc.params.numel()} parameters per plane, "
                f"talkctl expects {expected}; use the torch hashgrid backend")
        from tinycudann import _C
        from tinycudann.modules import _module_function

        self._apply = _module_function.apply
        self._granularity = int(_C.batch_size_granularity())
        self.out_per_plane = grid.n_levels * grid.features_per_level

    def __call__(self, u: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        n = u.shape[0]
        padded = -(-n // self._granularity) * self._granularity
        outs = []
        for p in range(3):
            x = u[:, p].float()
            if padded != n:
                x = torch.nn.functional.pad(x, [0, 0, 0, padded - n])
            y = self._apply(self.enc.native_tcnn_module, x.contiguous(),
                            table[p].reshape(-1).float().contiguous(), self.enc.loss_scale)
            outs.append(y[:n, : self.out_per_plane])
        return torch.cat(outs, dim=1).to(table.dtype)
