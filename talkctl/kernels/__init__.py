"""Numerical kernels (rasteriser, hash-grid encoder); they know nothing of stages."""
