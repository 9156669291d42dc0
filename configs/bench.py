"""Speed and memory benchmark of every warp method against ``jax.random.normal``.

Run (about 10 minutes on a busy 2-core CPU, a third of it in chang4/chang8 at 1024x1024 and about
1.5 minutes in the volume rows, 64^3 and 128^3 with 4 channels):

    python -m experiments.bench --config=configs/bench.py --workdir=/tmp/bench

Tiny variant for the smoke test (about 30 s on 2 CPU cores, nearly all of it compilation):

    python -m experiments.bench --config=configs/bench.py:small --workdir=/tmp/bench_small

Override any field on the command line, e.g. ``--config.repeats=20`` or
``--config.methods="('grid', 'particle')"``. Tuples (not lists) are used so that such overrides parse.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the benchmark config; ``arg="small"`` gives the smoke-test variant."""
    config = ml_collections.ConfigDict()
    # Methods to time. "splat" is irwarp.warp_forward (with the analytic forward flow);
    # "chang<N>" is irwarp.warp(method="chang", upsample=N); any other name is passed to
    # irwarp.warp(method=name) ("grid", "particle", "nearest", "bilinear", "fixed", "fresh").
    config.methods = (
        "grid",
        "particle",
        "splat",
        "chang2",
        "chang4",
        "chang8",
        "nearest",
        "bilinear",
    )
    # Noise shapes (H, W, C), one frame each (no batch dimension).
    config.shapes = ((512, 512, 4), (1024, 1024, 4), (60, 90, 16))
    # Synthetic flow, built in the experiment at pixel centres (jnp): "rotation" (rotation about the
    # image centre plus a fractional translation), "translation" (fractional translation only),
    # "zoom" (scaling about the centre plus the translation) or "identity".
    config.flow = "rotation"
    # Rotation angle of the "rotation" flow, in degrees.
    config.angle_deg = 2.0
    # Scale factor of the "zoom" flow (> 1 zooms in: the backward map shrinks the pixel).
    config.zoom = 1.05
    # Translation (dx, dy) in pixels of "rotation", "translation" and "zoom" (fractional on purpose).
    config.shift = (0.37, -0.21)
    # Capacity of the grid record (the default of irwarp.grid_record); also used for the overflow count.
    config.grid_capacity = 3
    # Untimed calls after compilation, before the timed ones.
    config.warmup = 2
    # Timed calls per row; the table reports their median.
    config.repeats = 10
    # A row whose warm-up plus timed calls would exceed this many seconds is timed with fewer
    # repeats (but at least min_repeats); the table's note says so.
    config.time_budget_s = 60.0
    # Fewest timed calls of a row that is over budget.
    config.min_repeats = 3
    # (method, (H, W, C)) pairs that may skip the timed calls entirely when a single call already
    # exceeds time_budget_s; the row then reports that one call and its note says so.
    config.skip = (("chang8", (1024, 1024, 4)),)
    # Methods whose record construction and apply_record are also timed separately (grid,
    # particle, splat only); written as a second table.
    config.split_methods = ("grid", "particle", "splat")
    # Volumes (D, H, W, C) for the 3D rows ("4 x 64^3" = a 64^3 volume with 4 channels).
    config.volume_shapes = ((64, 64, 64, 4), (128, 128, 128, 4))
    # 3D methods: "particle" (irwarp.warp with the 3D backward flow) and "splat"
    # (irwarp.warp_forward with the forward flow of the same motion).
    config.volume_methods = ("particle", "splat")
    # Rotation axis (ax, ay, az) of the 3D "rotation" flow (its angle is angle_deg).
    config.volume_axis = (1.0, 2.0, 2.0)
    # Translation (dx, dy, dz) in voxels of the 3D flows (fractional on purpose).
    config.volume_shift = (0.37, -0.21, 0.13)
    # The eager table: irwarp.warp(key, noise, flow, method=m) called as the README's quick start
    # does (not jitted) and the same call jitted, for these shapes (B, H, W, C) and methods.
    config.eager_shapes = ((4, 512, 512, 4),)
    config.eager_methods = ("grid", "particle")
    # Seed of the noise, the warp keys and nothing else (the flow is deterministic).
    config.seed = 0

    if arg == "small":
        # One tiny non-square shape: compile time dominates, so more shapes would cost ~25 s each.
        config.shapes = ((16, 24, 2),)
        # One tiny non-cubic volume, particle only (the 3D code path, ~3 s of compilation).
        config.volume_shapes = ((6, 7, 8, 2),)
        config.volume_methods = ("particle",)
        config.warmup = 1
        config.repeats = 3
        config.min_repeats = 1
        config.time_budget_s = 20.0
        config.skip = ()
        config.eager_shapes = ((2, 16, 24, 2),)
        config.eager_methods = ("grid",)
    elif arg:
        raise ValueError(f"unknown bench config variant {arg!r}; known: 'small'")
    return config
