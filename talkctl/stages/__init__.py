"""Pipeline stages: each a `run(ctx, config) -> summary` over a run directory."""
