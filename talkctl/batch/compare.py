"""Compare two batch roots artifact by artifact: the datasets and fingerprints of every HDF5
output, not the file bytes (attributes like `created` and `seconds` differ between runs)."""
from __future__ import annotations

from pathlib import Path


def _datasets(path: Path) -> dict:
    import h5py
    import numpy as np

    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = np.asarray(obj[()])
        f.visititems(visit)
        out["@fingerprint"] = f.attrs.get("fingerprint")
    return out


def compare_roots(a: str | Path, b: str | Path) -> list[str]:
    """Differences between the artifacts of two roots (one line each); [] when equal."""
    import numpy as np

    a, b = Path(a), Path(b)
    diffs = []
    files_a = sorted(p.relative_to(a) for p in a.glob("*/*.h5"))
    files_b = sorted(p.relative_to(b) for p in b.glob("*/*.h5"))
    for rel in sorted(set(files_a) ^ set(files_b)):
        diffs.append(f"{rel}: only in {a if rel in files_a else b}")
    for rel in sorted(set(files_a) & set(files_b)):
        da, db = _datasets(a / rel), _datasets(b / rel)
        for name in sorted(set(da) | set(db)):
            if name not in da or name not in db:
                diffs.append(f"{rel}:{name}: only in one")
            elif name == "@fingerprint":
                if da[name] != db[name]:
                    diffs.append(f"{rel}: fingerprints differ ({da[name]} vs {db[name]})")
            elif da[name].shape != db[name].shape or da[name].dtype != db[name].dtype:
                diffs.append(f"{rel}:{name}: {da[name].shape} {da[name].dtype} vs {db[name].shape} {db[name].dtype}")
            elif not np.array_equal(da[name], db[name], equal_nan=da[name].dtype.kind == "f"):
                diffs.append(f"{rel}:{name}: values differ (max abs diff "
                             f"{np.max(np.abs(da[name].astype(np.float64) - db[name].astype(np.float64))):.3g})")
    if not files_a and not files_b:
        diffs.append("no artifacts in either root")
    return diffs
